package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/util"
	"github.com/stretchr/testify/require"
)

func workloadSubject(ns, job string) Subject {
	return Subject{ID: "spiffe://unum.test/ns/" + ns + "/job/" + job, Kind: "workload", Namespace: ns, Name: "job/" + job, Attributes: map[string]string{}}
}

func netCtx() Context { return Context{Node: "n1", Time: t0, RequestID: "net"} }

// TestNetworkGrantsShipped: the shipped policy gives a workload its own
// namespace, adds the operator's data.network_egress (by ID, namespace and
// "*"), gives other kinds nothing, and returns the grants validated and
// sorted.
func TestNetworkGrantsShipped(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine(ctx, Builtin(), 1)
	require.NoError(t, err)
	gs, err := e.NetworkGrants(ctx, NetworkInput(workloadSubject("shop", "web"), netCtx()))
	require.NoError(t, err)
	require.Equal(t, []NetGrant{{Namespace: "shop"}}, gs)

	admin := Subject{ID: "spiffe://unum.test/user/admin", Kind: "user", Name: "admin", Attributes: map[string]string{}}
	gs, err = e.NetworkGrants(ctx, NetworkInput(admin, netCtx()))
	require.NoError(t, err)
	require.Empty(t, gs)

	b := Builtin()
	b.Files["data.json"] = []byte(`{"bindings": {}, "namespace_bindings": {}, "network_egress": {
		"spiffe://unum.test/ns/shop/job/web": [{"id": "spiffe://unum.test/ns/bank/job/pay"}, {"cidr": "::ffff:10.1.2.3/104", "ports": [443, 80, 443.0]}],
		"shop": [{"cidr": "2001:db8::1/32", "protocol": "udp"}, {"namespace": "shop"}],
		"*": [{"cidr": "192.0.2.0/24", "ports": [53], "protocol": "udp"}]}}`)
	e, err = NewEngine(ctx, b, 2)
	require.NoError(t, err)
	gs, err = e.NetworkGrants(ctx, NetworkInput(workloadSubject("shop", "web"), netCtx()))
	require.NoError(t, err)
	require.Equal(t, []NetGrant{
		{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Ports: []uint16{80, 443}, Protocol: "any"},
		{CIDR: netip.MustParsePrefix("192.0.2.0/24"), Ports: []uint16{53}, Protocol: "udp"},
		{CIDR: netip.MustParsePrefix("2001:db8::/32"), Protocol: "udp"},
		{Namespace: "shop"},
		{ID: "spiffe://unum.test/ns/bank/job/pay"},
	}, gs)
	gs, err = e.NetworkGrants(ctx, NetworkInput(workloadSubject("bank", "pay"), netCtx()))
	require.NoError(t, err)
	require.Equal(t, []NetGrant{{CIDR: netip.MustParsePrefix("192.0.2.0/24"), Ports: []uint16{53}, Protocol: "udp"}, {Namespace: "bank"}}, gs)
}

