package delegation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TokenType is the typ header of every credential: a JWT-SVID or any other
// JWT signed by some other key is never taken for one.
const TokenType = "unum-cred+jwt"

// Bounds fixed in code, whatever the policy says.
const (
	// MaxDepth is the longest actor chain any credential may carry; the
	// policy sets the working bound (DefaultMaxDepth unless it says).
	MaxDepth        = 16
	DefaultMaxDepth = 4
	// DefaultTTL is a credential's lifetime unless asked otherwise;
	// DefaultMaxTTL the longest one unless the policy says; MaxTTL the
	// longest the policy may allow (keys are kept that long after
	// rotation).
	DefaultTTL    = 10 * time.Minute
	DefaultMaxTTL = time.Hour
	MaxTTL        = 24 * time.Hour
	// MaxTokenSize bounds what a verifier reads.
	MaxTokenSize = 16 << 10
	// Leeway is the clock difference allowed between issuer and verifier
	// on nbf, iat and exp.
	Leeway = 30 * time.Second
)

// Errors a verifier returns, wrapped with the reason. Every one refuses the
// credential.
var (
	ErrMalformed    = errors.New("malformed credential")
	ErrAlgorithm    = errors.New("credential algorithm not accepted")
	ErrUnknownKey   = errors.New("credential signed by an unknown key")
	ErrSignature    = errors.New("credential signature invalid (forged or altered)")
	ErrIssuer       = errors.New("credential from another trust domain")
	ErrChain        = errors.New("credential chain breaks the delegation rules")
	ErrExpired      = errors.New("credential expired")
	ErrNotYetValid  = errors.New("credential not yet valid")
	ErrRevoked      = errors.New("credential revoked")
	ErrAudience     = errors.New("credential not meant for this service")
	ErrHolder       = errors.New("credential presented by someone other than its holder")
	ErrStale        = errors.New("revocation view too old to accept a credential for a privileged use")
	ErrNoRevocation = errors.New("no revocation view loaded")
)

// Link is one actor of a chain.
type Link struct {
	Actor spiffeid.ID
	// Grant is what the actor held when it passed the credential on: the
	// parent credential's id, scopes, audience and expiry. It is nil for the
	// holder (whose grant is the credential's own) and for an issuer who
	// minted on the subject's behalf (Impersonator).
	Grant *Grant
}

// Grant is what one credential of a chain allowed, and when it was
// issued (revocations by subject, holder or identity are judged on it).
type Grant struct {
	ID       string
	Scopes   []Scope
	Audience []spiffeid.ID
	IssuedAt time.Time
	Expiry   time.Time
}

// Impersonator reports whether l is an issuer who minted on the subject's
// behalf without holding a credential (only ever Chain[0]).
func (l Link) Impersonator(i, n int) bool { return l.Grant == nil && i < n-1 }

// Credential is a parsed credential. Values returned by Verify are shared
// (a cache holds them): never modify one.
type Credential struct {
	ID          string
	TrustDomain spiffeid.TrustDomain
	// Subject is the original principal.
	Subject spiffeid.ID
	// Chain is the actors, first to last; the last is the holder.
	Chain    []Link
	Audience []spiffeid.ID
	Scopes   []Scope
	// IssuedAt, NotBefore and Expiry are whole seconds.
	IssuedAt, NotBefore, Expiry time.Time
	// Thumbprint is cnf.x5t#S256 (base64url of the SHA-256 of the holder's
	// certificate), empty when the credential is bound to the holder's
	// SPIFFE ID only.
	Thumbprint string
	// KeyID is the kid that signed it.
	KeyID string
}

// Holder is the principal that may present the credential.
func (c *Credential) Holder() spiffeid.ID { return c.Chain[len(c.Chain)-1].Actor }

// Principals is the subject then every actor: the principals whose rights
// a delegated call intersects.
func (c *Credential) Principals() []spiffeid.ID {
	out := make([]spiffeid.ID, 0, len(c.Chain)+1)
	out = append(out, c.Subject)
	for _, l := range c.Chain {
		out = append(out, l.Actor)
	}
	return out
}

// Grant is the credential's own grant.
func (c *Credential) Grant() Grant {
	return Grant{ID: c.ID, Scopes: c.Scopes, Audience: c.Audience, IssuedAt: c.IssuedAt, Expiry: c.Expiry}
}

// Allows reports whether one of the credential's scopes allows action on
// kind/ns/name.
func (c *Credential) Allows(action, kind, ns, name string) bool {
	return AnyAllows(c.Scopes, action, kind, ns, name)
}

// AudienceIncludes reports whether id is one of the audience.
func (c *Credential) AudienceIncludes(id spiffeid.ID) bool { return slices.Contains(c.Audience, id) }

