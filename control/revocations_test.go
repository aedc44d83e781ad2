package control

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/revocation"
)

// TestRevokeMergesAndFeeds: a revocation reaches the server's own view
// through the etcd watch, re-revoking never shortens it, and the janitor
// prunes a record only once it has outlived what it refuses.
func TestRevokeMergesAndFeeds(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://unum.test/ns/revoke/job/merge")
	first, err := h.srv.revoke(ctxT(t), id, "first", "test")
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(revocation.ClockSkewAllowance), first.Before, time.Second)

	deadline := time.Now().Add(5 * time.Second)
	for {
		set, _, _ := h.srv.Revocations().Snapshot()
		if e, ok := set.Lookup(id.String()); ok && e.Before.Equal(first.Before) {
			break
		}
		require.True(t, time.Now().Before(deadline), "revocation never reached the view")
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, h.srv.Revocations().Fresh())

	second, err := h.srv.revoke(ctxT(t), id, "second", "test")
	require.NoError(t, err)
	require.False(t, second.Before.Before(first.Before), "a re-revocation shortened the revocation")

	// Not yet expired: kept. Past its expiry: pruned.
	n, err := h.srv.pruneRevocations(ctxT(t), time.Now())
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = h.srv.pruneRevocations(ctxT(t), time.Now().Add(leafRetention+time.Hour))
	require.NoError(t, err)
	require.Positive(t, n)
	resp, err := h.etcd.Client().Get(ctxT(t), revocationKey(id.String()))
	require.NoError(t, err)
	require.Empty(t, resp.Kvs)
}

// TestUndecodableRevocationFailsClosed: garbage in a revocation record
// revokes the ID outright rather than being ignored.
func TestUndecodableRevocationFailsClosed(t *testing.T) {
	id := "spiffe://unum.test/ns/revoke/job/garbage"
	_, err := h.etcd.Client().Put(ctxT(t), revocationKey(id), "{not json")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = h.etcd.Client().Delete(ctxT(t), revocationKey(id)) })
	deadline := time.Now().Add(5 * time.Second)
	for {
		set, _, _ := h.srv.Revocations().Snapshot()
		if err := set.Check(id, time.Now().Add(24*time.Hour)); err != nil {
			require.ErrorIs(t, err, revocation.ErrRevoked)
			break
		}
		require.True(t, time.Now().Before(deadline), "undecodable record ignored")
		time.Sleep(10 * time.Millisecond)
	}
}
