package delegation

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/tink-crypto/tink-go/v2/insecuresecretdataaccess"
	"github.com/tink-crypto/tink-go/v2/jwt/jwtecdsa"
)

// Issuer signs credentials with a keyring's primary key. Immutable and safe
// for concurrent use; a rotated keyring gets a new Issuer.
//
// The keys are Tink's (generated, rotated, sealed and exported as JWKs by
// Tink, see Keyring), but the token is assembled and signed here rather
// than through Tink's JWT API: that API builds every payload as a protobuf
// Struct and prints it with protojson, which cost more than the ECDSA
// signature itself on the minting path. The bytes are the same JWS a Tink
// JWT verifier accepts (TestTinkVerifiesIssuedTokens), and exactly what
// this package's strict parser reads.
type Issuer struct {
	td    spiffeid.TrustDomain
	key   *ecdsa.PrivateKey
	kid   string
	clock func() time.Time
	// header is the encoded JOSE header, the same for every token.
	header string
}

// NewIssuer returns an issuer for td signing with k's primary key; clock is
// time.Now when nil.
func NewIssuer(td spiffeid.TrustDomain, k *Keyring, clock func() time.Time) (*Issuer, error) {
	if td.IsZero() {
		return nil, errors.New("credential issuer: empty trust domain")
	}
	key, kid, err := k.primarySigningKey()
	if err != nil {
		return nil, fmt.Errorf("credential issuer: %w", err)
	}
	if clock == nil {
		clock = time.Now
	}
	h, err := json.Marshal(header{Alg: "ES256", Kid: kid, Typ: TokenType})
	if err != nil {
		return nil, err
	}
	return &Issuer{td: td, key: key, kid: kid, clock: clock, header: base64.RawURLEncoding.EncodeToString(h)}, nil
}

// KeyID is the kid of the tokens i signs.
func (i *Issuer) KeyID() string { return i.kid }

// primarySigningKey is the keyring's primary key as a Go ECDSA key, with
// the kid Tink gives its tokens (base64url of the key id, Tink's output
// prefix).
func (k *Keyring) primarySigningKey() (*ecdsa.PrivateKey, string, error) {
	e, err := k.handle.Primary()
	if err != nil {
		return nil, "", err
	}
	priv, ok := e.Key().(*jwtecdsa.PrivateKey)
	if !ok {
		return nil, "", fmt.Errorf("primary key %d is a %T, want a JWT ECDSA key", e.KeyID(), e.Key())
	}
	params, ok := priv.Parameters().(*jwtecdsa.Parameters)
	if !ok || params.Algorithm() != jwtecdsa.ES256 {
		return nil, "", fmt.Errorf("primary key %d is not an ES256 key", e.KeyID())
	}
	pubKey, err := priv.PublicKey()
	if err != nil {
		return nil, "", err
	}
	pub, ok := pubKey.(*jwtecdsa.PublicKey)
	if !ok {
		return nil, "", fmt.Errorf("primary key %d has a %T public key", e.KeyID(), pubKey)
	}
	kid, ok := pub.KID()
	if !ok || kid == "" {
		return nil, "", fmt.Errorf("primary key %d has no kid (want Tink's output prefix)", e.KeyID())
	}
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), priv.PrivateKeyValue().Data(insecuresecretdataaccess.Token{}))
	if err != nil {
		return nil, "", fmt.Errorf("primary key %d: %w", e.KeyID(), err)
	}
	if !bytes.Equal(pub.PublicPoint(), append(append([]byte{4}, key.X.FillBytes(make([]byte, 32))...), key.Y.FillBytes(make([]byte, 32))...)) {
		return nil, "", fmt.Errorf("primary key %d: private and public halves differ", e.KeyID())
	}
	return key, kid, nil
}

// Request is what to mint. The caller has authenticated Caller and, for a
// token exchange, verified Parent as presented by Caller (its holder).
type Request struct {
	// Caller is who asks: the parent's holder for an exchange, the issuing
	// principal otherwise.
	Caller spiffeid.ID
	// CallerCert is the caller's mTLS certificate: when the caller asks for
	// itself (Holder is Caller), the credential is bound to it (cnf
	// x5t#S256) and never outlives it.
	CallerCert *x509.Certificate
	// Parent is the credential exchanged (narrowed) for this one; nil when
	// minting from the caller's own authority.
	Parent *Credential
	// OnBehalfOf, without a Parent, makes the credential's subject someone
	// other than Caller (impersonation, a separate privileged decision);
	// Caller stays in the chain as the issuer.
	OnBehalfOf spiffeid.ID
	// Holder receives the credential; Caller when zero.
	Holder spiffeid.ID
	// Audience; the parent's when empty (an exchange), required otherwise.
	Audience []spiffeid.ID
	// Scopes; the parent's when empty (an exchange), required otherwise.
	Scopes []Scope
	// TTL is DefaultTTL when zero; at most MaxTTL (the policy's bound).
	TTL, MaxTTL time.Duration
	// MaxDepth is the policy's bound on actors (DefaultMaxDepth when zero).
	MaxDepth int
}

