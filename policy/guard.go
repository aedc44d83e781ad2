package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Probe is one decision a bundle must get right to be applied.
type Probe struct {
	// Why the system needs it, shown when a bundle fails it.
	Why   string
	Input Input
}

// guardNode is the node name the lockout probes act as; any node name would
// do, the shipped policy grants nodes their operations on themselves.
const guardNode = "guard-probe"

// MustAllow is the list of decisions without which the cluster stops
// working or can no longer be fixed: the admin applying policy, and what
// every node does to stay a member (renewing its SVID, heartbeats,
// following revocations and policy, minting for its workloads). A bundle
// that denies any of them is refused unless forced. Each issue that adds a
// system action the cluster needs to keep running adds it here.
func MustAllow(td spiffeid.TrustDomain) []Probe {
	admin := Subject{ID: spiffeid.RequireFromSegments(td, "user", "admin").String(), Kind: "user", Name: "admin", Attributes: map[string]string{}}
	node := Subject{ID: spiffeid.RequireFromSegments(td, "node", guardNode).String(), Kind: "node", Name: guardNode, Attributes: map[string]string{}}
	self := Resource{Kind: "node", Namespace: ClusterScope, Name: guardNode}
	probe := func(why string, s Subject, action string, r Resource) Probe {
		return Probe{Why: why, Input: Input{Subject: s, Action: action, Resource: r, Context: Context{Node: guardNode, RequestID: "lockout-guard"}}}
	}
	return []Probe{
		probe("the admin must be able to apply policy (or nobody can fix it)", admin, "policy.apply", Resource{Kind: "policy", Namespace: ClusterScope, Name: "bundle"}),
		probe("the admin must be able to roll policy back", admin, "policy.rollback", Resource{Kind: "policy", Namespace: ClusterScope, Name: "bundle"}),
		probe("nodes renew their SVID before it expires", node, "node.renew", self),
		probe("nodes report liveness", node, "node.heartbeat", self),
		probe("nodes receive their registrations and bundles", node, "node.sync", self),
		probe("nodes follow revocations", node, "revocation.watch", self),
		probe("nodes follow policy", node, "policy.watch", self),
		probe("control nodes renew their intermediate", node, "ca.sign-intermediate", self),
		probe("nodes mint SVIDs for their workloads", node, "svid.mint", Resource{Kind: "svid", Namespace: "default", Name: "job/probe"}),
	}
}

// floorProbes asks, for every action of the minimum privileged set, whether
// the bundle itself calls it privileged.
func floorProbes(td spiffeid.TrustDomain) []Probe {
	admin := Subject{ID: spiffeid.RequireFromSegments(td, "user", "admin").String(), Kind: "user", Name: "admin", Attributes: map[string]string{}}
	var ps []Probe
	for _, a := range MinimumPrivilegedActions() {
		a = strings.Replace(a, ".*", ".any", 1)
		ps = append(ps, Probe{Why: "minimum privileged set", Input: Input{Subject: admin, Action: a, Resource: Resource{Kind: "guard", Namespace: ClusterScope, Name: "probe"}, Context: Context{Node: guardNode, RequestID: "lockout-guard"}}})
	}
	return ps
}

// Guard runs the lockout guard on e: every MustAllow probe must be allowed,
// and the bundle must not mark an action of the minimum privileged set
// unprivileged (the engine would override it, but a bundle that says so is
// wrong about what it does). It returns the violations; none means safe.
func Guard(ctx context.Context, e *Engine, td spiffeid.TrustDomain, now time.Time) []Problem {
	var ps []Problem
	for _, p := range MustAllow(td) {
		in := p.Input
		in.Context.Time = now
		r, err := e.Eval(ctx, &in)
		switch {
		case err != nil:
			ps = append(ps, Problem{Msg: fmt.Sprintf("lockout: %s %s %s fails: %v (%s)", in.Subject.ID, in.Action, in.Resource, err, p.Why)})
		case !r.Allow:
			ps = append(ps, Problem{Msg: fmt.Sprintf("lockout: %s may not %s %s (%s); reasons: %s", in.Subject.ID, in.Action, in.Resource, p.Why, strings.Join(r.Reasons, "; "))})
		}
	}
	for _, p := range floorProbes(td) {
		in := p.Input
		in.Context.Time = now
		r, err := e.evalBundle(ctx, &in)
		if err != nil {
			ps = append(ps, Problem{Msg: fmt.Sprintf("privilege: %s fails: %v", in.Action, err)})
			continue
		}
		if !r.Privileged {
			ps = append(ps, Problem{Msg: fmt.Sprintf("privilege: the bundle marks %s unprivileged; it is in the minimum privileged set, which a bundle may extend but never reduce", in.Action)})
		}
	}
	return ps
}
