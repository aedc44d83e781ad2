package control

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
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

// TestDeleteSharedEntries: an ID granted by two entries is revoked only
// when its last entry goes, also when both are deleted at once (each
// delete is guarded by the other entry it saw).
func TestDeleteSharedEntries(t *testing.T) {
	ic := unumv1.NewIdentityClient(conn(t, "/user/admin"))
	for round, concurrent := range []bool{false, true} {
		id := fmt.Sprintf("spiffe://unum.test/ns/revoke/job/shared-%d", round)
		var ids []string
		for _, node := range []string{"node-1", ""} {
			e, err := ic.CreateEntry(ctxT(t), &unumv1.CreateEntryRequest{SpiffeId: id, Node: node, AllNodes: node == "", Selectors: []string{"unix:uid:0"}})
			require.NoError(t, err)
			ids = append(ids, e.GetId())
		}
		revoked := func() bool {
			resp, err := h.etcd.Client().Get(ctxT(t), revocationKey(id))
			require.NoError(t, err)
			return len(resp.Kvs) == 1
		}
		if !concurrent {
			_, err := ic.DeleteEntry(ctxT(t), &unumv1.DeleteEntryRequest{Id: ids[0]})
			require.NoError(t, err)
			require.False(t, revoked(), "revoked while another entry still grants the id")
			_, err = ic.DeleteEntry(ctxT(t), &unumv1.DeleteEntryRequest{Id: ids[1]})
			require.NoError(t, err)
			require.True(t, revoked(), "last entry deleted, id not revoked")
			continue
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = ic.DeleteEntry(ctxT(t), &unumv1.DeleteEntryRequest{Id: ids[i]})
			}()
		}
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		require.True(t, revoked(), "both entries deleted concurrently, id not revoked")
	}
}

// TestEnrolmentRefusedOnStaleView: Join and Login sign certificates on the
// enrolment listener, which has no interceptor; they refuse on a stale
// revocation view themselves.
func TestEnrolmentRefusedOnStaleView(t *testing.T) {
	now := time.Now()
	stale := revocation.NewView(10*time.Second, func() time.Time { return now.Add(time.Minute) })
	stale.Update(revocation.NewSet(nil, revocation.Window{}, 1), now)
	s := &Server{cfg: h.srv.cfg, cache: h.srv.cache, reader: h.srv.reader, revocations: stale}
	_, err := s.join(ctxT(t), &unumv1.JoinRequest{Token: "unum1.node.x.y.z"}, &tokenUse{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "revocation view is stale")
	_, err = s.login(ctxT(t), &unumv1.LoginRequest{Token: "unum1.user.x.y.z"}, &tokenUse{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "revocation view is stale")
}

// TestRemovedControlNodeKeepsItsIntermediate: removing a control node that
// is down keeps its intermediate in the removal record (what it signed
// stays verifiable) and revokes its ID, which refuses that intermediate.
func TestRemovedControlNodeKeepsItsIntermediate(t *testing.T) {
	const name = "ctl-gone"
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	inter, err := ca.NewIntermediate(h.td, name, key.Public(), h.root, h.rootKey, time.Now(), time.Hour)
	require.NoError(t, err)
	cli := h.etcd.Client()
	_, err = cli.Put(ctxT(t), nodeKey(name), mustJSON(NodeRecord{Name: name, SPIFFEID: "spiffe://unum.test/node/" + name, Roles: []string{"control"}}))
	require.NoError(t, err)
	_, err = cli.Put(ctxT(t), intermediateKey(name), mustJSON(IntermediateRecord{Node: name, Fingerprint: ca.Fingerprint(inter), Certificate: inter.Raw}))
	require.NoError(t, err)

	admin := unumv1.NewClusterClient(conn(t, "/user/admin"))
	_, err = admin.RemoveNode(ctxT(t), &unumv1.RemoveNodeRequest{Name: name})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "a node that never heartbeated needs --force: %v", err)
	resp, err := admin.RemoveNode(ctxT(t), &unumv1.RemoveNodeRequest{Name: name, Force: true})
	require.NoError(t, err)
	require.False(t, resp.GetRemovedEtcdMember(), "it had no etcd member")

	got, err := cli.Get(ctxT(t), removedNodeKey(name))
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	removed, err := decode[RemovedNodeRecord](got.Kvs[0].Value)
	require.NoError(t, err)
	kept, err := ca.ParseCertsPEM(removed.Certificates)
	require.NoError(t, err)
	require.Len(t, kept, 1)
	require.True(t, kept[0].Equal(inter), "the removal record must keep the node's intermediate")

	rev, err := cli.Get(ctxT(t), revocationKey(resp.GetRevokedSpiffeId()))
	require.NoError(t, err)
	require.Len(t, rev.Kvs, 1)
	rec, err := decode[revocationRecord](rev.Kvs[0].Value)
	require.NoError(t, err)
	set := revocation.NewSet([]revocation.Entry{rec.Entry}, revocation.Window{}, 1)
	require.ErrorIs(t, set.Check(resp.GetRevokedSpiffeId(), revocation.IssuedAt(inter)), revocation.ErrRevoked)
}
