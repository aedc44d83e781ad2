package identity

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		id   string
		kind Kind
		name string
		ns   string
	}{
		{"spiffe://unum.local/node/node-1", KindNode, "node-1", ""},
		{"spiffe://unum.local/system/ca", KindSystem, "ca", ""},
		{"spiffe://unum.local/user/admin", KindUser, "admin", ""},
		{"spiffe://unum.local/ns/default/job/web", KindWorkload, "job/web", "default"},
		{"spiffe://unum.local/node/a/b", KindUnknown, "", ""},
		{"spiffe://unum.local/node", KindUnknown, "", ""},
		{"spiffe://unum.local", KindUnknown, "", ""},
		{"spiffe://unum.local/ns/default", KindUnknown, "", ""},
		// "-" is the policy's cluster scope, never a workload namespace.
		{"spiffe://unum.local/ns/-/job/web", KindUnknown, "", ""},
		{"spiffe://unum.local/other/x", KindUnknown, "", ""},
	} {
		t.Run(tc.id, func(t *testing.T) {
			p := Classify(spiffeid.RequireFromString(tc.id))
			require.Equal(t, tc.kind, p.Kind)
			require.Equal(t, tc.name, p.Name)
			require.Equal(t, tc.ns, p.Namespace)
		})
	}
}

func TestParseWorkloadID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.local")
	_, err := ParseWorkloadID(td, "spiffe://unum.local/ns/default/job/web")
	require.NoError(t, err)
	for _, bad := range []string{
		"spiffe://unum.local/user/admin",
		"spiffe://unum.local/node/node-1",
		"spiffe://unum.local/system/ca",
		"spiffe://other.td/ns/default/job/web",
		"spiffe://unum.local/ns/default",
		"spiffe://unum.local/ns/-/job/web",
		"not a uri",
	} {
		_, err := ParseWorkloadID(td, bad)
		require.Error(t, err, bad)
	}
}

func TestJobID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.local")
	id, err := JobID(td, "shop", "web")
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.local/ns/shop/job/web", id.String())
	p := Classify(id)
	require.Equal(t, KindWorkload, p.Kind)
	require.Equal(t, "shop", p.Namespace)
	require.Equal(t, "job/web", p.Name)

	for _, tc := range []struct{ ns, name string }{{"-", "web"}, {"", "web"}, {"shop", ""}, {"shop", "a/b"}} {
		_, err := JobID(td, tc.ns, tc.name)
		require.Error(t, err, "%q %q", tc.ns, tc.name)
	}
}
