package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
)

// svcClock is the log's clock: every event is stamped a millisecond after
// the previous one, so time filters have exact answers.
type svcClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *svcClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// svcEnv is one node's log on disk served by a ReadService over real gRPC
// on 127.0.0.1.
type svcEnv struct {
	log     *audit.Log
	client  unumv1.AuditClient
	node    *audit.Signer
	witness *audit.Signer
	keys    *audit.Keys
	// events are the encoded events recorded through record, by index.
	events [][]byte
}

func newSvcSigner(t *testing.T, name string) *audit.Signer {
	t.Helper()
	h, err := audit.NewSigningKeyset()
	require.NoError(t, err)
	s, err := audit.NewSigner(name, h)
	require.NoError(t, err)
	return s
}

func startReadService(t *testing.T, name string) *svcEnv {
	t.Helper()
	env := &svcEnv{node: newSvcSigner(t, name), witness: newSvcSigner(t, "w1")}
	env.keys = &audit.Keys{Nodes: map[string][]byte{name: env.node.PublicKeyset()}, Witnesses: map[string][]byte{"w1": env.witness.PublicKeyset()}}
	clock := &svcClock{t: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
	l, err := audit.Open(audit.Config{Dir: filepath.Join(t.TempDir(), "audit"), Node: name, Signer: env.node, Now: clock.now, CheckpointEvery: time.Hour})
	require.NoError(t, err)
	require.NoError(t, l.RememberKeys(env.keys))
	env.log = l

	srv := grpc.NewServer()
	unumv1.RegisterAuditServer(srv, &audit.ReadService{Log: l, PublishedKeys: func(context.Context) (*audit.Keys, error) { return env.keys, nil }})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	env.client = unumv1.NewAuditClient(cc)
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		<-served
		l.Close()
	})
	return env
}

// record appends events built by mk for i in [0, n) and remembers their
// stored bytes.
func (env *svcEnv) record(t *testing.T, n int, mk func(i int) *audit.Event) {
	t.Helper()
	for i := range n {
		e := mk(len(env.events))
		require.NoError(t, env.log.Record(context.Background(), e))
		raw, err := env.log.Get(uint64(len(env.events)))
		require.NoError(t, err)
		env.events = append(env.events, raw)
		_ = i
	}
}

// mixed events: subjects, actions, outcomes and kinds cycle with
// different periods, so every filter combination selects a different set.
func mixed(i int) *audit.Event {
	subjects := []string{"spiffe://unum.test/user/alice", "spiffe://unum.test/user/bob", "spiffe://unum.test/node/n2"}
	actions := []string{"id.register", "policy.apply", "node.ls", "id.delete"}
	outcomes := []audit.Outcome{audit.Allow, audit.Deny, audit.Allow, audit.Error, audit.Allow}
	kind := audit.KindAuthz
	if i%7 == 0 {
		kind = audit.KindPolicy
	}
	return &audit.Event{Kind: kind, Action: actions[i%len(actions)], Subject: subjects[i%len(subjects)],
		Resource: fmt.Sprintf("id/web/job-%d", i), Outcome: outcomes[i%len(outcomes)], DecisionID: fmt.Sprintf("n1.%016x", i)}
}

// query runs a non-following query and returns the events in order and
// the batch sizes.
func query(t *testing.T, c unumv1.AuditClient, req *unumv1.AuditQueryRequest) ([][]byte, []int, error) {
	t.Helper()
	st, err := c.Query(context.Background(), req)
	require.NoError(t, err)
	var out [][]byte
	var sizes []int
	for {
		b, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, sizes, nil
		}
		if err != nil {
			return out, sizes, err
		}
		out = append(out, b.GetEvents()...)
		sizes = append(sizes, len(b.GetEvents()))
	}
}

// want is the naive answer: the recorded events f matches, in order.
func (env *svcEnv) want(t *testing.T, f audit.Filter) [][]byte {
	var out [][]byte
	for _, raw := range env.events {
		e, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		if f.Match(e) {
			out = append(out, raw)
		}
	}
	return out
}

