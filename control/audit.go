package control

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/internal/metrics/label"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/storage/meta"
)

// The audit witness's state in etcd.
//
// A node's checkpoint key is registered once, at join or init (or, for a
// node of a cluster made before audit, on its first submission) and never
// overwritten. A name that joins again after a removal is a new log: the
// join moves the old incarnation's keys and witnessed checkpoint under
// prefixAuditRetired, so the old log stays verifiable with them, and
// registers the new key in the same transaction.
const (
	prefixAuditKeys        = "/unum/audit/keys/"
	prefixAuditNodeKeys    = "/unum/audit/keys/node/"
	prefixAuditWitnessKeys = "/unum/audit/keys/witness/"
	prefixAuditWitnessed   = "/unum/audit/witnessed/"
	prefixAuditRetired     = "/unum/audit/retired/"
	keyAuditConfig         = "/unum/audit/config"
)

// How a key came to be registered (AuditKeyRecord.Via).
const (
	AuditKeyViaInit     = "init"
	AuditKeyViaJoin     = "join"
	AuditKeyViaFirstUse = "first-use"
	AuditKeyViaStart    = "start" // a control node's witness key
)

// DefaultWitnessRound is how often a witness stores what it countersigned.
const DefaultWitnessRound = time.Second

// witnessTxnNodes bounds the nodes of one round's transaction: each costs
// one compare (two on its first checkpoint), one put and two reads on
// failure, within etcd's MaxTxnOps per list; their notes (well under 1 KiB
// each: the witness keeps only its own countersignature) stay far inside
// etcd's 1.5 MiB request limit. A round with more nodes than this takes one
// more transaction per witnessTxnNodes.
const witnessTxnNodes = meta.MaxTxnOps / 2

// AuditKeyRecord is a registered public key: a node's checkpoint key or a
// control node's witness key.
type AuditKeyRecord struct {
	Name         string    `json:"name"`
	PublicKeyset []byte    `json:"public_keyset"` // Tink binary public keyset
	RegisteredAt time.Time `json:"registered_at"`
	Via          string    `json:"via"`
}

// RetiredAuditRecord is what a join under a removed node's name moved
// aside: the old incarnation's keys and newest witnessed checkpoint.
type RetiredAuditRecord struct {
	Name       string          `json:"name"`
	NodeKey    *AuditKeyRecord `json:"node_key,omitempty"`
	WitnessKey *AuditKeyRecord `json:"witness_key,omitempty"`
	Witnessed  string          `json:"witnessed,omitempty"` // note text
	RetiredAt  time.Time       `json:"retired_at"`
}

func auditNodeKeyKey(name string) string    { return prefixAuditNodeKeys + name }
func auditWitnessKeyKey(name string) string { return prefixAuditWitnessKeys + name }
func witnessedKey(name string) string       { return prefixAuditWitnessed + name }

// NewAuditKeyRecord is the record of name's key pub registered at now.
func NewAuditKeyRecord(name string, pub []byte, via string, now time.Time) AuditKeyRecord {
	return AuditKeyRecord{Name: name, PublicKeyset: pub, RegisteredAt: now.UTC(), Via: via}
}

// AuditWitness serves the witness half of the Audit service on a control
// node (SubmitCheckpoint, Keys, Witnessed, Configure, GetConfig); each
// node serves the reading half (Query, Verify, Proof) of its own log, and
// the node combines the two.
//
// # Rounds
//
// SubmitCheckpoint verifies a node's checkpoint against what the witness
// holds for that node (audit.CheckSubmission), countersigns it and queues
// it; the submission is answered only after the round that stores it.
// Every round, one etcd transaction stores every queued checkpoint, each
// guarded by the mod revision of the node's witnessed key as the witness
// verified against it: two control nodes witnessing at once never
// overwrite each other's newer checkpoint. A node whose guard fails (its
// base changed: another witness stored a newer one) is answered Aborted
// and submits again; the others go out again at once. So etcd sees one
// write per round whatever the number of nodes.
//
// # Cache
//
// held caches, per node, the key and the newest witnessed checkpoint with
// their mod revisions. A stale cache entry costs nothing unsafe: the round's
// guard fails, or a check fails and is repeated against a fresh read before
// the witness refuses anything or raises an alert.
type AuditWitness struct {
	unumv1.UnimplementedAuditServer

	s      *Server
	signer *audit.Signer // nil: this control node does not countersign
	round  time.Duration
	// published: etcd holds this node's witness key (publishKey). Until
	// then it does not countersign: its countersignatures could not be
	// checked.
	published atomic.Bool

	mu struct {
		sync.Mutex
		held  map[string]heldCheckpoint
		queue map[string]*pendingCheckpoint
	}
}

