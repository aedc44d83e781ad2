package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// JWTSigner issues ES256 JWT-SVIDs for one trust domain. It is immutable and
// safe for concurrent use.
type JWTSigner struct {
	td    spiffeid.TrustDomain
	key   *ecdsa.PrivateKey
	kid   string
	clock func() time.Time
}

// NewJWTSigner returns a signer for td with key, an ECDSA P-256 key. clock is
// the time source; nil means time.Now.
func NewJWTSigner(td spiffeid.TrustDomain, key *ecdsa.PrivateKey, clock func() time.Time) (*JWTSigner, error) {
	if td.IsZero() {
		return nil, errors.New("new jwt signer: empty trust domain")
	}
	if key == nil {
		return nil, errors.New("new jwt signer: no key")
	}
	if err := checkP256(&key.PublicKey); err != nil {
		return nil, fmt.Errorf("new jwt signer: %w", err)
	}
	thumb, err := (&jose.JSONWebKey{Key: &key.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("new jwt signer: key thumbprint: %w", err)
	}
	if clock == nil {
		clock = time.Now
	}
	return &JWTSigner{
		td:    td,
		key:   key,
		kid:   base64.RawURLEncoding.EncodeToString(thumb),
		clock: clock,
	}, nil
}

// KeyID is the RFC 7638 JWK thumbprint (SHA-256, base64url without padding)
// of the public key: the "kid" of every token and of the key's bundle entry.
// The same key always has the same ID, on every node.
func (s *JWTSigner) KeyID() string { return s.kid }

// PublicKey is the key verifiers put in the JWT bundle under KeyID.
func (s *JWTSigner) PublicKey() crypto.PublicKey { return &s.key.PublicKey }

// SignJWTSVID returns a compact JWT-SVID for id: header alg ES256, kid, typ
// JWT; claims sub=id, aud=audience, iat=now, exp=now+ttl and a random 128-bit
// jti. audience must be non-empty and hold no empty entry; id must be in the
// signer's trust domain; ttl must be positive.
func (s *JWTSigner) SignJWTSVID(id spiffeid.ID, audience []string, ttl time.Duration) (string, error) {
	if id.IsZero() {
		return "", errors.New("sign jwt-svid: empty SPIFFE ID")
	}
	if id.TrustDomain() != s.td {
		return "", fmt.Errorf("sign jwt-svid for %s: not in trust domain %q", id, s.td.Name())
	}
	if len(audience) == 0 {
		return "", fmt.Errorf("sign jwt-svid for %s: no audience", id)
	}
	for i, aud := range audience {
		if aud == "" {
			return "", fmt.Errorf("sign jwt-svid for %s: audience[%d] is empty", id, i)
		}
	}
	if ttl <= 0 {
		return "", fmt.Errorf("sign jwt-svid for %s: ttl %s is not positive", id, ttl)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: s.key, KeyID: s.kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", fmt.Errorf("sign jwt-svid for %s: %w", id, err)
	}
	var jti [16]byte
	_, _ = rand.Read(jti[:]) // never fails since Go 1.24
	now := s.clock()
	claims := jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(append([]string(nil), audience...)),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(ttl)),
		ID:       hex.EncodeToString(jti[:]),
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign jwt-svid for %s: %w", id, err)
	}
	return token, nil
}
