package delegation

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/jwt"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/unumos/unum/identity/revocation"
)

// kidOf is the kid in a token's header.
func kidOf(t *testing.T, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	require.NoError(t, err)
	var h header
	require.NoError(t, json.Unmarshal(b, &h))
	return h.Kid
}

// signAt mints a one-hop credential signed by ring's primary at now.
func signAt(t *testing.T, ring *Keyring, now time.Time, ttl time.Duration) string {
	t.Helper()
	iss, err := NewIssuer(testTD, ring, func() time.Time { return now })
	require.NoError(t, err)
	c, err := iss.Plan(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: mustScopes(t, "kv.read:kv/shop/*"), TTL: ttl, MaxTTL: MaxTTL})
	require.NoError(t, err)
	tok, err := iss.Sign(c)
	require.NoError(t, err)
	return tok
}

// verifierAt verifies with the public keys of rings, at now.
func verifierAt(t *testing.T, now time.Time, rings ...*Keyring) func(tok string) error {
	t.Helper()
	sets := map[string][]byte{}
	for i, r := range rings {
		b, err := r.PublicJWKS()
		require.NoError(t, err)
		sets[fmt.Sprint(i)] = b
	}
	keys, err := ParsePublicKeys(sets)
	require.NoError(t, err)
	clock := func() time.Time { return now }
	view := emptyRevocations(clock)
	v, err := NewVerifier(VerifierConfig{TrustDomain: testTD, Keys: keys, Revocations: view, Clock: clock})
	require.NoError(t, err)
	aCert := svid(t, svcA)
	return func(tok string) error {
		_, err := v.Verify(Presentation{Token: tok, Peer: aCert, Audience: []spiffeid.ID{api}})
		return err
	}
}

// emptyRevocations is a loaded revocation view revoking nothing.
func emptyRevocations(clock func() time.Time) *revocation.View {
	v := revocation.NewView(0, clock)
	v.Update(revocation.NewSet(nil, revocation.Window{}, 1), clock())
	return v
}

// TestKeyringRotate: a rotated keyring signs with its new key, and its
// public set still verifies what the old key signed.
func TestKeyringRotate(t *testing.T) {
	t0 := testNow
	ring, err := NewKeyring(t0)
	require.NoError(t, err)
	require.False(t, ring.Due(t0.Add(RotationPeriod-time.Second), RotationPeriod))
	require.True(t, ring.Due(t0.Add(RotationPeriod), RotationPeriod))

	t1 := t0.Add(RotationPeriod)
	old := signAt(t, ring, t1.Add(-time.Minute), DefaultTTL)
	rotated, err := ring.Rotate(t1)
	require.NoError(t, err)
	require.Len(t, ring.Keys(), 1, "Rotate returns a new keyring; the old one is unchanged")
	keys := rotated.Keys()
	require.Len(t, keys, 2)
	require.Equal(t, ring.Primary().ID, keys[0].ID)
	require.Equal(t, t1, keys[0].Retired)
	require.Equal(t, rotated.Primary(), keys[1])
	require.Equal(t, t1, keys[1].Created)
	require.True(t, keys[1].Retired.IsZero())
	require.False(t, rotated.Due(t1, RotationPeriod))

	fresh := signAt(t, rotated, t1, DefaultTTL)
	require.NotEqual(t, kidOf(t, old), kidOf(t, fresh), "new tokens use the new kid")

	verify := verifierAt(t, t1, rotated)
	require.NoError(t, verify(old), "the retired key still verifies")
	require.NoError(t, verify(fresh))
	require.ErrorIs(t, verifierAt(t, t1, ring)(fresh), ErrUnknownKey,
		"a verifier that has not yet received the new public set refuses the new key's tokens")
}

