package policy_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/unumos/unum/policy"
	"github.com/unumos/unum/policy/policybench"
)

// The authorization benchmarks of the policy issue: the shipped policy
// plus 1,000 role bindings, the same mix of requests (policybench.Cases)
// through unum's path and through plain OPA. `unum bench authz` measures
// the same two paths for latency percentiles; docs/BENCHMARKS.md has the
// figures.

var benchTD = spiffeid.RequireTrustDomainFromString("bench.local")

func benchSetup(b *testing.B) (*policy.Bundle, []policybench.Case) {
	b.Helper()
	bundle, err := policybench.Bundle(benchTD, policybench.DefaultBindings)
	if err != nil {
		b.Fatal(err)
	}
	return bundle, policybench.Cases(benchTD, policybench.DefaultBindings)
}

// BenchmarkDecide is unum's whole path: Decider.Decide (context, decision
// id, View, Engine.Eval, freshness check for privileged actions) recording
// into a Ring.
func BenchmarkDecide(b *testing.B) {
	ctx := context.Background()
	bundle, cases := benchSetup(b)
	d, _, err := policybench.Decider(ctx, bundle, 10_000)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c := &cases[i%len(cases)]
		dec, err := d.Decide(ctx, c.Input, "")
		if err != nil || dec.Allow != c.Allow {
			b.Fatalf("%s: allow %v, err %v", c.Name, dec.Allow, err)
		}
	}
}

// BenchmarkDecideUncached is unum's whole path with the engine's decision
// cache off: every decision evaluates the policy (the cold path, the first
// time an input is seen).
func BenchmarkDecideUncached(b *testing.B) {
	ctx := context.Background()
	bundle, cases := benchSetup(b)
	d, _, err := policybench.Decider(ctx, bundle, 10_000, policy.WithoutDecisionCache())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c := &cases[i%len(cases)]
		dec, err := d.Decide(ctx, c.Input, "")
		if err != nil || dec.Allow != c.Allow {
			b.Fatalf("%s: allow %v, err %v", c.Name, dec.Allow, err)
		}
	}
}

// BenchmarkEngineEval is the evaluation alone, without what Decide adds:
// where unum's overhead over raw OPA is, if any.
func BenchmarkEngineEval(b *testing.B) {
	ctx := context.Background()
	bundle, cases := benchSetup(b)
	e, err := policy.NewEngine(ctx, bundle, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c := &cases[i%len(cases)]
		in := c.Input
		in.Context = policy.Context{Node: policybench.Node, Time: time.Now()}
		r, err := e.Eval(ctx, &in)
		if err != nil || r.Allow != c.Allow {
			b.Fatalf("%s: allow %v, err %v", c.Name, r.Allow, err)
		}
	}
}

// BenchmarkRawOPA is the same query over the same bundle files through
// rego.New(...).PrepareForEval and pq.Eval(ctx, rego.EvalInput(map)), the
// map built per request as an embedder would.
func BenchmarkRawOPA(b *testing.B) {
	ctx := context.Background()
	bundle, cases := benchSetup(b)
	raw, err := policybench.NewRaw(ctx, bundle)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c := &cases[i%len(cases)]
		allow, err := raw.Decide(ctx, policybench.RawInput(&c.Input, time.Now()))
		if err != nil || allow != c.Allow {
			b.Fatalf("%s: allow %v, err %v", c.Name, allow, err)
		}
	}
}
