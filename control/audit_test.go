package control

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/rpc"
)

// auditNode is a node's log as the witness sees it: a Merkle tree of
// leaves and checkpoints signed with the node's key. Its leaves are
// arbitrary: the witness never sees entries, only roots and proofs.
type auditNode struct {
	t      *testing.T
	name   string
	signer *audit.Signer
	leaves []audit.Hash
	// seed makes this tree's leaves differ from another's.
	seed byte
}

// newAuditNode makes a member node name with a registered checkpoint key,
// written as a join writes them.
func newAuditNode(t *testing.T, name string) *auditNode {
	t.Helper()
	n := unregisteredAuditNode(t, name)
	_, err := h.etcd.Client().Put(ctxT(t), auditNodeKeyKey(name), mustJSON(NewAuditKeyRecord(name, n.signer.PublicKeyset(), AuditKeyViaJoin, time.Now())))
	require.NoError(t, err)
	return n
}

// unregisteredAuditNode makes a member node name whose key is not
// registered (a node of a cluster made before audit).
func unregisteredAuditNode(t *testing.T, name string) *auditNode {
	t.Helper()
	s, err := newAuditSigner(name)
	require.NoError(t, err)
	_, err = h.etcd.Client().Put(ctxT(t), nodeKey(name), mustJSON(NodeRecord{Name: name, SPIFFEID: "spiffe://unum.test/node/" + name, Roles: []string{"compute"}}))
	require.NoError(t, err)
	return &auditNode{t: t, name: name, signer: s}
}

// grow appends k leaves.
func (n *auditNode) grow(k int) *auditNode {
	for range k {
		var b [9]byte
		b[0] = n.seed
		binary.BigEndian.PutUint64(b[1:], uint64(len(n.leaves)))
		n.leaves = append(n.leaves, audit.LeafHash(b[:]))
	}
	return n
}

// fork is another history of the same node and key: the first keep leaves
// shared, then different ones.
func (n *auditNode) fork(keep int) *auditNode {
	f := &auditNode{t: n.t, name: n.name, signer: n.signer, leaves: append([]audit.Hash(nil), n.leaves[:keep]...), seed: n.seed + 1}
	return f
}

func (n *auditNode) rangeHash(lo, hi uint64) (audit.Hash, error) {
	return audit.RootOf(n.leaves[lo:hi]), nil
}

// request is a submission of the checkpoint at size with a proof from
// from, signed with the node's key.
func (n *auditNode) request(size, from uint64) *unumv1.SubmitCheckpointRequest {
	n.t.Helper()
	sc, err := n.signer.Sign(audit.Checkpoint{Node: n.name, Size: size, Root: audit.RootOf(n.leaves[:size]), Time: time.Now().UTC()})
	require.NoError(n.t, err)
	return n.requestFor(sc, from)
}

func (n *auditNode) requestFor(sc *audit.SignedCheckpoint, from uint64) *unumv1.SubmitCheckpointRequest {
	n.t.Helper()
	req := &unumv1.SubmitCheckpointRequest{Checkpoint: sc.Marshal(), FromSize: from, PublicKeyset: n.signer.PublicKeyset()}
	if from <= sc.Size && sc.Size <= uint64(len(n.leaves)) {
		proof, err := audit.ConsistencyProof(from, sc.Size, n.rangeHash)
		require.NoError(n.t, err)
		for _, p := range proof {
			req.ConsistencyProof = append(req.ConsistencyProof, p[:])
		}
	}
	return req
}

func auditClient(t *testing.T, path string) unumv1.AuditClient {
	return unumv1.NewAuditClient(conn(t, path))
}

// witnessedOf is the stored witnessed checkpoint of node (nil: none).
func witnessedOf(t *testing.T, node string) *audit.SignedCheckpoint {
	t.Helper()
	resp, err := auditClient(t, "/user/admin").Witnessed(ctxT(t), &unumv1.AuditWitnessedRequest{Node: node})
	require.NoError(t, err)
	if len(resp.GetCheckpoints()) == 0 {
		return nil
	}
	require.Len(t, resp.GetCheckpoints(), 1)
	sc, err := audit.ParseCheckpoint(resp.GetCheckpoints()[0])
	require.NoError(t, err)
	return sc
}