// TestKeyringPrune: a retired key is kept while any token it signed can
// still be accepted (MaxTTL + Leeway after its retirement) and deleted
// after; its tokens then fail with ErrUnknownKey.
func TestKeyringPrune(t *testing.T) {
	t1 := testNow
	ring, err := NewKeyring(t1.Add(-RotationPeriod))
	require.NoError(t, err)
	// The longest-lived token the old key can sign, signed as it retires.
	last := signAt(t, ring, t1, MaxTTL)
	ring, err = ring.Rotate(t1)
	require.NoError(t, err)

	same, err := ring.Prune(t1.Add(MaxTTL))
	require.NoError(t, err)
	require.Same(t, ring, same, "nothing due: the same keyring")

	edge := t1.Add(MaxTTL + Leeway - time.Second)
	kept, err := ring.Prune(t1.Add(MaxTTL + Leeway))
	require.NoError(t, err)
	require.Len(t, kept.Keys(), 2, "kept up to MaxTTL+Leeway after retirement")
	require.NoError(t, verifierAt(t, edge, kept)(last), "its last token is still accepted")

	after := t1.Add(MaxTTL + Leeway + time.Second)
	pruned, err := ring.Prune(after)
	require.NoError(t, err)
	require.Equal(t, []KeyInfo{ring.Primary()}, pruned.Keys())
	require.Equal(t, ring.Primary(), pruned.Primary())
	require.ErrorIs(t, verifierAt(t, edge, pruned)(last), ErrUnknownKey, "a pruned key verifies nothing")
	require.ErrorIs(t, verifierAt(t, after, kept)(last), ErrExpired, "by then its last token has expired anyway")

	// The primary is never pruned, however old.
	again, err := pruned.Prune(after.Add(10 * MaxTTL))
	require.NoError(t, err)
	require.Same(t, pruned, again)
	require.NoError(t, verifierAt(t, after, pruned)(signAt(t, pruned, after, DefaultTTL)))
}

func newAEAD(t *testing.T) tink.AEAD {
	t.Helper()
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	require.NoError(t, err)
	a, err := aead.New(h)
	require.NoError(t, err)
	return a
}

// TestKeyringSeal: a keyring sealed under a key-encryption key opens only
// under that key and unaltered, and holds no private key in the clear.
func TestKeyringSeal(t *testing.T) {
	kek := newAEAD(t)
	ring, err := NewKeyring(testNow.Add(-RotationPeriod))
	require.NoError(t, err)
	ring, err = ring.Rotate(testNow)
	require.NoError(t, err)
	sealed, err := ring.Marshal(kek)
	require.NoError(t, err)

	opened, err := UnmarshalKeyring(sealed, kek)
	require.NoError(t, err)
	require.Equal(t, ring.Keys(), opened.Keys())
	require.Equal(t, ring.Primary(), opened.Primary())
	pub, err := ring.PublicJWKS()
	require.NoError(t, err)
	pub2, err := opened.PublicJWKS()
	require.NoError(t, err)
	require.JSONEq(t, string(pub), string(pub2))
	require.NoError(t, verifierAt(t, testNow, ring)(signAt(t, opened, testNow, DefaultTTL)), "the opened keyring signs with the same key")

	// No private key in the clear, in any encoding.
	d := newRawSigner(t, ring).key.D.FillBytes(make([]byte, 32))
	for _, enc := range [][]byte{d, []byte(base64.StdEncoding.EncodeToString(d)), []byte(base64.RawURLEncoding.EncodeToString(d)), []byte(fmt.Sprintf("%x", d))} {
		require.False(t, bytes.Contains(sealed, enc), "sealed keyring holds the private key in the clear")
	}

	edit := func(f func(s *sealedKeyring)) []byte {
		var s sealedKeyring
		require.NoError(t, json.Unmarshal(sealed, &s))
		f(&s)
		b, err := json.Marshal(s)
		require.NoError(t, err)
		return b
	}
	tests := []struct {
		name   string
		sealed []byte
		kek    tink.AEAD
		want   string
	}{
		{"another key-encryption key", sealed, newAEAD(t), "cannot open it"},
		{"a key's creation moved", edit(func(s *sealedKeyring) { s.Keys[1].Created = s.Keys[1].Created.Add(-RotationPeriod) }), kek, "cannot open it"},
		{"a key's retirement erased", edit(func(s *sealedKeyring) { s.Keys[0].Retired = time.Time{} }), kek, "cannot open it"},
		{"a key dropped from the list", edit(func(s *sealedKeyring) { s.Keys = s.Keys[1:] }), kek, "cannot open it"},
		{"the keyset altered", edit(func(s *sealedKeyring) {
			s.Keyset = bytes.Replace(s.Keyset, []byte(`"encryptedKeyset":"`), []byte(`"encryptedKeyset":"AAAA`), 1)
		}), kek, "cannot open it"},
		{"another version", edit(func(s *sealedKeyring) { s.Version = 2 }), kek, "version 2"},
		{"an unknown field", append(bytes.TrimSuffix(bytes.Clone(sealed), []byte("}")), []byte(`,"extra":1}`)...), kek, "unknown field"},
		{"not JSON", []byte("sealed"), kek, "credential keyring"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UnmarshalKeyring(tt.sealed, tt.kek)
			require.ErrorContains(t, err, tt.want)
		})
	}

	t.Run("a keyset of another key type, sealed as a keyring", func(t *testing.T) {
		h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
		require.NoError(t, err)
		keys := []KeyInfo{{ID: h.KeysetInfo().GetPrimaryKeyId(), Created: testNow}}
		meta, err := json.Marshal(keys)
		require.NoError(t, err)
		var buf bytes.Buffer
		require.NoError(t, h.WriteWithAssociatedData(keyset.NewJSONWriter(&buf), kek, append([]byte(keyringLabel), meta...)))
		b, err := json.Marshal(sealedKeyring{Version: 1, Keys: keys, Keyset: buf.Bytes()})
		require.NoError(t, err)
		_, err = UnmarshalKeyring(b, kek)
		require.ErrorContains(t, err, "want a JWT ECDSA key")
	})
}

