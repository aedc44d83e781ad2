package rpc

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/revocation"
)

// blockingIdentity serves WhoAmI and a WatchRevocations stream that sends
// one message and then stays open until the call ends.
type blockingIdentity struct{ whoAmI }

func (blockingIdentity) WatchRevocations(_ *unumv1.WatchRevocationsRequest, s unumv1.Identity_WatchRevocationsServer) error {
	if err := s.Send(&unumv1.RevocationUpdate{}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func serveWithView(t *testing.T, creds *Credentials, view *revocation.View) string {
	t.Helper()
	srv := NewServer(creds, ServerConfig{Authorizer: testAuthorizer(t, nil), Revocations: view, Log: nilLogger()})
	unumv1.RegisterIdentityServer(srv, blockingIdentity{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func revoke(view *revocation.View, now time.Time, w revocation.Window, ids ...string) {
	var entries []revocation.Entry
	for _, id := range ids {
		entries = append(entries, revocation.Entry{ID: id, Before: now.Add(revocation.ClockSkewAllowance), Reason: "test revocation", RevokedBy: "test"})
	}
	view.Update(revocation.NewSet(entries, w, 1), now)
}

// TestRevokedCallerRefused: every call checks the caller's chain; a revoked
// caller is refused with the reason, over a connection that already worked.
func TestRevokedCallerRefused(t *testing.T) {
	p := newPKI(t, "unum.test")
	view := revocation.NewView(time.Hour, nil)
	revoke(view, time.Now(), revocation.Window{})
	addr := serveWithView(t, p.creds(t, "/node/n1"), view)
	dial := func(c *Credentials) unumv1.IdentityClient {
		cc, err := Dial(c, []string{addr})
		require.NoError(t, err)
		t.Cleanup(func() { cc.Close() })
		return unumv1.NewIdentityClient(cc)
	}
	victim := dial(p.creds(t, "/user/alice"))
	other := dial(p.creds(t, "/user/bob"))
	_, err := victim.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.NoError(t, err)

	revoke(view, time.Now(), revocation.Window{}, "spiffe://unum.test/user/alice")
	_, err = victim.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "certificate revoked")
	require.Contains(t, err.Error(), "test revocation")
	_, err = other.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.NoError(t, err, "an unrelated identity must keep working")

	// Revoking the intermediate's node refuses everything it signed.
	revoke(view, time.Now(), revocation.Window{}, "spiffe://unum.test/node/n1")
	_, err = other.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "issuer")
}

// TestMustRenewOnlyRenews: a certificate issued between a backup and its
// restore may only call the renewal methods.
func TestMustRenewOnlyRenews(t *testing.T) {
	p := newPKI(t, "unum.test")
	view := revocation.NewView(time.Hour, nil)
	now := time.Now()
	revoke(view, now, revocation.Window{BackupAt: now.Add(-time.Hour), RestoredAt: now.Add(time.Hour)})
	addr := serveWithView(t, p.creds(t, "/node/n1"), view)
	cc, err := Dial(p.creds(t, "/node/n2"), []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	c := unumv1.NewIdentityClient(cc)
	_, err = c.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "renew it first")
	// Past the interceptor (this test server does not implement renewal).
	_, err = c.RenewNodeSVID(ctx5(t), &unumv1.RenewNodeSVIDRequest{})
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}

// TestStaleViewRefusesPrivileged: a server whose revocation view has not
// been confirmed current within its bound refuses privileged actions, says
// why, and still answers unprivileged ones; it recovers when the view does.
func TestStaleViewRefusesPrivileged(t *testing.T) {
	p := newPKI(t, "unum.test")
	clock := &testClock{now: time.Now()}
	view := revocation.NewView(10*time.Second, clock.Now)
	addr := serveWithView(t, p.creds(t, "/node/n1"), view)
	cc, err := Dial(p.creds(t, "/user/admin"), []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	c := unumv1.NewIdentityClient(cc)

	_, err = c.CreateEntry(ctx5(t), &unumv1.CreateEntryRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "not loaded yet")

	revoke(view, clock.Now(), revocation.Window{})
	_, err = c.CreateEntry(ctx5(t), &unumv1.CreateEntryRequest{})
	require.Equal(t, codes.Unimplemented, status.Code(err), "a fresh view lets the privileged call through: %v", err)

	clock.Add(11 * time.Second)
	_, err = c.CreateEntry(ctx5(t), &unumv1.CreateEntryRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "revocation view is stale")
	require.Contains(t, err.Error(), "bound 10s")
	_, err = c.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.NoError(t, err, "unprivileged calls still work")

	view.Touch(clock.Now())
	_, err = c.CreateEntry(ctx5(t), &unumv1.CreateEntryRequest{})
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}

// TestRevokedStreamCut: a stream already open when its caller is revoked
// ends with the reason, without the caller doing anything.
func TestRevokedStreamCut(t *testing.T) {
	p := newPKI(t, "unum.test")
	view := revocation.NewView(time.Hour, nil)
	revoke(view, time.Now(), revocation.Window{})
	addr := serveWithView(t, p.creds(t, "/node/n1"), view)
	cc, err := Dial(p.creds(t, "/node/n2"), []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	stream, err := unumv1.NewIdentityClient(cc).WatchRevocations(ctx5(t), &unumv1.WatchRevocationsRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)

	revoke(view, time.Now(), revocation.Window{}, "spiffe://unum.test/node/n2")
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "certificate revoked")
}

// TestClientRefusesRevokedServer: a node does not talk to a control node
// whose identity it knows to be revoked (removed).
func TestClientRefusesRevokedServer(t *testing.T) {
	p := newPKI(t, "unum.test")
	addr := serveWithView(t, p.creds(t, "/node/n1"), revocation.NewView(time.Hour, nil))
	clientView := revocation.NewView(time.Hour, nil)
	revoke(clientView, time.Now(), revocation.Window{})
	cc, err := DialChecked(p.creds(t, "/node/n2"), clientView, []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	_, err = unumv1.NewIdentityClient(cc).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.NoError(t, err)

	revoke(clientView, time.Now(), revocation.Window{}, "spiffe://unum.test/node/n1")
	cc2, err := DialChecked(p.creds(t, "/node/n2"), clientView, []string{addr})
	require.NoError(t, err)
	defer cc2.Close()
	_, err = unumv1.NewIdentityClient(cc2).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "certificate revoked")
}

// TestUnloadedViewServesOnlyHarmlessCalls: before the first revocation set
// has loaded, nothing is known to be revoked, so only calls a revoked
// caller could not misuse are served.
func TestUnloadedViewServesOnlyHarmlessCalls(t *testing.T) {
	p := newPKI(t, "unum.test")
	addr := serveWithView(t, p.creds(t, "/node/n1"), revocation.NewView(time.Hour, nil))
	cc, err := Dial(p.creds(t, "/node/n2"), []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	c := unumv1.NewIdentityClient(cc)
	_, err = c.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.NoError(t, err)
	stream, err := c.WatchRevocations(ctx5(t), &unumv1.WatchRevocationsRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "not loaded yet")
}
