// Package policybench is the authorization benchmark's workload: the
// shipped bundle with a thousand role bindings, a fixed mix of requests
// with their expected answers, unum's decision path set up as a node sets
// it up, and the same query through plain OPA the way an embedder without
// unum would write it. policy's `go test -bench` benchmarks and `unum bench
// authz` both build on it, so the two measure the same thing.
//
// Invariants:
//   - Everything is deterministic: the same trust domain and binding count
//     give the same bundle and the same requests.
//   - Both paths evaluate the same bundle files (modules and data) and the
//     same query, policy.DecisionQuery; only what surrounds the evaluation
//     differs.
//
// Imported by policy's tests and internal/bench only; nothing on a
// request path imports it.
package policybench
