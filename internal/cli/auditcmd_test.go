package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/internal/output"
)

// auditFixture is one node's audit key, a witness key and the keys a
// cluster would publish for them.
type auditFixture struct {
	node, witness *audit.Signer
	keys          *audit.Keys
}

func newAuditFixture(t *testing.T, name string) *auditFixture {
	t.Helper()
	f := &auditFixture{node: auditSigner(t, name), witness: auditSigner(t, "w1")}
	f.keys = &audit.Keys{Nodes: map[string][]byte{name: f.node.PublicKeyset()}, Witnesses: map[string][]byte{"w1": f.witness.PublicKeyset()}}
	return f
}

func auditSigner(t *testing.T, name string) *audit.Signer {
	t.Helper()
	h, err := audit.NewSigningKeyset()
	require.NoError(t, err)
	s, err := audit.NewSigner(name, h)
	require.NoError(t, err)
	return s
}

// stepClock stamps each event a millisecond after the last: two logs fed
// the same events hold the same bytes.
func stepClock(offset time.Duration) func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC).Add(offset)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

// openAuditLog opens a log in dir/audit signed by s and records n events
// (resource job-0, job-1, ...; salt changes their subject).
func openAuditLog(t *testing.T, dir string, s *audit.Signer, n int, salt string) *audit.Log {
	return openAuditLogAt(t, dir, s, n, salt, 0)
}

// openAuditLogAt is openAuditLog with the clock started offset later.
func openAuditLogAt(t *testing.T, dir string, s *audit.Signer, n int, salt string, offset time.Duration) *audit.Log {
	t.Helper()
	l, err := audit.Open(audit.Config{Dir: filepath.Join(dir, "audit"), Node: s.Name(), Signer: s, Now: stepClock(offset), CheckpointEvery: time.Hour})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	for i := range n {
		require.NoError(t, l.Record(context.Background(), &audit.Event{Kind: audit.KindAuthz, Action: "id.register",
			Subject: "spiffe://unum.test/user/alice" + salt, Resource: fmt.Sprintf("id/web/job-%d", i), Outcome: audit.Allow}))
	}
	return l
}

// countersign has the witness countersign l's checkpoint now, as the
// control plane does, and returns what the witness then holds.
func (f *auditFixture) countersign(t *testing.T, l *audit.Log) *audit.SignedCheckpoint {
	t.Helper()
	sc, err := l.Checkpoint(context.Background())
	require.NoError(t, err)
	c, err := audit.ParseCheckpoint(sc.Marshal())
	require.NoError(t, err)
	require.NoError(t, f.witness.Cosign(c, time.Now()))
	require.NoError(t, l.StoreCosigned(c))
	return c
}

// serveLog serves l's ReadService over gRPC on 127.0.0.1, as a node does,
// and returns a client.
func serveLog(t *testing.T, l *audit.Log, keys *audit.Keys) unumv1.AuditClient {
	t.Helper()
	srv := grpc.NewServer()
	unumv1.RegisterAuditServer(srv, &audit.ReadService{Log: l, PublishedKeys: func(context.Context) (*audit.Keys, error) { return keys, nil }})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close(); srv.Stop(); <-done })
	return unumv1.NewAuditClient(cc)
}