// Plan builds the credential r asks for, checked against every rule, with
// a fresh jti, without signing it (Sign does, once the caller is ready to
// record the issuance).
func (i *Issuer) Plan(r Request) (*Credential, error) {
	now := i.clock().Truncate(time.Second)
	if r.Caller.IsZero() {
		return nil, errors.New("no caller")
	}
	holder := r.Holder
	if holder.IsZero() {
		holder = r.Caller
	}
	for _, id := range []spiffeid.ID{r.Caller, holder} {
		if id.TrustDomain() != i.td {
			return nil, fmt.Errorf("%s is not in trust domain %q", id, i.td.Name())
		}
	}
	maxTTL := r.MaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	maxTTL = min(maxTTL, MaxTTL)
	ttl := r.TTL
	if ttl == 0 {
		ttl = min(DefaultTTL, maxTTL)
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("ttl %s: want at least 1s", ttl)
	}
	if ttl > maxTTL {
		return nil, fmt.Errorf("ttl %s is longer than the policy allows (%s)", ttl, maxTTL)
	}
	maxDepth := r.MaxDepth
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	c := &Credential{ID: NewJTI(), TrustDomain: i.td, KeyID: i.kid, IssuedAt: now, NotBefore: now, Expiry: now.Add(ttl), Audience: r.Audience, Scopes: r.Scopes}
	switch {
	case r.Parent != nil:
		p := r.Parent
		if !r.OnBehalfOf.IsZero() && r.OnBehalfOf != p.Subject {
			return nil, fmt.Errorf("an exchanged credential keeps its subject %s (asked for %s)", p.Subject, r.OnBehalfOf)
		}
		if p.Holder() != r.Caller {
			return nil, fmt.Errorf("%w: the parent credential is held by %s, not by the caller %s", ErrHolder, p.Holder(), r.Caller)
		}
		c.Subject = p.Subject
		c.Chain = slices.Clone(p.Chain)
		g := p.Grant()
		c.Chain[len(c.Chain)-1].Grant = &g
		if len(c.Audience) == 0 {
			c.Audience = p.Audience
		}
		if len(c.Scopes) == 0 {
			c.Scopes = p.Scopes
		}
		// Never outlive the parent: the TTL is cut, not refused, so a hop
		// close to its parent's expiry still gets what is left.
		if c.Expiry.After(p.Expiry) {
			c.Expiry = p.Expiry
		}
	case !r.OnBehalfOf.IsZero() && r.OnBehalfOf != r.Caller:
		if r.OnBehalfOf.TrustDomain() != i.td {
			return nil, fmt.Errorf("%s is not in trust domain %q", r.OnBehalfOf, i.td.Name())
		}
		c.Subject = r.OnBehalfOf
		c.Chain = []Link{{Actor: r.Caller}}
	default:
		c.Subject = r.Caller
	}
	c.Chain = append(c.Chain, Link{Actor: holder})
	if len(c.Audience) == 0 {
		return nil, errors.New("no audience: name the service(s) the credential is for")
	}
	if len(c.Scopes) == 0 {
		return nil, errors.New("no scope: name at least one ACTION:RESOURCE")
	}
	// Scopes and audience may be values a caller built by hand: they are
	// read back as every verifier will read them (valid, none twice, within
	// the bounds, scopes sorted), so that the policy decides on what will be
	// signed and the issuer never signs what every verifier refuses.
	strs := make([]string, len(c.Scopes))
	for i, s := range c.Scopes {
		if p, err := ParseScope(s.String()); err != nil {
			return nil, err
		} else if p != s {
			return nil, fmt.Errorf("scope %+v is not a scope (it reads back as %s)", s, p)
		}
		strs[i] = s.String()
	}
	var err error
	if c.Scopes, err = ParseScopes(strs); err != nil {
		return nil, err
	}
	if c.Audience, err = parseAudience(i.td, "audience", idStrings(c.Audience)); err != nil {
		return nil, err
	}
	if holder == r.Caller && r.CallerCert != nil {
		c.Thumbprint = Thumbprint(r.CallerCert)
		if na := r.CallerCert.NotAfter.Truncate(time.Second); c.Expiry.After(na) {
			c.Expiry = na
		}
	}
	if !c.Expiry.After(c.NotBefore) {
		return nil, fmt.Errorf("%w: nothing left to delegate: the parent credential or the holder's certificate expires now", ErrExpired)
	}
	if err := CheckChain(c, maxDepth); err != nil {
		return nil, err
	}
	if _, err := encodeClaims(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Sign signs a planned credential.
func (i *Issuer) Sign(c *Credential) (string, error) {
	payload, err := encodeClaims(c)
	if err != nil {
		return "", err
	}
	signed := i.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signed))
	r, sv, err := ecdsa.Sign(rand.Reader, i.key, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign credential: %w", err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	tok := signed + "." + base64.RawURLEncoding.EncodeToString(sig[:])
	if len(tok) > MaxTokenSize {
		return "", fmt.Errorf("credential of %d bytes is larger than verifiers accept (%d)", len(tok), MaxTokenSize)
	}
	return tok, nil
}

// encodeClaims is c's JSON payload: exactly the members and nesting the
// parser reads (claims, act, cnf).
func encodeClaims(c *Credential) ([]byte, error) {
	if len(c.Chain) == 0 {
		return nil, errors.New("encode credential: no holder (empty chain)")
	}
	b, err := json.Marshal(claimsOf(c))
	if err != nil {
		return nil, fmt.Errorf("encode credential: %w", err)
	}
	return b, nil
}

// NewJTI is a fresh 128-bit credential id, in hex.
func NewJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return hex.EncodeToString(b[:])
}

// Thumbprint is the RFC 8705 x5t#S256 of a certificate: base64url of the
// SHA-256 of its DER.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
