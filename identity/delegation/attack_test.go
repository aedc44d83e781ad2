package delegation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/revocation"
)

var (
	svcC  = id("/ns/shop/job/c")
	store = id("/system/store")
	// otherTD is another cluster.
	otherTD = spiffeid.RequireTrustDomainFromString("other.test")
)

// hops is alice → A → B, each hop narrowing: alice's credential c1 held by
// A, and c2, minted from it for B. Every attack starts from it.
type hops struct {
	aCert, bCert *x509.Certificate
	tok1, tok2   string
	c1, c2       *Credential // as verified
}

func (f *fixture) twoHops(t testing.TB) hops {
	t.Helper()
	h := hops{aCert: svid(t, svcA), bCert: svid(t, svcB)}
	h.tok1, _ = f.mint(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api, store}, TTL: 20 * time.Minute,
		Scopes: mustScopes(t, "kv.*:kv/shop/*", "queue.read:queue/shop/*")})
	var err error
	h.c1, err = f.verify.Verify(Presentation{Token: h.tok1, Peer: h.aCert, Audience: []spiffeid.ID{api}})
	require.NoError(t, err)
	h.tok2, _ = f.mint(Request{Caller: svcA, Parent: h.c1, Holder: svcB, Audience: []spiffeid.ID{api}, Scopes: mustScopes(t, "kv.read:kv/shop/orders-*")})
	h.c2, err = f.verify.Verify(Presentation{Token: h.tok2, Peer: h.bCert, Audience: []spiffeid.ID{api}})
	require.NoError(t, err, "the unmodified chain verifies: every refusal below is the attack's")
	return h
}

// present presents tok over peer to the api service.
func (f *fixture) present(tok string, peer *x509.Certificate) error {
	_, err := f.verify.Verify(Presentation{Token: tok, Peer: peer, Audience: []spiffeid.ID{api}})
	return err
}

// plan plans r, which must succeed; a test then breaks the result and
// signs it with Issuer.Sign: a buggy or compromised issuer.
func (f *fixture) plan(r Request) *Credential {
	f.t.Helper()
	c, err := f.issuer.Plan(r)
	require.NoError(f.t, err)
	return c
}

func (f *fixture) sign(c *Credential) string {
	f.t.Helper()
	tok, err := f.issuer.Sign(c)
	require.NoError(f.t, err)
	return tok
}

// child is B's credential minted again from c1 (not signed), for a test to
// break.
func (f *fixture) child(t *testing.T, h hops) *Credential {
	t.Helper()
	return f.plan(Request{Caller: svcA, Parent: h.c1, Holder: svcB, Audience: []spiffeid.ID{api}, Scopes: mustScopes(t, "kv.read:kv/shop/orders-*")})
}

// claimsMap is a token's payload as a generic JSON object.
func claimsMap(t *testing.T, tok string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// withPart replaces part i (0 header, 1 payload, 2 signature) of tok.
func withPart(tok string, i int, part string) string {
	parts := strings.Split(tok, ".")
	parts[i] = part
	return strings.Join(parts, ".")
}

// nonCanonical re-encodes a base64url part with its unused low bits set:
// the same bytes under a lenient decoder, another string under a strict
// one. The part must leave bits unused (its length is not a multiple of 4).
func nonCanonical(t *testing.T, part string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	require.NotZero(t, len(part)%4, "part %q leaves no unused bits", part)
	last := strings.IndexByte(alphabet, part[len(part)-1])
	require.Zero(t, last&1, "part is already non-canonical")
	out := part[:len(part)-1] + string(alphabet[last|1])
	require.NotEqual(t, part, out)
	lenient, err := base64.RawURLEncoding.DecodeString(out)
	require.NoError(t, err)
	strict, _ := base64.RawURLEncoding.DecodeString(part)
	require.Equal(t, strict, lenient, "the same bytes to a lenient decoder")
	return out
}

// padded makes payload's length leave unused bits in its encoding
// (trailing white space is still valid JSON).
func padded(payload []byte) []byte {
	for len(payload)%3 == 0 {
		payload = append(payload, ' ')
	}
	return payload
}

// deepChain is a credential of n actors, each holding a grant as wide as
// the first, minted by f's issuer (Plan would refuse more than the policy
// bound, so it is built by hand and signed).
func (f *fixture) deepChain(t *testing.T, n int) *Credential {
	t.Helper()
	c := f.plan(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: mustScopes(t, "kv.read:kv/shop/*")})
	chain := make([]Link, n)
	for i := range chain {
		chain[i] = Link{Actor: id(fmt.Sprintf("/ns/shop/job/hop-%d", i))}
		if i < n-1 {
			chain[i].Grant = &Grant{ID: NewJTI(), Scopes: c.Scopes, Audience: c.Audience, IssuedAt: c.IssuedAt, Expiry: c.Expiry}
		}
	}
	c.Chain = chain
	return c
}

