package delegation

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/revocation"
)

var (
	alice = id("/user/alice")
	svcA  = id("/ns/shop/job/a")
	svcB  = id("/ns/shop/job/b")
	api   = id("/system/api")
)

// TestThreeHops: alice delegates to A, A exchanges for B, each hop
// narrowing; B's credential carries the whole chain and verifies only when
// B presents it.
func TestThreeHops(t *testing.T) {
	f := newFixture(t)
	aCert, bCert := svid(t, svcA), svid(t, svcB)
	tok1, c1 := f.mint(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: mustScopes(t, "kv.*:kv/shop/*", "queue.read:queue/shop/*")})
	require.Equal(t, alice, c1.Subject)
	require.Empty(t, c1.Thumbprint, "A did not obtain it itself: bound to its ID only")

	got1, err := f.verify.Verify(Presentation{Token: tok1, Peer: aCert, Audience: []spiffeid.ID{api}})
	require.NoError(t, err)
	require.Equal(t, c1.ID, got1.ID)

	tok2, c2 := f.mint(Request{Caller: svcA, CallerCert: aCert, Parent: got1, Holder: svcB, Scopes: mustScopes(t, "kv.read:kv/shop/orders-*")})
	require.Equal(t, []spiffeid.ID{alice, svcA, svcB}, c2.Principals())
	got2, err := f.verify.Verify(Presentation{Token: tok2, Peer: bCert, Audience: []spiffeid.ID{api}})
	require.NoError(t, err)
	require.Equal(t, []string{c2.ID, c1.ID}, got2.JTIs())
	require.True(t, got2.Allows("kv.read", "kv", "shop", "orders-7"))
	require.False(t, got2.Allows("kv.write", "kv", "shop", "orders-7"))

	_, err = f.verify.Verify(Presentation{Token: tok2, Peer: aCert, Audience: []spiffeid.ID{api}})
	require.ErrorIs(t, err, ErrHolder)

	// B asks for itself: bound to its certificate too.
	tok3, c3 := f.mint(Request{Caller: svcB, CallerCert: bCert, Parent: got2})
	require.Equal(t, Thumbprint(bCert), c3.Thumbprint)
	_, err = f.verify.Verify(Presentation{Token: tok3, Peer: bCert, Audience: []spiffeid.ID{api}})
	require.NoError(t, err)
	_, err = f.verify.Verify(Presentation{Token: tok3, Peer: svid(t, svcB), Audience: []spiffeid.ID{api}})
	require.ErrorIs(t, err, ErrHolder, "same SPIFFE ID, another certificate")

	// Revoking alice's first credential revokes everything minted from it.
	f.revoke(RevocationKeyJTI(c1.ID))
	_, err = f.verify.Verify(Presentation{Token: tok3, Peer: bCert, Audience: []spiffeid.ID{api}})
	require.ErrorIs(t, err, ErrRevoked)
}

// TestVerifyConcurrent: verifiers are shared by every call of a service:
// verifying concurrently while the keys are replaced, the revocation view
// is updated and a small cache keeps overflowing gives the same answers
// (run with -race).
func TestVerifyConcurrent(t *testing.T) {
	f := newFixture(t)
	h := f.twoHops(t)
	small, err := NewVerifier(VerifierConfig{TrustDomain: testTD, Keys: f.verify.Keys(), Revocations: f.view,
		Clock: func() time.Time { return testNow }, CacheSize: 2})
	require.NoError(t, err)
	var tokens []string
	for range 8 {
		tok, _ := f.mint(Request{Caller: svcA, Parent: h.c1, Holder: svcB, Audience: []spiffeid.ID{api}, Scopes: h.c2.Scopes})
		tokens = append(tokens, tok)
	}
	keys := f.verify.Keys()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 100 {
				for _, v := range []*Verifier{f.verify, small} {
					c, err := v.Verify(Presentation{Token: tokens[(g+i)%len(tokens)], Peer: h.bCert, Audience: []spiffeid.ID{api}})
					if err != nil || c.Holder() != svcB {
						t.Errorf("verify: %v", err)
						return
					}
				}
				if _, err := f.verify.Verify(Presentation{Token: h.tok2, Peer: h.aCert, Audience: []spiffeid.ID{api}}); !errors.Is(err, ErrHolder) {
					t.Errorf("replay by A: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			f.verify.SetKeys(keys)
			small.SetKeys(keys)
		}
	})
	wg.Go(func() {
		for i := range 100 {
			f.view.Update(revocation.NewSet([]revocation.Entry{{ID: RevocationKeyJTI(NewJTI()), Before: testNow}}, revocation.Window{}, int64(10+i)), testNow)
		}
	})
	wg.Wait()
}
