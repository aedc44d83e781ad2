// Package policy owns unum's authorization decisions: the cluster's Rego
// policy (OPA, embedded), compiled once per bundle revision and evaluated
// per request. It is the answer to "what is a privileged process here, and
// who said so": a process is privileged only when this policy grants its
// SPIFFE identity an action that crosses a trust boundary.
//
// # Decision
//
// Every bundle defines one entrypoint, data.unum.authz.decision, an object
// {allow: bool, privileged: bool, reasons: [string]}. Anything else (no
// decision, a wrong type, an evaluation error) is a denial. Privileged is
// or'ed with MinimumPrivileged: a bundle may extend the fixed privileged
// set, never shrink it.
//
// # Network
//
// A second entrypoint, data.unum.network.egress (NetworkQuery), says what a
// workload may connect to: a set of grants ({"id": ...}, {"namespace": ...}
// or {"cidr": ..., "ports": [...], "protocol": ...}), evaluated per source
// identity on NetworkInput (action net.connect on the source itself).
// NetworkGrants validates them (MaxNetGrants, MaxGrantPorts); anything
// malformed is an error and the identity gets no rules (fail closed).
// enforcement.Compile turns them, with the scheduler's listeners, into the
// kernel's rules. The shipped authz.rego decides net.connect from the same
// grants (and mirrors their validation), so a job's egress check and the
// kernel agree. The shipped network.rego grants a workload its own
// namespace and whatever data.network_egress (NetworkEgressData) lists,
// which is validated when the bundle is compiled.
//
// # Input
//
// The input document (JSON names; the schema is input.schema.json, and a
// bundle that reads a field not in it is refused at compile time):
//
//	{
//	  "subject":    {"id": "spiffe://TD/user/alice", "kind": "node|workload|user|system|unknown",
//	                 "namespace": "web (workloads only)", "name": "alice | node-1 | job/api",
//	                 "attributes": {"role": "viewer"}},
//	  "action":     "id.register",          // <noun>.<verb> of the CLI command
//	  "resource":   {"kind": "id", "namespace": "web", "name": "job/api"},  // id/web/job/api; "-" = cluster-scoped
//	  "delegation": [{"id": "spiffe://...", "kind": "user", "namespace": "", "name": "alice"}, ...],  // a delegated call: subject first, caller last
//	  "context":    {"node": "node-1", "time": "RFC 3339", "request_id": "..."}
//	}
//
// The engine reads no clock: context.time is injected and is also what
// Rego's time.now_ns() returns. internal/rpc maps every gRPC method to an
// action and a resource (its routes table).
//
// # Parts
//
//   - Bundle: a folder of .rego files, their _test.rego tests and data.json
//     documents; LoadDir, Validate (size and shape limits), Test (OPA's
//     tester with coverage), Digest.
//   - Engine: one compiled revision with its prepared queries; Eval, Explain
//     (the rules that fired), NetworkGrants.
//   - Guard: the lockout guard run before a bundle is applied (MustAllow and
//     the privileged floor).
//   - View: the revision a node serves and whether it is known to be the
//     latest (fed by the node's policy watch); privileged actions need a
//     fresh view.
//   - Decider: a node's decisions (context, id, freshness, shadow, log);
//     DecisionLog receives every decision and must make it durable before
//     the action runs (the node records it in its audit log; Ring keeps
//     recent ones in memory).
//
// The package does no network or store I/O: control/ stores revisions in
// etcd and node/ feeds the View. It imports enforcement (grant protocols
// are checked with the compiler's own reader, ParseProto), so it may be
// imported by any package but enforcement and identity.
package policy
