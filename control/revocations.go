package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/revocation"
)

const (
	// progressEvery is how often the revocation feed asks etcd to confirm
	// that its watch is current (a progress notification); it keeps the
	// view's age near this when nothing changes.
	progressEvery = time.Second
	// revocationHeartbeat is how often WatchRevocations tells a quiet
	// stream that the sender's view is still current.
	revocationHeartbeat = time.Second
	// leafRetention is how long a revocation of a leaf identity (user,
	// workload) is kept after its Before: longer than any leaf certificate
	// lives (user certificates are capped at MaxUserCertTTL).
	leafRetention = MaxUserCertTTL + time.Hour
	// MaxUserCertTTL caps user certificate lifetimes.
	MaxUserCertTTL = 7 * 24 * time.Hour
)

// revocationRecord is the etcd form of a revocation.Entry. Expires is when
// the janitor may delete it: no certificate it refuses can still be valid.
type revocationRecord struct {
	revocation.Entry
	Expires time.Time `json:"expires"`
}

// Revocations is the control node's view of the revocation set, fed by
// its etcd watch.
func (s *Server) Revocations() *revocation.View { return s.revocations }

// revoke records that every certificate for id issued before now (plus
// revocation.ClockSkewAllowance) is refused, in one etcd transaction with
// also (e.g. deleting the user it revokes). Revoking again never shortens
// an existing revocation.
func (s *Server) revoke(ctx context.Context, id spiffeid.ID, reason, by string, also ...clientv3.Op) (revocation.Entry, error) {
	return s.revokeIf(ctx, id, reason, by, nil, also)
}

// errGuardFailed: revokeIf's guard comparisons did not hold; nothing was
// written.
var errGuardFailed = errors.New("state changed concurrently; nothing was changed, retry")

// revokeIf is revoke conditional on guard: the revocation and also are
// written only if every guard comparison holds (errGuardFailed otherwise).
func (s *Server) revokeIf(ctx context.Context, id spiffeid.ID, reason, by string, guard []clientv3.Cmp, also []clientv3.Op) (revocation.Entry, error) {
	es, err := s.revokeManyIf(ctx, []spiffeid.ID{id}, reason, by, guard, also)
	if err != nil {
		return revocation.Entry{}, err
	}
	return es[0], nil
}

// maxRevocationsPerTxn keeps revokeManyIf's transactions well under etcd's
// default limit of 128 operations.
const maxRevocationsPerTxn = 64

// revokeManyIf revokes every ID in ids in one etcd transaction with also,
// conditional on guard (see revokeIf); with no ids it is just that guarded
// transaction. It refuses more than maxRevocationsPerTxn IDs; callers batch.
func (s *Server) revokeManyIf(ctx context.Context, ids []spiffeid.ID, reason, by string, guard []clientv3.Cmp, also []clientv3.Op) ([]revocation.Entry, error) {
	keys := make([]string, len(ids))
	nodes := map[string]bool{}
	for i, id := range ids {
		keys[i] = id.String()
		nodes[keys[i]] = identity.Classify(id).Kind == identity.KindNode
	}
	retention := func(key string) time.Duration {
		// A node's revocation also refuses its intermediate (same SPIFFE
		// ID), which lives much longer than any leaf.
		if nodes[key] {
			return s.cfg.IntermediateTTL + time.Hour
		}
		return leafRetention
	}
	merged, err := s.revokeKeysIf(ctx, keys, retention, reason, by, guard, also)
	if err != nil {
		return nil, err
	}
	for _, e := range merged {
		s.cfg.Log.Warn("identity revoked", "spiffe_id", e.ID, "before", e.Before, "reason", reason, "by", by)
		s.record(ctx, audit.Event{Kind: audit.KindRevocation, Action: audit.ActionRevoke, Outcome: audit.Allow}.
			WithDetails(RevocationDetails{SPIFFEID: e.ID, Before: e.Before.UTC(), Reason: reason}))
	}
	return merged, nil
}

