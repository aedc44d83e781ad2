package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/revocation"
)

// eventSink keeps the events recorded through it.
type eventSink struct {
	mu     sync.Mutex
	events []audit.Event
}

func (s *eventSink) Record(_ context.Context, e *audit.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, *e)
	return nil
}

func (s *eventSink) get() []audit.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]audit.Event(nil), s.events...)
}

func serveAudited(t *testing.T, creds *Credentials, view *revocation.View, accepted, refused audit.Recorder) string {
	t.Helper()
	srv := NewServer(creds, ServerConfig{Authorizer: testAuthorizer(t, nil), Revocations: view, Log: nilLogger(), Audit: accepted, Refusals: refused})
	unumv1.RegisterIdentityServer(srv, whoAmI{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// Authentication is recorded per connection: an accepted handshake once,
// however many calls follow, naming the verified caller and its
// certificate; refused handshakes with why, never as accepted.
func TestHandshakesRecorded(t *testing.T) {
	p := newPKI(t, "unum.test")
	accepted, refused := &eventSink{}, &eventSink{}
	view := revocation.NewView(time.Hour, nil)
	revoke(view, time.Now(), revocation.Window{}, "spiffe://unum.test/user/mallory")
	addr := serveAudited(t, p.creds(t, "/node/n1"), view, accepted, refused)

	alice := p.creds(t, "/user/alice")
	cc, err := Dial(alice, []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	for i := 0; i < 3; i++ {
		_, err = unumv1.NewIdentityClient(cc).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
		require.NoError(t, err)
	}
	got := accepted.get()
	require.Len(t, got, 1, "one event per connection, not per call")
	e := got[0]
	require.Equal(t, audit.KindAuthn, e.Kind)
	require.Equal(t, audit.ActionAuthnMTLS, e.Action)
	require.Equal(t, audit.Allow, e.Outcome)
	require.Equal(t, "spiffe://unum.test/user/alice", e.Subject)
	var d AuthnDetails
	require.NoError(t, json.Unmarshal(e.Details, &d))
	svid, _ := alice.GetX509SVID()
	require.Equal(t, svid.Certificates[0].SerialNumber.String(), d.Serial)
	require.NotEmpty(t, d.Peer)

	// Another CA under the same trust domain name.
	evil := newPKI(t, "unum.test")
	evilCreds := evil.creds(t, "/user/admin")
	evilCreds.SetRoots([]*x509.Certificate{evil.root, p.root})
	ec, err := Dial(evilCreds, []string{addr})
	require.NoError(t, err)
	defer ec.Close()
	_, err = unumv1.NewIdentityClient(ec).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Error(t, err)
	// No certificate at all.
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ClientTLSNoCert(p.root))))
	require.NoError(t, err)
	defer plain.Close()
	_, err = unumv1.NewIdentityClient(plain).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Error(t, err)
	// A revoked caller completes the handshake (to be told why), and is
	// recorded as refused, with its subject, one by one: not through the
	// refusals' rate limit, where a flood by anyone (here, first) would
	// turn it into an anonymous count.
	for i := 0; i < 60; i++ {
		fc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ClientTLSNoCert(p.root))))
		require.NoError(t, err)
		_, _ = unumv1.NewIdentityClient(fc).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
		fc.Close()
	}
	mc, err := Dial(p.creds(t, "/user/mallory"), []string{addr})
	require.NoError(t, err)
	defer mc.Close()
	_, err = unumv1.NewIdentityClient(mc).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	require.Eventually(t, func() bool { return len(refused.get()) >= 3 && len(accepted.get()) >= 2 }, 5*time.Second, 20*time.Millisecond)
	var sawRevoked, sawRefused, sawAllowed int
	for _, e := range accepted.get() {
		require.Equal(t, audit.ActionAuthnMTLS, e.Action)
		if e.Subject == "spiffe://unum.test/user/mallory" {
			require.Equal(t, audit.Deny, e.Outcome, "no refused caller is recorded as accepted")
			require.NotEmpty(t, e.Reasons)
			require.Contains(t, e.Reasons[0], "revoked")
			sawRevoked++
			continue
		}
		require.Equal(t, audit.Allow, e.Outcome)
		require.Equal(t, "spiffe://unum.test/user/alice", e.Subject)
		sawAllowed++
	}
	for _, e := range refused.get() {
		require.Equal(t, audit.Deny, e.Outcome)
		require.Equal(t, audit.ActionAuthnMTLS, e.Action)
		require.NotEmpty(t, e.Reasons)
		require.Contains(t, e.Reasons[0], "tls handshake refused")
		require.Empty(t, e.Subject, "an unverified certificate names no subject")
		sawRefused++
	}
	require.Equal(t, 1, sawRevoked)
	require.Equal(t, 1, sawAllowed, "one event per connection, not per call")
	require.GreaterOrEqual(t, sawRefused, 2)
}

