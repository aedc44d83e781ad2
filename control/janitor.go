package control

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/unumos/unum/identity/jointoken"
)

// tokenRetention is how long a join-token record is kept after it expired
// (used or not): long enough to answer "was this token used, and by whom"
// while investigating, short enough that the records do not pile up.
const (
	tokenRetention = 24 * time.Hour
	pruneEvery     = 10 * time.Minute
)

// pruneJoinTokens deletes join- and user-token records that expired more than
// tokenRetention before now. Each delete is conditional on the record not
// having changed since it was read, so a concurrent use is never lost. It
// returns how many records it deleted.
func (s *Server) pruneJoinTokens(ctx context.Context, now time.Time) (int, error) {
	return s.pruneWhere(ctx, prefixAllTokens, func(value []byte) bool {
		rec, err := decode[jointoken.Record](value)
		return err == nil && now.Sub(rec.ExpiresAt) >= tokenRetention
	})
}

// pruneWhere deletes the records under prefix for which expired says so.
// Each delete is conditional on the record not having changed since it was
// read, so a concurrent update (a token used, a re-revocation) is never
// lost. It returns how many records it deleted.
func (s *Server) pruneWhere(ctx context.Context, prefix string, expired func(value []byte) bool) (int, error) {
	resp, err := s.cfg.Etcd.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, kv := range resp.Kvs {
		if !expired(kv.Value) {
			continue
		}
		key := string(kv.Key)
		txn, err := s.cfg.Etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpDelete(key)).
			Commit()
		if err != nil {
			return deleted, err
		}
		if txn.Succeeded {
			deleted++
		}
	}
	return deleted, nil
}

// janitor prunes old join-token records until ctx ends. Every control node
// runs it; the conditional deletes make that safe.
func (s *Server) janitor(ctx context.Context) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := s.pruneJoinTokens(ctx, s.cfg.Clock()); err != nil {
			s.cfg.Log.Debug("prune join tokens", "err", err)
		} else if n > 0 {
			s.cfg.Log.Info("pruned expired join-token records", "count", n)
		}
		if n, err := s.pruneRevocations(ctx, s.cfg.Clock()); err != nil {
			s.cfg.Log.Debug("prune revocations", "err", err)
		} else if n > 0 {
			s.cfg.Log.Info("pruned revocations that outlived every certificate they refuse", "count", n)
		}
	}
}

// pruneRevocations deletes revocation records past their Expires: every
// certificate they could refuse has expired. Deletes are conditional on the
// record not having changed since it was read (a re-revocation extends it).
// An undecodable record is kept: the feed treats it as revoking its ID
// outright, and only an operator should decide to drop it.
func (s *Server) pruneRevocations(ctx context.Context, now time.Time) (int, error) {
	return s.pruneWhere(ctx, prefixRevocations, func(value []byte) bool {
		rec, err := decode[revocationRecord](value)
		return err == nil && !rec.Expires.IsZero() && !now.Before(rec.Expires)
	})
}
