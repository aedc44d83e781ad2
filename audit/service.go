package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
)

// ReadService serves the read half of the Audit API over one node's own
// log: Query, Verify and Proof. Every node serves it for itself; no node
// reads another's log on a caller's behalf (a proof or event id of another
// node is refused, naming the node to ask). The witness methods (Keys,
// Witnessed, SubmitCheckpoint, Configure, GetConfig) belong to the control
// plane and are Unimplemented here; the node combines both.
//
// Authorization happens before a method runs (the RPC layer decides
// audit.read or audit.verify on the caller); ReadService trusts its caller
// only in that sense. What it returns is checkable without trusting the
// node: events are the leaf data, checkpoints are signed notes, proofs are
// proofs.
type ReadService struct {
	unumv1.UnimplementedAuditServer
	Log *Log
	// PublishedKeys returns the published keys Verify checks checkpoint signatures
	// with. Nil (or nil keys) verifies with the copies remembered beside
	// the log. It may block on the control plane; an error fails Verify.
	PublishedKeys func(ctx context.Context) (*Keys, error)
}

var _ unumv1.AuditServer = (*ReadService)(nil)

// Query stream batches are bounded by count and bytes, so a reader's
// memory and one gRPC message (4 MiB default limit) stay small whatever the
// events' size.
const (
	maxBatchEvents = 256
	maxBatchBytes  = 1 << 20
	// defaultTail is how many events a tail without a limit returns.
	defaultTail = 10
)

// FilterFromProto reads an API filter, refusing what cannot match
// anything by mistake: an unknown outcome or kind, negative times, an
// empty time range. Errors name the field.
func FilterFromProto(p *unumv1.AuditFilter) (Filter, error) {
	f := Filter{Subject: p.GetSubject(), Action: p.GetAction(), Node: p.GetNode(), DecisionID: p.GetDecisionId(), Cred: p.GetCred(),
		Outcome: Outcome(p.GetOutcome()), Kind: Kind(p.GetKind())}
	switch f.Outcome {
	case "", Allow, Deny, Error:
	default:
		return Filter{}, fmt.Errorf("filter.outcome %q: want allow, deny or error", f.Outcome)
	}
	if f.Kind != "" && !kinds[f.Kind] {
		return Filter{}, fmt.Errorf("filter.kind %q is not a kind of event (%s)", f.Kind, kindList())
	}
	since, until := p.GetSinceUnixNano(), p.GetUntilUnixNano()
	if since < 0 {
		return Filter{}, fmt.Errorf("filter.since_unix_nano %d is negative", since)
	}
	if until < 0 {
		return Filter{}, fmt.Errorf("filter.until_unix_nano %d is negative", until)
	}
	if since > 0 && until > 0 && until <= since {
		return Filter{}, fmt.Errorf("filter.until_unix_nano: the range [%s, %s) is empty",
			time.Unix(0, since).UTC().Format(time.RFC3339Nano), time.Unix(0, until).UTC().Format(time.RFC3339Nano))
	}
	if since > 0 {
		f.Since = time.Unix(0, since).UTC()
	}
	if until > 0 {
		f.Until = time.Unix(0, until).UTC()
	}
	return f, nil
}

// FilterToProto is the inverse of FilterFromProto.
func FilterToProto(f Filter) *unumv1.AuditFilter {
	p := &unumv1.AuditFilter{Subject: f.Subject, Action: f.Action, Node: f.Node, DecisionId: f.DecisionID, Cred: f.Cred,
		Outcome: string(f.Outcome), Kind: string(f.Kind)}
	if !f.Since.IsZero() {
		p.SinceUnixNano = f.Since.UnixNano()
	}
	if !f.Until.IsZero() {
		p.UntilUnixNano = f.Until.UnixNano()
	}
	return p
}

func kindList() string {
	ks := make([]string, 0, len(kinds))
	for k := range kinds {
		ks = append(ks, string(k))
	}
	slices.Sort(ks)
	return fmt.Sprint(ks)
}

// batcher gathers events into bounded batches for one stream.
type batcher struct {
	stream unumv1.Audit_QueryServer
	events [][]byte
	bytes  int
}

func (b *batcher) add(raw []byte) error {
	if len(b.events) == maxBatchEvents || (len(b.events) > 0 && b.bytes+len(raw) > maxBatchBytes) {
		if err := b.flush(); err != nil {
			return err
		}
	}
	b.events = append(b.events, raw)
	b.bytes += len(raw)
	return nil
}

func (b *batcher) flush() error {
	if len(b.events) == 0 {
		return nil
	}
	err := b.stream.Send(&unumv1.AuditEventBatch{Events: b.events})
	b.events, b.bytes = nil, 0
	return err
}

