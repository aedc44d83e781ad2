package seal

import (
	"bytes"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// KEK is a loaded key-encryption key. It is immutable and safe for concurrent
// use. It deliberately has no method that reveals the key material.
type KEK struct {
	aead tink.AEAD
}

// CreateKEKFile generates a new AES256-GCM Tink keyset and writes it to path
// as cleartext JSON with mode 0600. It fails if path already exists: an
// existing KEK is never overwritten, since every key sealed under it would be
// lost. Missing parent directories are created with mode 0700.
func CreateKEKFile(path string) error {
	handle, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return fmt.Errorf("generate kek: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(handle, keyset.NewJSONWriter(&buf)); err != nil {
		return fmt.Errorf("encode kek: %w", err)
	}
	if err := createFileExclusive(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	return nil
}

// LoadKEK reads the KEK keyset at path. It refuses a file that fails
// CheckKeyFilePerms.
func LoadKEK(path string) (*KEK, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("load kek: %w", err)
	}
	handle, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(data)))
	if err != nil {
		return nil, fmt.Errorf("load kek %s: not a Tink JSON keyset: %w", path, err)
	}
	primitive, err := aead.New(handle)
	if err != nil {
		return nil, fmt.Errorf("load kek %s: not an AEAD keyset: %w", path, err)
	}
	return &KEK{aead: primitive}, nil
}

// Seal encrypts plaintext and authenticates associatedData with it. The same
// associatedData must be given to Open.
func (k *KEK) Seal(plaintext, associatedData []byte) ([]byte, error) {
	ct, err := k.aead.Encrypt(plaintext, associatedData)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return ct, nil
}

// Open decrypts ciphertext produced by Seal with the same associatedData. It
// fails when the KEK is not the one that sealed, the associated data differs,
// or the ciphertext was modified; these cases are indistinguishable by design.
func (k *KEK) Open(ciphertext, associatedData []byte) ([]byte, error) {
	pt, err := k.aead.Decrypt(ciphertext, associatedData)
	if err != nil {
		return nil, fmt.Errorf("open: wrong key-encryption key, wrong associated data, or modified ciphertext: %w", err)
	}
	return pt, nil
}

// AEAD is k as a tink.AEAD, for APIs that take one (a delegation keyring
// is sealed with the node's KEK): Encrypt and Decrypt are Seal and Open.
func (k *KEK) AEAD() tink.AEAD { return kekAEAD{k} }

type kekAEAD struct{ k *KEK }

func (a kekAEAD) Encrypt(plaintext, ad []byte) ([]byte, error)  { return a.k.Seal(plaintext, ad) }
func (a kekAEAD) Decrypt(ciphertext, ad []byte) ([]byte, error) { return a.k.Open(ciphertext, ad) }