func publishedKeys(t *testing.T) *audit.Keys {
	t.Helper()
	resp, err := auditClient(t, "/user/admin").Keys(ctxT(t), &unumv1.AuditKeysRequest{})
	require.NoError(t, err)
	keys, err := audit.KeysFromProto(resp)
	require.NoError(t, err)
	return keys
}

// alerts are the audit.alert events about node.
func alerts(t *testing.T, node string) []witnessAlert {
	t.Helper()
	var out []witnessAlert
	for _, e := range h.findEvents(t, audit.ActionAuditAlert, nil) {
		var d witnessAlert
		require.NoError(t, json.Unmarshal(e.Details, &d))
		if d.Node == node {
			require.Equal(t, audit.KindAudit, e.Kind)
			require.Equal(t, audit.Deny, e.Outcome)
			out = append(out, d)
		}
	}
	return out
}

// TestWitnessAcceptsGoodSequence: a node's growing log is countersigned
// by the witness, each countersignature verifies under the published
// keys, and Witnessed serves the newest.
func TestWitnessAcceptsGoodSequence(t *testing.T) {
	n := newAuditNode(t, "aw-good").grow(40)
	ac := auditClient(t, "/node/aw-good")
	before := counters(t)
	var from uint64
	for _, size := range []uint64{0, 3, 3, 10, 33, 40} {
		resp, err := ac.SubmitCheckpoint(ctxT(t), n.request(size, from))
		require.NoError(t, err, "size %d", size)
		sc, err := audit.ParseCheckpoint(resp.GetCosigned())
		require.NoError(t, err)
		require.Equal(t, size, sc.Size)
		keys := publishedKeys(t)
		require.NoError(t, keys.VerifyNode(sc))
		ws, err := keys.VerifiedWitnesses(sc)
		require.NoError(t, err)
		require.Equal(t, []string{"node-1"}, ws)
		require.Equal(t, sc.Marshal(), witnessedOf(t, "aw-good").Marshal())
		from = size
	}
	require.Equal(t, 6.0, delta(before, counters(t))[`unum_audit_witness_submissions_total{outcome="witnessed"}`])
	require.Empty(t, alerts(t, "aw-good"))

	// Witnessed lists every node's, by name.
	resp, err := auditClient(t, "/user/admin").Witnessed(ctxT(t), &unumv1.AuditWitnessedRequest{})
	require.NoError(t, err)
	var names []string
	for _, note := range resp.GetCheckpoints() {
		sc, err := audit.ParseCheckpoint(note)
		require.NoError(t, err)
		names = append(names, sc.Node)
	}
	require.IsIncreasing(t, names)
	require.Contains(t, names, "aw-good")
}

// TestWitnessRefusesForks (T-055): once a checkpoint is witnessed, another
// history signed with the node's own key is refused, whatever proof comes
// with it, with FailedPrecondition, an audit.alert event and the metric;
// the witnessed checkpoint does not change.
func TestWitnessRefusesForks(t *testing.T) {
	n := newAuditNode(t, "aw-fork").grow(30)
	ac := auditClient(t, "/node/aw-fork")
	_, err := ac.SubmitCheckpoint(ctxT(t), n.request(10, 0))
	require.NoError(t, err)
	witnessed := witnessedOf(t, "aw-fork")
	forked := n.fork(6).grow(24)
	before := counters(t)

	_, err = ac.SubmitCheckpoint(ctxT(t), forked.request(10, 10))
	requireCode(t, err, codes.FailedPrecondition, "another root than the witnessed one")
	// The forked tree's own, honest-looking proof from size 10.
	_, err = ac.SubmitCheckpoint(ctxT(t), forked.request(20, 10))
	requireCode(t, err, codes.FailedPrecondition, "does not extend the witnessed one")
	// The real tree's proof with the forked root.
	req := forked.request(20, 10)
	req.ConsistencyProof = n.requestFor(mustSign(t, n, 20), 10).ConsistencyProof
	_, err = ac.SubmitCheckpoint(ctxT(t), req)
	requireCode(t, err, codes.FailedPrecondition, "(fork)")
	require.Equal(t, witnessed.Body(), witnessedOf(t, "aw-fork").Body())
	require.Equal(t, 3.0, delta(before, counters(t))[`unum_audit_witness_submissions_total{outcome="fork"}`])
	got := alerts(t, "aw-fork")
	require.Len(t, got, 3)
	for _, a := range got {
		require.Equal(t, "fork", a.Refusal)
		require.Equal(t, uint64(10), a.WitnessedSize)
		require.Equal(t, "node-1", a.Witness)
		require.NotEqual(t, a.WitnessedRoot, a.SubmittedRoot)
	}
	// The honest log goes on: the same size signed again, and beyond.
	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(10, 10))
	require.NoError(t, err)
	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(30, 10))
	require.NoError(t, err)
}

