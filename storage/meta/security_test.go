package meta

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestMemberCertReadsAndWrites(t *testing.T) {
	ctx := testContext(t, 10*time.Second)
	c, err := NewClient(ctx, []string{shared.clientURL}, shared.tls)
	require.NoError(t, err)
	defer c.Close()

	_, err = c.Put(ctx, "/test/rw", "v1")
	require.NoError(t, err)
	resp, err := shared.srv.Client().Get(ctx, "/test/rw")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, "v1", string(resp.Kvs[0].Value))
	_, err = c.Delete(ctx, "/test/rw")
	require.NoError(t, err)
}

// attacker is a client identity that must not reach etcd.
type attacker struct {
	name string
	// cert is presented as the client certificate; nil presents none.
	cert *tls.Certificate
	// maxVersion forces an older TLS version when set.
	maxVersion uint16
}

func attackers(t *testing.T) []attacker {
	t.Helper()
	otherCA, otherKey, err := NewCA(time.Now(), time.Hour)
	require.NoError(t, err)
	spiffeID, err := url.Parse("spiffe://unum.local/node/n2")
	require.NoError(t, err)
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	memberPair, err := tls.LoadX509KeyPair(shared.tls.CertFile, shared.tls.KeyFile)
	require.NoError(t, err)
	return []attacker{
		{
			name: "etcd CA, CN of a node",
			cert: issueTestCert(t, shared.caCert, shared.caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "node-2"}, IPAddresses: loopback}),
		},
		{
			name: "etcd CA, no CN, spiffe URI SAN",
			cert: issueTestCert(t, shared.caCert, shared.caKey, &x509.Certificate{URIs: []*url.URL{spiffeID}, IPAddresses: loopback}),
		},
		{
			name: "SPIFFE SVID from another CA",
			cert: issueTestCert(t, otherCA, otherKey, &x509.Certificate{URIs: []*url.URL{spiffeID}}),
		},
		{
			name: "another CA, role CN",
			cert: issueTestCert(t, otherCA, otherKey, &x509.Certificate{Subject: pkix.Name{CommonName: RoleCN}, IPAddresses: loopback}),
		},
		{
			name: "no client certificate",
		},
		{
			name:       "member certificate over TLS 1.2",
			cert:       &memberPair,
			maxVersion: tls.VersionTLS12,
		},
	}
}

// TestForeignCertificatesRefused (threat T-006) checks, on the client and on the peer listener,
// that etcd refuses every TLS client that is not a control-plane member:
// the server ends the handshake with an alert before any request is read.
func TestForeignCertificatesRefused(t *testing.T) {
	memberPair, err := tls.LoadX509KeyPair(shared.tls.CertFile, shared.tls.KeyFile)
	require.NoError(t, err)
	listeners := map[string]string{"client": hostPort(t, shared.clientURL), "peer": hostPort(t, shared.peerURL)}

	for lname, addr := range listeners {
		t.Run(lname+"/member certificate accepted", func(t *testing.T) {
			status, err := probeVersion(addr, attackerTLS(&memberPair, 0))
			require.NoError(t, err)
			require.Contains(t, status, " 200 ", "control case: the probe itself works")
		})
		for _, a := range attackers(t) {
			t.Run(lname+"/"+a.name, func(t *testing.T) {
				status, err := probeVersion(addr, attackerTLS(a.cert, a.maxVersion))
				require.Error(t, err, "etcd answered %q", status)
				require.Contains(t, err.Error(), "tls:", "want a TLS refusal, got %v", err)
			})
		}
	}
	// Refusals are logged although etcd otherwise logs only errors: they
	// are how an attempt to reach etcd shows up.
	require.Eventually(t, func() bool {
		logged := strings.Join(shared.logs.messages(slog.LevelWarn), "\n")
		return strings.Contains(logged, "rejected connection on client endpoint") &&
			strings.Contains(logged, "rejected connection on peer endpoint")
	}, 5*time.Second, 50*time.Millisecond, "logged: %q", shared.logs.messages(slog.LevelWarn))
	// And reported to Config.Refused (the node audits them), with the
	// listener, the caller's address and etcd's reason.
	seen := map[string]bool{}
	for _, r := range shared.refused.list() {
		require.Contains(t, []string{"client", "peer"}, r.Endpoint)
		require.True(t, strings.HasPrefix(r.Remote, "127.0.0.1:"), r.Remote)
		require.NotEmpty(t, r.Reason)
		seen[r.Endpoint] = true
	}
	require.True(t, seen["client"] && seen["peer"], "refusals reported: %+v", shared.refused.list())
}

