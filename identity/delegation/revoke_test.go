package delegation

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

// TestRevocationJudgedOnTheRevokedAuthority: a subject, holder or identity
// revocation cuts the authority issued before it, including credentials
// minted from that authority after the revocation (an issuer whose view
// lagged); fresh authority issued after it works.
func TestRevocationJudgedOnTheRevokedAuthority(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
	}{
		{"subject", RevocationKeySubject(alice)},
		{"subject's identity", alice.String()},
		{"first holder", RevocationKeyHolder(svcA)},
		{"first holder's identity", svcA.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			h := f.twoHops(t)
			f.now = f.now.Add(time.Minute)
			f.revoke(tc.key)
			// Past the revocation's clock-skew allowance: a child of c1
			// minted now carries an iat after the entry's Before.
			f.now = f.now.Add(time.Minute)
			late := f.sign(f.child(t, h))
			require.ErrorIs(t, f.present(late, h.bCert), ErrRevoked, "minted after the revocation from authority issued before it")
			require.ErrorIs(t, f.present(h.tok2, h.bCert), ErrRevoked)

			// Authority issued after the revocation works.
			tok, _ := f.mint(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: mustScopes(t, "kv.read:kv/shop/*")})
			require.NoError(t, f.present(tok, h.aCert))
		})
	}
	t.Run("second holder revoked, first not", func(t *testing.T) {
		f := newFixture(t)
		h := f.twoHops(t)
		f.now = f.now.Add(time.Minute)
		f.revoke(RevocationKeyHolder(svcB))
		f.now = f.now.Add(time.Minute)
		require.ErrorIs(t, f.present(h.tok2, h.bCert), ErrRevoked, "B's credential issued before")
		require.NoError(t, f.present(h.tok1, h.aCert), "A's own credential is not B's")
		fresh := f.sign(f.child(t, h))
		require.NoError(t, f.present(fresh, h.bCert), "a credential B got after its revocation")
	})
}

// A chain whose grants were issued out of order is a forgery or a broken
// issuer: a child cannot predate the credential it was minted from.
func TestChainRefusesAGrantIssuedBeforeItsParent(t *testing.T) {
	f := newFixture(t)
	h := f.twoHops(t)
	c := f.child(t, h)
	c.Chain[0].Grant.IssuedAt = c.IssuedAt.Add(time.Second)
	require.ErrorIs(t, f.present(f.sign(c), h.bCert), ErrChain)
}
