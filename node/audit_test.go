package node

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
)

// TestNodeLogsWitnessed: both nodes' logs get witnessed by the control
// plane on their own (node-1's key registered by init, node-2's by its
// join): Witnessed returns a checkpoint of each, signed by its node's
// registered key and countersigned by node-1's published witness key.
func TestNodeLogsWitnessed(t *testing.T) {
	cc, err := cl.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	ac := unumv1.NewAuditClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	kr, err := ac.Keys(ctx, &unumv1.AuditKeysRequest{})
	require.NoError(t, err)
	keys, err := audit.KeysFromProto(kr)
	require.NoError(t, err)
	for _, name := range []string{"node-1", "node-2"} {
		require.Contains(t, keys.Nodes, name)
	}
	require.Contains(t, keys.Witnesses, "node-1")
	pub, err := auditPublicKeyset(Layout{Dir: cl.nodes["node-2"].dir}.AuditKey())
	require.NoError(t, err)
	require.Equal(t, pub, keys.Nodes["node-2"], "node-2's key as registered at its join")

	for _, name := range []string{"node-1", "node-2"} {
		var sc *audit.SignedCheckpoint
		require.Eventually(t, func() bool {
			resp, err := ac.Witnessed(ctx, &unumv1.AuditWitnessedRequest{Node: name})
			if err != nil || len(resp.GetCheckpoints()) != 1 {
				return false
			}
			sc, err = audit.ParseCheckpoint(resp.GetCheckpoints()[0])
			return err == nil
		}, 30*time.Second, 100*time.Millisecond, "no witnessed checkpoint of %s", name)
		require.Equal(t, name, sc.Node)
		require.NoError(t, keys.VerifyNode(sc))
		ws, err := keys.VerifiedWitnesses(sc)
		require.NoError(t, err)
		require.Equal(t, []string{"node-1"}, ws)
	}
}

// TestComputeNodeIsNoWitness: a compute node serves no witness half.
func TestComputeNodeIsNoWitness(t *testing.T) {
	cc, err := cl.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes, err := unumv1.NewClusterClient(cc).ListNodes(ctx, &unumv1.ListNodesRequest{})
	require.NoError(t, err)
	var addr string
	for _, n := range nodes.GetNodes() {
		if n.GetName() == "node-2" {
			addr = n.GetApiAddress()
		}
	}
	n2 := asAdminTo(t, spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("unum.test"), "/node/node-2"), addr)
	_, err = unumv1.NewAuditClient(n2).Keys(ctx, &unumv1.AuditKeysRequest{})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "not a control node")
}

// TestAuditRetention: the retention settings prune by age and by size on
// a real log, never past the newest witnessed checkpoint.
func TestAuditRetention(t *testing.T) {
	ctx := context.Background()
	h, err := audit.NewSigningKeyset()
	require.NoError(t, err)
	signer, err := audit.NewSigner("rn", h)
	require.NoError(t, err)
	wh, err := audit.NewSigningKeyset()
	require.NoError(t, err)
	witness, err := audit.NewSigner("w", wh)
	require.NoError(t, err)
	// The log stamps events with its own clock: the test sets it.
	var clock atomic.Int64
	l, err := audit.Open(audit.Config{Dir: filepath.Join(t.TempDir(), "audit"), Node: "rn", Signer: signer, Logger: quietLog(),
		Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }})
	require.NoError(t, err)
	defer l.Close()

	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock.Store(now.UnixNano())
	record := func(from, to int, at time.Time) {
		clock.Store(at.UnixNano())
		defer clock.Store(now.UnixNano())
		for i := from; i < to; i++ {
			e := audit.Event{Kind: audit.KindNode, Action: "test.event", Outcome: audit.Allow, Time: at, Resource: fmt.Sprintf("node/-/%03d", i)}
			require.NoError(t, l.Record(ctx, &e))
		}
	}
	witnessNow := func() uint64 {
		sc, err := l.Checkpoint(ctx)
		require.NoError(t, err)
		cs := *sc
		require.NoError(t, witness.Cosign(&cs, now))
		require.NoError(t, l.StoreCosigned(&cs))
		return sc.Size
	}
	record(0, 10, now.Add(-3*time.Hour))
	record(10, 20, now.Add(-30*time.Minute))

	// Nothing is witnessed: nothing goes, whatever the settings say.
	to, err := pruneForRetention(ctx, l, audit.Settings{RetentionSeconds: 60}, now)
	require.NoError(t, err)
	require.Zero(t, to)
	require.Zero(t, l.Pruned())

	require.Equal(t, uint64(20), witnessNow())
	record(20, 30, now.Add(-2*time.Hour)) // old, but not witnessed yet

	// No retention configured: nothing goes.
	to, err = pruneForRetention(ctx, l, audit.DefaultSettings(), now)
	require.NoError(t, err)
	require.Zero(t, to)

	// By age: the entries older than an hour, the first 10.
	to, err = pruneForRetention(ctx, l, audit.Settings{RetentionSeconds: 3600}, now)
	require.NoError(t, err)
	require.Equal(t, uint64(10), to)
	require.Equal(t, uint64(10), l.Pruned())

	// By size: a budget of one byte keeps nothing the witness has seen,
	// and nothing it has not (20..30 and the prune event stay).
	to, err = pruneForRetention(ctx, l, audit.Settings{RetentionBytes: 1}, now)
	require.NoError(t, err)
	require.Equal(t, uint64(20), to)
	require.Equal(t, uint64(20), l.Pruned())

	// Once witnessed, they go too; a huge age limit does not overflow. A
	// prune waits until the log grew past the witnessed checkpoint, whose
	// record a prune at its size would replace.
	w := witnessNow()
	to, err = pruneForRetention(ctx, l, audit.Settings{RetentionBytes: 1}, now)
	require.NoError(t, err)
	require.Zero(t, to)
	record(40, 41, now)
	to, err = pruneForRetention(ctx, l, audit.Settings{RetentionBytes: 1, RetentionSeconds: 1 << 62}, now)
	require.NoError(t, err)
	require.Equal(t, w, to)
	require.Equal(t, w, l.Pruned())
	rep := l.Verify(ctx, &audit.Keys{Nodes: map[string][]byte{"rn": signer.PublicKeyset()}, Witnesses: map[string][]byte{"w": witness.PublicKeyset()}})
	require.True(t, rep.OK, rep.String())
}

// TestAuditSettingsFollowHeartbeats: the settings a heartbeat answer
// carries are applied; invalid or absent ones leave the current ones.
func TestAuditSettingsFollowHeartbeats(t *testing.T) {
	n := &node{log: quietLog(), retentionKick: make(chan struct{}, 1)}
	require.Equal(t, audit.OnFailureDeny, n.auditOnFailure(), "deny until told otherwise")
	n.applyAuditSettings(&unumv1.AuditConfig{OnFailure: audit.OnFailureAllowAndAlert, RetentionSeconds: 60})
	require.Equal(t, audit.OnFailureAllowAndAlert, n.auditOnFailure())
	require.Equal(t, int64(60), n.currentAuditSettings().RetentionSeconds)
	select {
	case <-n.retentionKick:
	default:
		t.Fatal("a retention change wakes the retention loop")
	}
	n.applyAuditSettings(nil)
	n.applyAuditSettings(&unumv1.AuditConfig{OnFailure: "ignore"})
	require.Equal(t, audit.OnFailureAllowAndAlert, n.auditOnFailure())
	n.applyAuditSettings(&unumv1.AuditConfig{})
	require.Equal(t, audit.OnFailureDeny, n.auditOnFailure())
}