// TestProbesAreNotRefusals checks, on a real member, that a failed
// handshake which refused nobody is not reported as a refusal (the node
// would record a false authn.etcd deny for every port scan), while a
// refused credential next to it is. Each probe reads until etcd closes
// the connection: etcd reports a failed handshake before it closes, so
// the absence of a report is checked after the fact, not after a sleep.
func TestProbesAreNotRefusals(t *testing.T) {
	memberPair, err := tls.LoadX509KeyPair(shared.tls.CertFile, shared.tls.KeyFile)
	require.NoError(t, err)
	otherCA, _, err := NewCA(time.Now(), time.Hour)
	require.NoError(t, err)
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(otherCA)
	// probe runs one connection's exchange on raw and returns raw's local
	// address once etcd has closed it.
	probe := func(t *testing.T, addr string, exchange func(raw net.Conn)) string {
		t.Helper()
		raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		defer raw.Close()
		require.NoError(t, raw.SetDeadline(time.Now().Add(10*time.Second)))
		local := raw.LocalAddr().String()
		exchange(raw)
		_, err = io.Copy(io.Discard, raw)
		require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "etcd never closed the connection")
		return local
	}
	handshake := func(cfg *tls.Config) func(net.Conn) {
		return func(raw net.Conn) {
			c := tls.Client(raw, cfg)
			if c.Handshake() == nil {
				_, _ = c.Read(make([]byte, 1)) // TLS 1.3: the verdict comes with the first read
			}
		}
	}
	for lname, addr := range map[string]string{"client": hostPort(t, shared.clientURL), "peer": hostPort(t, shared.peerURL)} {
		notRefusals := map[string]string{
			"a tcp probe that hangs up":            probe(t, addr, func(raw net.Conn) { _ = raw.(*net.TCPConn).CloseWrite() }),
			"plain http":                           probe(t, addr, func(raw net.Conn) { _, _ = raw.Write([]byte("GET /version HTTP/1.1\r\nHost: x\r\n\r\n")) }),
			"tls 1.2 only":                         probe(t, addr, handshake(&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{memberPair}})), //nolint:gosec // a probe
			"a client refusing etcd's certificate": probe(t, addr, handshake(&tls.Config{RootCAs: otherRoots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{memberPair}})),
		}
		refused := probe(t, addr, handshake(attackerTLS(nil, 0)))
		byRemote := map[string]Refusal{}
		for _, r := range shared.refused.list() {
			byRemote[r.Remote] = r
		}
		for name, local := range notRefusals {
			r, ok := byRemote[local]
			require.False(t, ok, "%s/%s reported as a refusal: %+v", lname, name, r)
		}
		r, ok := byRemote[refused]
		require.True(t, ok, "%s: the refused credential was not reported: %+v", lname, shared.refused.list())
		require.Equal(t, lname, r.Endpoint)
		require.Contains(t, r.Reason, "didn't provide a certificate")
	}
}

// TestForeignEtcdClientsFail runs the same identities through a real etcd
// client: every request fails within a short timeout. The cases run at once
// because each waits out its deadline.
func TestForeignEtcdClientsFail(t *testing.T) {
	t.Parallel() // waits on timeouts; the shared member is only read
	cases := attackers(t)
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, a := range cases {
		wg.Go(func() { errs[i] = foreignClientRequest(a) })
	}
	wg.Wait()
	for i, a := range cases {
		t.Run(a.name, func(t *testing.T) {
			require.Error(t, errs[i], "etcd served a foreign client")
		})
	}
}

// foreignClientRequest connects as a and tries a write and a read; it
// returns nil only if either succeeded.
func foreignClientRequest(a attacker) error {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{shared.clientURL},
		TLS:         attackerTLS(a.cert, a.maxVersion),
		DialTimeout: time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err // refused while connecting
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, putErr := c.Put(ctx, "/test/attack", "x")
	_, getErr := c.Get(ctx, "/test/rw")
	if putErr == nil || getErr == nil {
		return nil
	}
	return errors.Join(putErr, getErr)
}

