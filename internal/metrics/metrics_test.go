package metrics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/metrics/label"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testCA is a root and intermediate of a trust domain, issuing SVIDs.
type testCA struct {
	td        spiffeid.TrustDomain
	root      *x509.Certificate
	authority *ca.Authority
}

func newTestCA(t *testing.T, td string) *testCA {
	t.Helper()
	d := spiffeid.RequireTrustDomainFromString(td)
	now := time.Now()
	rootKey, err := ca.GenerateKey()
	require.NoError(t, err)
	root, err := ca.NewRoot(d, rootKey, now, 24*time.Hour)
	require.NoError(t, err)
	interKey, err := ca.GenerateKey()
	require.NoError(t, err)
	inter, err := ca.NewIntermediate(d, "node-1", interKey.Public(), root, rootKey, now, 12*time.Hour)
	require.NoError(t, err)
	a, err := ca.New(d, inter, interKey, nil, time.Now)
	require.NoError(t, err)
	return &testCA{td: d, root: root, authority: a}
}

func (c *testCA) creds(t *testing.T, path string) *rpc.Credentials {
	t.Helper()
	id := spiffeid.RequireFromPath(c.td, path)
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	chain, err := c.authority.SignX509SVIDForKey(key.Public(), id, time.Hour)
	require.NoError(t, err)
	creds, err := rpc.NewCredentials(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, []*x509.Certificate{c.root})
	require.NoError(t, err)
	return creds
}

func values(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	v, err := m.Values()
	require.NoError(t, err)
	return v
}

func TestParseListen(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Endpoint
		err  string
	}{
		{in: "127.0.0.1:9100", want: Endpoint{Scheme: SchemeAuto, Addr: "127.0.0.1:9100"}},
		{in: "http://127.0.0.1:9100", want: Endpoint{Scheme: SchemeHTTP, Addr: "127.0.0.1:9100"}},
		{in: "https://10.0.0.5:9100/metrics", want: Endpoint{Scheme: SchemeHTTPS, Addr: "10.0.0.5:9100"}},
		{in: "[::1]:9100", want: Endpoint{Scheme: SchemeAuto, Addr: "[::1]:9100"}},
		{in: ":9100", want: Endpoint{Scheme: SchemeAuto, Addr: ":9100"}},
		{in: "ftp://127.0.0.1:9100", err: "scheme must be http or https"},
		{in: "127.0.0.1", err: "want HOST:PORT"},
		{in: "http://", err: "want HOST:PORT"},
		{in: "", err: "want HOST:PORT"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseListen(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestServeRule is the exposure rule as a pure function: plain HTTP only
// ever on a loopback IP.
func TestServeRule(t *testing.T) {
	for _, tc := range []struct {
		name   string
		scheme Scheme
		ip     string
		mtls   bool
		err    bool
	}{
		{"auto loopback v4", SchemeAuto, "127.0.0.1", false, false},
		{"auto loopback 127/8", SchemeAuto, "127.0.0.2", false, false},
		{"auto loopback v6", SchemeAuto, "::1", false, false},
		{"auto mapped loopback", SchemeAuto, "::ffff:127.0.0.1", false, false},
		{"auto private", SchemeAuto, "10.1.2.3", true, false},
		{"auto public v6", SchemeAuto, "2001:db8::1", true, false},
		{"auto unspecified v4", SchemeAuto, "0.0.0.0", true, false},
		{"auto unspecified v6", SchemeAuto, "::", true, false},
		{"auto unknown", SchemeAuto, "", true, false},
		{"http loopback", SchemeHTTP, "127.0.0.1", false, false},
		{"http private refused", SchemeHTTP, "10.1.2.3", false, true},
		{"http unspecified refused", SchemeHTTP, "0.0.0.0", false, true},
		{"http unspecified v6 refused", SchemeHTTP, "::", false, true},
		{"http unknown refused", SchemeHTTP, "", false, true},
		{"https loopback", SchemeHTTPS, "127.0.0.1", true, false},
		{"https private", SchemeHTTPS, "10.1.2.3", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mtls, err := ServeRule(tc.scheme, net.ParseIP(tc.ip))
			if tc.err {
				require.ErrorIs(t, err, ErrPlainNotLoopback)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.mtls, mtls)
		})
	}
}

// TestListenRefusesPlainOnAllInterfaces binds a real wildcard socket and
// checks that http:// is refused there and the port released.
func TestListenRefusesPlainOnAllInterfaces(t *testing.T) {
	m := New(Sources{})
	_, err := Listen(Endpoint{Scheme: SchemeHTTP, Addr: "0.0.0.0:0"}, ServeConfig{Handler: m.Handler(), Log: quiet()})
	require.ErrorIs(t, err, ErrPlainNotLoopback)
	// Without credentials an mTLS endpoint cannot exist either.
	_, err = Listen(Endpoint{Scheme: SchemeAuto, Addr: "0.0.0.0:0"}, ServeConfig{Handler: m.Handler(), Log: quiet()})
	require.ErrorContains(t, err, "credentials")
}

func serve(t *testing.T, ep Endpoint, cfg ServeConfig) *Server {
	t.Helper()
	s, err := Listen(ep, cfg)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, s.Shutdown(ctx))
		require.NoError(t, <-done)
	})
	return s
}

