// Package enforcement owns the kernel side of unum's policy: what a task's
// processes may reach on the network, decided in the node's kernel by BPF
// programs, and the vocabulary the rest of unum uses to talk about it
// (modes, layers, rules, hooks, identity numbers).
//
// This package is the deterministic core: the types and the compiler that
// turns the policy's network grants (data.unum.network.egress, read by
// policy.Engine.NetworkGrants) and the scheduler's listeners into
// per-identity allow rules (Compile), and the difference between two such
// plans (Diff), which is what a node applies when either changes. It does
// no I/O, reads workload IDs with identity.Classify (so a namespace means
// here what it means to the policy), imports neither policy nor control
// (the caller converts policy.NetGrant into Grant), and may be imported by
// any package but identity. The BPF
// programs and their loader live in enforcement/kernel; the node agent
// (node/) wires them to the sync stream and the audit log.
//
// # What an identity may reach
//
// A workload D (another job's listeners) exactly when its job declared D in
// its spec's egress AND a grant names D's ID or D's namespace: declaring
// grants nothing and a grant opens nothing undeclared (T-117). The policy's
// net.connect decision, asked for each declared target when a job is
// submitted, is the same rule over the same grants, so the two agree. An
// address (a grant's prefix, on its ports and protocol) with no
// declaration: addresses are not identities. A listener rule is the node
// address as a /32 or /128, the task's port, protocol any (a job's port has
// no protocol). A policy whose grants for an identity are malformed gives
// it no grants at all (T-116); the compiler itself drops whatever it cannot
// compile (a grant of two kinds, port 0, an unknown protocol), never
// widening. Compile's comment has the details.
//
// Invariants:
//   - identity number 0 is never assigned: a cgroup without a mapping is
//     denied everything (default deny);
//   - a Plan is canonical: its rules are sorted and free of duplicates and
//     no identity has an empty list, so two plans are equal exactly when
//     they allow the same tuples;
//   - Compile is deterministic: the order of its inputs does not matter.
package enforcement