func TestForeignFilesRefusedByNewClient(t *testing.T) {
	otherCA, otherKey, err := NewCA(time.Now(), time.Hour)
	require.NoError(t, err)
	fromOtherCA, err := writeMemberTLS(t.TempDir(), otherCA, otherKey)
	require.NoError(t, err)

	// The etcd CA, a certificate from it, but not a member certificate.
	node := issueTestCert(t, shared.caCert, shared.caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "node-2"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	leaf, err := x509.ParseCertificate(node.Certificate[0])
	require.NoError(t, err)
	nodeFiles, err := WriteTLSFiles(t.TempDir(), shared.caCert, leaf, node.PrivateKey.(*ecdsa.PrivateKey))
	require.NoError(t, err)

	tests := []struct {
		name    string
		files   TLSFiles
		wantErr string
	}{
		{name: "files of another etcd CA", files: fromOtherCA, wantErr: "certificate signed by unknown authority"},
		{name: "certificate of another CN", files: nodeFiles, wantErr: "remote error: tls: bad certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := NewClient(testContext(t, 3*time.Second), []string{shared.clientURL}, tc.files)
			require.ErrorContains(t, err, tc.wantErr)
			require.Less(t, time.Since(start), time.Second, "a TLS refusal should fail at once, not at the deadline")
		})
	}
}

func TestPlaintextRefused(t *testing.T) {
	t.Parallel() // waits on timeouts; the shared member is only read
	t.Run("raw http", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", hostPort(t, shared.clientURL), 2*time.Second)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(2*time.Second)))
		_, err = conn.Write([]byte("GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
		require.NoError(t, err)
		buf := make([]byte, 512)
		n, _ := conn.Read(buf)
		require.NotContains(t, string(buf[:n]), "etcdserver")
		require.NotContains(t, string(buf[:n]), " 200 ")
	})
	t.Run("etcd client over http", func(t *testing.T) {
		httpURL := strings.Replace(shared.clientURL, "https://", "http://", 1)
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{httpURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err != nil {
			return
		}
		defer c.Close()
		ctx := testContext(t, 1500*time.Millisecond)
		_, err = c.Get(ctx, "/test/rw")
		require.Error(t, err)
	})
	t.Run("Start refuses http urls", func(t *testing.T) {
		_, err := Start(testContext(t, time.Second), Config{
			Name: "n", DataDir: t.TempDir(), ClientURL: "http://127.0.0.1:1", PeerURL: "https://127.0.0.1:2",
			InitialCluster: "n=https://127.0.0.1:2", ClusterState: ClusterStateNew, TLS: shared.tls,
		})
		require.ErrorContains(t, err, "scheme must be https")
		_, err = NewClient(testContext(t, time.Second), []string{"http://127.0.0.1:1"}, shared.tls)
		require.ErrorContains(t, err, "scheme must be https")
	})
}

// TestClientRefusesNonMemberServer checks the other direction: a control
// process does not talk to a server whose certificate is from the etcd CA
// but is not a member certificate.
func TestClientRefusesNonMemberServer(t *testing.T) {
	fake := issueTestCert(t, shared.caCert, shared.caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "node-2"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*fake}})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	defer func() { l.Close(); <-done }()

	cfg, err := shared.tls.clientTLSConfig()
	require.NoError(t, err)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", l.Addr().String(), cfg)
	if conn != nil {
		conn.Close()
	}
	require.ErrorContains(t, err, `etcd server certificate refused: common name is not "unum-control"`)

	_, err = NewClient(testContext(t, 2*time.Second), []string{"https://" + l.Addr().String()}, shared.tls)
	require.ErrorContains(t, err, "etcd server certificate refused")
}

// probeVersion sends GET /version over TLS and returns the status line.
// It does not verify the server: the point is what the server accepts.
func probeVersion(addr string, cfg *tls.Config) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return "", err
	}
	// In TLS 1.3 the server checks the client certificate after the
	// client's side of the handshake is done: its verdict comes with the
	// first read.
	if _, err := conn.Write([]byte("GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

func attackerTLS(cert *tls.Certificate, maxVersion uint16) *tls.Config {
	cfg := &tls.Config{
		InsecureSkipVerify: true, // the attacker does not care who the server is
		MaxVersion:         maxVersion,
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// issueTestCert signs tmpl (subject, SANs) with ca for a fresh P-256 key,
// usable as TLS client and server: the shape of an SVID or of a member
// certificate, whichever the template says.
func issueTestCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) *tls.Certificate {
	t.Helper()
	key := newP256(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	return &tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}
}

func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	return u.Host
}
