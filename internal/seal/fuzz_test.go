package seal

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"testing"
)

// FuzzReadSealedKey feeds arbitrary file contents to the sealed key parser and
// opener. It must never panic, and must never return a key for a file that
// was not sealed by this KEK under the wanted label.
func FuzzReadSealedKey(f *testing.F) {
	dir := f.TempDir()
	k, _ := newKEK(f, dir)
	path := filepath.Join(dir, "root.key")
	if err := WriteSealedKey(k, path, "unum/ca/root", newECKey(f)); err != nil {
		f.Fatal(err)
	}
	good, err := readKeyFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(bytes.Replace(good, []byte("unum/ca/root"), []byte("unum/ca/x"), 1))
	f.Add([]byte("unum-sealed-key v1\nlabel: unum/ca/root\n\n"))
	f.Add([]byte("unum-sealed-key v1\nlabel: unum/ca/root\nAAAA\n"))
	f.Add([]byte("unum-sealed-key v1\nlabel: \n====\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		label, ct, err := parseSealedFile(data)
		if err == nil {
			if checkLabel(label) != nil || len(ct) == 0 {
				t.Fatalf("parser accepted label %q with %d bytes of ciphertext", label, len(ct))
			}
		}
		key, err := openSealedKey(k, data, "unum/ca/root")
		if err == nil {
			if key == nil {
				t.Fatal("nil key without error")
			}
			if !bytes.HasPrefix(data, []byte(sealedHeader("unum/ca/root"))) {
				t.Fatalf("opened a key from a file without the wanted header: %q", data)
			}
		}
	})
}

// FuzzParsePrivateKeyPEM checks the plain key file parser never panics.
func FuzzParsePrivateKeyPEM(f *testing.F) {
	der, err := x509.MarshalPKCS8PrivateKey(newECKey(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der[:len(der)/2]}))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parsePrivateKeyPEM(data)
		if err == nil && key == nil {
			t.Fatal("nil key without error")
		}
	})
}
