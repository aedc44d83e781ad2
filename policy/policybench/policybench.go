package policybench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/unumos/unum/policy"
)

// DefaultBindings is the number of role bindings the benchmark's bundle
// holds (the policy issue's "shipped policy plus 1,000 role bindings").
const DefaultBindings = 1000

// Node is the node name the decisions are made on.
const Node = "bench-node"

// bindingRoles are given out in turn, so that both role tables are used.
var bindingRoles = [...]string{"viewer", "operator"}

// BoundUser is the SPIFFE ID of the i-th bound user in td.
func BoundUser(td spiffeid.TrustDomain, i int) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "user", fmt.Sprintf("bound-%04d", i))
}

// Bundle returns the shipped bundle (policy.Builtin) with its data.json
// replaced by n role bindings: BoundUser(td, i) has role viewer for even i
// and operator for odd i.
func Bundle(td spiffeid.TrustDomain, n int) (*policy.Bundle, error) {
	b := policy.Builtin()
	bindings := make(map[string]string, n)
	for i := range n {
		bindings[BoundUser(td, i).String()] = bindingRoles[i%len(bindingRoles)]
	}
	data, err := json.Marshal(map[string]any{"bindings": bindings})
	if err != nil {
		return nil, err
	}
	b.Files["data.json"] = data
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// Case is one request of the mix and what the shipped policy answers.
type Case struct {
	Name       string
	Input      policy.Input
	Allow      bool
	Privileged bool
}

// Cases returns 64 requests for a bundle made by Bundle(td, n), a quarter
// of each kind: the admin applying policy (allowed, privileged); a bound
// user, a different binding each time, using its role (viewers list nodes,
// operators register workloads, privileged); a user whose viewer role comes
// from its attributes listing identities (allowed); a workload reading
// another namespace's data (denied). The inputs carry no context: the
// caller fills it, as a server does.
func Cases(td spiffeid.TrustDomain, n int) []Case {
	user := func(name, role string) policy.Subject {
		attrs := map[string]string{}
		if role != "" {
			attrs["role"] = role
		}
		return policy.Subject{ID: spiffeid.RequireFromSegments(td, "user", name).String(), Kind: "user", Name: name, Attributes: attrs}
	}
	cluster := func(kind, name string) policy.Resource {
		return policy.Resource{Kind: kind, Namespace: policy.ClusterScope, Name: name}
	}
	const total = 64
	out := make([]Case, 0, total)
	for i := range total {
		var c Case
		switch i % 4 {
		case 0:
			c = Case{Name: "admin", Allow: true, Privileged: true, Input: policy.Input{
				Subject: user("admin", ""), Action: "policy.apply", Resource: cluster("policy", "bundle"),
			}}
		case 1:
			// Spread over the bindings; with no bindings the case is a
			// user with no role at all, and denied.
			j := (i / 4 * 397) % max(n, 1)
			id := BoundUser(td, j)
			s := policy.Subject{ID: id.String(), Kind: "user", Name: strings.TrimPrefix(id.Path(), "/user/"), Attributes: map[string]string{}}
			c = Case{Name: "bound-viewer", Allow: n > 0, Input: policy.Input{Subject: s, Action: "node.ls", Resource: cluster("node", "*")}}
			if bindingRoles[j%len(bindingRoles)] == "operator" {
				c = Case{Name: "bound-operator", Allow: n > 0, Privileged: true, Input: policy.Input{
					Subject: s, Action: "id.register", Resource: policy.Resource{Kind: "id", Namespace: "web", Name: fmt.Sprintf("job/api-%d", i)},
				}}
			}
		case 2:
			c = Case{Name: "attribute-viewer", Allow: true, Input: policy.Input{
				Subject: user(fmt.Sprintf("vic-%d", i), "viewer"), Action: "id.list", Resource: cluster("id", "*"),
			}}
		case 3:
			w := spiffeid.RequireFromSegments(td, "ns", "web", "job", "api")
			c = Case{Name: "denied-workload", Input: policy.Input{
				Subject:  policy.Subject{ID: w.String(), Kind: "workload", Namespace: "web", Name: "job/api", Attributes: map[string]string{}},
				Action:   "kv.get",
				Resource: policy.Resource{Kind: "kv", Namespace: "billing", Name: fmt.Sprintf("invoice-%d", i)},
			}}
		}
		out = append(out, c)
	}
	return out
}

// StaleBound is the view's freshness bound in the benchmark: long enough
// that a run never goes stale, as a node whose watch reports progress
// never does. The bound's length costs nothing per decision.
const StaleBound = 24 * time.Hour

// Decider returns unum's decision path as a node builds it: b compiled as
// revision 1 and served by a View that has confirmed it is the latest, a
// Decider on the wall clock, and a Ring of ringSize decisions as its log.
func Decider(ctx context.Context, b *policy.Bundle, ringSize int, opts ...policy.EngineOption) (*policy.Decider, *policy.Ring, error) {
	e, err := policy.NewEngine(ctx, b, 1, opts...)
	if err != nil {
		return nil, nil, err
	}
	v := policy.NewView(StaleBound)
	v.Set(e)
	v.Observe(1, time.Now())
	ring := policy.NewRing(ringSize)
	return policy.NewDecider(policy.DeciderConfig{Node: Node, View: v, Log: ring}), ring, nil
}

// Raw is the same query through plain OPA: the bundle's modules and data
// handed to rego.New, prepared once, evaluated with rego.EvalInput on a
// map, as an embedder without unum would write it.
type Raw struct {
	pq rego.PreparedEvalQuery
}

// NewRaw prepares policy.DecisionQuery over b's files. It supports the
// bundles Bundle makes: one data.json, at the bundle's root.
func NewRaw(ctx context.Context, b *policy.Bundle) (*Raw, error) {
	opts := []func(*rego.Rego){rego.Query(policy.DecisionQuery)}
	var data map[string]any
	for name, src := range b.Files {
		switch {
		case strings.HasSuffix(name, ".rego"):
			opts = append(opts, rego.Module(name, string(src)))
		case name == "data.json":
			if err := util.UnmarshalJSON(src, &data); err != nil {
				return nil, fmt.Errorf("raw opa: %s: %w", name, err)
			}
		default:
			return nil, fmt.Errorf("raw opa: %s: only a data.json at the root is supported", name)
		}
	}
	opts = append(opts, rego.Store(inmem.NewFromObject(data)))
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("raw opa: %w", err)
	}
	return &Raw{pq: pq}, nil
}