// JTIs is the credential's id and every ancestor's, newest first.
func (c *Credential) JTIs() []string {
	out := []string{c.ID}
	for i := len(c.Chain) - 1; i >= 0; i-- {
		if g := c.Chain[i].Grant; g != nil {
			out = append(out, g.ID)
		}
	}
	return out
}

// --- Wire form ---------------------------------------------------------------

// claims is the JSON payload, decoded strictly.
type claims struct {
	Iss   string   `json:"iss"`
	Sub   string   `json:"sub"`
	Aud   []string `json:"aud"`
	Scope string   `json:"scope"`
	Iat   int64    `json:"iat"`
	Nbf   int64    `json:"nbf"`
	Exp   int64    `json:"exp"`
	Jti   string   `json:"jti"`
	Act   *act     `json:"act"`
	Cnf   *cnf     `json:"cnf"`
}

type act struct {
	Sub string `json:"sub"`
	// The grant the actor held (prior actors only).
	Jti   string   `json:"jti,omitempty"`
	Scope string   `json:"scope,omitempty"`
	Aud   []string `json:"aud,omitempty"`
	Iat   int64    `json:"iat,omitempty"`
	Exp   int64    `json:"exp,omitempty"`
	Act   *act     `json:"act,omitempty"`
}

type cnf struct {
	SPIFFEID string `json:"spiffe_id"`
	X5T      string `json:"x5t#S256,omitempty"`
}

// isClaimMember reports whether name is a member of claims, act or cnf.
func isClaimMember(name string) bool {
	switch name {
	case "iss", "sub", "aud", "scope", "iat", "nbf", "exp", "jti", "act", "cnf", "spiffe_id", "x5t#S256":
		return true
	}
	return false
}

// exactMembers checks that every object in the JSON text b names each
// member once, spelt exactly as a name known reports. encoding/json matches
// member names without regard to case (with Unicode folding: "ſcope" is
// scope) and keeps the last of duplicates, so DisallowUnknownFields alone
// lets "SCOPE" through and a reader that keeps the first duplicate would
// see another credential in the same signed bytes (RFC 7515 §5.2:
// duplicate member names are refused). Which member belongs at which level
// is left to the struct decoder that follows, which also rejects whatever
// is not JSON: this scan only has to read valid JSON right. It is a scan
// rather than json.Decoder.Token, which cost a quarter of a cold verify.
func exactMembers(b []byte, known func(string) bool) error {
	type frame struct {
		object, wantName bool
		seen             []string
	}
	var stack []frame
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			stack = append(stack, frame{object: b[i] == '{', wantName: b[i] == '{'})
		case '}', ']':
			if len(stack) == 0 {
				return errors.New("unbalanced JSON")
			}
			stack = stack[:len(stack)-1]
		case ',':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].wantName = true
			}
		case '"':
			j := i + 1
			for ; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
			}
			if j >= len(b) {
				return errors.New("unterminated JSON string")
			}
			n := len(stack)
			if n == 0 || !stack[n-1].wantName {
				i = j
				continue
			}
			name := string(b[i+1 : j])
			if bytes.IndexByte(b[i:j], '\\') >= 0 {
				// Escapes name the member they decode to.
				if err := json.Unmarshal(b[i:j+1], &name); err != nil {
					return err
				}
			}
			f := &stack[n-1]
			if !known(name) {
				return fmt.Errorf("unknown member %q", name)
			}
			if slices.Contains(f.seen, name) {
				return fmt.Errorf("member %q given twice", name)
			}
			f.seen, f.wantName = append(f.seen, name), false
			i = j
		}
	}
	return nil
}

// claimsOf is c's wire form.
func claimsOf(c *Credential) claims {
	cl := claims{
		Iss: issuerOf(c.TrustDomain), Sub: c.Subject.String(), Aud: idStrings(c.Audience), Scope: FormatScopes(c.Scopes),
		Iat: c.IssuedAt.Unix(), Nbf: c.NotBefore.Unix(), Exp: c.Expiry.Unix(), Jti: c.ID,
		Cnf: &cnf{SPIFFEID: c.Holder().String(), X5T: c.Thumbprint},
	}
	// Nest from the first actor outwards: the holder ends on top.
	var a *act
	for _, l := range c.Chain {
		n := &act{Sub: l.Actor.String(), Act: a}
		if g := l.Grant; g != nil {
			n.Jti, n.Scope, n.Aud, n.Iat, n.Exp = g.ID, FormatScopes(g.Scopes), idStrings(g.Audience), g.IssuedAt.Unix(), g.Expiry.Unix()
		}
		a = n
	}
	cl.Act = a
	return cl
}

func issuerOf(td spiffeid.TrustDomain) string { return "spiffe://" + td.Name() }