// TestNetworkGrantsFailClosed (T-116): every way a bundle's network answer
// can be wrong is an error naming what was wrong, never a partial or
// permissive list; a bundle without the network package grants nothing.
func TestNetworkGrantsFailClosed(t *testing.T) {
	ctx := context.Background()
	web := NetworkInput(workloadSubject("shop", "web"), netCtx())
	for _, tc := range []struct {
		name, rego string
		err        string // "" for no grants and no error
	}{
		{"no network package", "", ""},
		{"not a set", `egress := [{"namespace": "shop"}]`, `the value is [{"namespace":"shop"}], not a set of grants`},
		{"an object", `egress := {"namespace": "shop"}`, `not a set of grants`},
		{"a string", `egress := "*"`, `not a set of grants`},
		{"a bare CIDR", `egress contains "10.0.0.0/8"`, `grant "10.0.0.0/8": not an object`},
		{"bad cidr among good grants", `egress contains {"namespace": "shop"}
egress contains {"cidr": "10.0.0.0/33"}`, `grant {"cidr":"10.0.0.0/33"}: cidr "10.0.0.0/33"`},
		{"two kinds", `egress contains {"cidr": "0.0.0.0/0", "namespace": "bank"}`, `has 2 of id, namespace, cidr, want exactly one`},
		{"unknown key", `egress contains {"cidr": "0.0.0.0/0", "allow": true}`, `unknown key "allow"`},
		{"port 0", `egress contains {"cidr": "10.0.0.0/8", "ports": [0]}`, `port 0 is not a number from 1 to 65535`},
		{"port too large", `egress contains {"cidr": "10.0.0.0/8", "ports": [70000]}`, `port 70000`},
		{"ports on an id", `egress contains {"id": "spiffe://unum.test/ns/bank/job/pay", "ports": [443]}`, `ports and protocol qualify a cidr grant only, not id`},
		{"protocol", `egress contains {"cidr": "10.0.0.0/8", "protocol": "sctp"}`, `protocol "sctp" is not tcp, udp or any`},
		{"id of a user", `egress contains {"id": "spiffe://unum.test/user/admin"}`, `is not a job's SPIFFE ID`},
		{"evaluation error", `egress contains {"cidr": x} if x := concat("", ["10.0.0.0/", format_int(32 / 0, 10)])`, `divide by zero`},
		{"conflicting values", `egress := {{"namespace": "a"}} if input.subject.kind == "workload"
egress := {{"namespace": "b"}} if input.subject.namespace == "shop"`, `produced conflicting values`},
		{"too many", `egress contains {"cidr": sprintf("10.0.%d.%d/32", [floor(i / 256), i % 256])} if some i in numbers.range(0, 1024)`, `1025 grants, at most 1024`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := Builtin()
			delete(b.Files, "network.rego")
			delete(b.Files, "network_test.rego")
			if tc.rego != "" {
				b.Files["net.rego"] = []byte("package unum.network\n\nimport rego.v1\n\n" + tc.rego + "\n")
			}
			e, err := NewEngine(ctx, b, 2)
			require.NoError(t, err)
			gs, err := e.NetworkGrants(ctx, web)
			require.Nil(t, gs)
			// The decision does not allow net.connect either, not even
			// to the source's own namespace: an error or a denial.
			in := Input{Subject: web.Subject, Action: NetworkAction, Resource: Resource{Kind: "net", Namespace: "shop", Name: "job/db"}, Delegation: []Actor{}, Context: netCtx()}
			r, derr := e.Eval(ctx, &in)
			require.False(t, derr == nil && r.Allow, "net.connect allowed: %v", r.Reasons)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
			require.ErrorContains(t, err, "policy revision 2: data.unum.network.egress for spiffe://unum.test/ns/shop/job/web")
			if !strings.Contains(tc.name, "error") && !strings.Contains(tc.name, "conflicting") {
				require.ErrorIs(t, err, ErrBadNetGrant)
			}
		})
	}
}

// TestNetworkGrantsInput: the query is asked on the source itself only; an
// input naming something else is refused rather than evaluated.
func TestNetworkGrantsInput(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine(ctx, Builtin(), 1)
	require.NoError(t, err)
	in := NetworkInput(workloadSubject("shop", "web"), netCtx())
	in.Resource = Resource{Kind: "net", Namespace: "bank", Name: "job/pay"}
	_, err = e.NetworkGrants(ctx, in)
	require.ErrorContains(t, err, "network grants are asked with action net.connect on the source itself (net/shop/job/web), not net.connect on net/bank/job/pay")
	in = NetworkInput(workloadSubject("shop", "web"), netCtx())
	in.Action = "kv.get"
	_, err = e.NetworkGrants(ctx, in)
	require.ErrorContains(t, err, "not kv.get on net/shop/job/web")
}