// heldCheckpoint is a node's witness state as read from etcd at revision
// at: its key (nil: none registered) and newest witnessed checkpoint (nil:
// none) with their mod revisions (0: absent).
type heldCheckpoint struct {
	key    []byte
	keyRev int64
	sc     *audit.SignedCheckpoint
	rev    int64
	at     int64
}

// pendingCheckpoint is a countersigned checkpoint waiting for its round.
type pendingCheckpoint struct {
	node string
	note []byte
	sc   *audit.SignedCheckpoint
	base heldCheckpoint
	// done is sent the result once: nil when stored.
	done chan error
}

func newAuditWitness(s *Server, signer *audit.Signer, round time.Duration) *AuditWitness {
	if round <= 0 {
		round = DefaultWitnessRound
	}
	w := &AuditWitness{s: s, signer: signer, round: round}
	w.mu.held = map[string]heldCheckpoint{}
	w.mu.queue = map[string]*pendingCheckpoint{}
	return w
}

var _ unumv1.AuditServer = (*AuditWitness)(nil)

// AuditWitness is this control node's audit witness.
func (s *Server) AuditWitness() *AuditWitness { return s.witness }

// run publishes the witness key and stores rounds until ctx ends; the
// submissions still queued then are answered Unavailable.
func (w *AuditWitness) run(ctx context.Context) {
	if w.signer == nil {
		return
	}
	for ctx.Err() == nil {
		if err := w.publishKey(ctx); err == nil {
			break
		} else if ctx.Err() == nil {
			w.s.cfg.Log.Warn("publish audit witness key", "err", err)
		}
		sleep(ctx, time.Second)
	}
	t := time.NewTicker(w.round)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			w.mu.Lock()
			queue := w.mu.queue
			w.mu.queue = map[string]*pendingCheckpoint{}
			w.mu.Unlock()
			for _, p := range queue {
				p.done <- status.Error(codes.Unavailable, "witness shutting down")
			}
			return
		case <-t.C:
			w.flush(ctx)
		}
	}
}

// publishKey stores this node's witness key unless etcd holds one for its
// name; a different one there is an error (the witness then never
// countersigns, rather than sign what nobody can check).
func (w *AuditWitness) publishKey(ctx context.Context) error {
	name, pub := w.signer.Name(), w.signer.PublicKeyset()
	rec := NewAuditKeyRecord(name, pub, AuditKeyViaStart, w.s.cfg.Clock())
	k := auditWitnessKeyKey(name)
	resp, err := w.s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, mustJSON(rec))).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 {
			old, err := decode[AuditKeyRecord](kvs[0].Value)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if !bytes.Equal(old.PublicKeyset, pub) {
				return fmt.Errorf("etcd holds another witness key for %s (%s, this node has %s): this node does not countersign", name, audit.Fingerprint(old.PublicKeyset), audit.Fingerprint(pub))
			}
		}
	}
	w.published.Store(true)
	return nil
}

