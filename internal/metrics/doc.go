// Package metrics is a node's Prometheus exporter: one registry per node
// (never the client library's global default), the counters the control
// services report through the small control.Metrics interface, gauges
// computed at scrape time from the node's live state (SVID and CA expiry,
// revocation view age, etcd health), and the /metrics endpoint.
//
// Invariants:
//   - Metric and label names are the constants below; label values come
//     from the fixed sets of package label (anything else is counted as
//     label.Other) or are CA certificate fingerprints, of which a node holds
//     a handful. No SPIFFE ID, node name, token or address is ever a label.
//   - The endpoint serves plain HTTP only on a loopback address; on any
//     other address it serves HTTPS and requires a client SVID of the trust
//     domain that is not revoked (ServeRule, Listen). There is no way to ask
//     for plain HTTP on a non-loopback address.
//   - Nothing here is package-level mutable state: two nodes in one process
//     (tests, benchmarks) have two independent registries.
//
// Imported by node (wiring) and by tests that read counters.
package metrics
