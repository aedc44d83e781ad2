// Package revocation is the deterministic core of certificate revocation:
// the revocation set, the check of a certificate against it, and a
// concurrent view of the set that knows how fresh it is.
//
// A revocation is (SPIFFE ID, issued-before time): every certificate for the
// ID issued before the time is refused; certificates issued later work. So
// a user removed and added again gets working certificates, and nothing
// needs a record per issued certificate. When a certificate was issued is
// read from its NotBefore, which the CA backdates by exactly ca.ClockSkew
// (IssuedAt).
//
// Clocks: a revocation's Before is the revoking server's clock plus
// ClockSkewAllowance, so a certificate issued up to that much "later" by a
// control node whose clock runs ahead is still refused. Nodes therefore need
// clocks synchronised to within ClockSkewAllowance (NTP keeps them within
// milliseconds); a control node about to sign for an ID whose Before is
// still in the future waits it out (at most ClockSkewAllowance) so that the
// certificate it signs is not born revoked.
//
// A restore from backup adds a Window: certificates issued between the
// backup and the restore are unknown to the restored state, and are refused
// (ErrMustRenew) everywhere except on the renewal calls, which re-check the
// identity against the restored state before signing anew.
//
// A View is fed by its owner (an etcd watch on control nodes, the control
// plane's WatchRevocations stream elsewhere) and reports its age: how long
// since it last heard that it was current. A server whose view is older than
// its bound refuses privileged actions (ErrStale) until it catches up.
//
// This package does no I/O and reads no clock except the one injected into a
// View; it is imported by internal/rpc, control and node.
package revocation