func mustSign(t *testing.T, n *auditNode, size uint64) *audit.SignedCheckpoint {
	sc, err := n.signer.Sign(audit.Checkpoint{Node: n.name, Size: size, Root: audit.RootOf(n.leaves[:size]), Time: time.Now().UTC()})
	require.NoError(t, err)
	return sc
}

// TestWitnessRefusesTruncation (T-056): a log cut back below what was
// witnessed is refused, even signed by the node's key and with entries
// "pruned" back in; un-pruning is a fork.
func TestWitnessRefusesTruncation(t *testing.T) {
	n := newAuditNode(t, "aw-trunc").grow(20)
	ac := auditClient(t, "/node/aw-trunc")
	_, err := ac.SubmitCheckpoint(ctxT(t), n.request(5, 0))
	require.NoError(t, err)
	sc, err := n.signer.Sign(audit.Checkpoint{Node: n.name, Size: 12, Root: audit.RootOf(n.leaves[:12]), Time: time.Now().UTC(), Pruned: 5})
	require.NoError(t, err)
	_, err = ac.SubmitCheckpoint(ctxT(t), n.requestFor(sc, 5))
	require.NoError(t, err)
	before := counters(t)

	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(11, 12))
	requireCode(t, err, codes.FailedPrecondition, "smaller than the witnessed size 12")
	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(0, 12))
	requireCode(t, err, codes.FailedPrecondition, "(truncation)")
	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(15, 12)) // pruned 0 < 5
	requireCode(t, err, codes.FailedPrecondition, "says 0 entries are pruned, the witnessed one 5")

	d := delta(before, counters(t))
	require.Equal(t, 2.0, d[`unum_audit_witness_submissions_total{outcome="truncation"}`])
	require.Equal(t, 1.0, d[`unum_audit_witness_submissions_total{outcome="fork"}`])
	got := alerts(t, "aw-trunc")
	require.Len(t, got, 3)
	require.Equal(t, "truncation", got[0].Refusal)
	require.Equal(t, uint64(11), got[0].SubmittedSize)
	require.Equal(t, uint64(12), got[0].WitnessedSize)
	require.Equal(t, uint64(12), witnessedOf(t, "aw-trunc").Size)
}

