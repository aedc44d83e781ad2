package delegation

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
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