func idStrings(ids []spiffeid.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// decodeClaims parses a payload strictly: unknown fields, trailing data,
// missing claims and ill-formed values are errors (ErrMalformed).
func decodeClaims(payload []byte, td spiffeid.TrustDomain) (*Credential, error) {
	if err := exactMembers(payload, isClaimMember); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var cl claims
	if err := dec.Decode(&cl); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the claims", ErrMalformed)
	}
	if cl.Iss != issuerOf(td) {
		return nil, fmt.Errorf("%w: iss %q, this trust domain is %q", ErrIssuer, cl.Iss, issuerOf(td))
	}
	c := &Credential{ID: cl.Jti, TrustDomain: td, Thumbprint: ""}
	var err error
	if c.Subject, err = parseID(td, "sub", cl.Sub); err != nil {
		return nil, err
	}
	if c.Audience, err = parseAudience(td, "aud", cl.Aud); err != nil {
		return nil, err
	}
	if c.Scopes, err = parseScopeClaim(cl.Scope); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !ValidJTI(cl.Jti) {
		return nil, fmt.Errorf("%w: jti %q: want 32 lowercase hex digits", ErrMalformed, cl.Jti)
	}
	if cl.Iat <= 0 || cl.Nbf <= 0 || cl.Exp <= 0 {
		return nil, fmt.Errorf("%w: iat, nbf and exp are required", ErrMalformed)
	}
	c.IssuedAt, c.NotBefore, c.Expiry = time.Unix(cl.Iat, 0), time.Unix(cl.Nbf, 0), time.Unix(cl.Exp, 0)
	if cl.Act == nil {
		return nil, fmt.Errorf("%w: no act: a credential always names its holder", ErrMalformed)
	}
	if cl.Act.Jti != "" || cl.Act.Scope != "" || cl.Act.Aud != nil || cl.Act.Iat != 0 || cl.Act.Exp != 0 {
		return nil, fmt.Errorf("%w: the holder's act level carries a grant (its grant is the credential's own)", ErrMalformed)
	}
	// Unnest: the top level is the holder, the innermost the first actor.
	var rev []Link
	for a, depth := cl.Act, 0; a != nil; a, depth = a.Act, depth+1 {
		if depth == MaxDepth {
			return nil, fmt.Errorf("%w: act chain deeper than %d", ErrChain, MaxDepth)
		}
		id, err := parseID(td, "act.sub", a.Sub)
		if err != nil {
			return nil, err
		}
		l := Link{Actor: id}
		if depth > 0 && (a.Jti != "" || a.Scope != "" || a.Aud != nil || a.Iat != 0 || a.Exp != 0) {
			g := &Grant{ID: a.Jti, IssuedAt: time.Unix(a.Iat, 0), Expiry: time.Unix(a.Exp, 0)}
			if !ValidJTI(a.Jti) || a.Iat <= 0 || a.Exp <= 0 {
				return nil, fmt.Errorf("%w: actor %s: a prior grant needs jti, iat and exp", ErrMalformed, a.Sub)
			}
			if g.Scopes, err = parseScopeClaim(a.Scope); err != nil {
				return nil, fmt.Errorf("%w: actor %s: %v", ErrMalformed, a.Sub, err)
			}
			if g.Audience, err = parseAudience(td, "act.aud", a.Aud); err != nil {
				return nil, err
			}
			l.Grant = g
		}
		rev = append(rev, l)
	}
	c.Chain = make([]Link, len(rev))
	for i, l := range rev {
		c.Chain[len(rev)-1-i] = l
	}
	if cl.Cnf == nil {
		return nil, fmt.Errorf("%w: no cnf: a credential is always bound to its holder", ErrMalformed)
	}
	if cl.Cnf.SPIFFEID != c.Holder().String() {
		return nil, fmt.Errorf("%w: cnf binds %q but the holder (act.sub) is %s", ErrChain, cl.Cnf.SPIFFEID, c.Holder())
	}
	if cl.Cnf.X5T != "" && !validThumbprint(cl.Cnf.X5T) {
		return nil, fmt.Errorf("%w: cnf x5t#S256 %q is not a base64url SHA-256", ErrMalformed, cl.Cnf.X5T)
	}
	c.Thumbprint = cl.Cnf.X5T
	return c, nil
}

func parseID(td spiffeid.TrustDomain, what, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %s %q: %v", ErrMalformed, what, s, err)
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("%w: %s %s is not in trust domain %q", ErrIssuer, what, id, td.Name())
	}
	return id, nil
}

func parseAudience(td spiffeid.TrustDomain, what string, ss []string) ([]spiffeid.ID, error) {
	if len(ss) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrMalformed, what)
	}
	if len(ss) > MaxScopes {
		return nil, fmt.Errorf("%w: %s names %d services (at most %d)", ErrMalformed, what, len(ss), MaxScopes)
	}
	out := make([]spiffeid.ID, 0, len(ss))
	for _, s := range ss {
		id, err := parseID(td, what, s)
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, id) {
			return nil, fmt.Errorf("%w: %s names %s twice", ErrMalformed, what, id)
		}
		out = append(out, id)
	}
	return out, nil
}

