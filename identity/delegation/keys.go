package delegation

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/tink-crypto/tink-go/v2/jwt"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// RotationPeriod is how long a signing key is primary; a retired key is
// kept, verifying only, for MaxTTL + Leeway (every token it signed has
// expired by then) and then deleted.
const RotationPeriod = 24 * time.Hour

// KeyInfo is when one key of a keyring was made and retired.
type KeyInfo struct {
	ID      uint32    `json:"id"`
	Created time.Time `json:"created"`
	// Retired is when another key became primary; zero for the primary.
	Retired time.Time `json:"retired,omitzero"`
}

// Keyring is one control node's signing keys: a Tink JWT ES256 keyset
// (primary signs, the others verify until their tokens expire) with when
// each key was made and retired. Immutable: Rotate and Prune return a new
// one.
type Keyring struct {
	handle *keyset.Handle
	keys   []KeyInfo
}

// NewKeyring makes a keyring with one fresh key, created at now.
func NewKeyring(now time.Time) (*Keyring, error) {
	h, err := keyset.NewHandle(jwt.ES256Template())
	if err != nil {
		return nil, fmt.Errorf("new credential keyring: %w", err)
	}
	return &Keyring{handle: h, keys: []KeyInfo{{ID: h.KeysetInfo().GetPrimaryKeyId(), Created: now.UTC()}}}, nil
}

// Keys are the keyring's keys, oldest first.
func (k *Keyring) Keys() []KeyInfo { return append([]KeyInfo(nil), k.keys...) }

// Primary is the signing key.
func (k *Keyring) Primary() KeyInfo {
	id := k.handle.KeysetInfo().GetPrimaryKeyId()
	for _, ki := range k.keys {
		if ki.ID == id {
			return ki
		}
	}
	return KeyInfo{ID: id}
}

// PrimaryKID is the kid of the tokens the primary key signs ("" when it
// cannot be read).
func (k *Keyring) PrimaryKID() string {
	_, kid, err := k.primarySigningKey()
	if err != nil {
		return ""
	}
	return kid
}

// Due reports whether the primary key has been primary for period.
func (k *Keyring) Due(now time.Time, period time.Duration) bool {
	return !now.Before(k.Primary().Created.Add(period))
}

// Rotate adds a new primary key; the old primary is retired at now and
// keeps verifying.
func (k *Keyring) Rotate(now time.Time) (*Keyring, error) {
	m := keyset.NewManagerFromHandle(k.handle)
	id, err := m.Add(jwt.ES256Template())
	if err != nil {
		return nil, fmt.Errorf("rotate credential keyring: %w", err)
	}
	if err := m.SetPrimary(id); err != nil {
		return nil, fmt.Errorf("rotate credential keyring: %w", err)
	}
	h, err := m.Handle()
	if err != nil {
		return nil, fmt.Errorf("rotate credential keyring: %w", err)
	}
	old := k.handle.KeysetInfo().GetPrimaryKeyId()
	keys := make([]KeyInfo, 0, len(k.keys)+1)
	for _, ki := range k.keys {
		if ki.ID == old && ki.Retired.IsZero() {
			ki.Retired = now.UTC()
		}
		keys = append(keys, ki)
	}
	keys = append(keys, KeyInfo{ID: id, Created: now.UTC()})
	return &Keyring{handle: h, keys: keys}, nil
}

// Prune deletes the retired keys whose tokens have all expired: retired
// more than MaxTTL + Leeway before now. It returns k itself when nothing
// is due.
func (k *Keyring) Prune(now time.Time) (*Keyring, error) {
	var drop []uint32
	var keep []KeyInfo
	for _, ki := range k.keys {
		if !ki.Retired.IsZero() && now.Sub(ki.Retired) > MaxTTL+Leeway {
			drop = append(drop, ki.ID)
			continue
		}
		keep = append(keep, ki)
	}
	if len(drop) == 0 {
		return k, nil
	}
	m := keyset.NewManagerFromHandle(k.handle)
	for _, id := range drop {
		if err := m.Delete(id); err != nil {
			return nil, fmt.Errorf("prune credential keyring: key %d: %w", id, err)
		}
	}
	h, err := m.Handle()
	if err != nil {
		return nil, fmt.Errorf("prune credential keyring: %w", err)
	}
	return &Keyring{handle: h, keys: keep}, nil
}

// PublicJWKS is the keyring's public keys as a JWK set (RFC 7517), what
// verifiers are given.
func (k *Keyring) PublicJWKS() ([]byte, error) {
	pub, err := k.handle.Public()
	if err != nil {
		return nil, fmt.Errorf("credential keyring public keys: %w", err)
	}
	b, err := jwt.JWKSetFromPublicKeysetHandle(pub)
	if err != nil {
		return nil, fmt.Errorf("credential keyring public keys: %w", err)
	}
	return b, nil
}

// sealedKeyring is the on-disk form. The key list is the AEAD's associated
// data, so it is authenticated with the keyset it describes.
type sealedKeyring struct {
	Version int       `json:"version"`
	Keys    []KeyInfo `json:"keys"`
	Keyset  []byte    `json:"keyset"`
}

const keyringLabel = "unum/cred/keyring/v1\n"