// revokeKeysIf writes a revocation entry for every key of the revocation
// set (a SPIFFE ID, or a delegation.RevocationKey*) in one etcd transaction
// with also, conditional on guard, each kept for retention(key) past its
// Before. Revoking again never shortens an existing revocation.
func (s *Server) revokeKeysIf(ctx context.Context, keys []string, retention func(string) time.Duration, reason, by string, guard []clientv3.Cmp, also []clientv3.Op) ([]revocation.Entry, error) {
	if len(keys) > maxRevocationsPerTxn {
		return nil, fmt.Errorf("revoke: %d identities in one transaction (at most %d)", len(keys), maxRevocationsPerTxn)
	}
	now := s.cfg.Clock()
	for attempt := 0; attempt < 5; attempt++ {
		cmps := append([]clientv3.Cmp(nil), guard...)
		var ops []clientv3.Op
		merged := make([]revocation.Entry, 0, len(keys))
		for _, id := range keys {
			e := revocation.Entry{ID: id, Before: now.Add(revocation.ClockSkewAllowance), Reason: reason, RevokedBy: by, RevokedAt: now}
			key := revocationKey(id)
			got, err := s.cfg.Etcd.Get(ctx, key)
			if err != nil {
				return nil, fmt.Errorf("read revocation of %s: %w", id, err)
			}
			cmp := clientv3.Compare(clientv3.ModRevision(key), "=", 0)
			if len(got.Kvs) == 1 {
				if old, err := decode[revocationRecord](got.Kvs[0].Value); err == nil {
					e = old.Entry.Merge(e)
				}
				cmp = clientv3.Compare(clientv3.ModRevision(key), "=", got.Kvs[0].ModRevision)
			}
			cmps = append(cmps, cmp)
			ops = append(ops, clientv3.OpPut(key, mustJSON(revocationRecord{Entry: e, Expires: e.Before.Add(retention(id))})))
			merged = append(merged, e)
		}
		txn, err := s.cfg.Etcd.Txn(ctx).If(cmps...).Then(append(ops, also...)...).Commit()
		if err != nil {
			return nil, fmt.Errorf("record revocation: %w", err)
		}
		if txn.Succeeded {
			return merged, nil
		}
		if len(guard) > 0 {
			// Tell a lost race on a revocation record from a failed guard.
			now, err := s.cfg.Etcd.Txn(ctx).If(guard...).Commit()
			if err != nil {
				return nil, fmt.Errorf("record revocation: %w", err)
			}
			if !now.Succeeded {
				return nil, errGuardFailed
			}
		}
	}
	return nil, errors.New("record revocation: too much contention")
}

// revocationStatus maps a failed revocation transaction to a status: the
// guard moved (Aborted: retry) or etcd failed (Unavailable).
func revocationStatus(what string, err error) error {
	if errors.Is(err, errGuardFailed) {
		return status.Errorf(codes.Aborted, "%s: %v", what, err)
	}
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}