// jwkSet is a JWK set of the given members, one object per key.
func jwkSet(keys ...map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// ecJWK is key's public JWK.
func ecJWK(key *ecdsa.PrivateKey, kid string) map[string]any {
	n := (key.Curve.Params().BitSize + 7) / 8
	return map[string]any{"kty": "EC", "crv": key.Curve.Params().Name, "alg": "ES256", "use": "sig", "kid": kid,
		"x": b64(key.X.FillBytes(make([]byte, n))), "y": b64(key.Y.FillBytes(make([]byte, n)))}
}

func with(m map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range m {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// TestParsePublicKeys: only ES256 verification keys with a kid are taken;
// a bad set is named and left out, the others kept.
func TestParsePublicKeys(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	good := ecJWK(key, "k1")
	offCurve := with(good, "y", b64(make([]byte, 32))) // y = 0
	tests := []struct {
		name string
		set  []byte
		want string
	}{
		{"a private key", jwkSet(with(good, "d", b64(key.D.FillBytes(make([]byte, 32))))), "a private key in a public set"},
		{"P-384", jwkSet(ecJWK(p384, "k1")), `crv "P-384"`},
		{"P-384 claiming P-256", jwkSet(with(ecJWK(p384, "k1"), "crv", "P-256")), "32-byte"},
		{"RSA", jwkSet(map[string]any{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}), `kty "RSA"`},
		{"symmetric", jwkSet(map[string]any{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}), `kty "oct"`},
		{"no kid", jwkSet(with(good, "kid", nil)), "no kid"},
		{"alg RS256", jwkSet(with(good, "alg", "RS256")), `alg "RS256"`},
		{"alg none", jwkSet(with(good, "alg", "none")), `alg "none"`},
		{"use enc", jwkSet(with(good, "use", "enc")), `use "enc"`},
		{"a kid twice", jwkSet(good, ecJWK(must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)), "k1")), "twice"},
		{"a point off the curve", jwkSet(offCurve), "k1"},
		{"padded coordinates", jwkSet(with(good, "x", base64.URLEncoding.EncodeToString(key.X.FillBytes(make([]byte, 32))))), "32-byte"},
		{"no key", jwkSet(), "no key"},
		{"not JSON", []byte("keys"), "jwk set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := NewKeyring(testNow)
			require.NoError(t, err)
			pub, err := ring.PublicJWKS()
			require.NoError(t, err)
			keys, err := ParsePublicKeys(map[string][]byte{"node-1": pub, "node-2": tt.set})
			require.ErrorContains(t, err, "credential keys of node-2")
			require.ErrorContains(t, err, tt.want)
			require.NotContains(t, err.Error(), "node-1")
			require.Equal(t, 1, keys.Len(), "the good set is kept")
			v, err := NewVerifier(VerifierConfig{TrustDomain: testTD, Keys: keys, Revocations: emptyRevocations(func() time.Time { return testNow }),
				Clock: func() time.Time { return testNow }})
			require.NoError(t, err)
			_, err = v.Verify(Presentation{Token: signAt(t, ring, testNow, DefaultTTL), Peer: svid(t, svcA), Audience: []spiffeid.ID{api}})
			require.NoError(t, err, "the good set's keys verify")
		})
	}

	t.Run("one kid on two control nodes", func(t *testing.T) {
		// Tink key ids are 32 random bits: two nodes may share a kid.
		// Both keys are kept and either signature verifies.
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		keys, err := ParsePublicKeys(map[string][]byte{"node-1": jwkSet(good), "node-2": jwkSet(ecJWK(other, "k1"))})
		require.NoError(t, err)
		require.Equal(t, 2, keys.Len())
		require.Equal(t, []string{"k1"}, keys.KeyIDs())
		f := newFixture(t)
		f.verify.SetKeys(keys)
		c := f.plan(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: mustScopes(t, "kv.read:kv/shop/*")})
		aCert := svid(t, svcA)
		for _, k := range []*ecdsa.PrivateKey{key, other} {
			s := rawSigner{key: k, kid: "k1"}
			require.NoError(t, f.present(s.sign(s.header(TokenType), payloadOf(t, c)), aCert))
		}
	})
}

