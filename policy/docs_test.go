package policy

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// docBlock returns the lines of the fenced block after marker in
// docs/policy.md.
func docBlock(t *testing.T, doc, marker string) [][]string {
	t.Helper()
	_, after, ok := strings.Cut(doc, "<!-- "+marker)
	require.True(t, ok, "docs/policy.md has no %q marker", marker)
	_, after, ok = strings.Cut(after, "```\n")
	require.True(t, ok)
	block, _, ok := strings.Cut(after, "```")
	require.True(t, ok)
	var out [][]string
	for _, l := range strings.Split(strings.TrimSpace(block), "\n") {
		out = append(out, strings.Fields(l))
	}
	return out
}

// TestDocsListsFixedSets keeps the operator's guide equal to the code on
// what no bundle can take away.
func TestDocsListsFixedSets(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "policy.md"))
	require.NoError(t, err)
	doc := string(data)

	var minimum []string
	for _, f := range docBlock(t, doc, "minimum-privileged") {
		require.Len(t, f, 1)
		minimum = append(minimum, f[0])
	}
	require.Equal(t, MinimumPrivilegedActions(), minimum)

	var want, got []string
	for _, p := range MustAllow(testTD) {
		who := p.Input.Subject.Kind
		if who == "user" {
			who += "/" + p.Input.Subject.Name
		}
		want = append(want, who+" "+p.Input.Action+" "+p.Input.Resource.Kind)
	}
	for _, f := range docBlock(t, doc, "must-allow") {
		require.Len(t, f, 3)
		kind, _, _ := strings.Cut(f[2], "/")
		got = append(got, f[0]+" "+f[1]+" "+kind)
	}
	require.Equal(t, want, got)
}

// TestDocsExtensionExample applies the guide's grants/denies example to the
// shipped bundle and checks it does what the guide says.
func TestDocsExtensionExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "policy.md"))
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(data), "```rego\n")
	require.True(t, ok, "docs/policy.md has no rego example")
	src, _, ok := strings.Cut(after, "```")
	require.True(t, ok)

	ctx := context.Background()
	e, err := NewEngine(ctx, bundleWith(map[string]string{"extra.rego": src}), 2)
	require.NoError(t, err)
	res, err := ParseResource("id/web/job/api")
	require.NoError(t, err)
	ci := Input{
		Subject:    Subject{ID: "spiffe://unum.local/ns/ci/job/deploy", Kind: "workload", Namespace: "ci", Name: "job/deploy", Attributes: map[string]string{}},
		Action:     "id.register",
		Resource:   res,
		Delegation: []Actor{},
		Context:    Context{Node: "n1", Time: t0},
	}
	r, err := e.Eval(ctx, &ci)
	require.NoError(t, err)
	require.True(t, r.Allow, r.Reasons)
	require.Equal(t, []string{"ci deployer registers web workloads"}, r.Reasons)

	ci.Resource.Namespace = "db"
	r, err = e.Eval(ctx, &ci)
	require.NoError(t, err)
	require.False(t, r.Allow)

	rm := userInput("admin", "", "node.rm", "node/-/n2")
	r, err = e.Eval(ctx, &rm)
	require.NoError(t, err)
	require.False(t, r.Allow)
	require.Equal(t, []string{"node removal frozen until the migration ends"}, r.Reasons)
}

// TestDocsDelegationExamples applies the guide's delegation examples: the
// tenant rule denies the KV service acting for another tenant's user, and
// the limits block sets what it says.
func TestDocsDelegationExamples(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "policy.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(data), "## Delegated calls")
	require.True(t, ok)
	var blocks []string
	for range 2 {
		var block string
		_, section, ok = strings.Cut(section, "```rego\n")
		require.True(t, ok, "the delegation section has two rego examples")
		block, section, _ = strings.Cut(section, "```")
		blocks = append(blocks, block)
	}
	ctx := context.Background()
	b := bundleWith(map[string]string{"tenant.rego": "package unum.authz\n\nimport rego.v1\n\n" + blocks[0], "limits.rego": blocks[1]})
	b.Files["data.json"] = []byte(`{"bindings": {"spiffe://unum.local/system/kv": "admin"}, "tenants": {"spiffe://unum.local/user/alice": "a"}}`)
	e, err := NewEngine(ctx, b, 2)
	require.NoError(t, err)
	require.Equal(t, DelegationLimits{MaxDepth: 3, MaxTTL: 30 * time.Minute}, e.Limits())

	kv := Subject{ID: "spiffe://unum.local/system/kv", Kind: "system", Name: "kv", Attributes: map[string]string{}}
	in := Input{
		Subject: kv, Action: "kv.read", Resource: Resource{Kind: "kv", Namespace: "a", Name: "k"},
		Delegation: []Actor{{ID: "spiffe://unum.local/user/alice", Kind: "user", Name: "alice"}, {ID: kv.ID, Kind: "system", Name: "kv"}},
		Context:    Context{Node: "n1", Time: t0},
	}
	r, err := e.Eval(ctx, &in)
	require.NoError(t, err)
	require.True(t, r.Allow, "acting for a user of tenant a, on tenant a: %v", r.Reasons)
	in.Resource.Namespace = "b"
	r, err = e.Eval(ctx, &in)
	require.NoError(t, err)
	require.False(t, r.Allow, "acting for a user of tenant a, on tenant b")
	require.Contains(t, r.Reasons, "the kv service reads a tenant's keys only for that tenant's users")
}

// TestDocsNetworkData applies the guide's network examples to the shipped
// bundle: the data.json grants and the Rego rule give what the guide says.
func TestDocsNetworkData(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "policy.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(data), "## Network")
	require.True(t, ok)
	_, after, ok := strings.Cut(section, "<!-- network-data")
	require.True(t, ok)
	_, after, ok = strings.Cut(after, "```json\n")
	require.True(t, ok)
	js, _, ok := strings.Cut(after, "```")
	require.True(t, ok)
	_, after, ok = strings.Cut(section, "```rego\n")
	require.True(t, ok)
	rule, _, ok := strings.Cut(after, "```")
	require.True(t, ok)

	ctx := context.Background()
	b := Builtin()
	b.Files["data.json"] = []byte(js)
	b.Files["ci.rego"] = []byte("package unum.network\n\nimport rego.v1\n\n" + rule)
	e, err := NewEngine(ctx, b, 2)
	require.NoError(t, err)
	src := func(ns, job string) *Input {
		return NetworkInput(Subject{ID: "spiffe://unum.local/ns/" + ns + "/job/" + job, Kind: "workload", Namespace: ns, Name: "job/" + job, Attributes: map[string]string{}}, Context{Node: "n1", Time: t0})
	}
	dns := NetGrant{CIDR: netip.MustParsePrefix("10.96.0.10/32"), Ports: []uint16{53}, Protocol: "udp"}
	gs, err := e.NetworkGrants(ctx, src("shop", "web"))
	require.NoError(t, err)
	require.Equal(t, []NetGrant{dns, {CIDR: netip.MustParsePrefix("192.0.2.0/24"), Ports: []uint16{443}, Protocol: "tcp"}, {Namespace: "shop"}, {ID: "spiffe://unum.local/ns/bank/job/pay"}}, gs)
	gs, err = e.NetworkGrants(ctx, src("ci", "build"))
	require.NoError(t, err)
	require.Equal(t, []NetGrant{dns, {CIDR: netip.MustParsePrefix("198.51.100.7/32"), Protocol: "tcp"}, {Namespace: "ci"}}, gs)
}