// SubmitCheckpoint implements unumv1.AuditServer (see AuditWitness).
func (w *AuditWitness) SubmitCheckpoint(ctx context.Context, req *unumv1.SubmitCheckpointRequest) (*unumv1.SubmitCheckpointResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if c.Kind != identity.KindNode {
		w.count(label.WitnessRefused)
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a node", c.ID)
	}
	node := c.Name
	if w.signer == nil || !w.published.Load() {
		return nil, status.Errorf(codes.Unavailable, "control node %s is not witnessing yet (its witness key is not published)", w.s.cfg.NodeName)
	}
	sc, err := audit.ParseCheckpoint(req.GetCheckpoint())
	if err != nil {
		w.count(label.WitnessRefused)
		return nil, status.Errorf(codes.InvalidArgument, "checkpoint: %v", err)
	}
	if sc.Node != node {
		// A node presenting another's log: no accident, so an alert.
		err := fmt.Errorf("node %s submitted a checkpoint of node %s", node, sc.Node)
		w.alert(ctx, c, "caller", sc, heldCheckpoint{}, err)
		w.count(label.WitnessRefused)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	proof, err := audit.HashesFromBytes(req.GetConsistencyProof())
	if err != nil {
		w.count(label.WitnessRefused)
		return nil, status.Errorf(codes.InvalidArgument, "consistency %v", err) // "consistency proof hash 2 is ..."
	}
	sub := audit.Submission{Checkpoint: sc, FromSize: req.GetFromSize(), Proof: proof}
	// Only this witness's countersignature is kept: the node's own note
	// carries none, and a forged one must not ride along into etcd.
	sc.Cosigs = nil

	p, err := w.admit(ctx, c, sub, req.GetPublicKeyset())
	if err != nil {
		return nil, err
	}
	select {
	case err := <-p.done:
		if err != nil {
			return nil, err
		}
		w.count(label.WitnessOK)
		return &unumv1.SubmitCheckpointResponse{Cosigned: p.note}, nil
	case <-ctx.Done():
		// The checkpoint may still be stored; the node's next submission
		// then finds it (or a stale base, and fetches it).
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// admit checks sub against the node's witness state, countersigns it and
// queues it for the next round.
func (w *AuditWitness) admit(ctx context.Context, c rpc.Caller, sub audit.Submission, offered []byte) (*pendingCheckpoint, error) {
	sc := sub.Checkpoint
	node := sc.Node
	fresh := false
	for attempt := 0; ; attempt++ {
		st, err := w.state(ctx, node, fresh)
		if err != nil {
			return nil, err
		}
		if st.key == nil {
			// A node with no registered key (its cluster predates audit):
			// trust on first use.
			if st, err = w.registerFirstUse(ctx, c, node, offered); err != nil {
				return nil, err
			}
		}
		if len(offered) > 0 && !bytes.Equal(offered, st.key) {
			if !fresh {
				fresh = true
				continue
			}
			err := fmt.Errorf("%w: node %s presents checkpoint key %s, its registered key is %s", audit.ErrSignature, node, audit.Fingerprint(offered), audit.Fingerprint(st.key))
			return nil, w.refuse(ctx, c, sc, st, err)
		}
		if err := audit.CheckSubmission(st.key, st.sc, sub); err != nil {
			// Refuse, and above all accuse, only on what etcd holds now.
			if !fresh {
				fresh = true
				continue
			}
			return nil, w.refuse(ctx, c, sc, st, err)
		}
		at := w.s.cfg.Clock()
		cosigned := *sc
		if err := w.signer.Cosign(&cosigned, at); err != nil {
			return nil, status.Errorf(codes.Internal, "countersign: %v", err)
		}
		p := &pendingCheckpoint{node: node, note: cosigned.Marshal(), sc: &cosigned, base: st, done: make(chan error, 1)}
		w.mu.Lock()
		_, busy := w.mu.queue[node]
		cur, cached := w.mu.held[node]
		switch {
		case busy:
			w.mu.Unlock()
			w.count(label.WitnessRetry)
			return nil, status.Errorf(codes.Aborted, "retry: a checkpoint of %s is already waiting for this witness's round", node)
		case cached && cur.at > st.at && (cur.rev != st.rev || cur.keyRev != st.keyRev):
			// A round stored a newer one meanwhile: check against it.
			w.mu.Unlock()
			if attempt < 3 {
				continue
			}
			w.count(label.WitnessRetry)
			return nil, status.Errorf(codes.Aborted, "retry: the witnessed checkpoint of %s keeps changing", node)
		}
		w.mu.queue[node] = p
		w.mu.Unlock()
		return p, nil
	}
}

// state is node's witness state: cached unless fresh, else read from etcd
// (and cached).
func (w *AuditWitness) state(ctx context.Context, node string, fresh bool) (heldCheckpoint, error) {
	if !fresh {
		w.mu.Lock()
		st, ok := w.mu.held[node]
		w.mu.Unlock()
		if ok {
			return st, nil
		}
	}
	resp, err := w.s.cfg.Etcd.Txn(ctx).Then(clientv3.OpGet(auditNodeKeyKey(node)), clientv3.OpGet(witnessedKey(node))).Commit()
	if err != nil {
		return heldCheckpoint{}, status.Errorf(codes.Unavailable, "read witness state of %s: %v", node, err)
	}
	st, err := heldFrom(node, resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs, resp.Header.Revision)
	if err != nil {
		return heldCheckpoint{}, status.Errorf(codes.Internal, "witness state of %s: %v", node, err)
	}
	w.remember(node, st)
	return st, nil
}

// heldFrom decodes a node's key and witnessed records read at revision at.
func heldFrom(node string, keyKVs, witnessedKVs []*mvccpb.KeyValue, at int64) (heldCheckpoint, error) {
	st := heldCheckpoint{at: at}
	if len(keyKVs) == 1 {
		rec, err := decode[AuditKeyRecord](keyKVs[0].Value)
		if err != nil {
			return st, err
		}
		st.key, st.keyRev = rec.PublicKeyset, keyKVs[0].ModRevision
	}
	if len(witnessedKVs) == 1 {
		sc, err := audit.ParseCheckpoint(witnessedKVs[0].Value)
		if err != nil {
			return st, fmt.Errorf("stored witnessed checkpoint: %w", err)
		}
		if sc.Node != node {
			return st, fmt.Errorf("stored witnessed checkpoint is of %s", sc.Node)
		}
		st.sc, st.rev = sc, witnessedKVs[0].ModRevision
	}
	return st, nil
}

// remember caches st unless a newer read is cached.
func (w *AuditWitness) remember(node string, st heldCheckpoint) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.mu.held[node]; !ok || cur.at <= st.at {
		w.mu.held[node] = st
	}
}

// registerFirstUse registers pub as node's checkpoint key when none is
// registered and node is a member (trust on first use, recorded as an
// audit.register-key event), and returns the node's state after it.
func (w *AuditWitness) registerFirstUse(ctx context.Context, c rpc.Caller, node string, pub []byte) (heldCheckpoint, error) {
	if len(pub) == 0 {
		w.count(label.WitnessRefused)
		return heldCheckpoint{}, status.Errorf(codes.FailedPrecondition, "node %s has no registered audit key and its submission carries none", node)
	}
	if err := audit.CheckPublicKeyset(pub); err != nil {
		w.count(label.WitnessRefused)
		return heldCheckpoint{}, status.Errorf(codes.InvalidArgument, "public_keyset: %v", err)
	}
	k := auditNodeKeyKey(node)
	rec := NewAuditKeyRecord(node, pub, AuditKeyViaFirstUse, w.s.cfg.Clock())
	resp, err := w.s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0), clientv3.Compare(clientv3.CreateRevision(nodeKey(node)), ">", 0)).
		Then(clientv3.OpPut(k, mustJSON(rec))).
		Commit()
	if err != nil {
		return heldCheckpoint{}, status.Errorf(codes.Unavailable, "register audit key of %s: %v", node, err)
	}
	if resp.Succeeded {
		w.s.cfg.Log.Info("audit key registered on first use", "node", node, "fingerprint", audit.Fingerprint(pub))
		w.s.record(ctx, audit.Event{
			Kind: audit.KindAudit, Action: audit.ActionAuditRegisterKey, Outcome: audit.Allow,
			Subject: c.ID.String(), Resource: "node/-/" + node,
		}.WithDetails(struct {
			Node        string `json:"node"`
			Fingerprint string `json:"fingerprint"`
			Via         string `json:"via"`
		}{node, audit.Fingerprint(pub), AuditKeyViaFirstUse}))
	}
	st, err := w.state(ctx, node, true)
	if err != nil {
		return st, err
	}
	if st.key == nil {
		return st, status.Errorf(codes.PermissionDenied, "node %s is not a member of the cluster", node)
	}
	return st, nil
}