// waitSignable delays signing for id until a certificate signed now is not
// refused by a revocation of id whose Before is still ahead (it is set
// ClockSkewAllowance into the future): a user removed and added again gets
// a working certificate, a few seconds later.
func (s *Server) waitSignable(ctx context.Context, id spiffeid.ID) error {
	set, _, _ := s.revocations.Snapshot()
	e, ok := set.Lookup(id.String())
	if !ok {
		return nil
	}
	wait := e.FirstSignable().Sub(s.cfg.Clock())
	if wait <= 0 {
		return nil
	}
	if wait > revocation.ClockSkewAllowance+2*time.Second {
		return status.Errorf(codes.Unavailable, "%s was revoked until %s (a clock ahead?)", id, e.Before.UTC().Format(time.RFC3339))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// feedRevocations keeps s.revocations in step with etcd until ctx ends:
// load, then watch, asking etcd every progressEvery to confirm the watch is
// current. The view ages whenever this loop cannot hear from a leader-backed
// etcd (lost quorum, partition), which is what makes a cut-off control node
// refuse privileged actions.
func (s *Server) feedRevocations(ctx context.Context) {
	s.feed(ctx, "revocation feed", s.followRevocations)
}

func (s *Server) followRevocations(ctx context.Context) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	lctx, lcancel := context.WithTimeout(wctx, 5*time.Second)
	resp, err := s.cfg.Etcd.Get(lctx, watchRevocations, clientv3.WithPrefix())
	lcancel()
	if err != nil {
		return fmt.Errorf("load revocations: %w", err)
	}
	entries := map[string]revocation.Entry{}
	var window revocation.Window
	apply := func(key string, value []byte, deleted bool) {
		switch {
		case key == keyRestoreWindow:
			window = revocation.Window{}
			if !deleted {
				if w, err := decode[revocation.Window](value); err == nil {
					window = w
				} else {
					s.cfg.Log.Error("undecodable restore window", "err", err)
				}
			}
		case strings.HasPrefix(key, prefixRevocations):
			id := strings.TrimPrefix(key, prefixRevocations)
			if deleted {
				delete(entries, id)
				return
			}
			rec, err := decode[revocationRecord](value)
			if err != nil || rec.ID != id {
				// Fail closed on our own garbage: revoke the ID from the
				// beginning of time rather than forget it.
				s.cfg.Log.Error("undecodable revocation record: revoking the id outright", "key", key, "err", err)
				rec.Entry = revocation.Entry{ID: id, Before: time.Unix(1<<40, 0), Reason: "undecodable revocation record"}
			}
			entries[id] = rec.Entry
		}
	}
	for _, kv := range resp.Kvs {
		apply(string(kv.Key), kv.Value, false)
	}
	publish := func(rev int64) {
		list := make([]revocation.Entry, 0, len(entries))
		for _, e := range entries {
			list = append(list, e)
		}
		s.revocations.Update(revocation.NewSet(list, window, rev), s.cfg.Clock())
	}
	publish(resp.Header.Revision)

	return s.watchFrom(ctx, wctx, "revocation", watchRevocations, resp.Header.Revision,
		func(wr clientv3.WatchResponse) error {
			for _, ev := range wr.Events {
				apply(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete)
			}
			publish(wr.Header.Revision)
			return nil
		},
		func() { s.revocations.Touch(s.cfg.Clock()) })
}

// WatchRevocations implements unumv1.IdentityServer: the whole set on
// connect and on every change, and a heartbeat every revocationHeartbeat
// carrying how old this server's own view is, so the receiver's view ages
// with it (a node fed by a stale control node is stale too).
func (s *Server) WatchRevocations(_ *unumv1.WatchRevocationsRequest, stream unumv1.Identity_WatchRevocationsServer) error {
	ctx := stream.Context()
	tick := time.NewTicker(revocationHeartbeat)
	defer tick.Stop()
	var sent *revocation.Set
	for {
		set, changed, loaded := s.revocations.Snapshot()
		age, _ := s.revocations.Age()
		msg := &unumv1.RevocationUpdate{ViewAgeMs: age.Milliseconds()}
		if loaded && set != sent {
			msg = RevocationUpdate(set, age)
			sent = set
		}
		if loaded {
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// RevocationUpdate is the full-set message for set.
func RevocationUpdate(set *revocation.Set, age time.Duration) *unumv1.RevocationUpdate {
	msg := &unumv1.RevocationUpdate{Full: true, Revision: set.Revision(), ViewAgeMs: age.Milliseconds()}
	for _, e := range set.Entries() {
		msg.Revocations = append(msg.Revocations, revocationToProto(e))
	}
	if w := set.Restore(); !w.IsZero() {
		msg.Restore = &unumv1.RestoreWindow{BackupUnixNano: w.BackupAt.UnixNano(), RestoredUnixNano: w.RestoredAt.UnixNano()}
	}
	return msg
}

func revocationToProto(e revocation.Entry) *unumv1.Revocation {
	return &unumv1.Revocation{
		SpiffeId: e.ID, BeforeUnixNano: e.Before.UnixNano(), Reason: e.Reason,
		RevokedBy: e.RevokedBy, RevokedAtUnix: e.RevokedAt.Unix(),
	}
}

// SetFromUpdate decodes a full RevocationUpdate.
func SetFromUpdate(msg *unumv1.RevocationUpdate) *revocation.Set {
	entries := make([]revocation.Entry, 0, len(msg.GetRevocations()))
	for _, r := range msg.GetRevocations() {
		entries = append(entries, revocation.Entry{
			ID: r.GetSpiffeId(), Before: time.Unix(0, r.GetBeforeUnixNano()), Reason: r.GetReason(),
			RevokedBy: r.GetRevokedBy(), RevokedAt: time.Unix(r.GetRevokedAtUnix(), 0),
		})
	}
	var w revocation.Window
	if r := msg.GetRestore(); r != nil {
		w = revocation.Window{BackupAt: time.Unix(0, r.GetBackupUnixNano()), RestoredAt: time.Unix(0, r.GetRestoredUnixNano())}
	}
	return revocation.NewSet(entries, w, msg.GetRevision())
}
