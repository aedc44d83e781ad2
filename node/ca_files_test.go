package node

import (
	"crypto"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/seal"
)

// TestReplacePairRecovers: a CA certificate and its sealed key are replaced
// so that a crash at any step leaves a matching pair, old or new, once the
// node restarts (recoverPair).
func TestReplacePairRecovers(t *testing.T) {
	dir := t.TempDir()
	kek := func() *seal.KEK {
		p := filepath.Join(t.TempDir(), "kek")
		require.NoError(t, seal.CreateKEKFile(p))
		k, err := seal.LoadKEK(p)
		require.NoError(t, err)
		return k
	}()
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	certPath, keyPath := filepath.Join(dir, "root.pem"), filepath.Join(dir, "root.key.sealed")
	pair := func() (certFP string, keyMatches bool) {
		certs, err := readCerts(certPath)
		require.NoError(t, err)
		key, err := seal.ReadSealedKey(kek, keyPath, labelRoot)
		require.NoError(t, err)
		pub, _ := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
		return ca.Fingerprint(certs[0]), pub != nil && pub.Equal(key.Public())
	}
	oldKey, _ := ca.GenerateKey()
	oldCert, err := ca.NewRoot(td, oldKey, time.Now(), time.Hour)
	require.NoError(t, err)
	require.NoError(t, replacePair(kek, certPath, keyPath, labelRoot, oldCert, oldKey))
	fp, ok := pair()
	require.True(t, ok)
	require.Equal(t, ca.Fingerprint(oldCert), fp)

	newKey, _ := ca.GenerateKey()
	newCert, err := ca.NewRoot(td, newKey, time.Now(), time.Hour)
	require.NoError(t, err)
	stage := func() {
		require.NoError(t, seal.WriteSealedKey(kek, nextPath(keyPath), labelRoot, newKey))
		require.NoError(t, seal.WriteFileAtomic(nextPath(certPath), ca.EncodeCertsPEM([]*x509.Certificate{newCert}), 0o644))
	}
	reset := func() {
		require.NoError(t, replacePair(kek, certPath, keyPath, labelRoot, oldCert, oldKey))
	}
	for _, tc := range []struct {
		name  string
		crash func()
		want  string
	}{
		{"staged key only", func() {
			require.NoError(t, seal.WriteSealedKey(kek, nextPath(keyPath), labelRoot, newKey))
		}, ca.Fingerprint(oldCert)},
		{"both staged", stage, ca.Fingerprint(newCert)},
		{"key renamed, certificate not", func() {
			stage()
			require.NoError(t, os.Rename(nextPath(keyPath), keyPath))
		}, ca.Fingerprint(newCert)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reset()
			tc.crash()
			require.NoError(t, recoverPair(certPath, keyPath))
			fp, ok := pair()
			require.True(t, ok, "certificate and key do not match after recovery")
			require.Equal(t, tc.want, fp)
			for _, p := range []string{nextPath(certPath), nextPath(keyPath)} {
				_, err := os.Stat(p)
				require.True(t, os.IsNotExist(err), "%s left behind", p)
			}
		})
	}
	// Nothing staged: nothing changes.
	reset()
	require.NoError(t, recoverPair(certPath, keyPath))
	fp, ok = pair()
	require.True(t, ok)
	require.Equal(t, ca.Fingerprint(oldCert), fp)
}