// Decide evaluates the decision for input and returns its allow field.
func (r *Raw) Decide(ctx context.Context, input map[string]any) (bool, error) {
	rs, err := r.pq.Eval(ctx, rego.EvalInput(input))
	if err != nil {
		return false, err
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return false, policy.ErrNoDecision
	}
	d, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return false, policy.ErrNoDecision
	}
	allow, ok := d["allow"].(bool)
	if !ok {
		return false, policy.ErrNoDecision
	}
	return allow, nil
}

// RawInput is in as the map an embedder hands to OPA, with the context
// filled as the Decider fills it (node and time; no request id).
func RawInput(in *policy.Input, now time.Time) map[string]any {
	attrs := make(map[string]any, len(in.Subject.Attributes))
	for k, v := range in.Subject.Attributes {
		attrs[k] = v
	}
	chain := make([]any, 0, len(in.Delegation))
	for _, a := range in.Delegation {
		chain = append(chain, map[string]any{"id": a.ID, "kind": a.Kind})
	}
	return map[string]any{
		"subject": map[string]any{
			"id": in.Subject.ID, "kind": in.Subject.Kind, "namespace": in.Subject.Namespace,
			"name": in.Subject.Name, "attributes": attrs,
		},
		"action": in.Action,
		"resource": map[string]any{
			"kind": in.Resource.Kind, "namespace": in.Resource.Namespace, "name": in.Resource.Name,
		},
		"delegation": chain,
		"context": map[string]any{
			"node": Node, "time": now.UTC().Format(time.RFC3339Nano), "request_id": in.Context.RequestID,
		},
	}
}
