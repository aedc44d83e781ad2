package meta

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestNewCA(t *testing.T) {
	ca, key, err := NewCA(testNow, 24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, "unum etcd CA", ca.Subject.CommonName)
	require.True(t, ca.IsCA)
	require.True(t, ca.MaxPathLenZero, "the etcd CA signs members only, never another CA")
	require.Equal(t, elliptic.P256(), key.Curve)
	require.True(t, key.PublicKey.Equal(ca.PublicKey))
	require.Equal(t, testNow.Add(24*time.Hour), ca.NotAfter)
	require.True(t, ca.NotBefore.Before(testNow))
	require.NoError(t, ca.CheckSignatureFrom(ca))

	_, _, err = NewCA(testNow, 0)
	require.ErrorContains(t, err, "ttl")
}

func TestIssueMemberCert(t *testing.T) {
	ca, caKey, err := NewCA(testNow, 24*time.Hour)
	require.NoError(t, err)
	otherCA, otherKey, err := NewCA(testNow, 24*time.Hour)
	require.NoError(t, err)
	memberKey := newP256(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	leaf, err := IssueMemberCert(ca, caKey, &memberKey.PublicKey, []string{"127.0.0.1"}, testNow, time.Hour)
	require.NoError(t, err)

	tests := []struct {
		name    string
		ca      *x509.Certificate
		caKey   crypto.Signer
		pub     crypto.PublicKey
		hosts   []string
		ttl     time.Duration
		wantErr string
	}{
		{name: "ip and dns", ca: ca, caKey: caKey, pub: &memberKey.PublicKey, hosts: []string{"127.0.0.1", "::1", "Control-1.example"}, ttl: time.Hour},
		{name: "clamped to ca", ca: ca, caKey: caKey, pub: &memberKey.PublicKey, hosts: []string{"127.0.0.1"}, ttl: 100 * time.Hour},
		{name: "no hosts", ca: ca, caKey: caKey, pub: &memberKey.PublicKey, ttl: time.Hour, wantErr: "no hosts"},
		{name: "wildcard", ca: ca, caKey: caKey, pub: &memberKey.PublicKey, hosts: []string{"*.example"}, ttl: time.Hour, wantErr: "character '*'"},
		{name: "uri is not a host", ca: ca, caKey: caKey, pub: &memberKey.PublicKey, hosts: []string{"spiffe://unum.local/node/n2"}, ttl: time.Hour, wantErr: "character ':'"},
		{name: "empty label", ca: ca, caKey: caKey, pub: &memberKey.PublicKey, hosts: []string{"a..b"}, ttl: time.Hour, wantErr: "label empty"},
		{name: "zero ttl", ca: ca, caKey: caKey, pub: &memberKey.PublicKey, hosts: []string{"127.0.0.1"}, wantErr: "ttl"},
		{name: "p384 key", ca: ca, caKey: caKey, pub: &p384.PublicKey, hosts: []string{"127.0.0.1"}, ttl: time.Hour, wantErr: "want ECDSA P-256"},
		{name: "ed25519 key", ca: ca, caKey: caKey, pub: edPub, hosts: []string{"127.0.0.1"}, ttl: time.Hour, wantErr: "want ECDSA P-256"},
		{name: "key of another ca", ca: ca, caKey: otherKey, pub: &memberKey.PublicKey, hosts: []string{"127.0.0.1"}, ttl: time.Hour, wantErr: "does not match"},
		{name: "issuer not a ca", ca: leaf, caKey: memberKey, pub: &memberKey.PublicKey, hosts: []string{"127.0.0.1"}, ttl: time.Hour, wantErr: "not a ca"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := IssueMemberCert(tc.ca, tc.caKey, tc.pub, tc.hosts, testNow, tc.ttl)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, RoleCN, cert.Subject.CommonName)
			require.False(t, cert.IsCA)
			require.Empty(t, cert.URIs, "a member certificate must not look like an SVID")
			require.False(t, cert.NotAfter.After(ca.NotAfter), "outlives its CA")
			for _, h := range tc.hosts {
				require.NoError(t, cert.VerifyHostname(h))
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				_, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{usage}})
				require.NoError(t, err)
			}
			otherPool := x509.NewCertPool()
			otherPool.AddCert(otherCA)
			_, err = cert.Verify(x509.VerifyOptions{Roots: otherPool, CurrentTime: testNow})
			require.Error(t, err)
		})
	}
}

func TestIssueMemberCertExpiredCA(t *testing.T) {
	ca, caKey, err := NewCA(testNow, time.Hour)
	require.NoError(t, err)
	key := newP256(t)
	_, err = IssueMemberCert(ca, caKey, &key.PublicKey, []string{"127.0.0.1"}, testNow.Add(2*time.Hour), time.Hour)
	require.ErrorContains(t, err, "ca expired")
}

func TestWriteTLSFiles(t *testing.T) {
	ca, caKey, err := NewCA(testNow, 24*time.Hour)
	require.NoError(t, err)
	key := newP256(t)
	cert, err := IssueMemberCert(ca, caKey, &key.PublicKey, []string{"127.0.0.1"}, testNow, time.Hour)
	require.NoError(t, err)
	dir := t.TempDir() + "/keys/etcd"

	_, err = WriteTLSFiles(dir, ca, cert, newP256(t))
	require.ErrorContains(t, err, "does not match")

	files, err := WriteTLSFiles(dir, ca, cert, key)
	require.NoError(t, err)
	require.Equal(t, TLSFilesIn(dir), files)
	st, err := os.Stat(files.KeyFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	st, err = os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())

	pair, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	require.NoError(t, err)
	require.Equal(t, cert.Raw, pair.Certificate[0])
	cfg, err := files.clientTLSConfig()
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS13), cfg.MinVersion)

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 3, "no temporary files left behind")
}

// FuzzInitialCluster checks that a member name and peer URL accepted by
// AddLearner's validation always render into an InitialCluster string that
// etcd parses back to exactly that member: a name cannot smuggle in another
// member or peer URL.
func FuzzInitialCluster(f *testing.F) {
	f.Add("node-2", "https://127.0.0.1:2380")
	f.Add("node=2", "https://127.0.0.1:2380")
	f.Add("a,b=https://10.0.0.1:1", "https://[::1]:2380")
	f.Add("node-2", "https://127.0.0.1:2380,evil=https://10.0.0.9:2380")
	f.Add("n", "http://127.0.0.1:2380")
	f.Add("n", "https://h:1/path?q")
	f.Fuzz(func(t *testing.T, name, peerURL string) {
		if validMemberName(name) != nil {
			return
		}
		if _, err := parseHTTPSURL("peer url", peerURL); err != nil {
			return
		}
		got, err := initialCluster([]*etcdserverpb.Member{{ID: 7, Name: "node-1", PeerURLs: []string{"https://127.0.0.1:1"}}, {ID: 9, PeerURLs: []string{peerURL}}}, 9, name)
		if name == "node-1" {
			// AddLearner refuses duplicate names before it gets here.
			return
		}
		require.NoError(t, err)
		m, err := types.NewURLsMap(got)
		require.NoError(t, err, "etcd refuses %q", got)
		require.Len(t, m, 2, "initial cluster %q", got)
		require.Len(t, m[name], 1, "initial cluster %q", got)
		require.Equal(t, peerURL, m[name][0].String())
		require.Equal(t, []string{"https://127.0.0.1:1"}, m["node-1"].StringSlice())
	})
}

func newP256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}