// TestWitnessKeyRegistration (T-057): a node's key is registered once
// (here on first use, recorded); a log re-signed with another key is
// refused whether or not that key is offered with it; a node cannot
// submit, or register a key for, another node; a non-member cannot
// register at all; a private keyset is no key.
func TestWitnessKeyRegistration(t *testing.T) {
	n := unregisteredAuditNode(t, "aw-tofu").grow(20)
	ac := auditClient(t, "/node/aw-tofu")
	require.NotContains(t, publishedKeys(t).Nodes, "aw-tofu")

	// Without a key in the submission there is nothing to trust.
	req := n.request(5, 0)
	req.PublicKeyset = nil
	_, err := ac.SubmitCheckpoint(ctxT(t), req)
	requireCode(t, err, codes.FailedPrecondition, "has no registered audit key")

	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(5, 0))
	require.NoError(t, err)
	require.Equal(t, n.signer.PublicKeyset(), publishedKeys(t).Nodes["aw-tofu"])
	reg := h.findEvents(t, audit.ActionAuditRegisterKey, func(e *audit.Event) bool { return e.Resource == "node/-/aw-tofu" })
	require.Len(t, reg, 1)
	require.Equal(t, "spiffe://unum.test/node/aw-tofu", reg[0].Subject)

	// A re-signed forgery of the same history: another key, offered or not.
	forger := &auditNode{t: t, name: n.name, leaves: n.leaves}
	forger.signer, err = newAuditSigner(n.name)
	require.NoError(t, err)
	before := counters(t)
	_, err = ac.SubmitCheckpoint(ctxT(t), forger.request(10, 5))
	requireCode(t, err, codes.FailedPrecondition, "its registered key is")
	req = forger.request(10, 5)
	req.PublicKeyset = n.signer.PublicKeyset()
	_, err = ac.SubmitCheckpoint(ctxT(t), req)
	requireCode(t, err, codes.FailedPrecondition, "not signed by its published key")
	require.Equal(t, 2.0, delta(before, counters(t))[`unum_audit_witness_submissions_total{outcome="signature"}`])
	require.Equal(t, n.signer.PublicKeyset(), publishedKeys(t).Nodes["aw-tofu"], "the registered key never changes")
	require.Len(t, alerts(t, "aw-tofu"), 2)

	// Another node's identity: neither its checkpoints nor its key.
	other := unregisteredAuditNode(t, "aw-tofu-victim").grow(3)
	_, err = ac.SubmitCheckpoint(ctxT(t), other.request(3, 0))
	requireCode(t, err, codes.PermissionDenied, "node aw-tofu submitted a checkpoint of node aw-tofu-victim")
	require.NotContains(t, publishedKeys(t).Nodes, "aw-tofu-victim")
	got := alerts(t, "aw-tofu-victim")
	require.Len(t, got, 1)
	require.Equal(t, "caller", got[0].Refusal)

	// Users and workloads are not nodes.
	_, err = auditClient(t, "/user/admin").SubmitCheckpoint(ctxT(t), other.request(3, 0))
	requireCode(t, err, codes.PermissionDenied, "")

	// A node that is not a member registers nothing.
	ghost, err := newAuditSigner("aw-ghost")
	require.NoError(t, err)
	gn := &auditNode{t: t, name: "aw-ghost", signer: ghost}
	_, err = auditClient(t, "/node/aw-ghost").SubmitCheckpoint(ctxT(t), gn.request(0, 0))
	requireCode(t, err, codes.PermissionDenied, "not a member")
	require.NotContains(t, publishedKeys(t).Nodes, "aw-ghost")

	// A private keyset is refused: secrets never go to etcd.
	priv := unregisteredAuditNode(t, "aw-private")
	req = priv.request(0, 0)
	req.PublicKeyset = []byte("not a keyset")
	_, err = auditClient(t, "/node/aw-private").SubmitCheckpoint(ctxT(t), req)
	requireCode(t, err, codes.InvalidArgument, "public_keyset")
}

// TestWitnessRetriesStaleBase: a proof from a size the witness does not
// hold is no accusation: Aborted, no alert; from the witnessed size it
// succeeds.
func TestWitnessRetriesStaleBase(t *testing.T) {
	n := newAuditNode(t, "aw-stale").grow(20)
	ac := auditClient(t, "/node/aw-stale")
	_, err := ac.SubmitCheckpoint(ctxT(t), n.request(8, 3))
	requireCode(t, err, codes.Aborted, "retry")
	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(8, 0))
	require.NoError(t, err)
	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(15, 3))
	requireCode(t, err, codes.Aborted, "it holds size 8")
	_, err = ac.SubmitCheckpoint(ctxT(t), n.request(15, 8))
	require.NoError(t, err)
	require.Empty(t, alerts(t, "aw-stale"))
	// Malformed input is refused without an alert either.
	_, err = ac.SubmitCheckpoint(ctxT(t), &unumv1.SubmitCheckpointRequest{Checkpoint: []byte("junk")})
	requireCode(t, err, codes.InvalidArgument, "checkpoint")
	req := n.request(16, 15)
	req.ConsistencyProof = append(req.ConsistencyProof, []byte("short"))
	_, err = ac.SubmitCheckpoint(ctxT(t), req)
	requireCode(t, err, codes.InvalidArgument, "consistency proof hash")
}

// testWitness is a second witness on the harness's etcd, with its own key
// and round, driven by the test.
func testWitness(t *testing.T, name string, round time.Duration) *AuditWitness {
	t.Helper()
	s, err := newAuditSigner(name)
	require.NoError(t, err)
	w := newAuditWitness(h.srv, s, round)
	require.NoError(t, w.publishKey(ctxT(t)))
	return w
}

// asNode is a context whose verified caller is node name (what the rpc
// layer hands a handler).
func asNode(ctx context.Context, name string) context.Context {
	id := "spiffe://unum.test/node/" + name
	return rpc.WithCaller(ctx, rpc.Caller{Principal: identity.Principal{ID: spiffeid.RequireFromString(id), Kind: identity.KindNode, Name: name}})
}

func (w *AuditWitness) queued() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.mu.queue)
}