func TestQueryFilters(t *testing.T) {
	env := startReadService(t, "n1")
	env.record(t, 200, mixed)
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

	tests := []struct {
		name string
		f    audit.Filter
	}{
		{"all", audit.Filter{}},
		{"subject", audit.Filter{Subject: "spiffe://unum.test/user/bob"}},
		{"action", audit.Filter{Action: "policy.apply"}},
		{"outcome", audit.Filter{Outcome: audit.Deny}},
		{"kind", audit.Filter{Kind: audit.KindPolicy}},
		{"this node", audit.Filter{Node: "n1"}},
		{"decision", audit.Filter{DecisionID: fmt.Sprintf("n1.%016x", 42)}},
		{"since", audit.Filter{Since: t0.Add(150 * time.Millisecond)}},
		{"until", audit.Filter{Until: t0.Add(20 * time.Millisecond)}},
		{"range", audit.Filter{Since: t0.Add(50 * time.Millisecond), Until: t0.Add(60 * time.Millisecond)}},
		{"combined", audit.Filter{Subject: "spiffe://unum.test/user/alice", Outcome: audit.Allow, Action: "id.register"}},
		{"nothing matches", audit.Filter{Subject: "spiffe://unum.test/user/nobody"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := env.want(t, tt.f)
			if !strings.Contains("all/this node/nothing matches", tt.name) {
				require.True(t, len(want) > 0 && len(want) < len(env.events), "the case must select a proper subset")
			}
			got, _, err := query(t, env.client, &unumv1.AuditQueryRequest{Filter: audit.FilterToProto(tt.f)})
			require.NoError(t, err)
			require.Equal(t, want, got)

			// limit: the first ones; tail: the newest ones, oldest first.
			got, _, err = query(t, env.client, &unumv1.AuditQueryRequest{Filter: audit.FilterToProto(tt.f), Limit: 3})
			require.NoError(t, err)
			require.Equal(t, want[:min(3, len(want))], got)
			got, _, err = query(t, env.client, &unumv1.AuditQueryRequest{Filter: audit.FilterToProto(tt.f), Limit: 4, Tail: true})
			require.NoError(t, err)
			require.Equal(t, want[max(0, len(want)-4):], got)
		})
	}

	t.Run("tail defaults to ten", func(t *testing.T) {
		got, _, err := query(t, env.client, &unumv1.AuditQueryRequest{Tail: true})
		require.NoError(t, err)
		require.Equal(t, env.events[190:], got)
	})
	t.Run("another node's filter matches nothing here", func(t *testing.T) {
		got, _, err := query(t, env.client, &unumv1.AuditQueryRequest{Filter: &unumv1.AuditFilter{Node: "n2"}})
		require.NoError(t, err)
		require.Empty(t, got)
	})
}

func TestQueryBatchesAreBounded(t *testing.T) {
	env := startReadService(t, "n1")
	env.record(t, 600, mixed)
	got, sizes, err := query(t, env.client, &unumv1.AuditQueryRequest{})
	require.NoError(t, err)
	require.Equal(t, env.events, got)
	require.Equal(t, []int{256, 256, 88}, sizes)

	// 40 events of about 60 KiB: at most 1 MiB a batch.
	big := strings.Repeat("x", 60<<10)
	env.record(t, 40, func(i int) *audit.Event {
		e := mixed(i).WithDetails(map[string]string{"pad": big})
		return &e
	})
	st, err := env.client.Query(context.Background(), &unumv1.AuditQueryRequest{Tail: true, Limit: 40})
	require.NoError(t, err)
	var n int
	for {
		b, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		bytes := 0
		for _, e := range b.GetEvents() {
			bytes += len(e)
		}
		require.LessOrEqual(t, bytes, 1<<20)
		n += len(b.GetEvents())
	}
	require.Equal(t, 40, n)
}

func TestQueryFollow(t *testing.T) {
	env := startReadService(t, "n1")
	env.record(t, 30, mixed)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deny := &unumv1.AuditFilter{Outcome: "deny"}
	st, err := env.client.Query(ctx, &unumv1.AuditQueryRequest{Filter: deny, Tail: true, Limit: 2, Follow: true})
	require.NoError(t, err)

	want := env.want(t, audit.Filter{Outcome: audit.Deny})
	b, err := st.Recv()
	require.NoError(t, err)
	require.Equal(t, want[len(want)-2:], b.GetEvents(), "the backlog: the newest two")
	b, err = st.Recv()
	require.NoError(t, err)
	require.Empty(t, b.GetEvents(), "an empty batch says the reader is caught up")

	// New events arrive as they are recorded, matching ones only, and the
	// tail's limit does not apply to them.
	env.record(t, 20, mixed)
	all := env.want(t, audit.Filter{Outcome: audit.Deny})
	var got [][]byte
	for len(got) < len(all)-len(want) {
		b, err := st.Recv()
		require.NoError(t, err)
		got = append(got, b.GetEvents()...)
	}
	require.Equal(t, all[len(want):], got)
	cancel()
	_, err = st.Recv()
	require.Equal(t, codes.Canceled, status.Code(err))

	t.Run("a limit without tail ends a followed stream", func(t *testing.T) {
		st, err := env.client.Query(context.Background(), &unumv1.AuditQueryRequest{Limit: 52, Follow: true})
		require.NoError(t, err)
		var n int
		for {
			b, err := st.Recv()
			require.NoError(t, err)
			if len(b.GetEvents()) == 0 {
				break
			}
			n += len(b.GetEvents())
		}
		require.Equal(t, 50, n, "the backlog, then caught up")
		env.record(t, 5, mixed)
		for {
			b, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			n += len(b.GetEvents())
		}
		require.Equal(t, 52, n)
	})
}

