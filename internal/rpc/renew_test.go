package rpc

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/revocation"
)

// TestMustRenewDetail: a certificate issued inside a restore window is
// refused on every method but renewal, with a machine-readable detail that
// a revoked certificate never carries.
func TestMustRenewDetail(t *testing.T) {
	p := newPKI(t, "unum.test")
	now := time.Now()
	view := revocation.NewView(0, time.Now)
	view.Update(revocation.NewSet(
		[]revocation.Entry{{ID: "spiffe://unum.test/node/revoked", Before: now.Add(time.Hour)}},
		revocation.Window{BackupAt: now.Add(-time.Hour), RestoredAt: now.Add(time.Hour)}, 1), now)
	srv := NewServer(p.creds(t, "/node/n1"), ServerConfig{Authorizer: testAuthorizer(t, nil), Revocations: view, Log: nilLogger()})
	unumv1.RegisterIdentityServer(srv, whoAmI{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	call := func(path string) (whoErr, renewErr error) {
		cc, err := Dial(p.creds(t, path), []string{lis.Addr().String()})
		require.NoError(t, err)
		defer cc.Close()
		c := unumv1.NewIdentityClient(cc)
		_, whoErr = c.WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
		_, renewErr = c.RenewNodeSVID(ctx5(t), &unumv1.RenewNodeSVIDRequest{})
		return whoErr, renewErr
	}

	who, renew := call("/node/n2") // issued now: inside the window
	require.Equal(t, codes.Unauthenticated, status.Code(who))
	require.ErrorContains(t, who, "renew it first")
	require.True(t, IsMustRenew(who))
	// The interceptor let the renewal through to the (unimplemented) handler.
	require.Equal(t, codes.Unimplemented, status.Code(renew), "%v", renew)

	who, renew = call("/node/revoked")
	require.Equal(t, codes.Unauthenticated, status.Code(who))
	require.False(t, IsMustRenew(who), "a revoked certificate must not be told to renew")
	require.Equal(t, codes.Unauthenticated, status.Code(renew), "a revoked certificate may not renew")

	require.False(t, IsMustRenew(status.Error(codes.Unauthenticated, revocation.ErrMustRenew.Error())), "only the detail counts, not the message")
	require.False(t, IsMustRenew(nil))
}
