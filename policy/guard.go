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
	// ControlOnly: only control nodes need it (the guard probes it as the
	// control nodes, not every member).
	ControlOnly bool
}

// guardNode is the node name the lockout probes act as; any node name would
// do, the shipped policy grants nodes their operations on themselves.
const guardNode = "guard-probe"

// MustAllow is the list of decisions without which the cluster stops
// working or can no longer be fixed: the admin applying policy, and what
// every node does to stay a member (renewing its SVID, heartbeats,
// following revocations and policy, minting for its workloads, having its
// audit log witnessed). A bundle
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
		controlOnly(probe("control nodes renew their intermediate", node, "ca.sign-intermediate", self)),
		probe("nodes mint SVIDs for their workloads", node, "svid.mint", Resource{Kind: "svid", Namespace: "default", Name: "job/probe"}),
		// Without these the witness stops countersigning, and a node's log
		// is no longer tamper-evident past its last witnessed checkpoint.
		probe("nodes submit their audit checkpoints to the witness", node, "audit.submit", self),
		probe("nodes read the witnessed audit checkpoints", node, "audit.verify", Resource{Kind: "audit", Namespace: ClusterScope, Name: "witnessed"}),
		probe("nodes read the published audit keys", node, "audit.keys", Resource{Kind: "audit", Namespace: ClusterScope, Name: "keys"}),
	}
}

func controlOnly(p Probe) Probe { p.ControlOnly = true; return p }

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

// Cluster is who the lockout guard probes as: the member nodes (subjects
// of the node probes) and the nodes that decide (the control nodes, as
// context.node). Empty lists fall back to a synthetic node, so a bundle is
// also checked for a node that joins later.
type Cluster struct {
	Nodes    []string
	Deciders []string
}

// Guard runs the lockout guard on e: every MustAllow probe must be allowed,
// as the admin (with its role attribute, as the live system sends it) and
// as every member node, decided on every control node; and the bundle must
// not mark an action of the minimum privileged set unprivileged (the
// engine would override it, but a bundle that says so is wrong about what
// it does). It returns the violations; none means safe.
func Guard(ctx context.Context, e *Engine, td spiffeid.TrustDomain, now time.Time, c Cluster) []Problem {
	subjects := append([]string{guardNode}, c.Nodes...)
	deciders := append([]string{guardNode}, c.Deciders...)
	var ps []Problem
	seen := map[string]bool{}
	report := func(msg string) {
		if !seen[msg] {
			seen[msg] = true
			ps = append(ps, Problem{Msg: msg})
		}
	}
	for _, p := range MustAllow(td) {
		nodes := subjects
		if p.ControlOnly {
			nodes = deciders
		}
		for _, node := range nodes {
			in := p.Input
			if in.Subject.Kind == "node" {
				in.Subject = Subject{ID: spiffeid.RequireFromSegments(td, "node", node).String(), Kind: "node", Name: node, Attributes: map[string]string{}}
				if in.Resource.Kind == "node" {
					in.Resource.Name = node
				}
			} else if node != guardNode {
				continue // the admin probes do not depend on the node subject
			} else {
				in.Subject.Attributes = map[string]string{"role": "admin"}
			}
			for _, decider := range deciders {
				in.Context.Node, in.Context.Time = decider, now
				r, err := e.Eval(ctx, &in)
				switch {
				case err != nil:
					report(fmt.Sprintf("lockout: %s %s %s fails on node %s: %v (%s)", in.Subject.ID, in.Action, in.Resource, decider, err, p.Why))
				case !r.Allow:
					report(fmt.Sprintf("lockout: %s may not %s %s on node %s (%s); reasons: %s", in.Subject.ID, in.Action, in.Resource, decider, p.Why, strings.Join(r.Reasons, "; ")))
				}
			}
		}
	}
	for _, p := range floorProbes(td) {
		in := p.Input
		in.Context.Time = now
		r, err := e.evalBundle(ctx, &in)
		if err != nil {
			report(fmt.Sprintf("privilege: %s fails: %v", in.Action, err))
			continue
		}
		if !r.Privileged {
			report(fmt.Sprintf("privilege: the bundle marks %s unprivileged; it is in the minimum privileged set, which a bundle may extend but never reduce", in.Action))
		}
	}
	return ps
}