func scrape(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestLoopbackScrape(t *testing.T) {
	view := revocation.NewView(0, nil)
	exp := time.Now().Add(time.Hour)
	m := New(Sources{
		NodeSVIDExpiry: func() time.Time { return exp },
		Revocations:    view,
	})
	m.SVIDIssued(label.KindWorkload)
	s := serve(t, Endpoint{Addr: "127.0.0.1:0"}, ServeConfig{Handler: m.Handler(), Log: quiet()})
	require.False(t, s.MTLS())
	require.True(t, strings.HasPrefix(s.URL(), "http://127.0.0.1:"), s.URL())
	code, body := scrape(t, http.DefaultClient, s.URL())
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `unum_svids_issued_total{kind="workload"} 1`)
	require.Contains(t, body, `unum_svids_issued_total{kind="jwt"} 0`)
	require.Contains(t, body, "unum_node_svid_expiry_seconds ")
	require.Contains(t, body, "unum_revocation_view_age_seconds -1")
	require.Contains(t, body, "go_goroutines ")
}

// TestMTLSScrape: on an mTLS endpoint a scraper needs a client SVID of the
// trust domain that is not revoked; without a certificate, with one from
// another trust domain, or revoked, it gets nothing.
func TestMTLSScrape(t *testing.T) {
	c := newTestCA(t, "unum.test")
	serverCreds := c.creds(t, "/node/node-1")
	view := revocation.NewView(0, nil)
	view.Update(revocation.NewSet(nil, revocation.Window{}, 1), time.Now())
	m := New(Sources{Revocations: view})
	s := serve(t, Endpoint{Scheme: SchemeHTTPS, Addr: "127.0.0.1:0"}, ServeConfig{Handler: m.Handler(), Creds: serverCreds, Revocations: view, Log: quiet()})
	require.True(t, s.MTLS())
	require.True(t, strings.HasPrefix(s.URL(), "https://"), s.URL())

	nodeID := spiffeid.RequireFromPath(c.td, "/node/node-1")
	client := func(creds *rpc.Credentials) *http.Client {
		cfg := tlsconfig.MTLSClientConfig(creds, creds, tlsconfig.AuthorizeID(nodeID))
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}

	scraper := c.creds(t, "/ns/monitoring/job/prometheus")
	code, body := scrape(t, client(scraper), s.URL())
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "unum_revocation_set_size 0")

	// No client certificate: the handshake fails.
	pool := x509.NewCertPool()
	pool.AddCert(c.root)
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, // the server is not what is tested here
	}}}
	_, err := noCert.Get(s.URL())
	require.Error(t, err)

	// Plain HTTP to the TLS port gets no metrics.
	code, body = scrape(t, http.DefaultClient, strings.Replace(s.URL(), "https://", "http://", 1))
	require.Equal(t, http.StatusBadRequest, code)
	require.NotContains(t, body, "unum_")

	// A client SVID of another trust domain is refused in the handshake.
	other := newTestCA(t, "evil.test")
	foreign := other.creds(t, "/ns/monitoring/job/prometheus")
	fc := tlsconfig.MTLSClientConfig(foreign, serverCreds, tlsconfig.AuthorizeID(nodeID))
	_, err = (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: fc}}).Get(s.URL())
	require.Error(t, err)

	// A revoked scraper is refused.
	view.Update(revocation.NewSet([]revocation.Entry{{
		ID: "spiffe://unum.test/ns/monitoring/job/prometheus", Before: time.Now().Add(time.Minute),
	}}, revocation.Window{}, 2), time.Now())
	code, body = scrape(t, client(scraper), s.URL())
	require.Equal(t, http.StatusForbidden, code)
	require.NotContains(t, body, "unum_")
}

