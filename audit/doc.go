// Package audit owns unum's tamper-evident record: typed events, each
// node's append-only log of them, the Merkle tree over that log, the signed
// checkpoints that commit to it and the witness's countersignatures.
//
// # Events
//
// An Event is one thing that happened: who (a SPIFFE ID and, when present,
// the delegation chain), what (a stable action name such as id.register),
// on what (a policy resource KIND/NS/NAME), with which outcome (allow, deny,
// error), under which decision and policy revision, and kind-specific
// details. Its encoding (canonical JSON, snake_case field names) is the
// Merkle leaf: what is hashed is exactly what is stored and served, so a
// reader can check an event it was given without trusting the server.
// Secrets (tokens, keys) never enter an event: a token is named by its id.
//
// # Log
//
// Each node appends its events to its own log in Pebble under DIR/audit.
// Record returns only once the event is durable (fsync'd); concurrent
// records share one sync (group commit). Entries are numbered from 0; entry
// i is also hash-chained to entry i-1, so damage to one entry is named by
// its index even before the Merkle check. The log signs a checkpoint (node,
// size, root hash, time) at least every second and every 10,000 entries
// with the node's Tink signature keyset, whose public half the cluster
// registered when the node joined.
//
// # Witness
//
// The node submits each checkpoint with a consistency proof from the newest
// one the witness (the control plane) holds for it. The witness verifies
// signature and proof, refuses a fork or a truncation (and records an
// alert), countersigns, and stores the countersigned checkpoints in etcd, one
// transaction per round for all nodes. After that, a node cannot rewrite or
// truncate what was witnessed without verify detecting it.
//
// # Layering
//
// merkle.go and checkpoint.go are deterministic (no I/O, no clock): RFC
// 6962 / RFC 9162 hashing, proofs and their verification, the checkpoint
// note format. log.go does the disk I/O through a vfs.FS so tests can inject
// errors. This package imports no other unum package but the API types; the
// node wires it to the policy decider and the RPC layer.
package audit