// TestAttacks tries each attack on a credential and checks that it is
// refused with the sentinel that names it.
func TestAttacks(t *testing.T) {
	tests := []struct {
		name   string
		attack func(t *testing.T, f *fixture, h hops) error
		want   error
	}{
		// --- Holder binding ---------------------------------------------------
		{"replay by a non-holder (another SPIFFE ID)", func(t *testing.T, f *fixture, h hops) error {
			return f.present(h.tok2, h.aCert) // A held the parent, B holds this one
		}, ErrHolder},
		{"replay by a stranger with its own valid certificate", func(t *testing.T, f *fixture, h hops) error {
			return f.present(h.tok2, svid(t, svcC))
		}, ErrHolder},
		{"replay without a peer certificate", func(t *testing.T, f *fixture, h hops) error {
			_, err := f.verify.Verify(Presentation{Token: h.tok2, Audience: []spiffeid.ID{api}})
			return err
		}, ErrHolder},
		{"replay over a certificate without a SPIFFE ID", func(t *testing.T, f *fixture, h hops) error {
			cert := svid(t, svcB)
			cert.URIs = nil
			return f.present(h.tok2, cert)
		}, ErrHolder},
		{"replay by the holder's SPIFFE ID over another certificate (x5t#S256-bound)", func(t *testing.T, f *fixture, h hops) error {
			tok, c := f.mint(Request{Caller: svcB, CallerCert: h.bCert, Parent: h.c2})
			require.Equal(t, Thumbprint(h.bCert), c.Thumbprint)
			require.NoError(t, f.present(tok, h.bCert), "control: the bound certificate is accepted")
			return f.present(tok, svid(t, svcB))
		}, ErrHolder},
		{"exchange of a credential the caller does not hold (Plan)", func(t *testing.T, f *fixture, h hops) error {
			_, err := f.issuer.Plan(Request{Caller: svcC, Parent: h.c2, Holder: svcC})
			return err
		}, ErrHolder},

		// --- Attenuation ------------------------------------------------------------
		{"scope widening in a child (signed by a buggy issuer)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			c.Scopes = mustScopes(t, "kv.*:kv/*/*")
			return f.present(f.sign(c), h.bCert)
		}, ErrChain},
		{"scope widening in a child by a new action (signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			c.Scopes = mustScopes(t, "kv.read:kv/shop/orders-*", "audit.read:audit/-/*")
			return f.present(f.sign(c), h.bCert)
		}, ErrChain},
		{"scope widening in a child (Plan refuses)", func(t *testing.T, f *fixture, h hops) error {
			_, err := f.issuer.Plan(Request{Caller: svcA, Parent: h.c1, Holder: svcB, Scopes: mustScopes(t, "kv.read:kv/*/orders-*")})
			return err
		}, ErrChain},
		{"scope widening two hops down (Plan refuses)", func(t *testing.T, f *fixture, h hops) error {
			// B asks for what c1 allowed but c2 did not.
			_, err := f.issuer.Plan(Request{Caller: svcB, Parent: h.c2, Holder: svcC, Scopes: mustScopes(t, "kv.read:kv/shop/*")})
			return err
		}, ErrChain},
		{"expiry extension in a child (signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			c.Expiry = h.c1.Expiry.Add(time.Minute)
			return f.present(f.sign(c), h.bCert)
		}, ErrChain},
		{"expiry extension in a child (Plan caps it at the parent's; the child dies with it)", func(t *testing.T, f *fixture, h hops) error {
			c := f.plan(Request{Caller: svcA, Parent: h.c1, Holder: svcB, TTL: time.Hour, MaxTTL: 2 * time.Hour})
			require.Equal(t, h.c1.Expiry, c.Expiry, "capped at the parent's expiry, not refused")
			tok := f.sign(c)
			f.now = h.c1.Expiry.Add(Leeway - time.Second)
			require.NoError(t, f.present(tok, h.bCert), "control: alive until the parent's expiry")
			f.now = h.c1.Expiry.Add(Leeway)
			return f.present(tok, h.bCert)
		}, ErrExpired},
		{"audience widening in a child (signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			c.Audience = []spiffeid.ID{api, svcC}
			return f.present(f.sign(c), h.bCert)
		}, ErrChain},
		{"audience widening in a child (Plan refuses)", func(t *testing.T, f *fixture, h hops) error {
			_, err := f.issuer.Plan(Request{Caller: svcB, Parent: h.c2, Holder: svcC, Audience: []spiffeid.ID{store}})
			return err
		}, ErrChain},
		{"lifetime beyond MaxTTL (signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.plan(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: h.c1.Scopes})
			c.Expiry = c.IssuedAt.Add(MaxTTL + time.Second)
			return f.present(f.sign(c), h.aCert)
		}, ErrChain},

		// --- Chain rules --------------------------------------------------------------
		{"forged act chain: payload altered after signing, signature kept", func(t *testing.T, f *fixture, h hops) error {
			m := claimsMap(t, h.tok2)
			// Claim that alice delegated straight to B, dropping A.
			m["act"] = map[string]any{"sub": svcB.String()}
			return f.present(withPart(h.tok2, 1, b64(mustJSON(t, m))), h.bCert)
		}, ErrSignature},
		{"forged act chain: an actor renamed after signing", func(t *testing.T, f *fixture, h hops) error {
			m := claimsMap(t, h.tok2)
			m["act"].(map[string]any)["act"].(map[string]any)["sub"] = svcC.String()
			return f.present(withPart(h.tok2, 1, b64(mustJSON(t, m))), h.bCert)
		}, ErrSignature},
		{"reordered act chain (signed)", func(t *testing.T, f *fixture, h hops) error {
			cCert := svid(t, svcC)
			c3 := f.plan(Request{Caller: svcB, Parent: h.c2, Holder: svcC})
			require.NoError(t, f.present(f.sign(c3), cCert), "control: the chain in order verifies")
			c3.Chain[0], c3.Chain[1] = c3.Chain[1], c3.Chain[0]
			return f.present(f.sign(c3), cCert)
		}, ErrChain},
		{"cnf names someone other than the top act.sub (signed)", func(t *testing.T, f *fixture, h hops) error {
			m := claimsMap(t, h.tok2)
			m["cnf"] = map[string]any{"spiffe_id": svcC.String()}
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), mustJSON(t, m)), svid(t, svcC))
		}, ErrChain},
		{"grant-less actor in the middle of the chain (signed)", func(t *testing.T, f *fixture, h hops) error {
			c3 := f.plan(Request{Caller: svcB, Parent: h.c2, Holder: svcC})
			c3.Chain[1].Grant = nil // B passed it on holding nothing
			return f.present(f.sign(c3), svid(t, svcC))
		}, ErrChain},
		{"holder's act level carries a grant (signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			g := h.c1.Grant()
			c.Chain[1].Grant = &g
			return f.present(f.sign(c), h.bCert)
		}, ErrMalformed},
		{"duplicate jti: a child reusing its parent's (signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			c.ID = h.c1.ID
			return f.present(f.sign(c), h.bCert)
		}, ErrChain},
		{"duplicate jti: two ancestors with one jti (signed)", func(t *testing.T, f *fixture, h hops) error {
			c3 := f.plan(Request{Caller: svcB, Parent: h.c2, Holder: svcC})
			g := *c3.Chain[1].Grant
			g.ID = c3.Chain[0].Grant.ID
			c3.Chain[1].Grant = &g
			return f.present(f.sign(c3), svid(t, svcC))
		}, ErrChain},
		{"depth over the policy bound (default 4)", func(t *testing.T, f *fixture, h hops) error {
			c := f.deepChain(t, DefaultMaxDepth+1)
			tok := f.sign(c)
			holder := svid(t, c.Holder())
			_, err := f.verify.Verify(Presentation{Token: tok, Peer: holder, Audience: []spiffeid.ID{api}, MaxDepth: DefaultMaxDepth + 1})
			require.NoError(t, err, "control: accepted where the policy allows that depth")
			return f.present(tok, holder)
		}, ErrChain},
		{"depth over the policy bound (Plan refuses)", func(t *testing.T, f *fixture, h hops) error {
			_, err := f.issuer.Plan(Request{Caller: svcB, Parent: h.c2, Holder: svcC, MaxDepth: 2})
			return err
		}, ErrChain},
		{"depth over MaxDepth (signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.deepChain(t, MaxDepth)
			tok := f.sign(c)
			_, err := f.verify.Verify(Presentation{Token: tok, Peer: svid(t, c.Holder()), Audience: []spiffeid.ID{api}, MaxDepth: MaxDepth})
			require.NoError(t, err, "control: MaxDepth actors are accepted where the policy allows them")
			c = f.deepChain(t, MaxDepth+1)
			_, err = f.verify.Verify(Presentation{Token: f.sign(c), Peer: svid(t, c.Holder()), Audience: []spiffeid.ID{api}, MaxDepth: 100})
			return err
		}, ErrChain},

		// --- Time -------------------------------------------------------------------------
		{"expired", func(t *testing.T, f *fixture, h hops) error {
			f.now = h.c2.Expiry.Add(Leeway)
			return f.present(h.tok2, h.bCert)
		}, ErrExpired},
		{"not yet valid (nbf beyond the leeway, signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			c.NotBefore = f.now.Add(Leeway + time.Second)
			return f.present(f.sign(c), h.bCert)
		}, ErrNotYetValid},
		{"issued in the future (iat and nbf beyond the leeway, signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			c.IssuedAt = f.now.Add(Leeway + time.Second)
			c.NotBefore = c.IssuedAt
			return f.present(f.sign(c), h.bCert)
		}, ErrNotYetValid},
		{"times out of order: nbf before iat (signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			c.NotBefore = c.IssuedAt.Add(-time.Hour)
			return f.present(f.sign(c), h.bCert)
		}, ErrChain},
		{"verifier clock behind the issuer's by more than the leeway", func(t *testing.T, f *fixture, h hops) error {
			f.now = h.c2.NotBefore.Add(-Leeway - time.Second)
			return f.present(h.tok2, h.bCert)
		}, ErrNotYetValid},
		{"verifier clock ahead of the issuer's by more than the leeway", func(t *testing.T, f *fixture, h hops) error {
			f.now = h.c2.Expiry.Add(Leeway)
			return f.present(h.tok2, h.bCert)
		}, ErrExpired},

		// --- Revocation ------------------------------------------------------------------
		{"revoked by jti", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(RevocationKeyJTI(h.c2.ID))
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"revoked by an ancestor's jti", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(RevocationKeyJTI(h.c1.ID))
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"minted from an ancestor after its jti was revoked (issuer with a lagging view)", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(RevocationKeyJTI(h.c1.ID))
			f.now = f.now.Add(time.Minute) // well after the revocation's Before
			return f.present(f.sign(f.child(t, h)), h.bCert)
		}, ErrRevoked},
		{"revoked by subject", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(RevocationKeySubject(alice))
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"revoked by holder key (the holder)", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(RevocationKeyHolder(svcB))
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"revoked by holder key (an earlier actor)", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(RevocationKeyHolder(svcA))
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"revoked SPIFFE identity of the subject", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(alice.String())
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"revoked SPIFFE identity of an earlier actor", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(svcA.String())
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"revoked SPIFFE identity of the holder", func(t *testing.T, f *fixture, h hops) error {
			f.revoke(svcB.String())
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"revoked SPIFFE identity of an impersonating issuer", func(t *testing.T, f *fixture, h hops) error {
			tok, c := f.mint(Request{Caller: svcC, OnBehalfOf: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: h.c1.Scopes})
			require.Equal(t, []spiffeid.ID{alice, svcC, svcA}, c.Principals())
			require.NoError(t, f.present(tok, h.aCert), "control")
			f.revoke(svcC.String())
			return f.present(tok, h.aCert)
		}, ErrRevoked},
		{"issued inside a restore window (revocation.Window)", func(t *testing.T, f *fixture, h hops) error {
			f.revSeen++
			w := revocation.Window{BackupAt: h.c2.IssuedAt.Add(-time.Minute), RestoredAt: h.c2.IssuedAt.Add(time.Minute)}
			f.view.Update(revocation.NewSet(nil, w, f.revSeen), f.now)
			return f.present(h.tok2, h.bCert)
		}, ErrRevoked},
		{"no revocation view loaded", func(t *testing.T, f *fixture, h hops) error {
			v, err := NewVerifier(VerifierConfig{TrustDomain: testTD, Keys: f.verify.Keys(), Revocations: revocation.NewView(0, func() time.Time { return f.now }),
				Clock: func() time.Time { return f.now }})
			require.NoError(t, err)
			_, err = v.Verify(Presentation{Token: h.tok2, Peer: h.bCert, Audience: []spiffeid.ID{api}})
			return err
		}, ErrNoRevocation},

		// --- Audience ------------------------------------------------------------------
		{"wrong audience", func(t *testing.T, f *fixture, h hops) error {
			_, err := f.verify.Verify(Presentation{Token: h.tok2, Peer: h.bCert, Audience: []spiffeid.ID{store}})
			return err
		}, ErrAudience},
		{"verifier naming no audience", func(t *testing.T, f *fixture, h hops) error {
			_, err := f.verify.Verify(Presentation{Token: h.tok2, Peer: h.bCert})
			return err
		}, ErrAudience},

		// --- Signature, algorithm, key ----------------------------------------------
		{"alg none", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			hd := mustJSON(t, map[string]string{"alg": "none", "kid": s.kid, "typ": TokenType})
			return f.present(b64(hd)+"."+strings.Split(h.tok2, ".")[1]+".", h.bCert)
		}, ErrAlgorithm},
		{"alg none with the original signature kept", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			hd := mustJSON(t, map[string]string{"alg": "none", "kid": s.kid, "typ": TokenType})
			return f.present(withPart(h.tok2, 0, b64(hd)), h.bCert)
		}, ErrAlgorithm},
		{"ES256 in DER form (ASN.1) instead of r||s", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			input := b64(s.header(TokenType)) + "." + strings.Split(h.tok2, ".")[1]
			digest := sha256.Sum256([]byte(input))
			der, err := ecdsa.SignASN1(rand.Reader, s.key, digest[:])
			require.NoError(t, err)
			return f.present(input+"."+b64(der), h.bCert)
		}, ErrSignature},
		{"unknown kid", func(t *testing.T, f *fixture, h hops) error {
			ring, err := NewKeyring(f.now) // a key of ours the verifiers were never given
			require.NoError(t, err)
			iss, err := NewIssuer(testTD, ring, func() time.Time { return f.now })
			require.NoError(t, err)
			tok, err := iss.Sign(f.child(t, h))
			require.NoError(t, err)
			return f.present(tok, h.bCert)
		}, ErrUnknownKey},
		{"another cluster's keyring, its own iss", func(t *testing.T, f *fixture, h hops) error {
			ring, err := NewKeyring(f.now)
			require.NoError(t, err)
			iss, err := NewIssuer(otherTD, ring, func() time.Time { return f.now })
			require.NoError(t, err)
			b := spiffeid.RequireFromPath(otherTD, "/ns/shop/job/b")
			tok, err := iss.Sign(must(iss.Plan(Request{Caller: spiffeid.RequireFromPath(otherTD, "/user/alice"), Holder: b,
				Audience: []spiffeid.ID{spiffeid.RequireFromPath(otherTD, "/system/api")}, Scopes: h.c1.Scopes})))
			require.NoError(t, err)
			return f.present(tok, svid(t, b))
		}, ErrUnknownKey},
		{"another cluster's keyring claiming our trust domain", func(t *testing.T, f *fixture, h hops) error {
			ring, err := NewKeyring(f.now)
			require.NoError(t, err)
			iss, err := NewIssuer(testTD, ring, func() time.Time { return f.now }) // its issuer writes our iss
			require.NoError(t, err)
			tok, err := iss.Sign(f.child(t, h))
			require.NoError(t, err)
			return f.present(tok, h.bCert)
		}, ErrUnknownKey},
		{"another key claiming our kid", func(t *testing.T, f *fixture, h hops) error {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			require.NoError(t, err)
			s := newRawSigner(t, f.ring)
			s.key = key
			return f.present(s.sign(s.header(TokenType), payloadOf(t, f.child(t, h))), h.bCert)
		}, ErrSignature},
		{"our key signing for another trust domain", func(t *testing.T, f *fixture, h hops) error {
			iss, err := NewIssuer(otherTD, f.ring, func() time.Time { return f.now })
			require.NoError(t, err)
			b := spiffeid.RequireFromPath(otherTD, "/ns/shop/job/b")
			tok, err := iss.Sign(must(iss.Plan(Request{Caller: spiffeid.RequireFromPath(otherTD, "/user/alice"), Holder: b,
				Audience: []spiffeid.ID{spiffeid.RequireFromPath(otherTD, "/system/api")}, Scopes: h.c1.Scopes})))
			require.NoError(t, err)
			return f.present(tok, svid(t, b))
		}, ErrIssuer},
		{"our iss naming an actor of another trust domain (signed)", func(t *testing.T, f *fixture, h hops) error {
			m := claimsMap(t, h.tok2)
			m["act"].(map[string]any)["act"].(map[string]any)["sub"] = spiffeid.RequireFromPath(otherTD, "/ns/shop/job/a").String()
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), mustJSON(t, m)), h.bCert)
		}, ErrIssuer},
		{"JWT-SVID (typ JWT) signed with a known key", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			svidClaims := mustJSON(t, map[string]any{"sub": svcB.String(), "aud": []string{api.String()}, "exp": f.now.Add(time.Minute).Unix(), "iat": f.now.Unix()})
			return f.present(s.sign(s.header("JWT"), svidClaims), h.bCert)
		}, ErrMalformed},
		{"our claims under typ JWT signed with a known key", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header("JWT"), payloadOf(t, h.c2)), h.bCert)
		}, ErrMalformed},
		{"no typ (signed)", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			hd := mustJSON(t, map[string]string{"alg": "ES256", "kid": s.kid})
			return f.present(s.sign(hd, payloadOf(t, h.c2)), h.bCert)
		}, ErrMalformed},
		{"no kid", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			hd := mustJSON(t, map[string]string{"alg": "ES256", "typ": TokenType})
			return f.present(s.sign(hd, payloadOf(t, h.c2)), h.bCert)
		}, ErrMalformed},

		// --- Parser strictness ----------------------------------------------------------------
		{"trailing data after the claims (signed)", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), append(payloadOf(t, h.c2), []byte(`{"sub":"x"}`)...)), h.bCert)
		}, ErrMalformed},
		{"trailing data after the header (signed)", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(append(s.header(TokenType), '{', '}'), payloadOf(t, h.c2)), h.bCert)
		}, ErrMalformed},
		{"an extra claim (signed)", func(t *testing.T, f *fixture, h hops) error {
			m := claimsMap(t, h.tok2)
			m["admin"] = true
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), mustJSON(t, m)), h.bCert)
		}, ErrMalformed},
		{"an extra field in an act level (signed)", func(t *testing.T, f *fixture, h hops) error {
			m := claimsMap(t, h.tok2)
			m["act"].(map[string]any)["act"].(map[string]any)["may_act"] = map[string]any{"sub": svcC.String()}
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), mustJSON(t, m)), h.bCert)
		}, ErrMalformed},
		{"an extra field in cnf (signed)", func(t *testing.T, f *fixture, h hops) error {
			m := claimsMap(t, h.tok2)
			m["cnf"].(map[string]any)["jkt"] = "x"
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), mustJSON(t, m)), h.bCert)
		}, ErrMalformed},
		{"a claim twice, the second widening (signed)", func(t *testing.T, f *fixture, h hops) error {
			p := payloadOf(t, h.c2)
			p = append(p[:len(p)-1], []byte(`,"scope":"*:*/*/*"}`)...)
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), p), h.bCert)
		}, ErrMalformed},
		{"a claim under another case (SCOPE) after the real one (signed)", func(t *testing.T, f *fixture, h hops) error {
			p := payloadOf(t, h.c2)
			p = append(p[:len(p)-1], []byte(`,"SCOPE":"*:*/*/*"}`)...)
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), p), h.bCert)
		}, ErrMalformed},
		{"a claim named by Unicode case folding (ſcope) after the real one (signed)", func(t *testing.T, f *fixture, h hops) error {
			p := payloadOf(t, h.c2)
			p = append(p[:len(p)-1], []byte(`,"ſcope":"*:*/*/*"}`)...)
			s := newRawSigner(t, f.ring)
			return f.present(s.sign(s.header(TokenType), p), h.bCert)
		}, ErrMalformed},
		{"a header field twice, the second another kid (signed)", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			hd := []byte(fmt.Sprintf(`{"alg":"ES256","kid":"nope","typ":%q,"kid":%q}`, TokenType, s.kid))
			return f.present(s.sign(hd, payloadOf(t, h.c2)), h.bCert)
		}, ErrMalformed},
		{"oversized token (a valid credential, signed)", func(t *testing.T, f *fixture, h hops) error {
			c := f.child(t, h)
			var long []string
			for i := range MaxScopes {
				long = append(long, fmt.Sprintf("kv.read:kv/shop/orders-%03d-%s", i, strings.Repeat("x", 550)))
			}
			c.Scopes = mustScopes(t, long...)
			_, err := f.issuer.Sign(c)
			require.ErrorContains(t, err, "larger than verifiers accept", "the issuer never signs one")
			s := newRawSigner(t, f.ring)
			tok := s.sign(s.header(TokenType), payloadOf(t, c))
			require.Greater(t, len(tok), MaxTokenSize)
			_, err = Parse(tok, testTD, f.verify.Keys())
			require.ErrorIs(t, err, ErrMalformed, "Parse bounds what it reads too")
			err = f.present(tok, h.bCert)
			require.ErrorContains(t, err, "bytes, at most")
			return err
		}, ErrMalformed},
		{"an empty token", func(t *testing.T, f *fixture, h hops) error {
			return f.present("", h.bCert)
		}, ErrMalformed},
		{"four parts (JWE-like)", func(t *testing.T, f *fixture, h hops) error {
			return f.present(h.tok2+".AAAA", h.bCert)
		}, ErrMalformed},
	}
	// Non-canonical base64 in each part: for the header and the payload the
	// signing input itself is what is encoded differently, so it is signed
	// as such and only strict decoding can refuse it; for the signature the
	// signing input is the original one, so a lenient decoder would accept
	// a second string for one token.
	type variant struct {
		name   string
		encode func(t *testing.T, part string) string
	}
	variants := []variant{
		{"unused bits set", nonCanonical},
		{"padding", func(t *testing.T, part string) string { return part + strings.Repeat("=", (4-len(part)%4)%4) }},
		{"a newline inside", func(t *testing.T, part string) string { return part[:8] + "\n" + part[8:] }},
		{"a carriage return at the end", func(t *testing.T, part string) string { return part + "\r" }},
	}
	for _, v := range variants {
		for i, part := range []string{"header", "payload", "signature"} {
			tests = append(tests, struct {
				name   string
				attack func(t *testing.T, f *fixture, h hops) error
				want   error
			}{fmt.Sprintf("non-canonical base64 in the %s: %s", part, v.name), func(t *testing.T, f *fixture, h hops) error {
				s := newRawSigner(t, f.ring)
				hd, pl := b64(s.header(TokenType)), b64(padded(payloadOf(t, h.c2)))
				require.NoError(t, f.present(s.signInput(hd+"."+pl), h.bCert), "control: canonical")
				switch i {
				case 0:
					return f.present(s.signInput(v.encode(t, hd)+"."+pl), h.bCert)
				case 1:
					return f.present(s.signInput(hd+"."+v.encode(t, pl)), h.bCert)
				}
				tok := s.signInput(hd + "." + pl)
				return f.present(withPart(tok, 2, v.encode(t, strings.Split(tok, ".")[2])), h.bCert)
			}, ErrMalformed})
		}
	}
	// An unknown header is refused, not ignored, however it is meant to be
	// used: each is signed with our key, so only the header can be why.
	for _, extra := range []struct{ name, json string }{
		{"crit", `"crit":["exp"]`},
		{"jku", `"jku":"https://evil.example/jwks.json"`},
		{"jwk", `"jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}`},
		{"x5u", `"x5u":"https://evil.example/cert.pem"`},
		{"x5c", `"x5c":["MIIB"]`},
		{"cty", `"cty":"JWT"`},
		{"b64", `"b64":false`},
	} {
		tests = append(tests, struct {
			name   string
			attack func(t *testing.T, f *fixture, h hops) error
			want   error
		}{"unknown header field " + extra.name + " (signed)", func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			hd := []byte(fmt.Sprintf(`{"alg":"ES256","kid":%q,"typ":%q,%s}`, s.kid, TokenType, extra.json))
			return f.present(s.sign(hd, payloadOf(t, h.c2)), h.bCert)
		}, ErrMalformed})
	}
	// HS256 keyed with what a verifier knows of our public key: a verifier
	// that let the header pick the algorithm would check the MAC with it.
	for _, secret := range []struct {
		name string
		key  func(t *testing.T, f *fixture) []byte
	}{
		{"the JWK set JSON", func(t *testing.T, f *fixture) []byte { return must(f.ring.PublicJWKS()) }},
		{"the JWK JSON", func(t *testing.T, f *fixture) []byte {
			var set struct{ Keys []json.RawMessage }
			require.NoError(t, json.Unmarshal(must(f.ring.PublicJWKS()), &set))
			return set.Keys[0]
		}},
		{"x||y", func(t *testing.T, f *fixture) []byte {
			pub := newRawSigner(t, f.ring).key.PublicKey
			b, err := pub.Bytes()
			require.NoError(t, err)
			return b[1:]
		}},
		{"the uncompressed point 04||x||y", func(t *testing.T, f *fixture) []byte {
			pub := newRawSigner(t, f.ring).key.PublicKey
			return must(pub.Bytes())
		}},
		{"the PKIX DER", func(t *testing.T, f *fixture) []byte {
			pub := newRawSigner(t, f.ring).key.PublicKey
			return must(x509.MarshalPKIXPublicKey(&pub))
		}},
	} {
		tests = append(tests, struct {
			name   string
			attack func(t *testing.T, f *fixture, h hops) error
			want   error
		}{"HS256 keyed with " + secret.name, func(t *testing.T, f *fixture, h hops) error {
			s := newRawSigner(t, f.ring)
			hd := mustJSON(t, map[string]string{"alg": "HS256", "kid": s.kid, "typ": TokenType})
			input := b64(hd) + "." + b64(payloadOf(t, h.c2))
			mac := hmac.New(sha256.New, secret.key(t, f))
			mac.Write([]byte(input))
			return f.present(input+"."+b64(mac.Sum(nil)), h.bCert)
		}, ErrAlgorithm})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			h := f.twoHops(t)
			err := tt.attack(t, f, h)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestRawSignerControl: a token the raw signer makes from the issuer's
// claims verifies, so the attacks that use it are refused for what they
// change and nothing else.
func TestRawSignerControl(t *testing.T) {
	f := newFixture(t)
	h := f.twoHops(t)
	s := newRawSigner(t, f.ring)
	tok := s.sign(s.header(TokenType), payloadOf(t, h.c2))
	c, err := f.verify.Verify(Presentation{Token: tok, Peer: h.bCert, Audience: []spiffeid.ID{api}})
	require.NoError(t, err)
	require.Equal(t, h.c2.ID, c.ID)
	require.Equal(t, h.c2.KeyID, s.kid)
}

// TestLeeway: a clock difference within Leeway is accepted on either side,
// one second more is refused.
func TestLeeway(t *testing.T) {
	tests := []struct {
		name string
		at   func(c *Credential) time.Time
		want error
	}{
		{"verifier behind by the leeway", func(c *Credential) time.Time { return c.NotBefore.Add(-Leeway) }, nil},
		{"verifier behind by more", func(c *Credential) time.Time { return c.NotBefore.Add(-Leeway - time.Second) }, ErrNotYetValid},
		{"just before expiry plus the leeway", func(c *Credential) time.Time { return c.Expiry.Add(Leeway - time.Second) }, nil},
		{"at expiry plus the leeway", func(c *Credential) time.Time { return c.Expiry.Add(Leeway) }, ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			h := f.twoHops(t)
			f.now = tt.at(h.c2)
			err := f.present(h.tok2, h.bCert)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
		})
	}
}

