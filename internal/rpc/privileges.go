package rpc

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/policy"
	"github.com/unumos/unum/threatmodel"
)

// Probe is a principal the privilege report asks the policy about.
type Probe struct {
	// Label is how the report names it: "user/admin", "role operator",
	// "any node (on itself)", a bound SPIFFE ID.
	Label string
	ID    spiffeid.ID
	// Role is the user's role attribute ("" for none).
	Role string
}

// StandardProbes are the principals every cluster has: its break-glass
// admin, a user of each shipped role, any node, any system service and
// any workload. A policy's data.bindings add their SPIFFE IDs (BoundProbes).
func StandardProbes(td spiffeid.TrustDomain) []Probe {
	id := func(segs ...string) spiffeid.ID { return spiffeid.RequireFromSegments(td, segs...) }
	return []Probe{
		{Label: "user/admin", ID: id("user", "admin")},
		{Label: "role admin", ID: id("user", "probe-admin"), Role: "admin"},
		{Label: "role operator", ID: id("user", "probe-operator"), Role: "operator"},
		{Label: "role viewer", ID: id("user", "probe-viewer"), Role: "viewer"},
		{Label: "a user without a role", ID: id("user", "probe-user")},
		{Label: "any node (on itself)", ID: id("node", "probe-node")},
		{Label: "any system service", ID: id("system", "probe-service")},
		{Label: "any workload", ID: id("ns", "default", "job", "probe")},
	}
}

// BoundProbes are the SPIFFE IDs a bundle's data binds to roles or
// namespaces (data.bindings, data.namespace_bindings), each labelled with
// its ID. IDs of another trust domain, or not SPIFFE IDs, are skipped: the
// policy can never see them as a caller.
func BoundProbes(b *policy.Bundle, td spiffeid.TrustDomain) ([]Probe, error) {
	data, err := b.Data()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []Probe
	for _, key := range []string{"bindings", "namespace_bindings"} {
		m, _ := data[key].(map[string]any)
		for raw := range m {
			id, err := spiffeid.FromString(raw)
			if err != nil || id.TrustDomain() != td || seen[raw] {
				continue
			}
			seen[raw] = true
			out = append(out, Probe{Label: raw, ID: id})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Label < out[j].Label })
	return out, nil
}

// PrivilegedActions asks eng, for every action of the API (the routes
// table, plus cred.impersonate), whether it is privileged and which probes
// it allows. The resource is the one a request without arguments names:
// cluster-wide, or the caller itself for a node's own operations; so a
// grant limited to one namespace or resource shows only where it names
// the default namespace. The result is sorted by action.
func PrivilegedActions(ctx context.Context, eng *policy.Engine, probes []Probe) ([]threatmodel.PrivilegedAction, error) {
	privileged := map[string]bool{}
	allowed := map[string]map[int]bool{} // action -> indexes of the probes it allows
	ask := func(action string, r route) error {
		for i, p := range probes {
			caller := identity.Classify(p.ID)
			subj := SubjectOf(caller, nil)
			if p.Role != "" {
				subj.Attributes["role"] = p.Role
			}
			in := policy.Input{
				Subject: subj, Action: action, Resource: r.resource(caller, nil), Delegation: []policy.Actor{},
				Context: policy.Context{Node: "threatmodel", Time: time.Unix(0, 0).UTC(), RequestID: "threatmodel"},
			}
			if action == "cred.delegate" || action == "cred.impersonate" {
				in.Credential = &policy.CredentialRequest{Subject: p.ID.String(), Holder: p.ID.String(), Scopes: []string{}, Audience: []string{}}
			}
			res, err := eng.Eval(ctx, &in)
			if err != nil {
				return fmt.Errorf("privileged actions: evaluating %s for %s: %w", action, p.Label, err)
			}
			privileged[action] = privileged[action] || res.Privileged
			if allowed[action] == nil {
				allowed[action] = map[int]bool{}
			}
			allowed[action][i] = allowed[action][i] || res.Allow
		}
		return nil
	}
	for m, r := range routes {
		if err := ask(r.action, r); err != nil {
			return nil, err
		}
		if m == "/unum.v1.Credentials/Delegate" {
			if err := ask("cred.impersonate", r); err != nil {
				return nil, err
			}
		}
	}
	out := make([]threatmodel.PrivilegedAction, 0, len(privileged))
	for action, priv := range privileged {
		if !priv {
			continue
		}
		// Granted to the probes in the caller's order (StandardProbes first).
		a := threatmodel.PrivilegedAction{Action: action, Fixed: policy.MinimumPrivileged(action), GrantedTo: []string{}}
		for i, p := range probes {
			if allowed[action][i] {
				a.GrantedTo = append(a.GrantedTo, p.Label)
			}
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Action < out[j].Action })
	return out, nil
}
