package seal

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

const (
	sealedMagic       = "unum-sealed-key v1\n"
	sealedLabelPrefix = "label: "
	maxLabelLen       = 128
)

// checkLabel accepts 1-128 printable ASCII characters other than space. The
// label is written into a line of the file, so it must not contain a newline.
func checkLabel(label string) error {
	if label == "" || len(label) > maxLabelLen {
		return fmt.Errorf("sealed key label must be 1-%d characters, got %d", maxLabelLen, len(label))
	}
	for i := 0; i < len(label); i++ {
		if c := label[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("sealed key label %q: byte %d is not printable ASCII", label, i)
		}
	}
	return nil
}

// sealedHeader is both the start of the file and the AEAD associated data.
func sealedHeader(label string) string {
	return sealedMagic + sealedLabelPrefix + label + "\n"
}

// WriteSealedKey encrypts key's PKCS#8 DER under k, bound to label, and writes
// it to path atomically with mode 0600 (see the package documentation for the
// format). Missing parent directories are created with mode 0700.
func WriteSealedKey(k *KEK, path, label string, key crypto.Signer) error {
	if k == nil || key == nil {
		return fmt.Errorf("seal key %s: missing key-encryption key or key", path)
	}
	if err := checkLabel(label); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("seal key %s: %w", path, err)
	}
	defer clear(der)
	header := sealedHeader(label)
	ct, err := k.Seal(der, []byte(header))
	if err != nil {
		return fmt.Errorf("seal key %s: %w", path, err)
	}
	var out bytes.Buffer
	out.WriteString(header)
	out.WriteString(base64.StdEncoding.EncodeToString(ct))
	out.WriteByte('\n')
	if err := WriteFileAtomic(path, out.Bytes(), 0o600); err != nil {
		return fmt.Errorf("seal key: %w", err)
	}
	return nil
}

// ReadSealedKey reads a sealed key written by WriteSealedKey. It refuses a
// file that fails CheckKeyFilePerms, a file sealed under another label, and a
// file that does not open with k.
func ReadSealedKey(k *KEK, path, label string) (crypto.Signer, error) {
	if k == nil {
		return nil, fmt.Errorf("read sealed key %s: no key-encryption key", path)
	}
	data, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sealed key: %w", err)
	}
	key, err := openSealedKey(k, data, label)
	if err != nil {
		return nil, fmt.Errorf("read sealed key %s: %w", path, err)
	}
	return key, nil
}

// parseSealedFile splits a sealed key file into its label and ciphertext. It
// handles untrusted bytes and is fuzzed.
func parseSealedFile(data []byte) (label string, ciphertext []byte, err error) {
	rest, ok := bytes.CutPrefix(data, []byte(sealedMagic))
	if !ok {
		return "", nil, errors.New("not a unum sealed key file (missing \"unum-sealed-key v1\" header)")
	}
	labelLine, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return "", nil, errors.New("truncated sealed key file: no label line")
	}
	l, ok := bytes.CutPrefix(labelLine, []byte(sealedLabelPrefix))
	if !ok {
		return "", nil, errors.New("malformed sealed key file: second line is not \"label: ...\"")
	}
	label = string(l)
	if err := checkLabel(label); err != nil {
		return "", nil, fmt.Errorf("malformed sealed key file: %w", err)
	}
	body, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return "", nil, errors.New("truncated sealed key file: ciphertext line has no newline")
	}
	if len(rest) != 0 {
		return "", nil, errors.New("malformed sealed key file: data after the ciphertext line")
	}
	ciphertext, err = base64.StdEncoding.Strict().DecodeString(string(body))
	if err != nil {
		return "", nil, fmt.Errorf("malformed sealed key file: ciphertext is not base64: %w", err)
	}
	if len(ciphertext) == 0 {
		return "", nil, errors.New("malformed sealed key file: empty ciphertext")
	}
	return label, ciphertext, nil
}

func openSealedKey(k *KEK, data []byte, wantLabel string) (crypto.Signer, error) {
	if err := checkLabel(wantLabel); err != nil {
		return nil, err
	}
	label, ct, err := parseSealedFile(data)
	if err != nil {
		return nil, err
	}
	// The label check is for a clear message; the AEAD associated data
	// enforces the same binding cryptographically.
	if label != wantLabel {
		return nil, fmt.Errorf("sealed key is labelled %q, want %q: refusing to use a key sealed for another purpose", label, wantLabel)
	}
	der, err := k.Open(ct, []byte(sealedHeader(wantLabel)))
	if err != nil {
		return nil, fmt.Errorf("cannot unseal key labelled %q (is this the KEK it was sealed with?): %w", wantLabel, err)
	}
	defer clear(der)
	return parsePKCS8Signer(der)
}

func parsePKCS8Signer(der []byte) (crypto.Signer, error) {
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		// The parse error may quote bytes of the key; do not wrap it.
		return nil, errors.New("key is not valid PKCS#8")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", key)
	}
	return signer, nil
}

// WritePrivateKey writes key as a PEM "PRIVATE KEY" block (PKCS#8) to path
// atomically with mode 0600, creating missing parent directories with mode
// 0700. It is for a node's own short-lived SVID key, not for CA keys.
func WritePrivateKey(path string, key crypto.Signer) error {
	if key == nil {
		return fmt.Errorf("write private key %s: no key", path)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("write private key %s: %w", path, err)
	}
	defer clear(der)
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	defer clear(data)
	if err := WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("write private key: %w", err)
	}
	return nil
}

// ReadPrivateKey reads a key written by WritePrivateKey. It refuses a file
// that fails CheckKeyFilePerms.
func ReadPrivateKey(path string) (crypto.Signer, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	defer clear(data)
	key, err := parsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("read private key %s: %w", path, err)
	}
	return key, nil
}

func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	defer clear(block.Bytes)
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("PEM block is %q, want \"PRIVATE KEY\" (PKCS#8)", block.Type)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("PEM block has headers: encrypted or non-standard key files are not supported")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data after the PEM block")
	}
	return parsePKCS8Signer(block.Bytes)
}