// refuse answers a failed check: a retry for a stale base, and for what
// can only be an attempt to change witnessed history (fork, truncation, a
// checkpoint not signed by the registered key) a FailedPrecondition, an
// audit.alert event and the metric.
func (w *AuditWitness) refuse(ctx context.Context, c rpc.Caller, sc *audit.SignedCheckpoint, st heldCheckpoint, err error) error {
	kind := audit.Refusal(err)
	switch kind {
	case "stale":
		w.count(label.WitnessRetry)
		return status.Errorf(codes.Aborted, "retry: %v", err)
	case "invalid":
		w.count(label.WitnessRefused)
		return status.Errorf(codes.InvalidArgument, "checkpoint of %s: %v", sc.Node, err)
	}
	w.alert(ctx, c, kind, sc, st, err)
	w.count(map[string]string{"fork": label.WitnessFork, "truncation": label.WitnessTruncation, "signature": label.WitnessSignature}[kind])
	return status.Errorf(codes.FailedPrecondition, "witness %s refuses the checkpoint of %s (%s): %v", w.s.cfg.NodeName, sc.Node, kind, err)
}

// witnessAlert is the details of an audit.alert event the witness records.
type witnessAlert struct {
	Node          string `json:"node"`
	Refusal       string `json:"refusal"` // fork, truncation, signature, caller
	Reason        string `json:"reason"`
	Witness       string `json:"witness"`
	WitnessedSize uint64 `json:"witnessed_size"`
	WitnessedRoot string `json:"witnessed_root,omitempty"`
	SubmittedSize uint64 `json:"submitted_size"`
	SubmittedRoot string `json:"submitted_root"`
	Pruned        uint64 `json:"pruned,omitempty"`
}

