package delegation

import (
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

// TestPlanRefusesWhatVerifiersRefuse: scopes and audiences are given to
// Plan as values a caller may have built by hand; Plan refuses what no
// verifier would accept rather than sign it, and what it returns is what
// verifiers read (sorted scopes).
func TestPlanRefusesWhatVerifiersRefuse(t *testing.T) {
	read := mustScopes(t, "kv.read:kv/shop/*")[0]
	var many []Scope
	var manyAud []spiffeid.ID
	for i := range MaxScopes + 1 {
		many = append(many, Scope{Action: "kv.read", Kind: "kv", NS: "shop", Name: fmt.Sprint("k", i)})
		manyAud = append(manyAud, id(fmt.Sprint("/svc/", i)))
	}
	tests := []struct {
		name   string
		scopes []Scope
		aud    []spiffeid.ID
		want   string
	}{
		{"a scope twice", []Scope{read, read}, []spiffeid.ID{api}, "given twice"},
		{"a scope that does not parse", []Scope{{Action: "kv.read", Kind: "kv", NS: "shop", Name: "a b"}}, []spiffeid.ID{api}, "white space"},
		{"an empty scope", []Scope{{}}, []spiffeid.ID{api}, "scope"},
		{"a scope that reads back as another", []Scope{{Action: "kv.read", Kind: "kv", NS: "shop/x", Name: "y"}}, []spiffeid.ID{api}, "reads back as kv.read:kv/shop/x/y"},
		{"too many scopes", many, []spiffeid.ID{api}, "at most"},
		{"an audience twice", []Scope{read}, []spiffeid.ID{api, api}, "twice"},
		{"an audience of another trust domain", []Scope{read}, []spiffeid.ID{spiffeid.RequireFromPath(otherTD, "/system/api")}, "trust domain"},
		{"too many audiences", []Scope{read}, manyAud, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			_, err := f.issuer.Plan(Request{Caller: alice, Holder: svcA, Audience: tt.aud, Scopes: tt.scopes})
			require.ErrorContains(t, err, tt.want)
		})
	}

	f := newFixture(t)
	b, a := mustScopes(t, "queue.read:queue/shop/*")[0], read
	c := f.plan(Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: []Scope{b, a}})
	require.Equal(t, []Scope{a, b}, c.Scopes, "sorted, as verifiers read them")
	got, err := f.verify.Verify(Presentation{Token: f.sign(c), Peer: svid(t, svcA), Audience: []spiffeid.ID{api}})
	require.NoError(t, err)
	require.Equal(t, c.Scopes, got.Scopes)

	_, err = f.issuer.Sign(&Credential{ID: NewJTI(), TrustDomain: testTD, Subject: alice})
	require.ErrorContains(t, err, "no holder", "Sign refuses a credential without a chain rather than panic")
}