// TestVerifyCatchesALyingNode: `unum audit verify` judges a node's answer
// by the published keys and the witness's checkpoint, not by the node's
// report. Each node below has the real node key (it is the node that
// lies) and serves a log that passes its own verification; the CLI's check
// still fails it (T-065).
func TestVerifyCatchesALyingNode(t *testing.T) {
	f := newAuditFixture(t, "n1")
	honest := openAuditLog(t, t.TempDir(), f.node, 20, "")
	w := f.countersign(t, honest)
	require.NoError(t, honest.Record(context.Background(), &audit.Event{Kind: audit.KindPolicy, Action: "policy.apply", Outcome: audit.Allow}))

	ask := func(t *testing.T, l *audit.Log, from uint64) *unumv1.AuditVerifyResponse {
		resp, err := serveLog(t, l, f.keys).Verify(context.Background(), &unumv1.AuditVerifyRequest{FromSize: from})
		require.NoError(t, err)
		return resp
	}

	t.Run("an honest node passes", func(t *testing.T) {
		v := checkVerifyAnswer("n1", f.keys, w, ask(t, honest, w.Size))
		require.True(t, v.OK, v.String())
		require.Equal(t, "OK n1: 21 entries, 2 checkpoints, witnessed at size 20", v.String())
	})
	t.Run("a log rewritten and re-signed with the node's own key", func(t *testing.T) {
		forked := openAuditLog(t, t.TempDir(), f.node, 25, "-rewritten")
		resp := ask(t, forked, w.Size)
		require.True(t, resp.GetOk(), "the forked log is self-consistent: only the witness catches it")
		v := checkVerifyAnswer("n1", f.keys, w, resp)
		require.False(t, v.OK)
		require.Contains(t, v.String(), "FAIL n1: the log of n1 is not an extension of what w1 witnessed at size 20 (fork or rewrite)")
	})
	t.Run("a truncated log that claims to be fine", func(t *testing.T) {
		short := openAuditLog(t, t.TempDir(), f.node, 15, "")
		resp := ask(t, short, w.Size)
		require.False(t, resp.GetOk(), "an honest node reports it")
		v := checkVerifyAnswer("n1", f.keys, w, resp)
		require.Equal(t, "FAIL n1: index 15: the log holds 15 entries but a checkpoint of size 20 was witnessed: entries from 15 are missing", v.String())
		// A lying node says OK: the CLI's own check still fails it.
		resp.Ok, resp.Problem, resp.BadIndex = true, "", 0
		v = checkVerifyAnswer("n1", f.keys, w, resp)
		require.Equal(t, "FAIL n1: index 15: the log of n1 has 15 entries, fewer than the 20 its witness countersigned: it was truncated", v.String())
	})
	t.Run("a consistency proof that does not fit", func(t *testing.T) {
		resp := ask(t, honest, w.Size)
		resp.ConsistencyProof[0][0] ^= 1
		v := checkVerifyAnswer("n1", f.keys, w, resp)
		require.False(t, v.OK)
		require.Contains(t, v.Problem, "not an extension of what w1 witnessed")
	})
	t.Run("a log signed by another key", func(t *testing.T) {
		forged := openAuditLog(t, t.TempDir(), auditSigner(t, "n1"), 25, "")
		v := checkVerifyAnswer("n1", f.keys, w, ask(t, forged, w.Size))
		require.False(t, v.OK)
		require.Contains(t, v.Problem, "not signed by its published key")
	})
	t.Run("another node's answer", func(t *testing.T) {
		v := checkVerifyAnswer("n2", f.keys, nil, ask(t, honest, 0))
		require.False(t, v.OK)
		require.Contains(t, v.Problem, `answered as "n1"`)
	})
	t.Run("a witnessed checkpoint countersigned under an unpublished key", func(t *testing.T) {
		bad, err := audit.ParseCheckpoint(w.Marshal())
		require.NoError(t, err)
		require.NoError(t, auditSigner(t, "w1").Cosign(bad, time.Now()))
		v := checkVerifyAnswer("n1", f.keys, bad, ask(t, honest, w.Size))
		require.False(t, v.OK)
		require.Contains(t, v.Problem, "no countersignature")
	})
	t.Run("a witnessed checkpoint whose countersignature does not verify", func(t *testing.T) {
		bad, err := audit.ParseCheckpoint(w.Marshal())
		require.NoError(t, err)
		require.NotEmpty(t, bad.Cosigs)
		bad.Cosigs[0].Time = bad.Cosigs[0].Time.Add(time.Second)
		v := checkVerifyAnswer("n1", f.keys, bad, ask(t, honest, w.Size))
		require.False(t, v.OK)
		require.Contains(t, v.Problem, "countersignature of w1")
	})
	t.Run("a witnessed checkpoint without countersignature", func(t *testing.T) {
		bare, err := audit.ParseCheckpoint(w.Marshal())
		require.NoError(t, err)
		bare.Cosigs = nil
		v := checkVerifyAnswer("n1", f.keys, bare, ask(t, honest, w.Size))
		require.False(t, v.OK)
		require.Contains(t, v.Problem, "no countersignature")
	})
}

