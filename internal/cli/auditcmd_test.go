package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
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
func stepClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
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
	t.Helper()
	l, err := audit.Open(audit.Config{Dir: filepath.Join(dir, "audit"), Node: s.Name(), Signer: s, Now: stepClock(), CheckpointEvery: time.Hour})
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
		require.Contains(t, v.String(), "FAIL n1: the log's newest checkpoint (size 25) does not extend the witnessed one (size 20)")
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
		require.Equal(t, "FAIL n1: index 15: the log ends at 15 entries but a checkpoint of size 20 was witnessed: witnessed entries are gone (truncated)", v.String())
	})
	t.Run("a consistency proof that does not fit", func(t *testing.T) {
		resp := ask(t, honest, w.Size)
		resp.ConsistencyProof[0][0] ^= 1
		v := checkVerifyAnswer("n1", f.keys, w, resp)
		require.False(t, v.OK)
		require.Contains(t, v.Problem, "does not extend the witnessed one")
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
	t.Run("a witnessed checkpoint whose countersignature does not verify", func(t *testing.T) {
		bad, err := audit.ParseCheckpoint(w.Marshal())
		require.NoError(t, err)
		require.NoError(t, auditSigner(t, "w1").Cosign(bad, time.Now()))
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
