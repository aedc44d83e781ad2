package delegation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// grpcTestPKI is a CA and leaf certificates naming SPIFFE IDs, for mTLS
// over real sockets.
type grpcTestPKI struct {
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newGRPCTestPKI(t *testing.T) *grpcTestPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &grpcTestPKI{ca: ca, key: key, pool: pool}
}

func (p *grpcTestPKI) leaf(t *testing.T, id spiffeid.ID) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestServerInterceptor: a service linking the package verifies what a
// call presents against its mTLS peer and reads the chain from its context;
// a non-holder and (when required) a call without a credential are refused.
func TestServerInterceptor(t *testing.T) {
	f := newFixture(t)
	// The interceptor checks times against the wall clock's fixture.
	f.now = time.Now().Truncate(time.Second)
	pki := newGRPCTestPKI(t)
	svc := id("/ns/shop/job/svc")
	tok, c := f.mint(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{svc}, Scopes: mustScopes(t, "kv.read:kv/shop/*")})

	for _, required := range []bool{false, true} {
		var seen *Credential
		capture := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			seen, _ = FromContext(ctx)
			return h(ctx, req)
		}
		srv := grpc.NewServer(
			grpc.Creds(grpccreds.NewTLS(&tls.Config{Certificates: []tls.Certificate{pki.leaf(t, svc)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool, MinVersion: tls.VersionTLS13})),
			grpc.ChainUnaryInterceptor(f.verify.UnaryServerInterceptor([]spiffeid.ID{svc}, DefaultMaxDepth, required), capture))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)

		call := func(as spiffeid.ID, token string) error {
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{
				Certificates: []tls.Certificate{pki.leaf(t, as)}, RootCAs: pki.pool, MinVersion: tls.VersionTLS13})))
			require.NoError(t, err)
			defer cc.Close()
			ctx := context.Background()
			if token != "" {
				ctx = OutgoingContext(ctx, token)
			}
			seen = nil
			_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}

		require.NoError(t, call(svcA, tok))
		require.NotNil(t, seen)
		require.Equal(t, c.ID, seen.ID)
		require.Equal(t, []spiffeid.ID{alice, svcA}, seen.Principals())

		err = call(svcB, tok)
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "someone other than its holder")
		require.Nil(t, seen)

		err = call(svcA, "")
		if required {
			require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
		} else {
			require.NoError(t, err)
			require.Nil(t, seen, "no credential, none in the context")
		}
	}
}

// TestStreamInterceptorCutsRevokedCredential: a stream opened with a
// credential that is revoked while it runs ends with the reason; the
// verifier does not let a stream opened before a revocation outlive it.
func TestStreamInterceptorCutsRevokedCredential(t *testing.T) {
	f := newFixture(t)
	f.now = time.Now().Truncate(time.Second)
	f.revoke()
	pki := newGRPCTestPKI(t)
	svc := id("/ns/shop/job/svc")
	tok, c := f.mint(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{svc}, Scopes: mustScopes(t, "kv.read:kv/shop/*")})
	srv := grpc.NewServer(
		grpc.Creds(grpccreds.NewTLS(&tls.Config{Certificates: []tls.Certificate{pki.leaf(t, svc)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool, MinVersion: tls.VersionTLS13})),
		grpc.ChainStreamInterceptor(f.verify.StreamServerInterceptor([]spiffeid.ID{svc}, DefaultMaxDepth, true)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pki.leaf(t, svcA)}, RootCAs: pki.pool, MinVersion: tls.VersionTLS13})))
	require.NoError(t, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := healthpb.NewHealthClient(cc).Watch(OutgoingContext(ctx, tok), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)

	f.revoke(RevocationKeyJTI(c.ID))
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "credential revoked")
}
