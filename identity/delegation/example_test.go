package delegation_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/identity/revocation"
)

// A service verifies a credential presented over mutual TLS: the public
// keys come from the control plane, revocations from the view its owner
// feeds, the clock is injected; the peer certificate is the verified mTLS
// leaf; the audience is the service itself. What the credential allows is
// then one more input to the decision: the call's effective right is the
// intersection of the rights of every principal in the chain and the scope.
func ExampleVerifier_Verify() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	alice := spiffeid.RequireFromPath(td, "/user/alice")
	shop := spiffeid.RequireFromPath(td, "/ns/shop/job/frontend")
	kv := spiffeid.RequireFromPath(td, "/system/kv")
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	// On a control node: alice delegates reading the shop's orders to the
	// frontend, for the KV service.
	ring := must(delegation.NewKeyring(now))
	issuer := must(delegation.NewIssuer(td, ring, clock))
	scopes := must(delegation.ParseScopes([]string{"kv.read:kv/shop/orders-*"}))
	planned := must(issuer.Plan(delegation.Request{Caller: alice, Holder: shop, Audience: []spiffeid.ID{kv}, Scopes: scopes}))
	token := must(issuer.Sign(planned))

	// In the KV service, once: the keys every control node publishes, and
	// the revocation view (here loaded with nothing revoked).
	jwks := must(ring.PublicJWKS())
	keys, err := delegation.ParsePublicKeys(map[string][]byte{"control-1": jwks})
	if err != nil {
		fmt.Println(err)
		return
	}
	view := revocation.NewView(0, clock)
	view.Update(revocation.NewSet(nil, revocation.Window{}, 1), now)
	verifier := must(delegation.NewVerifier(delegation.VerifierConfig{TrustDomain: td, Keys: keys, Revocations: view, Clock: clock}))

	// Per call: the token, the verified peer certificate, who we are.
	frontendCert := certFor(shop, now)
	cred, err := verifier.Verify(delegation.Presentation{Token: token, Peer: frontendCert, Audience: []spiffeid.ID{kv}})
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	fmt.Println("on behalf of:", cred.Subject)
	fmt.Println("principals:", cred.Principals())
	fmt.Println("may read kv/shop/orders-7:", cred.Allows("kv.read", "kv", "shop", "orders-7"))
	fmt.Println("may write kv/shop/orders-7:", cred.Allows("kv.write", "kv", "shop", "orders-7"))

	// The same token from anyone else is worthless.
	_, err = verifier.Verify(delegation.Presentation{Token: token, Peer: certFor(spiffeid.RequireFromPath(td, "/ns/shop/job/thief"), now),
		Audience: []spiffeid.ID{kv}})
	fmt.Println("replayed by another workload, refused:", errors.Is(err, delegation.ErrHolder))

	// Output:
	// on behalf of: spiffe://example.org/user/alice
	// principals: [spiffe://example.org/user/alice spiffe://example.org/ns/shop/job/frontend]
	// may read kv/shop/orders-7: true
	// may write kv/shop/orders-7: false
	// replayed by another workload, refused: true
}

// certFor stands in for the peer's X.509-SVID, as the TLS handshake
// verified it.
func certFor(id spiffeid.ID, now time.Time) *x509.Certificate {
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	u := must(url.Parse(id.String()))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), URIs: []*url.URL{u}}
	return must(x509.ParseCertificate(must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