func TestQueryBadInput(t *testing.T) {
	env := startReadService(t, "n1")
	for _, tt := range []struct {
		name    string
		f       *unumv1.AuditFilter
		wantErr string
	}{
		{"outcome", &unumv1.AuditFilter{Outcome: "denied"}, "filter.outcome"},
		{"kind", &unumv1.AuditFilter{Kind: "authorization"}, "filter.kind"},
		{"negative since", &unumv1.AuditFilter{SinceUnixNano: -1}, "filter.since_unix_nano"},
		{"empty range", &unumv1.AuditFilter{SinceUnixNano: 20, UntilUnixNano: 10}, "filter.until_unix_nano"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := query(t, env.client, &unumv1.AuditQueryRequest{Filter: tt.f})
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// witness countersigns the log's newest checkpoint as the control plane
// would and hands it back to the log.
func (env *svcEnv) countersign(t *testing.T) *audit.SignedCheckpoint {
	t.Helper()
	sc, err := env.log.Checkpoint(context.Background())
	require.NoError(t, err)
	c, err := audit.ParseCheckpoint(sc.Marshal())
	require.NoError(t, err)
	require.NoError(t, env.witness.Cosign(c, time.Now()))
	require.NoError(t, env.log.StoreCosigned(c))
	return c
}

func TestVerify(t *testing.T) {
	env := startReadService(t, "n1")
	env.record(t, 37, mixed)
	w := env.countersign(t)
	env.record(t, 21, mixed)

	resp, err := env.client.Verify(context.Background(), &unumv1.AuditVerifyRequest{FromSize: w.Size})
	require.NoError(t, err)
	require.True(t, resp.GetOk(), resp.GetProblem())
	require.Equal(t, "n1", resp.GetNode())
	require.Equal(t, uint64(58), resp.GetEntries())
	sc, err := audit.ParseCheckpoint(resp.GetCheckpoint())
	require.NoError(t, err)
	require.NoError(t, env.keys.VerifyNode(sc))
	require.Equal(t, uint64(58), sc.Size, "the answer covers the whole log")
	proof, err := audit.HashesFromBytes(resp.GetConsistencyProof())
	require.NoError(t, err)
	require.NoError(t, audit.VerifyConsistency(w.Size, sc.Size, w.Root, sc.Root, proof))

	t.Run("a trusted size beyond the log is reported, not proved", func(t *testing.T) {
		resp, err := env.client.Verify(context.Background(), &unumv1.AuditVerifyRequest{FromSize: 100})
		require.NoError(t, err)
		require.False(t, resp.GetOk())
		require.Equal(t, uint64(58), resp.GetBadIndex())
		require.Contains(t, resp.GetProblem(), "size 100 was witnessed")
		require.Empty(t, resp.GetConsistencyProof())
	})
	t.Run("keys that do not match the log fail it", func(t *testing.T) {
		other := startReadService(t, "n1")
		other.record(t, 3, mixed)
		other.countersign(t)
		other.keys.Nodes["n1"] = env.node.PublicKeyset()
		resp, err := other.client.Verify(context.Background(), &unumv1.AuditVerifyRequest{})
		require.NoError(t, err)
		require.False(t, resp.GetOk())
		require.NotEmpty(t, resp.GetProblem())
	})
}

func TestProof(t *testing.T) {
	env := startReadService(t, "n1")
	env.record(t, 25, mixed)
	w := env.countersign(t)
	env.record(t, 10, mixed)

	bundle := func(t *testing.T, id string) *audit.ProofResult {
		resp, err := env.client.Proof(context.Background(), &unumv1.AuditProofRequest{EventId: id})
		require.NoError(t, err)
		path, err := audit.HashesFromBytes(resp.GetInclusionProof())
		require.NoError(t, err)
		b, err := audit.NewProofBundle(resp.GetEvent(), resp.GetIndex(), resp.GetCheckpoint(), path)
		require.NoError(t, err)
		data, err := json.MarshalIndent(b, "", "  ")
		require.NoError(t, err)
		res, err := audit.VerifyProofBundle(data, env.keys)
		require.NoError(t, err)
		return res
	}
	t.Run("a witnessed event is proved against the witnessed checkpoint", func(t *testing.T) {
		res := bundle(t, "n1:7")
		require.Equal(t, env.events[7], mustEncode(t, res.Event))
		require.Equal(t, w.Size, res.Checkpoint.Size)
		require.Equal(t, []string{"w1"}, res.Witnesses)
	})
	t.Run("a newer event is proved against a checkpoint signed for it", func(t *testing.T) {
		res := bundle(t, "n1:30")
		require.Equal(t, env.events[30], mustEncode(t, res.Event))
		require.Equal(t, uint64(35), res.Checkpoint.Size)
		require.Empty(t, res.Witnesses)
	})
	for _, tt := range []struct {
		id      string
		code    codes.Code
		wantErr string
	}{
		{"n2:3", codes.InvalidArgument, "ask node n2"},
		{"n1", codes.InvalidArgument, "event_id"},
		{"n1:x", codes.InvalidArgument, "event_id"},
		{"n1:35", codes.NotFound, "35 entries"},
	} {
		t.Run(tt.id, func(t *testing.T) {
			_, err := env.client.Proof(context.Background(), &unumv1.AuditProofRequest{EventId: tt.id})
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func mustEncode(t *testing.T, e *audit.Event) []byte {
	t.Helper()
	b, err := e.Encode()
	require.NoError(t, err)
	return b
}
