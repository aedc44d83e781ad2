package delegation

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/unumos/unum/identity/revocation"
)

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Keys are the signers' public keys; SetKeys replaces them.
	Keys *PublicKeys
	// Revocations is the revocation view (certificates and credentials),
	// fed by its owner. Required: a verifier that cannot know what was
	// revoked accepts nothing.
	Revocations *revocation.View
	// Clock is time.Now when nil.
	Clock func() time.Time
	// CacheSize bounds the cache of verified signatures (DefaultCacheSize
	// when zero; negative disables it).
	CacheSize int
}

// DefaultCacheSize is how many verified tokens a Verifier remembers.
const DefaultCacheSize = 16384

// Verifier verifies presented credentials. Safe for concurrent use.
//
// A token's signature and structure are checked once and remembered (by the
// SHA-256 of its exact bytes) until the key set changes; time, revocation,
// audience and holder binding are checked on every use.
type Verifier struct {
	td          spiffeid.TrustDomain
	revocations *revocation.View
	clock       func() time.Time
	cacheSize   int

	keys atomic.Pointer[keyState]
}

// keyState is a key set with the cache of tokens verified under it.
type keyState struct {
	keys  *PublicKeys
	mu    sync.Mutex
	cache map[[32]byte]*Credential
}

// NewVerifier returns a verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("credential verifier: empty trust domain")
	}
	if cfg.Revocations == nil {
		return nil, errors.New("credential verifier: no revocation view")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	v := &Verifier{td: cfg.TrustDomain, revocations: cfg.Revocations, clock: cfg.Clock, cacheSize: cfg.CacheSize}
	v.SetKeys(cfg.Keys)
	return v, nil
}

// SetKeys replaces the accepted keys (and forgets every verified token: a
// key removed verifies nothing any more).
func (v *Verifier) SetKeys(k *PublicKeys) {
	v.keys.Store(&keyState{keys: k, cache: map[[32]byte]*Credential{}})
}

// Keys are the accepted keys.
func (v *Verifier) Keys() *PublicKeys { return v.keys.Load().keys }

// Presentation is a credential as presented, and what the verifier needs
// to judge it.
type Presentation struct {
	Token string
	// Peer is the presenter's verified mTLS leaf certificate: it must be the
	// holder's (and the bound one, when the credential names a thumbprint).
	Peer *x509.Certificate
	// Audience is who the verifier is; the credential must name one of
	// them.
	Audience []spiffeid.ID
	// MaxDepth is the policy's bound on actors (DefaultMaxDepth when 0).
	MaxDepth int
	// Privileged: the use is privileged, so a stale revocation view refuses
	// it (ErrStale).
	Privileged bool
	// Inspect is an operator looking at a credential: the holder binding
	// and audience are not enforced (the inspector is not the holder), every
	// other rule is.
	Inspect bool
}

// Verify checks a presented credential: format, key, signature, chain
// rules, time (with Leeway), revocation, audience and holder. On failure the
// error wraps one of the Err* sentinels with the reason; the Credential is
// returned too once its signature has verified (so a refusal can name it),
// and nil before that.
func (v *Verifier) Verify(p Presentation) (*Credential, error) {
	if !p.Inspect {
		if p.Peer == nil {
			return nil, fmt.Errorf("%w: no mTLS peer certificate to bind it to", ErrHolder)
		}
		if len(p.Audience) == 0 {
			return nil, fmt.Errorf("%w: the verifier names no audience", ErrAudience)
		}
	}
	c, err := v.verifySigned(p.Token)
	if err != nil {
		return nil, err
	}
	return c, v.checkUse(c, p)
}

// verifySigned checks the token's format, signature and chain rules, or
// finds it among the tokens already checked.
func (v *Verifier) verifySigned(token string) (*Credential, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(token), MaxTokenSize)
	}
	ks := v.keys.Load()
	sum := sha256.Sum256([]byte(token))
	if v.cacheSize > 0 {
		ks.mu.Lock()
		c, ok := ks.cache[sum]
		ks.mu.Unlock()
		if ok {
			return c, nil
		}
	}
	c, err := Parse(token, v.td, ks.keys)
	if err != nil {
		return nil, err
	}
	if err := CheckChain(c, MaxDepth); err != nil {
		return nil, err
	}
	if v.cacheSize > 0 {
		ks.mu.Lock()
		if len(ks.cache) >= v.cacheSize {
			// Forget everything at once: simple, bounded, and a verifier
			// that sees this many distinct live tokens re-verifies them.
			clear(ks.cache)
		}
		ks.cache[sum] = c
		ks.mu.Unlock()
	}
	return c, nil
}

