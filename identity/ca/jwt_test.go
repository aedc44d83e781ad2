package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"regexp"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
)

func newJWTSigner(t *testing.T, clock func() time.Time) (*ca.JWTSigner, *jwtbundle.Bundle) {
	t.Helper()
	s, err := ca.NewJWTSigner(testTD, mustKey(t), clock)
	require.NoError(t, err)
	bundle := jwtbundle.New(testTD)
	require.NoError(t, bundle.AddJWTAuthority(s.KeyID(), s.PublicKey()))
	return s, bundle
}

func TestJWTSVIDValidatesWithGoSpiffe(t *testing.T) {
	// go-spiffe validates against the real clock, so this signer uses it.
	s, bundle := newJWTSigner(t, time.Now)
	id := mustID(t, "spiffe://unum.local/ns/prod/job/web")
	token, err := s.SignJWTSVID(id, []string{"spiffe://unum.local/system/kv", "extra"}, 5*time.Minute)
	require.NoError(t, err)

	svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{"spiffe://unum.local/system/kv"})
	require.NoError(t, err)
	require.Equal(t, id, svid.ID)
	require.Equal(t, []string{"spiffe://unum.local/system/kv", "extra"}, svid.Audience)
	require.Regexp(t, regexp.MustCompile(`^[0-9a-f]{32}$`), svid.Claims["jti"])
	require.Contains(t, svid.Claims, "iat")

	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	require.NoError(t, err)
	require.Len(t, tok.Headers, 1)
	require.Equal(t, "ES256", tok.Headers[0].Algorithm)
	require.Equal(t, s.KeyID(), tok.Headers[0].KeyID)
	require.Equal(t, "JWT", tok.Headers[0].ExtraHeaders[jose.HeaderType])
	var claims jwt.Claims
	require.NoError(t, tok.Claims(s.PublicKey(), &claims))
	require.Equal(t, 5*time.Minute, claims.Expiry.Time().Sub(claims.IssuedAt.Time()))

	// Two tokens differ in jti.
	token2, err := s.SignJWTSVID(id, []string{"a"}, time.Minute)
	require.NoError(t, err)
	svid2, err := jwtsvid.ParseAndValidate(token2, bundle, []string{"a"})
	require.NoError(t, err)
	require.NotEqual(t, svid.Claims["jti"], svid2.Claims["jti"])
}

func TestJWTSVIDRefusedByVerifier(t *testing.T) {
	s, bundle := newJWTSigner(t, time.Now)
	past, _ := newJWTSigner(t, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	require.NoError(t, bundle.AddJWTAuthority(past.KeyID(), past.PublicKey()))
	stranger, _ := newJWTSigner(t, time.Now)
	id := mustID(t, "spiffe://unum.local/user/alice")
	sign := func(s *ca.JWTSigner, aud string, ttl time.Duration) string {
		tok, err := s.SignJWTSVID(id, []string{aud}, ttl)
		require.NoError(t, err)
		return tok
	}
	tests := []struct {
		name    string
		token   string
		aud     string
		wantErr string
	}{
		{"audience mismatch", sign(s, "svc-a", time.Hour), "svc-b", "expected audience"},
		{"expired", sign(past, "svc-a", time.Hour), "svc-a", "token has expired"},
		{"unknown key", sign(stranger, "svc-a", time.Hour), "svc-a", "no JWT authority"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jwtsvid.ParseAndValidate(tc.token, bundle, []string{tc.aud})
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestJWTSignerKeyID(t *testing.T) {
	key := mustKey(t)
	a, err := ca.NewJWTSigner(testTD, key, nil)
	require.NoError(t, err)
	b, err := ca.NewJWTSigner(testTD, key, nil)
	require.NoError(t, err)
	c, err := ca.NewJWTSigner(testTD, mustKey(t), nil)
	require.NoError(t, err)
	require.Equal(t, a.KeyID(), b.KeyID(), "same key, same kid")
	require.NotEqual(t, a.KeyID(), c.KeyID())
	require.Regexp(t, regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`), a.KeyID(), "base64url SHA-256, no padding")
	require.True(t, key.PublicKey.Equal(a.PublicKey()))
}

func TestJWTSignerRefuses(t *testing.T) {
	s, _ := newJWTSigner(t, time.Now)
	id := mustID(t, "spiffe://unum.local/user/alice")
	tests := []struct {
		name    string
		id      spiffeid.ID
		aud     []string
		ttl     time.Duration
		wantErr string
	}{
		{"no audience", id, nil, time.Hour, "no audience"},
		{"empty audience entry", id, []string{"a", ""}, time.Hour, "audience[1] is empty"},
		{"other trust domain", mustID(t, "spiffe://other.td/user/alice"), []string{"a"}, time.Hour, "not in trust domain"},
		{"empty id", spiffeid.ID{}, []string{"a"}, time.Hour, "empty SPIFFE ID"},
		{"zero ttl", id, []string{"a"}, 0, "not positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.SignJWTSVID(tc.id, tc.aud, tc.ttl)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	_, err = ca.NewJWTSigner(testTD, p384, nil)
	require.ErrorContains(t, err, "want P-256")
	_, err = ca.NewJWTSigner(spiffeid.TrustDomain{}, mustKey(t), nil)
	require.ErrorContains(t, err, "empty trust domain")
}