// T-062: a flood of refused handshakes costs the log the limiter's burst
// and one summary, which counts them all.
func TestRefusedHandshakeFloodSummarized(t *testing.T) {
	p := newPKI(t, "unum.test")
	sink := &eventSink{}
	var suppressed int
	var mu sync.Mutex
	lim := audit.NewLimiter(sink, audit.LimiterConfig{Rate: 0.001, Burst: 5, OnSuppressed: func() { mu.Lock(); suppressed++; mu.Unlock() }})
	addr := serveAudited(t, p.creds(t, "/node/n1"), nil, sink, lim)

	const flood = 60
	for i := 0; i < flood; i++ {
		// A client without a certificate: the handshake fails.
		conn, err := tls.Dial("tcp", addr, ClientTLSNoCert(p.root))
		if err == nil {
			// TLS 1.3: the server's verdict arrives with the first read.
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = conn.Read(make([]byte, 1))
			conn.Close()
		}
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sink.get())+suppressed == flood
	}, 10*time.Second, 20*time.Millisecond, "every refusal is recorded or counted")
	require.Len(t, sink.get(), 5, "the burst, then nothing one by one")
	require.NoError(t, lim.Flush(ctx5(t)))
	got := sink.get()
	require.Len(t, got, 6)
	var d audit.SuppressedDetails
	require.NoError(t, json.Unmarshal(got[5].Details, &d))
	require.EqualValues(t, flood-5, d.Suppressed)
	require.Equal(t, audit.ActionAuthnMTLS, got[5].Action)
}

// The enrolment listener records refused handshakes and rate-limited
// calls (through the limiter), never accepted anonymous connections.
func TestEnrollmentRefusalsRecorded(t *testing.T) {
	p := newPKI(t, "unum.test")
	sink := &eventSink{}
	srv := NewEnrollmentServer(p.creds(t, "/node/n1"), nilLogger(), AuditRefusals(sink))
	unumv1.RegisterEnrollmentServer(srv, countingEnrollment{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := DialEnrollment(lis.Addr().String(), ca.Fingerprint(p.root))
	require.NoError(t, err)
	defer cc.Close()
	c := unumv1.NewEnrollmentClient(cc)
	limited := 0
	for i := 0; i < enrollBurst+5; i++ {
		if _, err := c.Join(ctx5(t), &unumv1.JoinRequest{Token: "x"}); status.Code(err) == codes.ResourceExhausted {
			limited++
		}
	}
	require.Positive(t, limited)
	got := sink.get()
	require.Len(t, got, limited, "one event per rate-limited call, none for the connection")
	for _, e := range got {
		require.Equal(t, audit.ActionAuthnEnroll, e.Action)
		require.Equal(t, audit.Deny, e.Outcome)
		require.Contains(t, e.Reasons[0], "rate-limited: Enrollment.Join")
	}
	// A plain TCP peer that sends garbage: a refused handshake.
	conn, err := net.Dial("tcp", lis.Addr().String())
	require.NoError(t, err)
	_, _ = conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	_, _ = conn.Read(make([]byte, 64))
	conn.Close()
	require.Eventually(t, func() bool { return len(sink.get()) == limited+1 }, 5*time.Second, 20*time.Millisecond)
	require.Contains(t, sink.get()[limited].Reasons[0], "tls handshake refused")
}