// checkUse is what is checked on every use.
func (v *Verifier) checkUse(c *Credential, p Presentation) error {
	maxDepth := p.MaxDepth
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	if len(c.Chain) > maxDepth {
		return fmt.Errorf("%w: %d actors, the policy allows %d", ErrChain, len(c.Chain), maxDepth)
	}
	now := v.clock()
	if err := CheckTime(c, now); err != nil {
		return err
	}
	set, _, loaded := v.revocations.Snapshot()
	if !loaded {
		return ErrNoRevocation
	}
	if p.Privileged {
		if err := v.revocations.Fresh(); err != nil {
			return fmt.Errorf("%w: %v", ErrStale, err)
		}
	}
	if err := CheckRevoked(set, c); err != nil {
		return err
	}
	if p.Inspect {
		return nil
	}
	if !audienceMatches(c, p.Audience) {
		return fmt.Errorf("%w: it is for %s", ErrAudience, strings.Join(idStrings(c.Audience), ", "))
	}
	return CheckHolder(c, p.Peer)
}

func audienceMatches(c *Credential, verifier []spiffeid.ID) bool {
	for _, a := range verifier {
		if c.AudienceIncludes(a) {
			return true
		}
	}
	return false
}

// CheckTime checks nbf, iat and exp against now, with Leeway.
func CheckTime(c *Credential, now time.Time) error {
	switch {
	case !now.Before(c.Expiry.Add(Leeway)):
		return fmt.Errorf("%w: at %s (now %s)", ErrExpired, c.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.Add(Leeway).Before(c.NotBefore):
		return fmt.Errorf("%w: not before %s (now %s; a clock ahead?)", ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.Add(Leeway).Before(c.IssuedAt):
		return fmt.Errorf("%w: issued in the future, %s (now %s)", ErrNotYetValid, c.IssuedAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckHolder checks that peer is the credential's holder: its SPIFFE ID,
// and the bound certificate when the credential names one.
func CheckHolder(c *Credential, peer *x509.Certificate) error {
	if peer == nil {
		return fmt.Errorf("%w: no peer certificate", ErrHolder)
	}
	id, err := x509svid.IDFromCert(peer)
	if err != nil {
		return fmt.Errorf("%w: peer certificate has no SPIFFE ID", ErrHolder)
	}
	if id != c.Holder() {
		return fmt.Errorf("%w: presented by %s, held by %s", ErrHolder, id, c.Holder())
	}
	if c.Thumbprint != "" && subtle.ConstantTimeCompare([]byte(Thumbprint(peer)), []byte(c.Thumbprint)) != 1 {
		return fmt.Errorf("%w: presented over a certificate other than the one it is bound to (x5t#S256)", ErrHolder)
	}
	return nil
}

// CheckRevoked checks the credential against a revocation set: its jti
// and every ancestor's (whenever revoked), its subject and the subject's
// identity (against the root credential's iat), every actor as a holder and
// as an identity (against the iat of the grant it held), and the set's
// restore window.
func CheckRevoked(set *revocation.Set, c *Credential) error {
	// A jti names one credential, so its entry refuses it and everything
	// minted from it whenever that was minted: a child minted after its
	// ancestor's revocation (by an issuer whose view lagged) carries a later
	// iat than the entry's Before, and would pass the time comparison the
	// other keys use.
	for _, j := range c.JTIs() {
		if e, ok := set.Lookup(RevocationKeyJTI(j)); ok {
			what := "credential " + j
			if j != c.ID {
				what = "ancestor credential " + j
			}
			return fmt.Errorf("%w: %s, revoked at %s %s", ErrRevoked, what, e.RevokedAt.UTC().Format(time.RFC3339), revokedBy(e))
		}
	}
	check := func(key, what string, issuedAt time.Time) error {
		err := set.Check(key, issuedAt)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, revocation.ErrMustRenew):
			return fmt.Errorf("%w: issued after the restored backup was taken (%s)", ErrRevoked, what)
		}
		// Said in credential terms (revocation.Set speaks of certificates).
		e, _ := set.Lookup(key)
		return fmt.Errorf("%w: %s issued before %s are refused, revoked %s", ErrRevoked, what, e.Before.UTC().Format(time.RFC3339), revokedBy(e))
	}
	// Subject, holder and identity revocations are judged on when the
	// authority they cut was issued: the subject's on the root credential
	// (everything in the chain derives from it), each actor's on the
	// credential it held. A child minted after the revocation from a
	// credential issued before it is refused with it.
	root := c.IssuedAt
	for _, l := range c.Chain {
		if l.Grant != nil {
			root = l.Grant.IssuedAt
			break
		}
	}
	if err := check(RevocationKeySubject(c.Subject), "credentials on behalf of "+c.Subject.String(), root); err != nil {
		return err
	}
	if err := check(c.Subject.String(), "credentials naming the revoked identity "+c.Subject.String(), root); err != nil {
		return err
	}
	for i, l := range c.Chain {
		held := c.IssuedAt
		switch {
		case l.Grant != nil:
			held = l.Grant.IssuedAt
		case l.Impersonator(i, len(c.Chain)):
			// It issued the root.
			held = root
		}
		if err := check(RevocationKeyHolder(l.Actor), "credentials held by "+l.Actor.String(), held); err != nil {
			return err
		}
		if err := check(l.Actor.String(), "credentials naming the revoked identity "+l.Actor.String(), held); err != nil {
			return err
		}
	}
	return nil
}

// revokedBy says who revoked e and why.
func revokedBy(e revocation.Entry) string {
	why := e.Reason
	if why == "" {
		why = "no reason given"
	}
	return fmt.Sprintf("by %q (%s)", e.RevokedBy, why)
}

// --- Parsing -------------------------------------------------------------------

// header is the only JOSE header a credential may carry.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// isHeaderMember reports whether name is a member of header.
func isHeaderMember(name string) bool { return name == "alg" || name == "kid" || name == "typ" }

// Parse checks a token's format and signature against keys and decodes its
// claims (not the chain rules, time, revocation or binding: Verify does).
func Parse(token string, td spiffeid.TrustDomain, keys *PublicKeys) (*Credential, error) {
	h, payload, signed, sig, err := split(token)
	if err != nil {
		return nil, err
	}
	cands := keys.lookup(h.Kid)
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: kid %q (from another cluster, or a key retired long ago)", ErrUnknownKey, h.Kid)
	}
	if len(sig) != 64 {
		return nil, fmt.Errorf("%w: ES256 signature of %d bytes, want 64", ErrSignature, len(sig))
	}
	digest := sha256.Sum256([]byte(signed))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	ok := false
	for _, k := range cands {
		if ecdsa.Verify(k, digest[:], r, s) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: kid %q", ErrSignature, h.Kid)
	}
	c, err := decodeClaims(payload, td)
	if err != nil {
		return nil, err
	}
	c.KeyID = h.Kid
	return c, nil
}

// Decode reads a token's header and claims without verifying anything: for
// showing what a refused token says. Never act on its result.
func Decode(token string, td spiffeid.TrustDomain) (*Credential, error) {
	h, payload, _, _, err := split(token)
	if err != nil {
		return nil, err
	}
	c, err := decodeClaims(payload, td)
	if err != nil {
		return nil, err
	}
	c.KeyID = h.Kid
	return c, nil
}

// split parses the compact form and the header strictly. Every reader of
// a token goes through it, so the size bound is here.
func split(token string) (h header, payload []byte, signed string, sig []byte, err error) {
	if len(token) > MaxTokenSize {
		return h, nil, "", nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(token), MaxTokenSize)
	}
	// Go's base64 decoders skip \r and \n even in strict mode: a token with
	// one inserted would be a second string for the same credential, its
	// signature part still verifying. Only the base64url alphabet and the
	// two dots are taken.
	for i := 0; i < len(token); i++ {
		if b := token[i]; !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return h, nil, "", nil, fmt.Errorf("%w: byte %#02x at %d is not base64url", ErrMalformed, b, i)
		}
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return h, nil, "", nil, fmt.Errorf("%w: want three dot-separated parts (JWS compact), got %d", ErrMalformed, len(parts))
	}
	enc := base64.RawURLEncoding.Strict()
	hb, err := enc.DecodeString(parts[0])
	if err != nil {
		return h, nil, "", nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if err := exactMembers(hb, isHeaderMember); err != nil {
		return h, nil, "", nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(hb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		// An unknown header (crit, jku, x5u, jwk...) is refused, not ignored.
		return h, nil, "", nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if dec.More() {
		return h, nil, "", nil, fmt.Errorf("%w: trailing data after the header", ErrMalformed)
	}
	if h.Alg != "ES256" {
		return h, nil, "", nil, fmt.Errorf("%w: alg %q, only ES256 is", ErrAlgorithm, h.Alg)
	}
	if h.Typ != TokenType {
		return h, nil, "", nil, fmt.Errorf("%w: typ %q, want %q (a JWT-SVID or other token is not a credential)", ErrMalformed, h.Typ, TokenType)
	}
	if h.Kid == "" {
		return h, nil, "", nil, fmt.Errorf("%w: no kid", ErrMalformed)
	}
	if payload, err = enc.DecodeString(parts[1]); err != nil {
		return h, nil, "", nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if sig, err = enc.DecodeString(parts[2]); err != nil {
		return h, nil, "", nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	return h, payload, parts[0] + "." + parts[1], sig, nil
}