func (w *AuditWitness) alert(ctx context.Context, c rpc.Caller, kind string, sc *audit.SignedCheckpoint, st heldCheckpoint, err error) {
	d := witnessAlert{
		Node: sc.Node, Refusal: kind, Reason: err.Error(), Witness: w.s.cfg.NodeName,
		SubmittedSize: sc.Size, SubmittedRoot: base64.StdEncoding.EncodeToString(sc.Root[:]), Pruned: sc.Pruned,
	}
	if st.sc != nil {
		d.WitnessedSize, d.WitnessedRoot = st.sc.Size, base64.StdEncoding.EncodeToString(st.sc.Root[:])
	}
	w.s.cfg.Log.Error("audit witness refused a checkpoint", "node", sc.Node, "refusal", kind, "submitted_size", sc.Size, "witnessed_size", d.WitnessedSize, "by", c.ID.String(), "err", err)
	w.s.record(ctx, audit.Event{
		Kind: audit.KindAudit, Action: audit.ActionAuditAlert, Outcome: audit.Deny,
		Subject: c.ID.String(), Resource: "node/-/" + sc.Node,
		Reasons: []string{err.Error()},
	}.WithDetails(d))
}

func (w *AuditWitness) count(outcome string) {
	if m := w.s.cfg.Metrics; m != nil {
		m.AuditWitness(outcome)
	}
}