// Marshal seals k with aead (the node's key-encryption key).
func (k *Keyring) Marshal(aead tink.AEAD) ([]byte, error) {
	meta, err := json.Marshal(k.keys)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := k.handle.WriteWithAssociatedData(keyset.NewJSONWriter(&buf), aead, append([]byte(keyringLabel), meta...)); err != nil {
		return nil, fmt.Errorf("seal credential keyring: %w", err)
	}
	return json.Marshal(sealedKeyring{Version: 1, Keys: k.keys, Keyset: buf.Bytes()})
}

// UnmarshalKeyring opens a keyring sealed by Marshal.
func UnmarshalKeyring(b []byte, aead tink.AEAD) (*Keyring, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s sealedKeyring
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("credential keyring: %w", err)
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("credential keyring: version %d, want 1", s.Version)
	}
	meta, err := json.Marshal(s.Keys)
	if err != nil {
		return nil, err
	}
	h, err := keyset.ReadWithAssociatedData(keyset.NewJSONReader(bytes.NewReader(s.Keyset)), aead, append([]byte(keyringLabel), meta...))
	if err != nil {
		return nil, fmt.Errorf("credential keyring: cannot open it with this key-encryption key (or it was altered): %w", err)
	}
	info := h.KeysetInfo()
	if len(info.GetKeyInfo()) != len(s.Keys) {
		return nil, fmt.Errorf("credential keyring: %d keys listed, %d in the keyset", len(s.Keys), len(info.GetKeyInfo()))
	}
	for _, ki := range info.GetKeyInfo() {
		if ki.GetTypeUrl() != "type.googleapis.com/google.crypto.tink.JwtEcdsaPrivateKey" {
			return nil, fmt.Errorf("credential keyring: key %d is a %s, want a JWT ECDSA key", ki.GetKeyId(), ki.GetTypeUrl())
		}
	}
	return &Keyring{handle: h, keys: s.Keys}, nil
}

// --- Public keys ---------------------------------------------------------------

// PublicKeys are the keys a verifier accepts, by kid. Immutable.
type PublicKeys struct {
	byKID map[string][]*ecdsa.PublicKey
}

// Len is the number of keys.
func (p *PublicKeys) Len() int {
	if p == nil {
		return 0
	}
	n := 0
	for _, ks := range p.byKID {
		n += len(ks)
	}
	return n
}

// KeyIDs are the kids, sorted.
func (p *PublicKeys) KeyIDs() []string {
	if p == nil {
		return nil
	}
	out := make([]string, 0, len(p.byKID))
	for kid := range p.byKID {
		out = append(out, kid)
	}
	sort.Strings(out)
	return out
}

func (p *PublicKeys) lookup(kid string) []*ecdsa.PublicKey {
	if p == nil {
		return nil
	}
	return p.byKID[kid]
}

type jwk struct {
	Kty    string   `json:"kty"`
	Crv    string   `json:"crv"`
	Alg    string   `json:"alg"`
	Kid    string   `json:"kid"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	// A private key in a public set is refused, not ignored.
	D string `json:"d"`
}

// ParsePublicKeys reads JWK sets, one per signer (named by source, for
// errors). Every key must be an ES256 verification key with a kid. A set
// that does not parse is left out and named in the returned error; the keys
// of the others are still returned.
func ParsePublicKeys(sets map[string][]byte) (*PublicKeys, error) {
	p := &PublicKeys{byKID: map[string][]*ecdsa.PublicKey{}}
	names := make([]string, 0, len(sets))
	for n := range sets {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		keys, err := parseJWKS(sets[n])
		if err != nil {
			errs = append(errs, fmt.Errorf("credential keys of %s: %w", n, err))
			continue
		}
		for kid, k := range keys {
			p.byKID[kid] = append(p.byKID[kid], k)
		}
	}
	return p, errors.Join(errs...)
}

func parseJWKS(b []byte) (map[string]*ecdsa.PublicKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("jwk set: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("jwk set holds no key")
	}
	out := map[string]*ecdsa.PublicKey{}
	for i, k := range set.Keys {
		switch {
		case k.D != "":
			return nil, fmt.Errorf("key %d: a private key in a public set", i)
		case k.Kty != "EC" || k.Crv != "P-256":
			return nil, fmt.Errorf("key %d: kty %q crv %q, want EC P-256", i, k.Kty, k.Crv)
		case k.Alg != "" && k.Alg != "ES256":
			return nil, fmt.Errorf("key %d: alg %q, want ES256", i, k.Alg)
		case k.Use != "" && k.Use != "sig":
			return nil, fmt.Errorf("key %d: use %q, want sig", i, k.Use)
		case k.Kid == "":
			return nil, fmt.Errorf("key %d: no kid", i)
		}
		if _, dup := out[k.Kid]; dup {
			return nil, fmt.Errorf("kid %q twice in one set", k.Kid)
		}
		x, errX := base64.RawURLEncoding.Strict().DecodeString(k.X)
		y, errY := base64.RawURLEncoding.Strict().DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("key %s: x and y must be 32-byte base64url coordinates", k.Kid)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k.Kid, err)
		}
		out[k.Kid] = pub
	}
	return out, nil
}
