package seal

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func newKEK(t testing.TB, dir string) (*KEK, string) {
	t.Helper()
	path := filepath.Join(dir, "kek.json")
	require.NoError(t, CreateKEKFile(path))
	k, err := LoadKEK(path)
	require.NoError(t, err)
	return k, path
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return key
}

func requireMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, want, fi.Mode().Perm(), "mode of %s", path)
}

func TestKEKFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "kek.json")
	require.NoError(t, CreateKEKFile(path))
	requireMode(t, path, 0o600)
	fi, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	before, err := os.ReadFile(path)
	require.NoError(t, err)
	err = CreateKEKFile(path)
	require.ErrorIs(t, err, os.ErrExist, "an existing KEK must never be overwritten")
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after)
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")

	k, err := LoadKEK(path)
	require.NoError(t, err)
	ct, err := k.Seal([]byte("secret"), []byte("ad"))
	require.NoError(t, err)
	pt, err := k.Open(ct, []byte("ad"))
	require.NoError(t, err)
	require.Equal(t, []byte("secret"), pt)
	_, err = k.Open(ct, []byte("other ad"))
	require.ErrorContains(t, err, "wrong key-encryption key")
}

func TestLoadKEKRefusesLoosePermissions(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o602} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kek.json")
			require.NoError(t, CreateKEKFile(path))
			require.NoError(t, os.Chmod(path, mode))
			_, err := LoadKEK(path)
			require.ErrorContains(t, err, "group- or world-readable")
			require.ErrorContains(t, err, "run chmod 600 "+path)
		})
	}
}

func TestLoadKEKRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"primaryKeyId": 1}`), 0o600))
	_, err := LoadKEK(path)
	require.ErrorContains(t, err, "not a Tink JSON keyset")
}

func TestSealedKeyRoundTrip(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	for name, key := range map[string]crypto.Signer{
		"ecdsa-p256": newECKey(t),
		"ed25519":    edKey,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			k, _ := newKEK(t, dir)
			path := filepath.Join(dir, "ca", "root.key")
			require.NoError(t, WriteSealedKey(k, path, "unum/ca/root", key))
			requireMode(t, path, 0o600)
			got, err := ReadSealedKey(k, path, "unum/ca/root")
			require.NoError(t, err)
			require.True(t, got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()))
		})
	}
}

func TestSealedKeyIsSealed(t *testing.T) {
	dir := t.TempDir()
	k, _ := newKEK(t, dir)
	key := newECKey(t)
	path := filepath.Join(dir, "root.key")
	require.NoError(t, WriteSealedKey(k, path, "unum/ca/root", key))
	data, err := os.ReadFile(path)
	require.NoError(t, err)

	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	require.False(t, bytes.Contains(data, der), "file contains the PKCS#8 DER")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	require.False(t, bytes.Contains(data, pemData), "file contains the PEM")
	require.False(t, bytes.Contains(data, pemData[len("-----BEGIN PRIVATE KEY-----\n"):][:64]), "file contains base64 of the DER")
	require.False(t, bytes.Contains(data, key.D.Bytes()), "file contains the private scalar")
	require.True(t, bytes.HasPrefix(data, []byte("unum-sealed-key v1\nlabel: unum/ca/root\n")))
}

func TestReadSealedKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	k, _ := newKEK(t, dir)
	otherKEK, _ := newKEK(t, t.TempDir())
	path := filepath.Join(dir, "root.key")
	require.NoError(t, WriteSealedKey(k, path, "unum/ca/root", newECKey(t)))
	good, err := os.ReadFile(path)
	require.NoError(t, err)

	write := func(t *testing.T, data []byte) string {
		p := filepath.Join(t.TempDir(), "k")
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	tests := []struct {
		name    string
		kek     *KEK
		path    func(t *testing.T) string
		label   string
		wantErr string
	}{
		{"wrong kek", otherKEK, func(*testing.T) string { return path }, "unum/ca/root", "is this the KEK it was sealed with?"},
		{"wrong label", k, func(*testing.T) string { return path }, "unum/ca/intermediate", `labelled "unum/ca/root", want "unum/ca/intermediate"`},
		{"relabelled file", k, func(t *testing.T) string {
			return write(t, bytes.Replace(good, []byte("label: unum/ca/root"), []byte("label: unum/ca/other"), 1))
		}, "unum/ca/other", "cannot unseal"},
		{"flipped ciphertext bit", k, func(t *testing.T) string {
			bad := bytes.Clone(good)
			i := len(bad) - 10
			if bad[i] == 'A' {
				bad[i] = 'B'
			} else {
				bad[i] = 'A'
			}
			return write(t, bad)
		}, "unum/ca/root", "cannot unseal"},
		{"wrong version", k, func(t *testing.T) string {
			return write(t, bytes.Replace(good, []byte("v1"), []byte("v2"), 1))
		}, "unum/ca/root", "not a unum sealed key file"},
		{"truncated", k, func(t *testing.T) string { return write(t, good[:len(good)-1]) }, "unum/ca/root", "truncated"},
		{"trailing data", k, func(t *testing.T) string { return write(t, append(bytes.Clone(good), "x\n"...)) }, "unum/ca/root", "data after"},
		{"plain pem", k, func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "k")
			require.NoError(t, WritePrivateKey(p, newECKey(t)))
			return p
		}, "unum/ca/root", "not a unum sealed key file"},
		{"missing", k, func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, "unum/ca/root", "no such file"},
		{"bad wanted label", k, func(*testing.T) string { return path }, "has space", "not printable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadSealedKey(tc.kek, tc.path(t), tc.label)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestWriteSealedKeyRefusesBadLabel(t *testing.T) {
	dir := t.TempDir()
	k, _ := newKEK(t, dir)
	for _, label := range []string{"", "a\nb", "with space", string(make([]byte, 129))} {
		err := WriteSealedKey(k, filepath.Join(dir, "x"), label, newECKey(t))
		require.Error(t, err, "label %q", label)
	}
	_, err := os.Stat(filepath.Join(dir, "x"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestPrivateKeyRoundTrip(t *testing.T) {
	key := newECKey(t)
	path := filepath.Join(t.TempDir(), "node", "svid.key")
	require.NoError(t, WritePrivateKey(path, key))
	requireMode(t, path, 0o600)
	got, err := ReadPrivateKey(path)
	require.NoError(t, err)
	require.True(t, key.PublicKey.Equal(got.Public()))

	// Overwrite in place: readers see the new key.
	key2 := newECKey(t)
	require.NoError(t, WritePrivateKey(path, key2))
	got, err = ReadPrivateKey(path)
	require.NoError(t, err)
	require.True(t, key2.PublicKey.Equal(got.Public()))
}

func TestReadersRefuseLooseOrOddFiles(t *testing.T) {
	readers := map[string]func(t *testing.T, path string) error{
		"ReadPrivateKey": func(t *testing.T, path string) error {
			_, err := ReadPrivateKey(path)
			return err
		},
		"ReadSealedKey": func(t *testing.T, path string) error {
			k, _ := newKEK(t, t.TempDir())
			_, err := ReadSealedKey(k, path, "unum/ca/root")
			return err
		},
		"LoadKEK": func(t *testing.T, path string) error {
			_, err := LoadKEK(path)
			return err
		},
		"CheckKeyFilePerms": func(t *testing.T, path string) error {
			return CheckKeyFilePerms(path)
		},
	}
	// Each setup writes a valid file of the reader's kind, then spoils it.
	setups := []struct {
		name    string
		spoil   func(t *testing.T, path string) string
		wantErr string
	}{
		{"mode 0644", func(t *testing.T, path string) string {
			require.NoError(t, os.Chmod(path, 0o644))
			return path
		}, "is group- or world-readable (mode 0644): run chmod 600"},
		{"mode 0640", func(t *testing.T, path string) string {
			require.NoError(t, os.Chmod(path, 0o640))
			return path
		}, "(mode 0640)"},
		{"symlink", func(t *testing.T, path string) string {
			link := path + ".link"
			require.NoError(t, os.Symlink(path, link))
			return link
		}, "is a symlink"},
		{"directory", func(t *testing.T, path string) string {
			d := filepath.Join(t.TempDir(), "d")
			require.NoError(t, os.Mkdir(d, 0o700))
			return d
		}, "not a regular file"},
	}
	for rname, read := range readers {
		for _, s := range setups {
			t.Run(rname+"/"+s.name, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "key")
				switch rname {
				case "LoadKEK":
					require.NoError(t, CreateKEKFile(path))
				default:
					require.NoError(t, WritePrivateKey(path, newECKey(t)))
				}
				err := read(t, s.spoil(t, path))
				require.ErrorContains(t, err, s.wantErr)
			})
		}
	}
}

func TestReadPrivateKeyRefusesBadPEM(t *testing.T) {
	key := newECKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	sec1, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"empty", nil, "no PEM block"},
		{"sec1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), `want "PRIVATE KEY"`},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: der}), "headers"},
		{"trailing", append(bytes.Clone(good), "junk"...), "data after"},
		{"not pkcs8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: sec1}), "not valid PKCS#8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k")
			require.NoError(t, os.WriteFile(path, tc.data, 0o600))
			_, err := ReadPrivateKey(path)
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), string(der), "error leaks key bytes")
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a", "b", "cert.pem")
	require.NoError(t, WriteFileAtomic(path, []byte("one"), 0o644))
	requireMode(t, path, 0o644)
	require.NoError(t, WriteFileAtomic(path, []byte("two"), 0o600))
	requireMode(t, path, 0o600)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "two", string(got))
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")

	// A symlink at the destination is replaced, not written through.
	target := filepath.Join(dir, "target")
	require.NoError(t, os.WriteFile(target, []byte("keep"), 0o600))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(target, link))
	require.NoError(t, WriteFileAtomic(link, []byte("new"), 0o600))
	got, err = os.ReadFile(target)
	require.NoError(t, err)
	require.Equal(t, "keep", string(got))
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular())
}

// KEK.AEAD seals and opens as the KEK does: what one seals the other
// opens, with the same associated data only.
func TestKEKAEAD(t *testing.T) {
	k, _ := newKEK(t, t.TempDir())
	ct, err := k.AEAD().Encrypt([]byte("keyring"), []byte("ad"))
	require.NoError(t, err)
	pt, err := k.Open(ct, []byte("ad"))
	require.NoError(t, err)
	require.Equal(t, "keyring", string(pt))
	ct, err = k.Seal([]byte("keyring"), []byte("ad"))
	require.NoError(t, err)
	pt, err = k.AEAD().Decrypt(ct, []byte("ad"))
	require.NoError(t, err)
	require.Equal(t, "keyring", string(pt))
	_, err = k.AEAD().Decrypt(ct, []byte("other"))
	require.Error(t, err)
}