// flush stores the queued checkpoints: one transaction per round (per
// witnessTxnNodes nodes), then answers their submissions.
func (w *AuditWitness) flush(ctx context.Context) {
	w.mu.Lock()
	queue := w.mu.queue
	w.mu.queue = map[string]*pendingCheckpoint{}
	w.mu.Unlock()
	if len(queue) == 0 {
		return
	}
	pending := make([]*pendingCheckpoint, 0, len(queue))
	for _, p := range queue {
		pending = append(pending, p)
	}
	sort.Slice(pending, func(i, j int) bool { return pending[i].node < pending[j].node })
	// Nodes whose guard held when another's failed go out again at once,
	// a bounded number of times.
	for tries := 0; len(pending) > 0; tries++ {
		n := min(len(pending), witnessTxnNodes)
		again := w.commit(ctx, pending[:n])
		pending = pending[n:]
		if tries < 3 {
			pending = append(again, pending...)
		} else {
			for _, p := range again {
				w.count(label.WitnessRetry)
				p.done <- status.Errorf(codes.Aborted, "retry: the round storing the checkpoint of %s kept failing", p.node)
			}
		}
	}
}

// commit stores batch in one transaction guarded by each node's base, and
// answers every submission in it except those to try again (returned).
func (w *AuditWitness) commit(ctx context.Context, batch []*pendingCheckpoint) (again []*pendingCheckpoint) {
	var cmps []clientv3.Cmp
	var puts, gets []clientv3.Op
	for _, p := range batch {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(witnessedKey(p.node)), "=", p.base.rev))
		if p.base.rev == 0 {
			// A first checkpoint: the key it was checked with must still
			// be the registered one (a join under a removed node's name
			// replaces it).
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(auditNodeKeyKey(p.node)), "=", p.base.keyRev))
		}
		puts = append(puts, clientv3.OpPut(witnessedKey(p.node), string(p.note)))
		gets = append(gets, clientv3.OpGet(auditNodeKeyKey(p.node)), clientv3.OpGet(witnessedKey(p.node)))
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := w.s.cfg.Etcd.Txn(cctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	if err != nil {
		// Perhaps stored, perhaps not: forget what is cached, so the next
		// submission is checked against what etcd holds.
		w.mu.Lock()
		for _, p := range batch {
			delete(w.mu.held, p.node)
		}
		w.mu.Unlock()
		for _, p := range batch {
			p.done <- status.Errorf(codes.Unavailable, "store witnessed checkpoint: %v", err)
		}
		return nil
	}
	rev := resp.Header.Revision
	if resp.Succeeded {
		for _, p := range batch {
			w.remember(p.node, heldCheckpoint{key: p.base.key, keyRev: p.base.keyRev, sc: p.sc, rev: rev, at: rev})
			p.done <- nil
		}
		return nil
	}
	for i, p := range batch {
		st, err := heldFrom(p.node, resp.Responses[2*i].GetResponseRange().Kvs, resp.Responses[2*i+1].GetResponseRange().Kvs, rev)
		if err != nil {
			p.done <- status.Errorf(codes.Internal, "witness state of %s: %v", p.node, err)
			continue
		}
		w.remember(p.node, st)
		if st.rev == p.base.rev && (p.base.rev != 0 || st.keyRev == p.base.keyRev) {
			again = append(again, p) // another node's guard failed
			continue
		}
		w.count(label.WitnessRetry)
		p.done <- status.Errorf(codes.Aborted, "retry: the witnessed checkpoint of %s changed while this one waited (another witness stored one)", p.node)
	}
	return again
}

