package control

import (
	"cmp"
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
)

// TestNetworkOf: a node receives the identity of every job with a task on
// it, with the rules the served policy and the cluster's listeners give:
// declared and granted destinations (on their nodes' addresses), nothing
// for a declared destination the policy does not grant, audit-only where
// the settings say so; jobs without tasks on the node are not sent.
func TestNetworkOf(t *testing.T) {
	td := "spiffe://unum.test/ns/"
	st := networkState{
		allocs: []AllocRecord{
			{ID: "a1", Namespace: "shop", Job: "web", Node: "n1", SPIFFEID: td + "shop/job/web"},
			{ID: "a2", Namespace: "shop", Job: "db", Node: "n2", SPIFFEID: td + "shop/job/db", Ports: map[string]int{"pg": 5432}},
			{ID: "a3", Namespace: "shop", Job: "db", Node: "n3", SPIFFEID: td + "shop/job/db", Ports: map[string]int{"pg": 6543}},
			{ID: "a4", Namespace: "bank", Job: "vault", Node: "n2", SPIFFEID: td + "bank/job/vault", Ports: map[string]int{"api": 8200}},
			{ID: "a5", Namespace: "bank", Job: "teller", Node: "n1", SPIFFEID: td + "bank/job/teller"},
			{ID: "a6", Namespace: "shop", Job: "cron", Node: "n2", SPIFFEID: td + "shop/job/cron"},
		},
		jobs: map[string]JobRecord{
			"shop/web": {Namespace: "shop", Name: "web", SPIFFEID: td + "shop/job/web", NetID: 7,
				Egress: []EgressRecord{{Target: td + "shop/job/db"}, {Target: td + "bank/job/vault"}}},
			"shop/db":     {Namespace: "shop", Name: "db", SPIFFEID: td + "shop/job/db", NetID: 8},
			"bank/vault":  {Namespace: "bank", Name: "vault", SPIFFEID: td + "bank/job/vault", NetID: 9},
			"bank/teller": {Namespace: "bank", Name: "teller", SPIFFEID: td + "bank/job/teller", NetID: 10, Egress: []EgressRecord{{Target: td + "bank/job/vault"}}},
			"shop/cron":   {Namespace: "shop", Name: "cron", SPIFFEID: td + "shop/job/cron", NetID: 11},
		},
		addresses: map[string]string{"n1": "10.0.0.1:7443", "n2": "10.0.0.2:7443", "n3": "[fd00::3]:7443"},
		settings:  EnforcementSettings{AuditOnlyNamespaces: []string{"bank"}},
	}
	got, ok := h.srv.networkOf(context.Background(), st, "n1")
	require.True(t, ok)
	require.Equal(t, []*unumv1.NetworkIdentity{
		{Number: 7, SpiffeId: td + "shop/job/web", Rules: []string{"any 10.0.0.2/32:5432", "any [fd00::3/128]:6543"}},
		{Number: 10, SpiffeId: td + "bank/job/teller", AuditOnly: true, Rules: []string{"any 10.0.0.2/32:8200"}},
	}, sortedByNumber(got), "web reaches db on both its nodes but not vault (another namespace); teller reaches vault")
}

func sortedByNumber(ids []*unumv1.NetworkIdentity) []*unumv1.NetworkIdentity {
	slices.SortFunc(ids, func(a, b *unumv1.NetworkIdentity) int { return cmp.Compare(a.GetNumber(), b.GetNumber()) })
	return ids
}