// TestWitnessOneTransactionPerRound: checkpoints of many nodes submitted
// at once are stored by one etcd transaction (one revision).
func TestWitnessOneTransactionPerRound(t *testing.T) {
	w := testWitness(t, "aw-round", time.Hour)
	const nodes = 24
	var ns []*auditNode
	for i := range nodes {
		ns = append(ns, newAuditNode(t, fmt.Sprintf("aw-round-%02d", i)).grow(5+i))
	}
	rev := func() int64 {
		resp, err := h.etcd.Client().Get(ctxT(t), "/unum/audit/none")
		require.NoError(t, err)
		return resp.Header.Revision
	}
	before := rev()
	errs := make(chan error, nodes)
	for _, n := range ns {
		go func() {
			_, err := w.SubmitCheckpoint(asNode(ctxT(t), n.name), n.request(uint64(len(n.leaves)), 0))
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return w.queued() == nodes }, 10*time.Second, 5*time.Millisecond)
	w.flush(ctxT(t))
	for range nodes {
		require.NoError(t, <-errs)
	}
	require.Equal(t, before+1, rev(), "one transaction for the round")
	resp, err := h.etcd.Client().Get(ctxT(t), prefixAuditWitnessed+"aw-round-", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, nodes)
	for _, kv := range resp.Kvs {
		require.Equal(t, before+1, kv.ModRevision, string(kv.Key))
	}
}