// ValidJTI reports whether s is a credential id: 32 lowercase hex digits.
func ValidJTI(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

func validThumbprint(s string) bool {
	// 32 bytes, base64url without padding: 43 characters.
	if len(s) != 43 {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	})
}

// CheckChain checks the delegation rules on c, the same for the issuer
// before it signs and for every verifier after: at most maxDepth actors
// (MaxDepth when maxDepth is 0 or more), an impersonating issuer only first,
// every hop narrowing (scopes within, audience within, expiry not later),
// distinct jtis, and times in order within MaxTTL.
func CheckChain(c *Credential, maxDepth int) error {
	if maxDepth <= 0 || maxDepth > MaxDepth {
		maxDepth = MaxDepth
	}
	n := len(c.Chain)
	if n == 0 {
		return fmt.Errorf("%w: no actor", ErrChain)
	}
	if n > maxDepth {
		return fmt.Errorf("%w: %d actors, at most %d", ErrChain, n, maxDepth)
	}
	if c.Chain[n-1].Grant != nil {
		return fmt.Errorf("%w: the holder's link carries a grant", ErrChain)
	}
	if !c.NotBefore.Before(c.Expiry) || c.NotBefore.Before(c.IssuedAt) {
		return fmt.Errorf("%w: times out of order (iat %d, nbf %d, exp %d)", ErrChain, c.IssuedAt.Unix(), c.NotBefore.Unix(), c.Expiry.Unix())
	}
	if c.Expiry.Sub(c.IssuedAt) > MaxTTL {
		return fmt.Errorf("%w: lives %s, longer than %s", ErrChain, c.Expiry.Sub(c.IssuedAt), MaxTTL)
	}
	jtis := map[string]bool{c.ID: true}
	// prev is the grant the next hop must narrow.
	var prev *Grant
	for i, l := range c.Chain[:n-1] {
		if l.Grant == nil {
			if i != 0 {
				return fmt.Errorf("%w: actor %d (%s) holds no grant but is not the first (only an impersonating issuer may)", ErrChain, i, l.Actor)
			}
			continue
		}
		if jtis[l.Grant.ID] {
			return fmt.Errorf("%w: jti %s appears twice", ErrChain, l.Grant.ID)
		}
		jtis[l.Grant.ID] = true
		if prev != nil {
			if err := narrows(*l.Grant, *prev, l.Actor); err != nil {
				return err
			}
		}
		prev = l.Grant
	}
	if prev != nil {
		if err := narrows(c.Grant(), *prev, c.Holder()); err != nil {
			return err
		}
	}
	return nil
}

// narrows checks that child (held by actor) narrows parent.
func narrows(child, parent Grant, actor spiffeid.ID) error {
	if s, ok := ScopesWithin(child.Scopes, parent.Scopes); !ok {
		return fmt.Errorf("%w: %s's scope %s is not within the scopes it was delegated from (%s)", ErrChain, actor, s, FormatScopes(parent.Scopes))
	}
	for _, a := range child.Audience {
		if !slices.Contains(parent.Audience, a) {
			return fmt.Errorf("%w: %s's audience %s is not within the audience it was delegated from", ErrChain, actor, a)
		}
	}
	if child.Expiry.After(parent.Expiry) {
		return fmt.Errorf("%w: %s's grant expires %s, after the one it was delegated from (%s)", ErrChain, actor,
			child.Expiry.UTC().Format(time.RFC3339), parent.Expiry.UTC().Format(time.RFC3339))
	}
	if child.IssuedAt.Before(parent.IssuedAt) {
		return fmt.Errorf("%w: %s's grant was issued %s, before the one it was delegated from (%s)", ErrChain, actor,
			child.IssuedAt.UTC().Format(time.RFC3339), parent.IssuedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// RevocationKey* name what a credential revocation revokes, as IDs in the
// revocation set beside the SPIFFE IDs whose certificates are revoked
// (revocation.Entry.ID). An entry refuses every credential issued before
// its Before that it names.
const (
	revocationJTI     = "cred:jti:"
	revocationSubject = "cred:sub:"
	revocationHolder  = "cred:holder:"
)

// RevocationKeyJTI revokes the credential jti and everything minted from
// it, whenever minted (the entry's Before does not apply: a jti names one
// credential).
func RevocationKeyJTI(jti string) string { return revocationJTI + jti }

// RevocationKeySubject revokes every credential on behalf of id.
func RevocationKeySubject(id spiffeid.ID) string { return revocationSubject + id.String() }

// RevocationKeyHolder revokes every credential id holds, and every one
// minted from those.
func RevocationKeyHolder(id spiffeid.ID) string { return revocationHolder + id.String() }