// TestNetworkDataRefusedAtApply (T-116): a malformed data.network_egress
// refuses the bundle when it is compiled, naming the entry.
func TestNetworkDataRefusedAtApply(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ data, err string }{
		{`"all"`, `data.network_egress is a string, want an object`},
		{`{"shop": [{"cidr": "10.0.0.0/8", "ports": [0]}]}`, `data.network_egress["shop"]: malformed network grant: grant {"cidr":"10.0.0.0/8","ports":[0]}: port 0`},
		{`{"shop": {"cidr": "10.0.0.0/8"}}`, `data.network_egress["shop"] is an object, want a list of grants`},
		{`{"spiffe://unum.test/user/eve": []}`, `data.network_egress["spiffe://unum.test/user/eve"]: the key is not a job's SPIFFE ID`},
	} {
		b := Builtin()
		b.Files["data.json"] = []byte(`{"bindings": {}, "namespace_bindings": {}, "network_egress": ` + tc.data + `}`)
		_, err := NewEngine(ctx, b, 2)
		var be *BundleError
		require.True(t, errors.As(err, &be), "%s: %v", tc.data, err)
		require.Equal(t, "compile", be.Stage)
		require.ErrorContains(t, err, tc.err)
	}
}

// grantCorpus are grant documents (JSON), valid and not: the seeds of
// FuzzParseNetGrant and the cases on which the Rego mirror and Go must
// agree.
var grantCorpus = []string{
	`{"id": "spiffe://unum.test/ns/bank/job/pay"}`,
	`{"id": "spiffe://unum.test/ns/bank/job/Pay"}`,
	`{"id": "spiffe://unum.test/ns/bank/svc/pay"}`,
	`{"id": "spiffe://unum.test/ns/-/job/pay"}`,
	`{"id": "spiffe://unum.test/user/admin"}`,
	`{"id": "spiffe://UNUM/ns/a/job/b"}`,
	`{"id": 7}`,
	`{"namespace": "bank"}`,
	`{"namespace": "-"}`,
	`{"namespace": ""}`,
	`{"namespace": "bank-"}`,
	`{"namespace": "` + strings.Repeat("a", 63) + `"}`,
	`{"namespace": "` + strings.Repeat("a", 64) + `"}`,
	`{"namespace": null}`,
	`{"cidr": "10.0.0.0/8"}`,
	`{"cidr": "10.0.0.1/8"}`,
	`{"cidr": "0.0.0.0/0"}`,
	`{"cidr": "::/0"}`,
	`{"cidr": "::ffff:10.0.0.0/104"}`,
	`{"cidr": "::ffff:0:0/90"}`,
	`{"cidr": "2001:DB8::/32", "protocol": "tcp"}`,
	`{"cidr": "10.0.0.0/33"}`,
	`{"cidr": "10.0.0.0/08"}`,
	`{"cidr": "10.0.0.0/-1"}`,
	`{"cidr": "010.0.0.0/8"}`,
	`{"cidr": "10.0.0.0"}`,
	`{"cidr": " 10.0.0.0/8"}`,
	`{"cidr": "fe80::1%eth0/64"}`,
	`{"cidr": "2001:db8::/129"}`,
	`{"cidr": "10.0.0.0/8", "ports": [53, 443], "protocol": "udp"}`,
	`{"cidr": "10.0.0.0/8", "ports": [53.0]}`,
	`{"cidr": "10.0.0.0/8", "ports": [53.5]}`,
	`{"cidr": "10.0.0.0/8", "ports": [1e3]}`,
	`{"cidr": "10.0.0.0/8", "ports": [0]}`,
	`{"cidr": "10.0.0.0/8", "ports": [65535]}`,
	`{"cidr": "10.0.0.0/8", "ports": [65536]}`,
	`{"cidr": "10.0.0.0/8", "ports": [-53]}`,
	`{"cidr": "10.0.0.0/8", "ports": ["53"]}`,
	`{"cidr": "10.0.0.0/8", "ports": []}`,
	`{"cidr": "10.0.0.0/8", "ports": 53}`,
	`{"cidr": "10.0.0.0/8", "ports": [` + strings.Repeat("1,", 64) + `2]}`,
	`{"cidr": "10.0.0.0/8", "ports": [` + strings.Repeat("1,", 63) + `2]}`,
	`{"cidr": "10.0.0.0/8", "protocol": "icmp"}`,
	`{"cidr": "10.0.0.0/8", "protocol": "TCP"}`,
	`{"cidr": "10.0.0.0/8", "protocol": null}`,
	`{"cidr": "10.0.0.0/8", "namespace": "bank"}`,
	`{"id": "spiffe://unum.test/ns/bank/job/pay", "protocol": "tcp"}`,
	`{"namespace": "bank", "ports": [1]}`,
	`{"ports": [1]}`,
	`{}`,
	`{"Cidr": "10.0.0.0/8"}`,
	`"10.0.0.0/8"`,
	`["namespace", "bank"]`,
	`null`,
	`42`,
}

