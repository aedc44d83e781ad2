package delegation

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/jwt"

	"github.com/unumos/unum/identity/revocation"
)

// fuzzEnv is a keyring, its issuer and a verifier that trusts it, at
// testNow, with nothing revoked, and real credentials to seed a corpus.
type fuzzEnv struct {
	ring   *Keyring
	keys   *PublicKeys
	raw    rawSigner
	tink   jwt.Signer
	verify *Verifier
	// tokens are real credentials: one hop, three hops, certificate-bound,
	// impersonation, and a chain of MaxDepth.
	tokens []string
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	clock := func() time.Time { return testNow }
	ring, err := NewKeyring(testNow)
	require.NoError(f, err)
	iss, err := NewIssuer(testTD, ring, clock)
	require.NoError(f, err)
	jwks, err := ring.PublicJWKS()
	require.NoError(f, err)
	keys, err := ParsePublicKeys(map[string][]byte{"a": jwks})
	require.NoError(f, err)
	view := revocation.NewView(0, clock)
	view.Update(revocation.NewSet(nil, revocation.Window{}, 1), testNow)
	// No cache: every input is parsed, and memory stays flat however long
	// the fuzzer runs.
	v, err := NewVerifier(VerifierConfig{TrustDomain: testTD, Keys: keys, Revocations: view, Clock: clock, CacheSize: -1})
	require.NoError(f, err)
	tinkSigner, err := jwt.NewSigner(ring.handle)
	require.NoError(f, err)
	e := &fuzzEnv{ring: ring, keys: keys, raw: newRawSigner(f, ring), tink: tinkSigner, verify: v}

	scopes := func(ss ...string) []Scope {
		out, err := ParseScopes(ss)
		require.NoError(f, err)
		return out
	}
	mint := func(r Request) (string, *Credential) {
		c, err := iss.Plan(r)
		require.NoError(f, err)
		tok, err := iss.Sign(c)
		require.NoError(f, err)
		e.tokens = append(e.tokens, tok)
		return tok, c
	}
	_, c1 := mint(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api, store}, TTL: 20 * time.Minute,
		Scopes: scopes("kv.*:kv/shop/*", "queue.read:queue/shop/*")})
	_, c2 := mint(Request{Caller: svcA, Parent: c1, Holder: svcB, Audience: []spiffeid.ID{api}, Scopes: scopes("kv.read:kv/shop/orders-*")})
	mint(Request{Caller: svcB, Parent: c2, Holder: svcC})
	mint(Request{Caller: svcB, CallerCert: svid(f, svcB), Parent: c2})
	mint(Request{Caller: svcC, OnBehalfOf: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: scopes("*:*/*/*")})
	deep := c2
	for i := 3; i <= MaxDepth; i++ {
		_, deep = mint(Request{Caller: deep.Holder(), Parent: deep, Holder: id("/ns/shop/job/hop-" + string(rune('a'+i))), MaxDepth: MaxDepth})
	}
	return e
}

// sentinels are the errors Verify and Parse refuse with: every refusal
// wraps one.
var sentinels = []error{ErrMalformed, ErrAlgorithm, ErrUnknownKey, ErrSignature, ErrIssuer, ErrChain, ErrExpired,
	ErrNotYetValid, ErrRevoked, ErrAudience, ErrHolder, ErrStale, ErrNoRevocation}

func requireSentinel(t *testing.T, err error) {
	t.Helper()
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("refusal wraps no sentinel: %v", err)
}

// FuzzParse feeds arbitrary token strings to Parse against a real key set:
// it never panics, every refusal names a sentinel, and whatever it accepts
// is written canonically and re-encodes to claims that decode to an equal
// credential.
func FuzzParse(f *testing.F) {
	e := newFuzzEnv(f)
	for _, tok := range e.tokens {
		f.Add(tok)
		parts := strings.Split(tok, ".")
		f.Add(parts[0] + "." + parts[1] + ".")
		f.Add(parts[0] + "." + parts[1] + "." + parts[2][:8] + "\n" + parts[2][8:])
		f.Add(tok + "=")
	}
	f.Add("")
	f.Add("..")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, token string) {
		_, _ = Decode(token, testTD)
		c, err := Parse(token, testTD, e.keys)
		if err != nil {
			require.Nil(t, c)
			requireSentinel(t, err)
			return
		}
		for _, part := range strings.Split(token, ".") {
			b, err := base64.RawURLEncoding.DecodeString(part)
			require.NoError(t, err)
			require.Equal(t, part, base64.RawURLEncoding.EncodeToString(b), "an accepted token is canonical base64url")
		}
		require.NotEmpty(t, c.Chain)
		payload, err := json.Marshal(claimsOf(c))
		require.NoError(t, err)
		again, err := decodeClaims(payload, testTD)
		require.NoError(t, err, "re-encoded claims %s", payload)
		again.KeyID = c.KeyID
		require.Equal(t, c, again)
	})
}