// TestAutoOnWildcardIsMTLS: a bare HOST:PORT on all interfaces serves
// HTTPS with mutual TLS, never plain HTTP.
func TestAutoOnWildcardIsMTLS(t *testing.T) {
	c := newTestCA(t, "unum.test")
	m := New(Sources{})
	s := serve(t, Endpoint{Addr: "0.0.0.0:0"}, ServeConfig{Handler: m.Handler(), Creds: c.creds(t, "/node/node-1"), Log: quiet()})
	require.True(t, s.MTLS())
	_, port, err := net.SplitHostPort(s.lis.Addr().String())
	require.NoError(t, err)
	code, body := scrape(t, http.DefaultClient, "http://127.0.0.1:"+port+"/metrics")
	require.Equal(t, http.StatusBadRequest, code)
	require.NotContains(t, body, "unum_")
}

func TestCountersAreBounded(t *testing.T) {
	m := New(Sources{})
	m.SVIDIssued(label.KindNode)
	m.SVIDIssued("spiffe://unum.test/ns/x/job/y") // never a label value
	m.SVIDRefused(label.KindJWT, label.ReasonDenied)
	m.SVIDRefused(label.KindJWT, "no entry e-123")
	m.Enrollment(label.KindNode, label.OutcomeUsed)
	m.Enrollment("robot", label.OutcomeOK)
	got := values(t, m)
	require.Equal(t, 1.0, got[`unum_svids_issued_total{kind="node"}`])
	require.Equal(t, 1.0, got[`unum_svids_issued_total{kind="other"}`])
	require.Equal(t, 1.0, got[`unum_svids_refused_total{kind="jwt",reason="denied"}`])
	require.Equal(t, 1.0, got[`unum_svids_refused_total{kind="jwt",reason="other"}`])
	require.Equal(t, 1.0, got[`unum_enrollment_attempts_total{kind="node",outcome="used"}`])
	require.Equal(t, 1.0, got[`unum_enrollment_attempts_total{kind="other",outcome="ok"}`])
	// The fixed series plus one "other" per vector: nothing else.
	count := func(prefix string) int {
		n := 0
		for k := range got {
			if strings.HasPrefix(k, prefix+"{") {
				n++
			}
		}
		return n
	}
	require.Equal(t, len(label.SVIDKinds())+1, count(NameSVIDsIssued))
	require.Equal(t, len(label.SVIDKinds())*len(label.RefusalReasons())+1, count(NameSVIDsRefused))
	require.Equal(t, len(label.EnrollmentKinds())*len(label.EnrollmentOutcomes())+1, count(NameEnrollmentAttempts))

	var nilM *Metrics
	nilM.SVIDIssued(label.KindNode) // no panic
	nilM.SVIDRefused(label.KindNode, label.ReasonError)
	nilM.Enrollment(label.KindUser, label.OutcomeOK)
}

func TestGaugesAtScrapeTime(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	view := revocation.NewView(10*time.Second, func() time.Time { return now })
	svidExp, rootExp, interExp := now.Add(30*time.Minute), now.Add(48*time.Hour), now.Add(-time.Hour)
	etcd := EtcdHealth{HasLeader: true, Healthy: true, DBSizeBytes: 4096}
	m := New(Sources{
		Clock:          func() time.Time { return now },
		NodeSVIDExpiry: func() time.Time { return svidExp },
		CACerts: func() []CACert {
			return []CACert{
				{Kind: CAKindRoot, Fingerprint: "sha256:aa", NotAfter: rootExp},
				{Kind: CAKindRoot, Fingerprint: "sha256:aa", NotAfter: rootExp}, // duplicate: one series
				{Kind: CAKindIntermediate, Fingerprint: "sha256:bb", NotAfter: interExp},
			}
		},
		Revocations: view,
		Etcd:        func(context.Context) EtcdHealth { return etcd },
	})
	got := values(t, m)
	require.Equal(t, 1800.0, got[NameNodeSVIDExpiry])
	require.Equal(t, 172800.0, got[`unum_ca_certificate_expiry_seconds{fingerprint="sha256:aa",kind="root"}`])
	require.Equal(t, -3600.0, got[`unum_ca_certificate_expiry_seconds{fingerprint="sha256:bb",kind="intermediate"}`])
	require.Equal(t, -1.0, got[NameRevocationAge])
	require.Equal(t, 10.0, got[NameRevocationBound])
	require.Equal(t, 0.0, got[NameRevocationSetSize])
	require.Equal(t, 1.0, got[NameEtcdHealthy])
	require.Equal(t, 1.0, got[NameEtcdHasLeader])
	require.Equal(t, 4096.0, got[NameEtcdDBSize])
	caSeries := 0
	for k := range got {
		if strings.HasPrefix(k, NameCACertExpiry) {
			caSeries++
		}
	}
	require.Equal(t, 2, caSeries, "a duplicate certificate is one series")

	// Later: the view loaded 12 s ago with two revocations, etcd lost its leader.
	view.Update(revocation.NewSet([]revocation.Entry{
		{ID: "spiffe://unum.test/user/a", Before: now}, {ID: "spiffe://unum.test/user/b", Before: now},
	}, revocation.Window{}, 3), now)
	now = now.Add(12 * time.Second)
	etcd = EtcdHealth{DBSizeBytes: 4096}
	got = values(t, m)
	require.Equal(t, 1788.0, got[NameNodeSVIDExpiry])
	require.Equal(t, -3612.0, got[`unum_ca_certificate_expiry_seconds{fingerprint="sha256:bb",kind="intermediate"}`])
	require.Equal(t, 12.0, got[NameRevocationAge])
	require.Equal(t, 2.0, got[NameRevocationSetSize])
	require.Equal(t, 0.0, got[NameEtcdHealthy])
	require.Equal(t, 0.0, got[NameEtcdHasLeader])
}