// TestPlanCaps: Plan cuts a credential's expiry to the parent's and to the
// holder's bound certificate's, rather than refusing.
func TestPlanCaps(t *testing.T) {
	f := newFixture(t)
	h := f.twoHops(t)
	c := f.plan(Request{Caller: svcA, Parent: h.c1, Holder: svcB, TTL: 30 * time.Minute})
	require.Equal(t, h.c1.Expiry, c.Expiry, "capped at the parent's expiry")

	cert := svid(t, svcA)
	cert.NotAfter = f.now.Add(3*time.Minute + 500*time.Millisecond)
	c = f.plan(Request{Caller: svcA, CallerCert: cert, Audience: []spiffeid.ID{api}, Scopes: h.c1.Scopes})
	require.Equal(t, f.now.Add(3*time.Minute), c.Expiry, "a certificate-bound credential never outlives the certificate")

	cert.NotAfter = f.now
	_, err := f.issuer.Plan(Request{Caller: svcA, CallerCert: cert, Audience: []spiffeid.ID{api}, Scopes: h.c1.Scopes})
	require.ErrorIs(t, err, ErrExpired)

	_, err = f.issuer.Plan(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: h.c1.Scopes, TTL: 2 * time.Hour, MaxTTL: time.Hour})
	require.ErrorContains(t, err, "longer than the policy allows", "a TTL beyond the policy's maximum is refused")
	_, err = f.issuer.Plan(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: h.c1.Scopes, TTL: 2 * MaxTTL, MaxTTL: 2 * MaxTTL})
	require.ErrorContains(t, err, "longer than the policy allows", "the policy cannot allow more than MaxTTL")

	f.now = h.c1.Expiry
	_, err = f.issuer.Plan(Request{Caller: svcA, Parent: h.c1, Holder: svcB})
	require.ErrorIs(t, err, ErrExpired, "nothing left of the parent")
}

