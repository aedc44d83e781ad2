package delegation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	jwtecdsapb "github.com/tink-crypto/tink-go/v2/proto/jwt_ecdsa_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/unumos/unum/identity/revocation"
)

// testNow is the fixed clock of these tests.
var testNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

var testTD = spiffeid.RequireTrustDomainFromString("unum.test")

func id(path string) spiffeid.ID { return spiffeid.RequireFromPath(testTD, path) }

// fixture is an issuer and a verifier sharing one keyring, a clock the test
// moves, and a revocation view the test feeds.
type fixture struct {
	t       testing.TB
	now     time.Time
	ring    *Keyring
	issuer  *Issuer
	view    *revocation.View
	verify  *Verifier
	revSeen int64
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{t: t, now: testNow}
	clock := func() time.Time { return f.now }
	var err error
	f.ring, err = NewKeyring(testNow)
	require.NoError(t, err)
	f.issuer, err = NewIssuer(testTD, f.ring, clock)
	require.NoError(t, err)
	f.view = revocation.NewView(0, clock)
	f.revoke() // loaded, nothing revoked
	keys := f.publicKeys(f.ring)
	f.verify, err = NewVerifier(VerifierConfig{TrustDomain: testTD, Keys: keys, Revocations: f.view, Clock: clock})
	require.NoError(t, err)
	return f
}

func (f *fixture) publicKeys(rings ...*Keyring) *PublicKeys {
	sets := map[string][]byte{}
	for i, r := range rings {
		b, err := r.PublicJWKS()
		require.NoError(f.t, err)
		sets[string(rune('a'+i))] = b
	}
	k, err := ParsePublicKeys(sets)
	require.NoError(f.t, err)
	return k
}

// revoke installs a revocation set of entries, each revoked now.
func (f *fixture) revoke(keys ...string) {
	var es []revocation.Entry
	for _, k := range keys {
		es = append(es, revocation.Entry{ID: k, Before: f.now.Add(revocation.ClockSkewAllowance), RevokedAt: f.now})
	}
	f.revSeen++
	f.view.Update(revocation.NewSet(es, revocation.Window{}, f.revSeen), f.now)
}

// mint plans and signs r.
func (f *fixture) mint(r Request) (string, *Credential) {
	f.t.Helper()
	c, err := f.issuer.Plan(r)
	require.NoError(f.t, err)
	tok, err := f.issuer.Sign(c)
	require.NoError(f.t, err)
	return tok, c
}

// svid is a self-signed certificate naming id, valid for a day from testNow.
func svid(t testing.TB, spiffeID spiffeid.ID) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	u, _ := url.Parse(spiffeID.String())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(24 * time.Hour),
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert
}

func mustScopes(t testing.TB, ss ...string) []Scope {
	t.Helper()
	out, err := ParseScopes(ss)
	require.NoError(t, err)
	return out
}

// rawSigner signs exact header and payload bytes with a keyring's primary
// key, under that key's kid: for tokens the issuer cannot be made to write
// (a header it never writes, claims it would not encode, a signing input in
// a non-canonical encoding). It reads the private key out of the Tink
// keyset, which only a test may do.
type rawSigner struct {
	key *ecdsa.PrivateKey
	kid string
}

func newRawSigner(t testing.TB, ring *Keyring) rawSigner {
	t.Helper()
	ks := insecurecleartextkeyset.KeysetMaterial(ring.handle)
	for _, k := range ks.GetKey() {
		if k.GetKeyId() != ks.GetPrimaryKeyId() {
			continue
		}
		var priv jwtecdsapb.JwtEcdsaPrivateKey
		require.NoError(t, proto.Unmarshal(k.GetKeyData().GetValue(), &priv))
		d := priv.GetKeyValue()
		require.GreaterOrEqual(t, len(d), 32)
		key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[len(d)-32:]) // Tink pads to 33 bytes
		require.NoError(t, err)
		var kid [4]byte
		binary.BigEndian.PutUint32(kid[:], k.GetKeyId())
		return rawSigner{key: key, kid: base64.RawURLEncoding.EncodeToString(kid[:])}
	}
	t.Fatal("keyring has no primary key")
	return rawSigner{}
}

// header is the header the issuer writes, with typ.
func (s rawSigner) header(typ string) []byte {
	b, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": s.kid, "typ": typ})
	return b
}

// sign returns header.payload.signature, each part base64url-encoded.
func (s rawSigner) sign(header, payload []byte) string {
	return s.signInput(b64(header) + "." + b64(payload))
}

// signInput signs the signing input as given (however it is encoded).
func (s rawSigner) signInput(input string) string {
	digest := sha256.Sum256([]byte(input))
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		panic(err) // never, with crypto/rand
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return input + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// payloadOf is c's claims as the issuer encodes them (keys in another order).
func payloadOf(t testing.TB, c *Credential) []byte {
	t.Helper()
	b, err := json.Marshal(claimsOf(c))
	require.NoError(t, err)
	return b
}