// runCLI runs the CLI in-process, as cmd/unum does.
func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func writeKeysFile(t *testing.T, k *audit.Keys) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, json.NewEncoder(&buf).Encode(k))
	p := filepath.Join(t.TempDir(), "keys.json")
	require.NoError(t, os.WriteFile(p, buf.Bytes(), 0o644))
	return p
}

// TestVerifyOffline: `unum audit verify --offline DIR` on a stopped node's
// data folder, with and without the published keys.
func TestVerifyOffline(t *testing.T) {
	f := newAuditFixture(t, "n1")
	dir := t.TempDir()
	l := openAuditLog(t, dir, f.node, 30, "")
	require.NoError(t, l.RememberKeys(f.keys))
	w := f.countersign(t, l)
	require.NoError(t, l.Close())

	code, out, errs := runCLI(t, "", "audit", "verify", "--offline", dir)
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "OK n1: 30 entries")
	require.Contains(t, out, fmt.Sprintf("witnessed at size %d", w.Size))
	require.Contains(t, out, "unauthenticated")

	keys := writeKeysFile(t, f.keys)
	code, out, errs = runCLI(t, "", "audit", "verify", "--offline", dir, "--keys", keys, "-o", "json")
	require.Equal(t, 0, code, errs)
	var v struct {
		Nodes []verifyLine `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	require.Len(t, v.Nodes, 1)
	require.True(t, v.Nodes[0].OK)
	require.False(t, v.Nodes[0].KeysUnauthenticated)
	require.Equal(t, uint64(30), v.Nodes[0].Entries)

	// The published key is not the one the log was signed with: FAIL,
	// exit 1.
	other := newAuditFixture(t, "n1")
	code, out, _ = runCLI(t, "", "audit", "verify", "--offline", dir, "--keys", writeKeysFile(t, other.keys))
	require.Equal(t, 1, code)
	require.Contains(t, out, "FAIL n1:")

	// A copy of the log cut short at rest, signed with the node's key:
	// its own folder looks fine, the witnessed checkpoint in the keys file
	// does not fit.
	cut := t.TempDir()
	short := openAuditLog(t, cut, f.node, 25, "")
	require.NoError(t, short.RememberKeys(f.keys))
	_, err := short.Checkpoint(context.Background())
	require.NoError(t, err)
	require.NoError(t, short.Close())
	code, out, _ = runCLI(t, "", "audit", "verify", "--offline", cut)
	require.Equal(t, 0, code, "without the witnessed checkpoint a cut log at rest looks whole: %s", out)
	withWitnessed := *f.keys
	withWitnessed.Checkpoints = map[string]string{"n1": string(w.Marshal())}
	code, out, _ = runCLI(t, "", "audit", "verify", "--offline", cut, "--keys", writeKeysFile(t, &withWitnessed))
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "FAIL n1:")

	code, _, errs = runCLI(t, "", "audit", "verify", "--offline", t.TempDir())
	require.Equal(t, 1, code, "a folder without a log is an error")
	require.Contains(t, errs, "audit")
}

// TestProofCheck: a bundle a node's Proof answer makes verifies with
// `unum audit proof --check`, and stops verifying when the event or the
// checkpoint is altered.
func TestProofCheck(t *testing.T) {
	f := newAuditFixture(t, "n1")
	l := openAuditLog(t, t.TempDir(), f.node, 12, "")
	f.countersign(t, l)
	resp, err := serveLog(t, l, f.keys).Proof(context.Background(), &unumv1.AuditProofRequest{EventId: "n1:5"})
	require.NoError(t, err)
	path, err := audit.HashesFromBytes(resp.GetInclusionProof())
	require.NoError(t, err)
	b, err := audit.NewProofBundle(resp.GetEvent(), resp.GetIndex(), resp.GetCheckpoint(), path)
	require.NoError(t, err)
	data, err := json.MarshalIndent(b, "", "  ")
	require.NoError(t, err)
	keys := writeKeysFile(t, f.keys)
	write := func(data []byte) string {
		p := filepath.Join(t.TempDir(), "proof.json")
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}

	code, out, errs := runCLI(t, "", "audit", "proof", "--check", write(data), "--keys", keys, "-o", "table")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "OK: event n1:5 (id.register spiffe://unum.test/user/alice, allow) is entry 5 of node n1's log, in its checkpoint of size 12 signed by n1, countersigned by w1")
	code, _, errs = runCLI(t, string(data), "audit", "proof", "--check", "-", "--keys", keys)
	require.Equal(t, 0, code, errs)

	for name, altered := range map[string][]byte{
		"event":      bytes.Replace(data, []byte("job-5"), []byte("job-6"), 1),
		"checkpoint": bytes.Replace(data, []byte(`\n12\n`), []byte(`\n13\n`), 1),
	} {
		require.NotEqual(t, data, altered, name)
		code, out, _ := runCLI(t, "", "audit", "proof", "--check", write(altered), "--keys", keys)
		require.Equal(t, 1, code, name)
		require.Contains(t, out, "FAIL:", name)
	}
	code, _, _ = runCLI(t, "", "audit", "proof", "--check", write(data))
	require.Equal(t, 2, code, "--check needs --keys")
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                          {},
		"10m":                       now.Add(-10 * time.Minute),
		"7d":                        now.Add(-7 * 24 * time.Hour),
		"1d12h":                     now.Add(-36 * time.Hour),
		"2026-11-25T10:00:00Z":      time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		"2026-11-25T10:00:00+01:00": time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC),
	} {
		got, err := parseWhen(in, now)
		require.NoError(t, err, in)
		require.True(t, want.Equal(got), "%s: %v", in, got)
	}
	for _, in := range []string{"yesterday", "-5m", "d", "5x", "2026-11-25"} {
		_, err := parseWhen(in, now)
		require.Error(t, err, in)
	}
}

func TestAuditUsage(t *testing.T) {
	for _, args := range [][]string{
		{"audit", "query", "--outcome", "denied"},
		{"audit", "query", "--kind", "nope"},
		{"audit", "query", "--since", "1h", "--until", "2h"},
		{"audit", "query", "--since", "soon"},
		{"audit", "tail", "-n", "0"},
		{"audit", "export", "--format", "csv"},
		{"audit", "proof"},
		{"audit", "proof", "nocolon"},
		{"audit", "verify", "--keys", "k.json"},
		{"audit", "config", "--on-failure", "ignore"},
		{"audit", "frobnicate"},
	} {
		code, _, errs := runCLI(t, "", append(args, "--config", "/nonexistent")...)
		require.Equal(t, 2, code, "%v: %s", args, errs)
	}
}

// syncBuffer is a buffer one goroutine writes while another reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cluster3 is three nodes' logs, each served over gRPC on 127.0.0.1, and
// an auditSetup that reaches them (node-3's address refuses connections
// when down is set).
type cluster3 struct {
	logs  map[string]*audit.Log
	nodes []*unumv1.Node
	addrs map[string]string
}

func newCluster3(t *testing.T) *cluster3 {
	t.Helper()
	c := &cluster3{logs: map[string]*audit.Log{}, addrs: map[string]string{}}
	for i, name := range []string{"node-1", "node-2", "node-3"} {
		f := newAuditFixture(t, name)
		// Clocks a third of a millisecond apart: the nodes' events
		// interleave in time.
		l := openAuditLogAt(t, t.TempDir(), f.node, 10, "-"+name, time.Duration(i)*time.Millisecond/3)
		c.logs[name] = l
		srv := grpc.NewServer()
		unumv1.RegisterAuditServer(srv, &audit.ReadService{Log: l})
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(lis) }()
		t.Cleanup(func() { srv.Stop(); <-done })
		c.addrs[name] = lis.Addr().String()
		c.nodes = append(c.nodes, &unumv1.Node{Name: name, ApiAddress: lis.Addr().String()})
	}
	return c
}

func (c *cluster3) setup(t *testing.T, ctx context.Context, format output.Format, nodes ...*unumv1.Node) *auditSetup {
	if nodes == nil {
		nodes = c.nodes
	}
	return &auditSetup{
		clientCall: &clientCall{format: format, ctx: ctx},
		nodes:      nodes,
		dial: func(n *unumv1.Node) (*grpc.ClientConn, error) {
			return grpc.NewClient(n.GetApiAddress(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	}
}

func testEnv(ctx context.Context) (*env, *syncBuffer, *syncBuffer) {
	out, errb := &syncBuffer{}, &syncBuffer{}
	return &env{ctx: ctx, stdin: strings.NewReader(""), stdout: out, stderr: errb}, out, errb
}

// TestQueryMergesEveryNode: query and tail ask every node and merge by
// time; -o json is {"events": [...]} with each event as stored; a node
// that does not answer is named and does not fail the command unless no
// node answered.
func TestQueryMergesEveryNode(t *testing.T) {
	c := newCluster3(t)
	ctx := context.Background()

	e, out, errs := testEnv(ctx)
	require.NoError(t, auditQuery(e, c.setup(t, ctx, output.JSON), audit.Filter{}, 0))
	require.Empty(t, errs.String())
	var v struct {
		Events []map[string]any `json:"events"`
	}
	require.NoError(t, json.Unmarshal([]byte(out.String()), &v))
	require.Len(t, v.Events, 30)
	var ids []string
	for i, ev := range v.Events {
		ids = append(ids, ev["id"].(string))
		if i > 0 {
			prev, err := time.Parse(time.RFC3339Nano, v.Events[i-1]["time"].(string))
			require.NoError(t, err)
			this, err := time.Parse(time.RFC3339Nano, ev["time"].(string))
			require.NoError(t, err)
			require.False(t, this.Before(prev), "merged by time")
		}
	}
	require.Equal(t, []string{"node-1:0", "node-2:0", "node-3:0", "node-1:1"}, ids[:4])
	// Each event is the stored object: the node's own bytes.
	raw, err := c.logs["node-2"].Get(0)
	require.NoError(t, err)
	var stored map[string]any
	require.NoError(t, json.Unmarshal(raw, &stored))
	require.Equal(t, stored, v.Events[1])

	t.Run("filters and limit", func(t *testing.T) {
		e, out, errs := testEnv(ctx)
		f := audit.Filter{Subject: "spiffe://unum.test/user/alice-node-3"}
		require.NoError(t, auditQuery(e, c.setup(t, ctx, output.Table), f, 4))
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		require.Len(t, lines, 5, out.String())
		require.Regexp(t, `^TIME +NODE +ACTION +SUBJECT +RESOURCE +OUTCOME +DECISION$`, lines[0])
		require.Regexp(t, `^2026-11-26T10:00:00.001Z +node-3 +id.register +spiffe://unum.test/user/alice-node-3 +id/web/job-0 +allow +-$`, lines[1])
		require.Contains(t, lines[4], "id/web/job-3")
		require.Contains(t, errs.String(), "more events match: showing the first 4")
	})
	t.Run("tail is the newest across nodes", func(t *testing.T) {
		e, out, _ := testEnv(ctx)
		require.NoError(t, auditTail(e, c.setup(t, ctx, output.JSON), audit.Filter{}, 4, false))
		require.NoError(t, json.Unmarshal([]byte(out.String()), &v))
		ids = nil
		for _, ev := range v.Events {
			ids = append(ids, ev["id"].(string))
		}
		require.Equal(t, []string{"node-3:8", "node-1:9", "node-2:9", "node-3:9"}, ids)
	})
	t.Run("a node that does not answer is named", func(t *testing.T) {
		down := &unumv1.Node{Name: "node-4", ApiAddress: "127.0.0.1:1"}
		e, out, errs := testEnv(ctx)
		require.NoError(t, auditQuery(e, c.setup(t, ctx, output.JSON, append(slices.Clone(c.nodes), down)...), audit.Filter{}, 0))
		require.Contains(t, errs.String(), "warning: no answer from node node-4:")
		require.NoError(t, json.Unmarshal([]byte(out.String()), &v))
		require.Len(t, v.Events, 30)

		e, _, errs = testEnv(ctx)
		err := auditQuery(e, c.setup(t, ctx, output.JSON, down), audit.Filter{}, 0)
		require.ErrorContains(t, err, "no node answered")
		require.Contains(t, errs.String(), "node-4")
	})
}

