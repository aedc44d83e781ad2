// Package control implements the services a control node serves over the
// cluster's mutual-TLS API: Identity (SVID minting, registration entries,
// agent sync), Enrollment (joining and logging in with a token, on its own
// listener), Cluster (join tokens, node listing, status, heartbeats, node
// removal; noderm.go), Users (people, their roles and enrolment tokens;
// users.go), CA (rotation, root export; ca.go, rotation.go) and Backup
// (backup.go). Revocations (revocations.go) are recorded here and fed to
// the node's revocation view from an etcd watch.
//
// It also owns the layout of cluster state in etcd (schema.go). Every
// security-relevant read is linearizable: the CA signs a workload SVID only
// after a batched linearizable read (meta.BatchReader) confirms the
// registration entry and the requesting node, so a control node cut off from
// the etcd majority cannot mint. Single use of a join or user token and
// uniqueness of node names are enforced by one etcd transaction.
//
// Handlers trust the caller that rpc.CallerFromContext returns (the rpc
// interceptor verified and authorized it) but re-check the caller's kind
// where a handler's meaning depends on it (a node asking for its own
// entries), so a permissive authorizer cannot widen what a node receives.
//
// Imported by package node only.
package control
