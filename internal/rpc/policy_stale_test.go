package rpc

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/policy"
)

// TestStalePolicyRefusesPrivileged: a server that cannot show it serves
// the latest policy revision (its watch fell behind, or a newer revision
// exists that it has not loaded) refuses privileged calls with Unavailable
// and the reason, and keeps serving unprivileged ones; it recovers when
// it catches up. The attack: apply a tighter policy and use a node that
// has not heard of it.
func TestStalePolicyRefusesPrivileged(t *testing.T) {
	p := newPKI(t, "unum.test")
	clock := &testClock{now: time.Unix(1_900_000_000, 0)}
	eng, err := policy.NewEngine(context.Background(), policy.Builtin(), 1)
	require.NoError(t, err)
	view := policy.NewView(10 * time.Second)
	view.Set(eng)
	view.Observe(1, clock.Now())
	authz := &PolicyAuthorizer{Decider: policy.NewDecider(policy.DeciderConfig{Node: "n1", View: view, Log: policy.NewRing(100), Now: clock.Now})}
	revs := revocation.NewView(time.Hour, nil)
	revs.Update(revocation.NewSet(nil, revocation.Window{}, 1), time.Now())
	srv := NewServer(p.creds(t, "/node/n1"), ServerConfig{Authorizer: authz, Revocations: revs, Log: nilLogger()})
	unumv1.RegisterIdentityServer(srv, whoAmI{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := Dial(p.creds(t, "/user/admin"), []string{lis.Addr().String()})
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	ic := unumv1.NewIdentityClient(cc)
	entry := &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/web/job/api"}

	privileged := func() error { _, err := ic.CreateEntry(ctx5(t), entry); return err }
	// Fresh: authorized, then the test handler answers Unimplemented.
	require.Equal(t, codes.Unimplemented, status.Code(privileged()))

	// A newer revision exists; within the bound the node may still act on
	// the one it serves (it learnt of the new one a moment ago)...
	view.Observe(2, clock.Now())
	clock.Add(5 * time.Second)
	require.Equal(t, codes.Unimplemented, status.Code(privileged()))
	// ...past the bound it refuses privileged calls, saying why.
	clock.Add(6 * time.Second)
	err = privileged()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "policy view is stale: serving revision 1, revision 2 is the latest")
	_, err = ic.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.NoError(t, err, "unprivileged calls go on")

	// Caught up: revision 2 loaded and confirmed.
	eng2, err := policy.NewEngine(context.Background(), policy.Builtin(), 2)
	require.NoError(t, err)
	view.Set(eng2)
	view.Observe(2, clock.Now())
	require.Equal(t, codes.Unimplemented, status.Code(privileged()))

	// A watch that stops confirming (partitioned from the store) goes
	// stale too, with no newer revision known.
	clock.Add(11 * time.Second)
	err = privileged()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "not confirmed latest")
}