// TestTailFollow: tail -f prints the merged backlog, then events from any
// node as they are recorded, until interrupted (exit 0).
func TestTailFollow(t *testing.T) {
	c := newCluster3(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deny := func(node string) {
		require.NoError(t, c.logs[node].Record(context.Background(), &audit.Event{Kind: audit.KindAuthz, Action: "node.rm",
			Subject: "spiffe://unum.test/user/mallory", Resource: "node/-/node-1", Outcome: audit.Deny}))
	}
	deny("node-3")
	e, out, _ := testEnv(ctx)
	done := make(chan error, 1)
	go func() { done <- auditTail(e, c.setup(t, ctx, output.JSON), audit.Filter{Outcome: audit.Deny}, 3, true) }()

	// The backlog (node-3's denial) first, then a denial on node-2 as it
	// is recorded.
	require.Eventually(t, func() bool { return strings.Contains(out.String(), `"id":"node-3:10"`) }, 20*time.Second, 20*time.Millisecond)
	deny("node-2")
	require.NoError(t, c.logs["node-1"].Record(context.Background(), &audit.Event{Kind: audit.KindAuthz, Action: "node.ls", Outcome: audit.Allow}))
	require.Eventually(t, func() bool { return strings.Contains(out.String(), `"id":"node-2:10"`) }, 20*time.Second, 20*time.Millisecond)
	require.NotContains(t, out.String(), "node.ls", "the filter applies to followed events")
	require.Equal(t, 2, strings.Count(out.String(), "\n"), "one event per line: %s", out.String())
	require.Less(t, strings.Index(out.String(), "node-3:10"), strings.Index(out.String(), "node-2:10"))
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "interrupting tail -f is how it ends")
	case <-time.After(10 * time.Second):
		t.Fatal("tail -f did not stop when interrupted")
	}
}