// Keys implements unumv1.AuditServer: every registered node key and
// witness key, nodes first, by name.
func (w *AuditWitness) Keys(ctx context.Context, _ *unumv1.AuditKeysRequest) (*unumv1.AuditKeysResponse, error) {
	resp, err := w.s.cfg.Etcd.Get(ctx, prefixAuditKeys, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read audit keys: %v", err)
	}
	out := &unumv1.AuditKeysResponse{}
	for _, kv := range resp.Kvs {
		rec, err := decode[AuditKeyRecord](kv.Value)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%s: %v", kv.Key, err)
		}
		role := audit.KeyRoleNode
		if strings.HasPrefix(string(kv.Key), prefixAuditWitnessKeys) {
			role = audit.KeyRoleWitness
		}
		out.Keys = append(out.Keys, &unumv1.AuditKey{Node: rec.Name, Role: role, PublicKeyset: rec.PublicKeyset})
	}
	return out, nil
}

// Witnessed implements unumv1.AuditServer: the newest countersigned
// checkpoint of every node (or of req.node), by node name.
func (w *AuditWitness) Witnessed(ctx context.Context, req *unumv1.AuditWitnessedRequest) (*unumv1.AuditWitnessedResponse, error) {
	var resp *clientv3.GetResponse
	var err error
	if n := req.GetNode(); n != "" {
		resp, err = w.s.cfg.Etcd.Get(ctx, witnessedKey(n))
	} else {
		resp, err = w.s.cfg.Etcd.Get(ctx, prefixAuditWitnessed, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read witnessed checkpoints: %v", err)
	}
	out := &unumv1.AuditWitnessedResponse{}
	for _, kv := range resp.Kvs {
		out.Checkpoints = append(out.Checkpoints, kv.Value)
	}
	return out, nil
}

// GetConfig implements unumv1.AuditServer.
func (w *AuditWitness) GetConfig(ctx context.Context, _ *unumv1.AuditGetConfigRequest) (*unumv1.AuditConfig, error) {
	cfg, _, err := w.s.readAuditSettings(ctx)
	if err != nil {
		return nil, err
	}
	return settingsToProto(cfg), nil
}

// Configure implements unumv1.AuditServer: it replaces the cluster's
// audit settings and records an audit.configure event with the old and
// new ones.
func (w *AuditWitness) Configure(ctx context.Context, req *unumv1.AuditConfigureRequest) (*unumv1.AuditConfig, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	pc := req.GetConfig()
	next, err := audit.Settings{OnFailure: pc.GetOnFailure(), RetentionSeconds: pc.GetRetentionSeconds(), RetentionBytes: pc.GetRetentionBytes()}.Normalize()
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	old, rev, err := w.s.readAuditSettings(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := w.s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(keyAuditConfig), "=", rev)).
		Then(clientv3.OpPut(keyAuditConfig, mustJSON(next))).
		Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store audit settings: %v", err)
	}
	if !resp.Succeeded {
		return nil, status.Error(codes.Aborted, "audit settings changed concurrently: run the command again")
	}
	w.s.cfg.Log.Info("audit settings changed", "on_failure", next.OnFailure, "retention_seconds", next.RetentionSeconds, "retention_bytes", next.RetentionBytes, "by", c.ID.String())
	w.s.record(ctx, audit.Event{
		Kind: audit.KindAudit, Action: audit.ActionAuditConfigure, Outcome: audit.Allow,
		Subject: c.ID.String(), Resource: "audit/-/config",
	}.WithDetails(struct {
		Old audit.Settings `json:"old"`
		New audit.Settings `json:"new"`
	}{old, next}))
	return settingsToProto(next), nil
}

