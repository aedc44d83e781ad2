package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"
)

const (
	// DefaultRootTTL is the root validity when NewRoot is given a zero TTL.
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
	// DefaultIntermediateTTL is the intermediate validity when
	// NewIntermediate is given a zero TTL.
	DefaultIntermediateTTL = 365 * 24 * time.Hour
	// ClockSkew is how far NotBefore is backdated on every certificate so
	// that a peer whose clock is a little behind accepts it at once.
	ClockSkew = 30 * time.Second
)

// GenerateKey returns a new ECDSA P-256 key, the only key type this package
// signs with or for.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate p-256 key: %w", err)
	}
	return key, nil
}

// checkP256 refuses any public key that is not ECDSA P-256.
func checkP256(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ecdsa key on curve %s, want P-256", k.Curve.Params().Name)
		}
		return nil
	case nil:
		return errors.New("no public key")
	default:
		return fmt.Errorf("%T key, want ECDSA P-256", pub)
	}
}

type publicKeyEqualer interface {
	Equal(crypto.PublicKey) bool
}

// keyMatches reports whether signer holds the private half of pub.
func keyMatches(signer crypto.Signer, pub crypto.PublicKey) bool {
	if signer == nil {
		return false
	}
	eq, ok := signer.Public().(publicKeyEqualer)
	return ok && eq.Equal(pub)
}

// randomSerial returns a positive random 128-bit serial number.
func randomSerial() *big.Int {
	var b [16]byte
	for {
		_, _ = rand.Read(b[:]) // never fails since Go 1.24
		n := new(big.Int).SetBytes(b[:])
		if n.Sign() > 0 {
			return n
		}
	}
}

// subjectKeyID is RFC 7093 §2 method 1: the leftmost 160 bits of the SHA-256
// of the subjectPublicKey bit string.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