// FuzzCheckChain signs arbitrary claims with the real keyring, byte for
// byte (rawSigner) and as Tink re-encodes them (jwt.NewRawJWTFromJSON and
// the keyring's signer), and verifies them: never a panic, and whatever is
// accepted passes a naive reference check of the delegation rules written
// against the raw JSON.
func FuzzCheckChain(f *testing.F) {
	e := newFuzzEnv(f)
	for _, tok := range e.tokens {
		b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"act":{"sub":"spiffe://unum.test/a","act":{"sub":"spiffe://unum.test/b"}}}`))
	typ := TokenType
	f.Fuzz(func(t *testing.T, payload []byte) {
		tokens := []string{e.raw.sign(e.raw.header(TokenType), payload)}
		if raw, err := jwt.NewRawJWTFromJSON(&typ, payload); err == nil {
			if tok, err := e.tink.SignAndEncode(raw); err == nil {
				tokens = append(tokens, tok)
			}
		}
		for _, tok := range tokens {
			c, err := e.verify.Verify(Presentation{Token: tok, Inspect: true, MaxDepth: MaxDepth})
			if err != nil {
				requireSentinel(t, err)
				continue
			}
			signed, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
			require.NoError(t, err)
			if msg := referenceCheck(signed, testNow); msg != "" {
				t.Fatalf("accepted, but the reference check refuses it: %s\nclaims %s", msg, signed)
			}
			require.NoError(t, CheckChain(c, MaxDepth))
		}
	})
}

// referenceCheck judges a claims payload by the delegation rules, naively
// and independently of decodeClaims and CheckChain: a generic JSON decode,
// the act chain walked from the first actor to the holder, every grant
// narrowing the one before (scopes by Scope.Within, audiences by subset,
// expiry not later), the holder named in cnf. It returns why the claims
// break a rule, or "".
func referenceCheck(payload []byte, now time.Time) string {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return "not a JSON object: " + err.Error()
	}
	str := func(o map[string]any, k string) string { s, _ := o[k].(string); return s }
	num := func(o map[string]any, k string) int64 {
		n, _ := o[k].(json.Number)
		v, err := n.Int64()
		if err != nil {
			return -1
		}
		return v
	}
	strs := func(o map[string]any, k string) []string {
		var out []string
		l, _ := o[k].([]any)
		for _, v := range l {
			s, _ := v.(string)
			out = append(out, s)
		}
		return out
	}
	scopes := func(s string) ([]Scope, bool) {
		var out []Scope
		for _, p := range strings.Split(s, " ") {
			sc, err := ParseScope(p)
			if err != nil {
				return nil, false
			}
			out = append(out, sc)
		}
		return out, true
	}
	type grant struct {
		jti    string
		scopes []Scope
		aud    []string
		exp    int64
	}
	if str(m, "iss") != "spiffe://"+testTD.Name() {
		return "iss is not this trust domain"
	}
	iat, nbf, exp := num(m, "iat"), num(m, "nbf"), num(m, "exp")
	if !(0 < iat && iat <= nbf && nbf < exp) || time.Duration(exp-iat)*time.Second > MaxTTL {
		return "times out of order or too long"
	}
	if now.Add(Leeway).Before(time.Unix(nbf, 0)) || !now.Before(time.Unix(exp, 0).Add(Leeway)) {
		return "not valid now"
	}
	// The act levels, holder first.
	var levels []map[string]any
	for a, _ := m["act"].(map[string]any); a != nil; a, _ = a["act"].(map[string]any) {
		levels = append(levels, a)
	}
	if len(levels) == 0 || len(levels) > MaxDepth {
		return "no act, or deeper than MaxDepth"
	}
	cnf, _ := m["cnf"].(map[string]any)
	if cnf == nil || str(cnf, "spiffe_id") != str(levels[0], "sub") {
		return "cnf does not name the holder"
	}
	if _, has := levels[0]["jti"]; has {
		return "the holder's level carries a grant"
	}
	// Grants from the first actor's to the credential's own.
	var grants []grant
	for i := len(levels) - 1; i >= 1; i-- {
		l := levels[i]
		if _, has := l["jti"]; !has {
			if i != len(levels)-1 {
				return "an actor without a grant after the first"
			}
			continue
		}
		ss, ok := scopes(str(l, "scope"))
		if !ok {
			return "a grant's scope does not parse"
		}
		grants = append(grants, grant{jti: str(l, "jti"), scopes: ss, aud: strs(l, "aud"), exp: num(l, "exp")})
	}
	own, ok := scopes(str(m, "scope"))
	if !ok {
		return "scope does not parse"
	}
	grants = append(grants, grant{jti: str(m, "jti"), scopes: own, aud: strs(m, "aud"), exp: exp})
	seen := map[string]bool{}
	for i, g := range grants {
		if seen[g.jti] {
			return "a jti twice"
		}
		seen[g.jti] = true
		if i == 0 {
			continue
		}
		p := grants[i-1]
		for _, c := range g.scopes {
			if !slices.ContainsFunc(p.scopes, c.Within) {
				return "scope " + c.String() + " widens its parent's"
			}
		}
		for _, a := range g.aud {
			if !slices.Contains(p.aud, a) {
				return "audience " + a + " widens its parent's"
			}
		}
		if g.exp > p.exp {
			return "expiry after its parent's"
		}
	}
	return ""
}

// TestReferenceCheckRefuses: the reference check of FuzzCheckChain is not
// vacuous: it refuses what the rules refuse.
func TestReferenceCheckRefuses(t *testing.T) {
	f := newFixture(t)
	h := f.twoHops(t)
	good := payloadOf(t, h.c2)
	require.Empty(t, referenceCheck(good, f.now))
	for name, mutate := range map[string]func(c *Credential){
		"scope widened":    func(c *Credential) { c.Scopes = mustScopes(t, "kv.*:kv/*/*") },
		"audience widened": func(c *Credential) { c.Audience = []spiffeid.ID{api, svcC} },
		"expiry extended":  func(c *Credential) { c.Expiry = h.c1.Expiry.Add(time.Second) },
		"jti reused":       func(c *Credential) { c.ID = h.c1.ID },
		"grant-less actor in the middle": func(c *Credential) {
			c.Chain = append([]Link{{Actor: svcC, Grant: &Grant{ID: NewJTI(), Scopes: c.Scopes, Audience: c.Audience, IssuedAt: c.IssuedAt, Expiry: c.Expiry}}, {Actor: alice}}, c.Chain...)
		},
	} {
		c := f.child(t, h)
		mutate(c)
		require.NotEmpty(t, referenceCheck(payloadOf(t, c), f.now), name)
	}
	m := claimsMap(t, h.tok2)
	m["cnf"] = map[string]any{"spiffe_id": svcC.String()}
	require.NotEmpty(t, referenceCheck(mustJSON(t, m), f.now), "cnf names another")
}

// exactMembersReference is exactMembers written the slow, obvious way,
// on json.Decoder's tokens.
func exactMembersReference(b []byte, known func(string) bool) error {
	type frame struct {
		object, wantName bool
		seen             map[string]bool
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantName {
			name, _ := tok.(string)
			if !known(name) || top.seen[name] {
				return errors.New("refused")
			}
			top.seen[name], top.wantName = true, false
			continue
		}
		if top != nil && top.object {
			top.wantName = true
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, &frame{object: d == '{', wantName: d == '{', seen: map[string]bool{}})
		}
	}
}

// FuzzExactMembers: on valid JSON, the scan behind the strict parser
// agrees with the reference built on json.Decoder.
func FuzzExactMembers(f *testing.F) {
	e := newFuzzEnv(f)
	for _, tok := range e.tokens {
		for _, part := range strings.Split(tok, ".")[:2] {
			b, err := base64.RawURLEncoding.DecodeString(part)
			require.NoError(f, err)
			f.Add(b)
		}
	}
	for _, s := range []string{`{"scope":"a","scope":"b"}`, `{"SCOPE":1}`, `{"\u0073cope":"x","scope":"y"}`, `{"act":{"sub":"x","sub":"y"}}`,
		`{"aud":["scope","scope"]}`, `{"a\"b":1}`, `[{"iss":1},{"iss":2}]`, `{"cnf":{"x5t#S256":"a"},"x5t#S256":"b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := exactMembers(b, isClaimMember)
		if !json.Valid(b) {
			return
		}
		want := exactMembersReference(b, isClaimMember)
		require.Equal(t, want == nil, got == nil, "scan says %v, reference %v, on %s", got, want, b)
	})
}