// TestSetKeysForgetsVerifiedTokens: a token verified (and cached) under a
// key is refused once the key is no longer in the set.
func TestSetKeysForgetsVerifiedTokens(t *testing.T) {
	f := newFixture(t)
	h := f.twoHops(t)
	require.NoError(t, f.present(h.tok2, h.bCert)) // cached
	other, err := NewKeyring(f.now)
	require.NoError(t, err)
	f.verify.SetKeys(f.publicKeys(other))
	require.ErrorIs(t, f.present(h.tok2, h.bCert), ErrUnknownKey)
	f.verify.SetKeys(nil)
	require.ErrorIs(t, f.present(h.tok2, h.bCert), ErrUnknownKey, "no keys: nothing verifies")
}

// TestTinkVerifiesIssuedTokens: the issuer signs outside Tink's JWT API,
// with the keyring's own key; Tink's JWT verifier, given only the published
// JWK set, accepts what it signs (same algorithm, kid, typ and claims): a
// direct mint, an exchange (a nested act with grants) and a
// certificate-bound one; a rotated keyring's issuer signs with the new kid.
func TestTinkVerifiesIssuedTokens(t *testing.T) {
	f := newFixture(t)
	f.now = time.Now().Truncate(time.Second)
	check := func(ring *Keyring) {
		t.Helper()
		iss, err := NewIssuer(testTD, ring, func() time.Time { return f.now })
		require.NoError(t, err)
		c, err := iss.Plan(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: mustScopes(t, "kv.read:kv/shop/*")})
		require.NoError(t, err)
		require.Equal(t, ring.PrimaryKID(), c.KeyID, "a planned credential names the key that will sign it (the issuance record shows it)")
		tok, err := iss.Sign(c)
		require.NoError(t, err)
		jwks, err := ring.PublicJWKS()
		require.NoError(t, err)
		pub, err := jwt.JWKSetToPublicKeysetHandle(jwks)
		require.NoError(t, err)
		v, err := jwt.NewVerifier(pub)
		require.NoError(t, err)
		typ, aud := TokenType, api.String()
		val, err := jwt.NewValidator(&jwt.ValidatorOpts{ExpectedTypeHeader: &typ, ExpectedAudience: &aud, IgnoreIssuer: true, FixedNow: f.now})
		require.NoError(t, err)
		got, err := v.VerifyAndDecode(tok, val)
		require.NoError(t, err)
		jti, err := got.JWTID()
		require.NoError(t, err)
		require.Equal(t, c.ID, jti)
		act, err := got.ObjectClaim("act")
		require.NoError(t, err)
		require.Equal(t, svcA.String(), act["sub"])
		kid := strings.Split(tok, ".")[0]
		h, err := base64.RawURLEncoding.DecodeString(kid)
		require.NoError(t, err)
		require.Contains(t, string(h), ring.PrimaryKID())

		// An exchange by A for B, and one A asks for itself (bound to its
		// certificate): the same verifier accepts both.
		aCert := svid(t, svcA)
		for _, r := range []Request{
			{Caller: svcA, Parent: c, Holder: svcB},
			{Caller: svcA, CallerCert: aCert, Parent: c},
		} {
			child, err := iss.Plan(r)
			require.NoError(t, err)
			tok, err := iss.Sign(child)
			require.NoError(t, err)
			got, err := v.VerifyAndDecode(tok, val)
			require.NoError(t, err)
			act, err := got.ObjectClaim("act")
			require.NoError(t, err)
			prior, ok := act["act"].(map[string]any)
			require.True(t, ok, "the exchange nests the prior actor: %v", act)
			require.Equal(t, c.ID, prior["jti"])
			cnf, err := got.ObjectClaim("cnf")
			require.NoError(t, err)
			if r.CallerCert != nil {
				require.Equal(t, Thumbprint(aCert), cnf["x5t#S256"])
			}
		}
	}
	check(f.ring)
	rotated, err := f.ring.Rotate(f.now)
	require.NoError(t, err)
	require.NotEqual(t, f.ring.PrimaryKID(), rotated.PrimaryKID())
	check(rotated)
}