// TestNetworkValidationAgrees: the shipped Rego's `invalid` (which the
// net.connect decision reads) and Go's validation (what the kernel is
// compiled from) give the same verdict on every grant of the corpus: the
// decision allows net.connect to the source's own namespace exactly when
// NetworkGrants returns the grants without error.
func TestNetworkValidationAgrees(t *testing.T) {
	ctx := context.Background()
	cases := map[string]any{}
	for i, s := range grantCorpus {
		var v any
		require.NoError(t, util.UnmarshalJSON([]byte(s), &v), s)
		cases[fmt.Sprintf("job/c%d", i)] = []any{v}
	}
	data, err := json.Marshal(map[string]any{"cases": cases})
	require.NoError(t, err)
	b := Builtin()
	b.Files["t/data.json"] = data
	b.Files["cases.rego"] = []byte(`package unum.network

import rego.v1

egress contains g if {
	input.subject.kind == "workload"
	some g in data.t.cases[input.subject.name]
}
`)
	e, err := NewEngine(ctx, b, 2)
	require.NoError(t, err)
	valid := 0
	for i, s := range grantCorpus {
		sub := workloadSubject("shop", fmt.Sprintf("c%d", i))
		_, goErr := e.NetworkGrants(ctx, NetworkInput(sub, netCtx()))
		in := Input{Subject: sub, Action: NetworkAction, Resource: Resource{Kind: "net", Namespace: "shop", Name: "job/db"}, Delegation: []Actor{}, Context: netCtx()}
		r, err := e.Eval(ctx, &in)
		require.NoError(t, err)
		require.Equal(t, goErr == nil, r.Allow, "grant %s: Go says %v, the decision %v", s, goErr, r.Reasons)
		if goErr == nil {
			valid++
		}
	}
	require.Greater(t, valid, 10)
	require.Greater(t, len(grantCorpus)-valid, 10)
}

// TestNetConnectIsTheGrants: on random grant sets, net.connect from a job
// to a job is allowed exactly when a grant names the target's ID or its
// namespace (the compiler's rule for identity destinations), and the
// grants are evaluated with the source, never the target, as the resource.
func TestNetConnectIsTheGrants(t *testing.T) {
	ctx := context.Background()
	b := Builtin()
	b.Files["random.rego"] = []byte(`package unum.network

import rego.v1

# The shipped own-namespace grant applies too; these come from data.
egress contains g if {
	input.resource == {"kind": "net", "namespace": input.subject.namespace, "name": input.subject.name}
	some g in data.t.grants[input.subject.id]
}
`)
	nss := []string{"a", "b", "c"}
	jobs := []string{"x", "y"}
	ids := func(ns, job string) string { return "spiffe://unum.test/ns/" + ns + "/job/" + job }
	rng := rand.New(rand.NewPCG(1, 2))
	grants := map[string][]any{}
	for _, ns := range nss {
		for _, job := range jobs {
			var gs []any
			for range rng.IntN(3) {
				if rng.IntN(2) == 0 {
					gs = append(gs, map[string]any{"namespace": nss[rng.IntN(len(nss))]})
				} else {
					gs = append(gs, map[string]any{"id": ids(nss[rng.IntN(len(nss))], jobs[rng.IntN(len(jobs))])})
				}
			}
			gs = append(gs, map[string]any{"cidr": "0.0.0.0/0"}) // addresses, not identities
			grants[ids(ns, job)] = gs
		}
	}
	data, err := json.Marshal(map[string]any{"grants": grants})
	require.NoError(t, err)
	b.Files["t/data.json"] = data
	e, err := NewEngine(ctx, b, 2)
	require.NoError(t, err)
	allowed := 0
	for _, sns := range nss {
		for _, sjob := range jobs {
			src := workloadSubject(sns, sjob)
			gs, err := e.NetworkGrants(ctx, NetworkInput(src, netCtx()))
			require.NoError(t, err)
			for _, tns := range nss {
				for _, tjob := range jobs {
					want := slices.ContainsFunc(gs, func(g NetGrant) bool { return g.ID == ids(tns, tjob) || g.Namespace == tns })
					in := Input{Subject: src, Action: NetworkAction, Resource: Resource{Kind: "net", Namespace: tns, Name: "job/" + tjob}, Delegation: []Actor{}, Context: netCtx()}
					r, err := e.Eval(ctx, &in)
					require.NoError(t, err)
					require.Equal(t, want, r.Allow, "%s -> %s/%s with %v: %v", src.ID, tns, tjob, gs, r.Reasons)
					if want {
						allowed++
					}
				}
			}
		}
	}
	require.Greater(t, allowed, 6*2) // more than the own-namespace grants
}