// Query streams the events matching the filter, oldest first. With tail it
// sends the newest limit of them (default 10), still oldest first; else the
// first limit (0: all). With follow, once the events already in the log are
// sent, it sends one empty batch (the reader is caught up: what came before
// it is the log as it was) and then each new matching event as the log
// grows, until the caller goes away; a limit without tail counts followed
// events too, and the stream ends when it is reached.
func (s *ReadService) Query(req *unumv1.AuditQueryRequest, stream unumv1.Audit_QueryServer) error {
	f, err := FilterFromProto(req.GetFilter())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ctx := stream.Context()
	if f.Node != "" && f.Node != s.Log.Node() {
		// This log holds only this node's events: nothing can ever match.
		return nil
	}
	b := &batcher{stream: stream}
	limit := uint64(req.GetLimit())
	var sent uint64
	var sendErr error
	// match decodes and filters one entry; it fails on an entry that does
	// not decode rather than skip it: a reader must not be shown a log with
	// silent holes (verify names the damage).
	match := func(i uint64, raw []byte) (bool, error) {
		e, err := DecodeEvent(raw)
		if err != nil {
			return false, status.Errorf(codes.DataLoss, "entry %d of %s's audit log does not decode (run unum audit verify): %v", i, s.Log.Node(), err)
		}
		return f.Match(e), nil
	}
	// forward sends the matching entries [from, to) and reports whether
	// the limit was reached.
	forward := func(from, to uint64) (bool, error) {
		done := false
		err := s.Log.Scan(ctx, from, func(i uint64, raw []byte) bool {
			if i >= to {
				return false
			}
			ok, err := match(i, raw)
			if err != nil {
				sendErr = err
				return false
			}
			if !ok {
				return true
			}
			if sendErr = b.add(raw); sendErr != nil {
				return false
			}
			sent++
			done = limit > 0 && sent >= limit
			return !done
		})
		if sendErr != nil {
			return false, sendErr
		}
		if err != nil {
			return false, scanStatus(err)
		}
		return done, b.flush()
	}

	next := s.Log.Size()
	if req.GetTail() {
		n := limit
		if n == 0 {
			n = defaultTail
		}
		var newest [][]byte
		err := s.Log.ScanBackward(ctx, next, func(i uint64, raw []byte) bool {
			ok, err := match(i, raw)
			if err != nil {
				sendErr = err
				return false
			}
			if ok {
				newest = append(newest, raw)
			}
			return uint64(len(newest)) < n
		})
		if sendErr != nil {
			return sendErr
		}
		if err != nil {
			return scanStatus(err)
		}
		slices.Reverse(newest)
		for _, raw := range newest {
			if err := b.add(raw); err != nil {
				return err
			}
		}
		if err := b.flush(); err != nil {
			return err
		}
		limit = 0 // the tail's limit was the backlog's; what follows is unlimited
	} else {
		done, err := forward(0, next)
		if err != nil || done {
			return err
		}
	}
	if !req.GetFollow() {
		return nil
	}
	if err := stream.Send(&unumv1.AuditEventBatch{}); err != nil {
		return err
	}
	for {
		size, err := s.Log.Wait(ctx, next)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return status.Error(codes.Unavailable, "the audit log is closing (the node is shutting down)")
			}
			return status.FromContextError(err).Err()
		}
		done, err := forward(next, size)
		if err != nil || done {
			return err
		}
		next = size
	}
}

func scanStatus(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Internal, "read audit log: %v", err)
}