// readAuditSettings reads the stored settings (the defaults when none)
// and their mod revision (0: none stored).
func (s *Server) readAuditSettings(ctx context.Context) (audit.Settings, int64, error) {
	resp, err := s.cfg.Etcd.Get(ctx, keyAuditConfig)
	if err != nil {
		return audit.Settings{}, 0, status.Errorf(codes.Unavailable, "read audit settings: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return audit.DefaultSettings(), 0, nil
	}
	cfg, err := decodeSettings(resp.Kvs[0].Value)
	if err != nil {
		return audit.Settings{}, 0, status.Errorf(codes.Internal, "%s: %v", keyAuditConfig, err)
	}
	return cfg, resp.Kvs[0].ModRevision, nil
}

func decodeSettings(b []byte) (audit.Settings, error) {
	cfg, err := decode[audit.Settings](b)
	if err != nil {
		return cfg, err
	}
	return cfg.Normalize()
}

func settingsToProto(s audit.Settings) *unumv1.AuditConfig {
	return &unumv1.AuditConfig{OnFailure: s.OnFailure, RetentionSeconds: s.RetentionSeconds, RetentionBytes: s.RetentionBytes}
}

// auditJoinOps are the compares and operations a join of name adds to its
// transaction for the node's checkpoint key pub (nil: the joining node
// sent none; it registers on first use). A key left by a removed node of
// the same name, and that node's witness key and witnessed checkpoint, are
// moved under prefixAuditRetired: the joining node is a new log. The same
// key (the same node's data folder joining again) keeps everything. The
// compares fail the join's transaction if any of it changed since read.
func (s *Server) auditJoinOps(ctx context.Context, name string, pub []byte, now time.Time) ([]clientv3.Cmp, []clientv3.Op, error) {
	if len(pub) > 0 {
		if err := audit.CheckPublicKeyset(pub); err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "audit_public_keyset: %v", err)
		}
	}
	nk, wk, wd := auditNodeKeyKey(name), auditWitnessKeyKey(name), witnessedKey(name)
	resp, err := s.cfg.Etcd.Txn(ctx).Then(clientv3.OpGet(nk), clientv3.OpGet(wk), clientv3.OpGet(wd)).Commit()
	if err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "read audit keys of %s: %v", name, err)
	}
	var cmps []clientv3.Cmp
	kvs := make([]*mvccpb.KeyValue, 3)
	for i, k := range []string{nk, wk, wd} {
		var rev int64
		if got := resp.Responses[i].GetResponseRange().Kvs; len(got) == 1 {
			kvs[i], rev = got[0], got[0].ModRevision
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
	}
	var ops []clientv3.Op
	var old *AuditKeyRecord
	if kvs[0] != nil {
		rec, err := decode[AuditKeyRecord](kvs[0].Value)
		if err != nil {
			return nil, nil, status.Errorf(codes.Internal, "%s: %v", nk, err)
		}
		old = &rec
	}
	sameKey := old != nil && len(pub) > 0 && bytes.Equal(old.PublicKeyset, pub)
	if !sameKey && (old != nil || kvs[1] != nil || kvs[2] != nil) {
		retired := RetiredAuditRecord{Name: name, NodeKey: old, RetiredAt: now.UTC()}
		if kvs[1] != nil {
			rec, err := decode[AuditKeyRecord](kvs[1].Value)
			if err != nil {
				return nil, nil, status.Errorf(codes.Internal, "%s: %v", wk, err)
			}
			retired.WitnessKey = &rec
		}
		if kvs[2] != nil {
			retired.Witnessed = string(kvs[2].Value)
		}
		key := fmt.Sprintf("%s%s/%020d", prefixAuditRetired, name, now.UnixNano())
		ops = append(ops, clientv3.OpPut(key, mustJSON(retired)))
		// etcd refuses two operations on one key in a transaction: the
		// new key's put below replaces the old one.
		if len(pub) == 0 && kvs[0] != nil {
			ops = append(ops, clientv3.OpDelete(nk))
		}
		if kvs[1] != nil {
			ops = append(ops, clientv3.OpDelete(wk))
		}
		if kvs[2] != nil {
			ops = append(ops, clientv3.OpDelete(wd))
		}
		s.cfg.Log.Info("audit keys of a removed node retired", "node", name, "key", key)
	}
	if len(pub) > 0 && !sameKey {
		ops = append(ops, clientv3.OpPut(nk, mustJSON(NewAuditKeyRecord(name, pub, AuditKeyViaJoin, now))))
	}
	return cmps, ops, nil
}