// FuzzParseNetGrant: no grant document panics the validator; one it
// accepts is in canonical form (exactly one kind; a masked prefix, never
// IPv4-mapped; ports sorted, distinct, 1-65535, only on a CIDR) and reads
// back as itself.
func FuzzParseNetGrant(f *testing.F) {
	for _, s := range grantCorpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v any
		if util.UnmarshalJSON([]byte(s), &v) != nil {
			return
		}
		gs, err := parseNetGrants([]any{v})
		if err != nil {
			require.ErrorIs(t, err, ErrBadNetGrant)
			require.Nil(t, gs)
			return
		}
		require.Len(t, gs, 1)
		g := gs[0]
		kinds := 0
		for _, set := range []bool{g.ID != "", g.Namespace != "", g.CIDR.IsValid()} {
			if set {
				kinds++
			}
		}
		require.Equal(t, 1, kinds, "%+v", g)
		doc := map[string]any{}
		switch {
		case g.ID != "":
			require.Empty(t, g.Ports)
			require.Empty(t, g.Protocol)
			doc["id"] = g.ID
		case g.Namespace != "":
			require.Empty(t, g.Ports)
			require.Empty(t, g.Protocol)
			doc["namespace"] = g.Namespace
		default:
			require.Equal(t, g.CIDR.Masked(), g.CIDR)
			require.False(t, g.CIDR.Addr().Is4In6())
			require.Contains(t, []string{"tcp", "udp", "any"}, g.Protocol)
			require.True(t, slices.IsSorted(g.Ports))
			require.Equal(t, len(g.Ports), len(slices.Compact(slices.Clone(g.Ports))))
			doc["cidr"], doc["protocol"] = g.CIDR.String(), g.Protocol
			if g.Ports != nil {
				ps := make([]any, len(g.Ports))
				for i, p := range g.Ports {
					require.NotZero(t, p)
					ps[i] = json.Number(fmt.Sprint(p))
				}
				doc["ports"] = ps
			}
		}
		again, err := parseNetGrants([]any{doc})
		require.NoError(t, err)
		require.Equal(t, gs, again)
	})
}

// BenchmarkNetworkGrants: one source identity's grants from the shipped
// policy with operator data (what a node pays per identity when a
// revision changes).
func BenchmarkNetworkGrants(b *testing.B) {
	ctx := context.Background()
	bu := Builtin()
	bu.Files["data.json"] = []byte(`{"bindings": {}, "namespace_bindings": {}, "network_egress": {
		"spiffe://unum.test/ns/shop/job/web": [{"id": "spiffe://unum.test/ns/bank/job/pay"}],
		"shop": [{"cidr": "192.0.2.0/24", "ports": [443], "protocol": "tcp"}],
		"*": [{"cidr": "10.96.0.10/32", "ports": [53], "protocol": "udp"}]}}`)
	e, err := NewEngine(ctx, bu, 1)
	require.NoError(b, err)
	in := NetworkInput(workloadSubject("shop", "web"), netCtx())
	for b.Loop() {
		gs, err := e.NetworkGrants(ctx, in)
		if err != nil || len(gs) != 4 {
			b.Fatal(gs, err)
		}
	}
}
