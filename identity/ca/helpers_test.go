package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
)

var (
	testTD  = spiffeid.RequireTrustDomainFromString("unum.local")
	testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// fixture is a root and one control node's intermediate, with an Authority
// whose clock reads testNow.
type fixture struct {
	rootKey  *ecdsa.PrivateKey
	root     *x509.Certificate
	interKey *ecdsa.PrivateKey
	inter    *x509.Certificate
	auth     *ca.Authority
}

func newFixture(t testing.TB) *fixture {
	return newFixtureTTL(t, 0)
}

func newFixtureTTL(t testing.TB, interTTL time.Duration) *fixture {
	t.Helper()
	f := &fixture{}
	var err error
	f.rootKey, err = ca.GenerateKey()
	require.NoError(t, err)
	f.root, err = ca.NewRoot(testTD, f.rootKey, testNow.Add(-time.Hour), 0)
	require.NoError(t, err)
	f.interKey, err = ca.GenerateKey()
	require.NoError(t, err)
	f.inter, err = ca.NewIntermediate(testTD, "cp1", f.interKey.Public(), f.root, f.rootKey, testNow.Add(-time.Minute), interTTL)
	require.NoError(t, err)
	f.auth, err = ca.New(testTD, f.inter, f.interKey, nil, func() time.Time { return testNow })
	require.NoError(t, err)
	return f
}

func (f *fixture) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.root)
	return p
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ca.GenerateKey()
	require.NoError(t, err)
	return k
}

func mustID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	require.NoError(t, err)
	return id
}

func mustCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(nil, tmpl, key)
	require.NoError(t, err)
	return der
}