// Verify checks this node's whole log with the published keys and returns
// the report with the newest signed checkpoint and a consistency proof from
// the caller's trusted size (from_size) to it. The caller checks that proof
// against the witness's checkpoint itself: the report is the node's word,
// the proof is not.
func (s *ReadService) Verify(ctx context.Context, req *unumv1.AuditVerifyRequest) (*unumv1.AuditVerifyResponse, error) {
	var keys *Keys
	if s.PublishedKeys != nil {
		var err error
		if keys, err = s.PublishedKeys(ctx); err != nil {
			return nil, status.Errorf(codes.Unavailable, "published audit keys: %v", err)
		}
	}
	// Sign the log as it is now (a no-op when nothing changed since the
	// newest checkpoint) before verifying, so the report covers the
	// checkpoint the answer commits to. A log that can no longer write
	// answers with its newest.
	sc, err := s.Log.Checkpoint(ctx)
	if err != nil {
		if sc = s.Log.Latest(); sc == nil {
			return nil, status.Errorf(codes.Unavailable, "sign a checkpoint: %v", err)
		}
	}
	rep := s.Log.Verify(ctx, keys)
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	resp := reportProto(s.Log.Node(), rep)
	resp.Checkpoint = sc.Marshal()
	from := req.GetFromSize()
	if from > sc.Size {
		// The witness holds a checkpoint of a longer log than this one: the
		// log lost witnessed entries. No proof can exist; say so.
		if resp.Ok {
			resp.Ok, resp.BadIndex = false, sc.Size
			resp.Problem = fmt.Sprintf("the log holds %d entries but a checkpoint of size %d was witnessed: entries from %d are missing", sc.Size, from, sc.Size)
		}
		return resp, nil
	}
	proof, err := s.Log.ConsistencyProof(from, sc.Size)
	if err != nil {
		if resp.Ok {
			resp.Ok, resp.Problem = false, fmt.Sprintf("consistency proof from size %d to %d: %v", from, sc.Size, err)
		}
		return resp, nil
	}
	resp.ConsistencyProof = HashesToBytes(proof)
	return resp, nil
}

// Proof returns one event of this node's log with its inclusion proof
// against a signed checkpoint: the newest witnessed one when it covers the
// event (a third party then needs to trust no single party), else the
// newest one, else one signed now.
func (s *ReadService) Proof(ctx context.Context, req *unumv1.AuditProofRequest) (*unumv1.AuditProofResponse, error) {
	node, index, err := ParseEventID(req.GetEventId())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "event_id: %v", err)
	}
	if node != s.Log.Node() {
		return nil, status.Errorf(codes.InvalidArgument, "event_id: event %s is in node %s's log, not %s's: ask node %s", req.GetEventId(), node, s.Log.Node(), node)
	}
	raw, err := s.Log.Get(index)
	switch {
	case errors.Is(err, ErrPruned):
		return nil, status.Errorf(codes.NotFound, "event %s was pruned by retention (signed prune record)", req.GetEventId())
	case errors.Is(err, ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "event %s: %s's log has %d entries", req.GetEventId(), node, s.Log.Size())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "read event %s: %v", req.GetEventId(), err)
	}
	sc := s.Log.LatestWitnessed()
	if sc == nil || sc.Size <= index {
		sc = s.Log.Latest()
	}
	if sc == nil || sc.Size <= index {
		if sc, err = s.Log.Checkpoint(ctx); err != nil {
			return nil, status.Errorf(codes.Unavailable, "sign a checkpoint: %v", err)
		}
		if sc.Size <= index {
			return nil, status.Errorf(codes.Internal, "the newest checkpoint (size %d) does not cover event %s", sc.Size, req.GetEventId())
		}
	}
	path, err := s.Log.InclusionProof(index, sc.Size)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "inclusion proof of %s: %v", req.GetEventId(), err)
	}
	return &unumv1.AuditProofResponse{Event: raw, Index: index, Checkpoint: sc.Marshal(), InclusionProof: HashesToBytes(path)}, nil
}

func reportProto(node string, r Report) *unumv1.AuditVerifyResponse {
	if r.Node != "" {
		node = r.Node
	}
	return &unumv1.AuditVerifyResponse{Node: node, Ok: r.OK, BadIndex: r.BadIndex, Problem: r.Problem,
		Entries: r.Entries, Checkpoints: r.Checkpoints, Pruned: r.Pruned}
}

// Roles of a published key (unumv1.AuditKey.role).
const (
	KeyRoleNode    = "node"    // a node's checkpoint key
	KeyRoleWitness = "witness" // a control node's countersigning key
)

// KeysFromProto is the Keys of a Keys answer, checked as strictly as a
// keys file: an unknown role or a keyset that does not load is an error.
func KeysFromProto(resp *unumv1.AuditKeysResponse) (*Keys, error) {
	k := &Keys{Nodes: map[string][]byte{}, Witnesses: map[string][]byte{}}
	for _, key := range resp.GetKeys() {
		switch key.GetRole() {
		case KeyRoleNode:
			k.Nodes[key.GetNode()] = key.GetPublicKeyset()
		case KeyRoleWitness:
			k.Witnesses[key.GetNode()] = key.GetPublicKeyset()
		default:
			return nil, fmt.Errorf("published audit key of %s has role %q", key.GetNode(), key.GetRole())
		}
	}
	for _, m := range []map[string][]byte{k.Nodes, k.Witnesses} {
		for name, pub := range m {
			if _, err := verifierOf(pub); err != nil {
				return nil, fmt.Errorf("published audit key of %s: %w", name, err)
			}
		}
	}
	return k, nil
}
