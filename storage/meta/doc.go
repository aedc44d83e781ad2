// Package meta owns the cluster's consistent store: an embedded etcd member
// on every control node (DESIGN.md §4, §5), its private PKI, membership
// changes, and the batched linearizable reader the CA uses on its hot path.
//
// # Who may reach etcd
//
// Only control-plane processes. etcd gets its own certificate authority,
// separate from the SPIFFE CA: an ECDSA P-256 "unum etcd CA" signs member
// certificates whose subject CN is RoleCN ("unum-control"). Both the client
// and the peer listener require a client certificate that chains to that CA
// (client-cert-auth, TrustedCAFile) and whose CN is RoleCN (etcd's
// TLSInfo.AllowedCNs). A SPIFFE SVID is issued by another CA and carries no
// CN, so even a stolen node or workload SVID cannot open a connection; a
// certificate from the etcd CA with any other CN is refused too. Clients
// built here check the server the same way, so a control process never sends
// data to an endpoint that is not an etcd member. Plain http is never
// configured: Start refuses URLs that are not https.
//
// # Invariants
//
//   - Every listener is TLS 1.3 with a verified client certificate of CN
//     RoleCN; no metrics listener, no gRPC gateway, no pprof.
//   - BatchReader answers a Get only from a Txn that started after that Get
//     was called, so a batched read is as linearizable as a single one.
//   - A member that cannot reach a quorum cannot confirm anything: linearizable
//     reads fail (with the caller's deadline) instead of serving stale data.
//   - Joining members start as learners and are promoted only once etcd says
//     they are in sync, so adding a member never costs quorum.
//
// # Performance
//
// BenchmarkBatchReader (32 concurrent callers, single-key linearizable reads,
// one member on the same 2 cores, shared with other load): about 22,000
// reads/s through BatchReader against about 7,000 reads/s for one Range per
// read (BenchmarkUnbatchedGet); the CA's target is 3,000 SVIDs/s.
//
// # Importers
//
// Control-plane code only (the node daemon's control role, the CA, the
// policy store, the scheduler leader). Nothing that runs on compute-only
// nodes may import it: those go through unum RPCs.
package meta
