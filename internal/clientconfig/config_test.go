package clientconfig

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
)

func newConfig(t *testing.T) *Config {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	rootKey, _ := ca.GenerateKey()
	root, err := ca.NewRoot(td, rootKey, time.Now(), time.Hour)
	require.NoError(t, err)
	interKey, _ := ca.GenerateKey()
	inter, err := ca.NewIntermediate(td, "n1", interKey.Public(), root, rootKey, time.Now(), time.Hour)
	require.NoError(t, err)
	auth, err := ca.New(td, inter, interKey, nil, time.Now)
	require.NoError(t, err)
	key, _ := ca.GenerateKey()
	id := spiffeid.RequireFromPath(td, "/user/admin")
	chain, err := auth.SignX509SVIDForKey(key.Public(), id, time.Hour)
	require.NoError(t, err)
	c, err := New(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, roots(root), []string{"127.0.0.1:1"})
	require.NoError(t, err)
	return c
}

func TestRoundTripAndOverrides(t *testing.T) {
	c := newConfig(t)
	path := filepath.Join(t.TempDir(), "admin.yaml")
	require.NoError(t, c.Save(path))
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	t.Setenv("UNUM_ADDR", "")
	got, err := Load(path)
	require.NoError(t, err)
	require.Equal(t, c, got)
	creds, err := got.Credentials()
	require.NoError(t, err)
	svid, err := creds.GetX509SVID()
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/user/admin", svid.ID.String())

	t.Setenv("UNUM_ADDR", "10.0.0.1:7443,10.0.0.2:7443")
	got, err = Load(path)
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.1:7443", "10.0.0.2:7443"}, got.Addresses)
}

func TestLoadRefuses(t *testing.T) {
	c := newConfig(t)
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose.yaml")
	require.NoError(t, c.Save(loose))
	require.NoError(t, os.Chmod(loose, 0o644))
	_, err := Load(loose)
	require.ErrorContains(t, err, "group- or world-readable")

	unknown := filepath.Join(dir, "unknown.yaml")
	require.NoError(t, os.WriteFile(unknown, []byte("trust_domain: x\nsurprise: 1\n"), 0o600))
	_, err = Load(unknown)
	require.Error(t, err, "unknown fields are refused, not ignored")

	t.Setenv("UNUM_CONFIG", "")
	_, err = Resolve("")
	require.ErrorContains(t, err, "UNUM_CONFIG")
}

func roots(r ...*x509.Certificate) []*x509.Certificate { return r }
