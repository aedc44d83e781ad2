// Package node runs one unum node: the process `unum node` starts. It owns
// the node's data folder (layout.go), `unum init` (creating a trust domain
// and the first control node), joining with a token, and the wiring of the
// roles a node has:
//
//   - control: embedded etcd (storage/meta), the CA and the control-plane
//     services (package control) on the API listener, and the enrolment
//     listener that serves only Join;
//   - compute: the node agent (identity/agent) with the SPIFFE Workload API
//     on DIR/public/agent.sock, fed by a sync stream from the control plane.
//
// Every node renews its own SVID at half-life and reports a heartbeat.
// Key files are checked before anything starts: a node refuses to run with a
// group- or world-readable key.
package node