// TestTwoWitnessesRace (T-058): two control nodes witnessing the same
// nodes at once never overwrite each other: every step, two different
// valid checkpoints from one base go to the two witnesses together;
// exactly one is stored, the other is told to retry; the stored sizes
// only grow, and what is stored at the end is the newest acknowledged.
func TestTwoWitnessesRace(t *testing.T) {
	wa, wb := testWitness(t, "aw-wa", 20*time.Millisecond), testWitness(t, "aw-wb", 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range []*AuditWitness{wa, wb} {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()

	// Watch what is stored: per node, sizes never go down.
	watchCtx, stopWatch := context.WithCancel(ctxT(t))
	defer stopWatch()
	stored := map[string][]uint64{}
	var storedMu sync.Mutex
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for wr := range h.etcd.Client().Watch(watchCtx, prefixAuditWitnessed+"aw-race-", clientv3.WithPrefix()) {
			storedMu.Lock()
			for _, ev := range wr.Events {
				if sc, err := audit.ParseCheckpoint(ev.Kv.Value); err == nil {
					stored[sc.Node] = append(stored[sc.Node], sc.Size)
				}
			}
			storedMu.Unlock()
		}
	}()

	const nodes, steps = 4, 8
	var nwg sync.WaitGroup
	acked := make([]uint64, nodes)
	for i := range nodes {
		n := newAuditNode(t, fmt.Sprintf("aw-race-%d", i)).grow(1 + 2*steps*3)
		nwg.Add(1)
		go func() {
			defer nwg.Done()
			base := uint64(0)
			for step := range steps {
				a, b := base+1+uint64(step%2), base+3
				type result struct {
					size uint64
					err  error
				}
				res := make(chan result, 2)
				// Signed in the order a node signs: its log only grows, so
				// the smaller checkpoint is the older one.
				reqA, reqB := n.request(a, base), n.request(b, base)
				for _, sub := range []struct {
					w    *AuditWitness
					size uint64
					req  *unumv1.SubmitCheckpointRequest
				}{{wa, a, reqA}, {wb, b, reqB}} {
					go func() {
						_, err := sub.w.SubmitCheckpoint(asNode(ctx, n.name), sub.req)
						res <- result{sub.size, err}
					}()
				}
				won := 0
				next := base
				for range 2 {
					r := <-res
					if r.err == nil {
						won++
						next = r.size
						continue
					}
					if status.Code(r.err) != codes.Aborted {
						t.Errorf("%s step %d: %v", n.name, step, r.err)
					}
				}
				if won != 1 {
					t.Errorf("%s step %d: %d of two racing checkpoints stored, want exactly 1", n.name, step, won)
				}
				base = next
			}
			acked[i] = base
		}()
	}
	nwg.Wait()
	require.False(t, t.Failed())
	for i := range nodes {
		name := fmt.Sprintf("aw-race-%d", i)
		require.Equal(t, acked[i], witnessedOf(t, name).Size, name)
	}
	stopWatch()
	<-watching
	storedMu.Lock()
	defer storedMu.Unlock()
	for name, sizes := range stored {
		require.IsNonDecreasing(t, sizes, name)
	}
	require.Len(t, stored, nodes)
}

// TestWitnessKeyPublished: every witness's key is published; a witness
// whose name has another key published does not countersign.
func TestWitnessKeyPublished(t *testing.T) {
	keys := publishedKeys(t)
	require.Contains(t, keys.Witnesses, "node-1")
	require.Contains(t, keys.Nodes, "node-1")
	w := testWitness(t, "aw-pub", time.Hour)
	require.NoError(t, w.publishKey(ctxT(t)), "publishing the same key again is fine")
	s, err := newAuditSigner("aw-pub")
	require.NoError(t, err)
	impostor := newAuditWitness(h.srv, s, time.Hour)
	require.ErrorContains(t, impostor.publishKey(ctxT(t)), "another witness key for aw-pub")
	n := newAuditNode(t, "aw-pub-node")
	_, err = impostor.SubmitCheckpoint(asNode(ctxT(t), n.name), n.request(0, 0))
	requireCode(t, err, codes.Unavailable, "not witnessing")
	require.Equal(t, w.signer.PublicKeyset(), publishedKeys(t).Witnesses["aw-pub"])
}

// TestAuditConfigure: settings are validated, stored, handed to nodes in
// heartbeat answers, and each change is recorded with old and new values.
func TestAuditConfigure(t *testing.T) {
	ac := auditClient(t, "/user/admin")
	t.Cleanup(func() {
		_, err := ac.Configure(ctxT(t), &unumv1.AuditConfigureRequest{Config: &unumv1.AuditConfig{}})
		require.NoError(t, err)
	})
	for _, bad := range []*unumv1.AuditConfig{
		{OnFailure: "ignore"},
		{RetentionSeconds: -1},
		{RetentionBytes: -5},
	} {
		_, err := ac.Configure(ctxT(t), &unumv1.AuditConfigureRequest{Config: bad})
		requireCode(t, err, codes.InvalidArgument, "")
	}
	got, err := ac.GetConfig(ctxT(t), &unumv1.AuditGetConfigRequest{})
	require.NoError(t, err)
	require.Equal(t, audit.OnFailureDeny, got.GetOnFailure())

	want := &unumv1.AuditConfig{OnFailure: audit.OnFailureAllowAndAlert, RetentionSeconds: 3600, RetentionBytes: 1 << 20}
	got, err = ac.Configure(ctxT(t), &unumv1.AuditConfigureRequest{Config: want})
	require.NoError(t, err)
	require.Equal(t, want.String(), got.String())
	got, err = ac.GetConfig(ctxT(t), &unumv1.AuditGetConfigRequest{})
	require.NoError(t, err)
	require.Equal(t, want.String(), got.String())

	ev := h.findEvents(t, audit.ActionAuditConfigure, func(e *audit.Event) bool { return e.Subject == "spiffe://unum.test/user/admin" })
	require.NotEmpty(t, ev)
	var d struct{ Old, New audit.Settings }
	require.NoError(t, json.Unmarshal(ev[len(ev)-1].Details, &d))
	require.Equal(t, audit.Settings{OnFailure: "deny"}, d.Old)
	require.Equal(t, audit.Settings{OnFailure: "allow-and-alert", RetentionSeconds: 3600, RetentionBytes: 1 << 20}, d.New)

	// Nodes get the settings with their heartbeats.
	cc := unumv1.NewClusterClient(conn(t, "/node/node-1"))
	require.Eventually(t, func() bool {
		resp, err := cc.Heartbeat(ctxT(t), &unumv1.HeartbeatRequest{})
		return err == nil && resp.GetAudit().GetOnFailure() == audit.OnFailureAllowAndAlert && resp.GetAudit().GetRetentionBytes() == 1<<20
	}, 10*time.Second, 20*time.Millisecond)

	// Nodes may not change them.
	_, err = unumv1.NewAuditClient(conn(t, "/node/node-1")).Configure(ctxT(t), &unumv1.AuditConfigureRequest{Config: &unumv1.AuditConfig{}})
	requireCode(t, err, codes.PermissionDenied, "")
}

// TestJoinRegistersAuditKey: a join registers the node's checkpoint key
// with the node (a private keyset is refused without using the token); a
// later join under the name of a removed node is a new log: the old key
// and witnessed checkpoint are kept aside, the new key registered.
func TestJoinRegistersAuditKey(t *testing.T) {
	ec := enrollClient(t, ca.Fingerprint(h.root))
	first, err := newAuditSigner("aw-join")
	require.NoError(t, err)
	tok := mintToken(t, "aw-join")
	req := joinReq(tok, makeCSR(t, csrOpts{}))
	req.AuditPublicKeyset = []byte("not a public keyset")
	_, err = ec.Join(ctxT(t), req)
	requireCode(t, err, codes.InvalidArgument, "audit_public_keyset")
	req.AuditPublicKeyset = first.PublicKeyset()
	_, err = ec.Join(ctxT(t), req)
	require.NoError(t, err, "the refused join did not use the token")
	require.Equal(t, first.PublicKeyset(), publishedKeys(t).Nodes["aw-join"])
	resp, err := h.etcd.Client().Get(ctxT(t), auditNodeKeyKey("aw-join"))
	require.NoError(t, err)
	rec, err := decode[AuditKeyRecord](resp.Kvs[0].Value)
	require.NoError(t, err)
	require.Equal(t, AuditKeyViaJoin, rec.Via)

	n := &auditNode{t: t, name: "aw-join", signer: first}
	n.grow(4)
	_, err = auditClient(t, "/node/aw-join").SubmitCheckpoint(ctxT(t), n.request(4, 0))
	require.NoError(t, err)
	old := witnessedOf(t, "aw-join")

	// The node is removed (its record goes) and the name joins again from
	// a new machine.
	_, err = h.etcd.Client().Delete(ctxT(t), nodeKey("aw-join"))
	require.NoError(t, err)
	second, err := newAuditSigner("aw-join")
	require.NoError(t, err)
	req = joinReq(mintToken(t, "aw-join"), makeCSR(t, csrOpts{}))
	req.AuditPublicKeyset = second.PublicKeyset()
	_, err = ec.Join(ctxT(t), req)
	require.NoError(t, err)
	require.Equal(t, second.PublicKeyset(), publishedKeys(t).Nodes["aw-join"])
	require.Nil(t, witnessedOf(t, "aw-join"), "the new log starts afresh")
	retired, err := h.etcd.Client().Get(ctxT(t), prefixAuditRetired+"aw-join/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, retired.Kvs, 1)
	r, err := decode[RetiredAuditRecord](retired.Kvs[0].Value)
	require.NoError(t, err)
	require.Equal(t, first.PublicKeyset(), r.NodeKey.PublicKeyset)
	require.Equal(t, string(old.Marshal()), r.Witnessed)

	// The old key's checkpoints are no longer accepted for the name.
	n.grow(2)
	_, err = auditClient(t, "/node/aw-join").SubmitCheckpoint(ctxT(t), n.request(6, 0))
	requireCode(t, err, codes.FailedPrecondition, "its registered key is")
}

// TestAuditErrorMakesStatusUnhealthy: a node whose heartbeat reports an
// audit error is an error in the cluster status (not a warning) until it
// reports none.
func TestAuditErrorMakesStatusUnhealthy(t *testing.T) {
	unregisteredAuditNode(t, "aw-hb")
	hb := unumv1.NewClusterClient(conn(t, "/node/aw-hb"))
	admin := unumv1.NewClusterClient(conn(t, "/user/admin"))
	want := "node aw-hb: audit log cannot record: audit log unavailable: disk full"
	_, err := hb.Heartbeat(ctxT(t), &unumv1.HeartbeatRequest{AuditError: "audit log unavailable: disk full"})
	require.NoError(t, err)
	st, err := admin.Status(ctxT(t), &unumv1.StatusRequest{})
	require.NoError(t, err)
	require.Len(t, st.GetErrors(), 1)
	require.Contains(t, st.GetErrors()[0], want)
	for _, n := range st.GetNodes() {
		if n.GetName() == "aw-hb" {
			require.Equal(t, "audit log unavailable: disk full", n.GetAuditError())
		}
	}
	_, err = hb.Heartbeat(ctxT(t), &unumv1.HeartbeatRequest{})
	require.NoError(t, err)
	st, err = admin.Status(ctxT(t), &unumv1.StatusRequest{})
	require.NoError(t, err)
	require.Empty(t, st.GetErrors())
}