// TestStaleRevocationViewRefusesPrivilegedUse: a verifier whose revocation
// view has not been confirmed current within its bound refuses privileged
// uses, and still serves unprivileged ones.
func TestStaleRevocationViewRefusesPrivilegedUse(t *testing.T) {
	f := newFixture(t)
	h := f.twoHops(t)
	use := func(privileged bool) error {
		_, err := f.verify.Verify(Presentation{Token: h.tok2, Peer: h.bCert, Audience: []spiffeid.ID{api}, Privileged: privileged})
		return err
	}
	require.NoError(t, use(true), "fresh view")
	f.now = f.now.Add(f.view.Bound() + time.Second)
	require.ErrorIs(t, use(true), ErrStale)
	require.NoError(t, use(false), "unprivileged use of a stale view is still accepted")
	f.view.Touch(f.now)
	require.NoError(t, use(true), "confirmed current again")

	// A stale view still refuses what it knows to be revoked.
	f.revoke(RevocationKeyJTI(h.c2.ID))
	f.now = f.now.Add(f.view.Bound() + time.Second)
	require.ErrorIs(t, use(false), ErrRevoked)
}

// TestInspectDoesNotEnforceBinding: an operator inspecting a credential is
// neither its holder nor its audience; every other rule still holds.
func TestInspectDoesNotEnforceBinding(t *testing.T) {
	f := newFixture(t)
	h := f.twoHops(t)
	inspect := func(tok string, peer *x509.Certificate) error {
		_, err := f.verify.Verify(Presentation{Token: tok, Peer: peer, Inspect: true})
		return err
	}
	require.NoError(t, inspect(h.tok2, nil), "no peer, no audience")
	require.NoError(t, inspect(h.tok2, svid(t, svcC)), "not the holder")
	tok3, _ := f.mint(Request{Caller: svcB, CallerCert: h.bCert, Parent: h.c2})
	require.NoError(t, inspect(tok3, svid(t, svcB)), "not the bound certificate")
	require.ErrorIs(t, f.present(tok3, svid(t, svcB)), ErrHolder, "control: the same presentation without Inspect")

	m := claimsMap(t, h.tok2)
	m["scope"] = "*:*/*/*"
	require.ErrorIs(t, inspect(withPart(h.tok2, 1, b64(mustJSON(t, m))), nil), ErrSignature)
	c := f.child(t, h)
	c.Scopes = mustScopes(t, "*:*/*/*")
	require.ErrorIs(t, inspect(f.sign(c), nil), ErrChain)

	f.revoke(RevocationKeyJTI(h.c1.ID))
	require.ErrorIs(t, inspect(h.tok2, nil), ErrRevoked)
	f.now = h.c2.Expiry.Add(Leeway)
	require.ErrorIs(t, inspect(h.tok2, nil), ErrExpired)
}