// TestPolicyMetrics: the decision counter keeps its label bounded, and the
// policy gauges read the view at scrape time.
func TestPolicyMetrics(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	pv := policy.NewView(10 * time.Second)
	m := New(Sources{Clock: func() time.Time { return now }, Policy: pv})
	got := values(t, m)
	require.Equal(t, 0.0, got[NamePolicyRevision])
	require.Equal(t, -1.0, got[NamePolicyAge], "never confirmed")

	e, err := policy.NewEngine(context.Background(), policy.Builtin(), 3)
	require.NoError(t, err)
	pv.Observe(4, now.Add(-2*time.Second))
	pv.Set(e)
	m.Decision(label.DecisionAllow)
	m.Decision(label.DecisionAllow)
	m.Decision(label.DecisionRefused)
	m.Decision("made-up")
	got = values(t, m)
	require.Equal(t, 3.0, got[NamePolicyRevision])
	require.Equal(t, 4.0, got[NamePolicyLatest])
	require.Equal(t, -1.0, got[NamePolicyAge], "revision 3 is not the latest 4")
	require.Equal(t, 2.0, got[NamePolicyDecisions+`{outcome="allow"}`])
	require.Equal(t, 0.0, got[NamePolicyDecisions+`{outcome="deny"}`])
	require.Equal(t, 1.0, got[NamePolicyDecisions+`{outcome="refused"}`])
	require.Equal(t, 1.0, got[NamePolicyDecisions+`{outcome="other"}`])
	var nilM *Metrics
	nilM.Decision(label.DecisionDeny) // no panic
	nilM.AuditUnrecorded()
	nilM.AuthnSuppressed(1)

	require.Equal(t, 0.0, got[NameAuditUnrecorded], "present from the start")
	m.AuditUnrecorded()
	m.AuthnSuppressed(3)
	got = values(t, m)
	require.Equal(t, 1.0, got[NameAuditUnrecorded])
	require.Equal(t, 3.0, got[NameAuditAuthnSuppressed])
}

// TestWitnessMetrics: every witness outcome has its series from the start,
// and a value outside the set counts as other.
func TestWitnessMetrics(t *testing.T) {
	m := New(Sources{})
	for _, o := range label.WitnessOutcomes() {
		require.Contains(t, values(t, m), NameAuditWitness+`{outcome="`+o+`"}`)
	}
	m.AuditWitness(label.WitnessOK)
	m.AuditWitness(label.WitnessFork)
	m.AuditWitness("made-up")
	got := values(t, m)
	require.Equal(t, 1.0, got[NameAuditWitness+`{outcome="witnessed"}`])
	require.Equal(t, 1.0, got[NameAuditWitness+`{outcome="fork"}`])
	require.Equal(t, 0.0, got[NameAuditWitness+`{outcome="truncation"}`])
	require.Equal(t, 1.0, got[NameAuditWitness+`{outcome="other"}`])
	var nilM *Metrics
	nilM.AuditWitness(label.WitnessOK) // no panic
}
