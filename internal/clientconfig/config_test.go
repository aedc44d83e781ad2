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

// TestResolveOrder: --config, then UNUM_CONFIG, then the login default
// ($XDG_CONFIG_HOME/unum/config.yaml, else ~/.config/unum/config.yaml) when
// that file exists.
func TestResolveOrder(t *testing.T) {
	xdg := t.TempDir()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", xdg)
	t.Setenv("UNUM_CONFIG", "")

	def, err := DefaultPath()
	require.NoError(t, err)
	require.Equal(t, filepath.Join(xdg, "unum", "config.yaml"), def)
	_, err = Resolve("")
	require.ErrorContains(t, err, "unum login")
	require.ErrorContains(t, err, def, "the error names where login writes")
	require.ErrorContains(t, err, "UNUM_CONFIG")

	require.NoError(t, newConfig(t).SaveNew(def))
	info, err := os.Stat(filepath.Dir(def))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "the folder SaveNew creates")
	info, err = os.Stat(def)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	got, err := Resolve("")
	require.NoError(t, err)
	require.Equal(t, def, got)
	t.Setenv("UNUM_CONFIG", "/from/env.yaml")
	got, err = Resolve("")
	require.NoError(t, err)
	require.Equal(t, "/from/env.yaml", got, "UNUM_CONFIG wins over the default")
	got, err = Resolve("/from/flag.yaml")
	require.NoError(t, err)
	require.Equal(t, "/from/flag.yaml", got, "--config wins over everything")

	// A relative XDG_CONFIG_HOME is ignored (XDG base directory spec).
	t.Setenv("UNUM_CONFIG", "")
	t.Setenv("XDG_CONFIG_HOME", "relative/dir")
	def, err = DefaultPath()
	require.NoError(t, err)
	require.Equal(t, filepath.Join(home, ".config", "unum", "config.yaml"), def)
	t.Setenv("XDG_CONFIG_HOME", "")
	def2, err := DefaultPath()
	require.NoError(t, err)
	require.Equal(t, def, def2)
	_, err = Resolve("")
	require.ErrorContains(t, err, def, "no file at the home default")
}

func TestReadKeepsAddresses(t *testing.T) {
	c := newConfig(t)
	path := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, c.Save(path))
	t.Setenv("UNUM_ADDR", "10.0.0.9:1")
	loaded, err := Load(path)
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.9:1"}, loaded.Addresses)
	read, err := Read(path)
	require.NoError(t, err)
	require.Equal(t, c.Addresses, read.Addresses, "Read is the file as it is, for rewriting")
}