// TestExportMerged: export writes every event of every node once, as
// stored, one per line, merged by time.
func TestExportMerged(t *testing.T) {
	c := newCluster3(t)
	ctx := context.Background()
	e, out, errs := testEnv(ctx)
	s := c.setup(t, ctx, output.JSON)
	require.NoError(t, exportMerged(ctx, e, s, &unumv1.AuditQueryRequest{}))
	require.Empty(t, errs.String())
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 30)
	var last time.Time
	seen := map[string]bool{}
	for _, l := range lines {
		ev, err := audit.DecodeEvent([]byte(l))
		require.NoError(t, err, "each line is an event exactly as stored")
		require.False(t, ev.Time.Before(last), "merged by time")
		last = ev.Time
		require.False(t, seen[ev.ID])
		seen[ev.ID] = true
		node, i, err := audit.ParseEventID(ev.ID)
		require.NoError(t, err)
		raw, err := c.logs[node].Get(i)
		require.NoError(t, err)
		require.Equal(t, string(raw), l)
	}
}

// TestSelfWitnessSaysSo: a node that is its own only witness (a control
// node countersigning its own checkpoints) is reported as such: its
// countersignature adds nothing against the node itself.
func TestSelfWitnessSaysSo(t *testing.T) {
	v := verifyLine{Node: "n1", OK: true, Entries: 3, Checkpoints: 2, WitnessedSize: 3, Witnesses: []string{"n1"}}
	require.Equal(t, "OK n1: 3 entries, 2 checkpoints, witnessed at size 3 by itself only (no independent witness)", v.String())
	v.Witnesses = []string{"n1", "n2"}
	require.Equal(t, "OK n1: 3 entries, 2 checkpoints, witnessed at size 3", v.String())
	require.False(t, onlySelf("n1", nil))
}
