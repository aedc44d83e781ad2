// Package enforcement owns the kernel side of unum's policy: what a task's
// processes may reach on the network, decided in the node's kernel by BPF
// programs, and the vocabulary the rest of unum uses to talk about it
// (modes, layers, rules, hooks, identity numbers).
//
// This package is the deterministic core: the types and the compiler that
// turns the policy's network grants (data.unum.network) and the
// scheduler's listeners into per-identity allow rules, and the difference
// between two such plans. It does no I/O and may be imported by any
// package. The BPF programs and their loader live in enforcement/kernel;
// the node agent (node/) wires them to the sync stream and the audit log.
//
// Invariants:
//   - identity number 0 is never assigned: a cgroup without a mapping is
//     denied everything (default deny);
//   - a Plan is canonical: its rules are sorted and free of duplicates, so
//     two plans are equal exactly when they allow the same tuples.
package enforcement
