// Package attest identifies the process at the other end of a unix socket
// connection, so the node agent can decide which SPIFFE identities it may
// hand out on that connection.
//
// It is a gRPC credentials.TransportCredentials for a unix listener. The
// server handshake captures the peer at connect time:
//   - SO_PEERCRED (pid, uid, gid as of connect(2));
//   - a pidfd pinned to the connecting process: SO_PEERPIDFD where the kernel
//     has it (>= 6.5, race-free), otherwise pidfd_open on the SO_PEERCRED pid
//     followed by a liveness re-check (a small race on old kernels: the peer
//     could exit and its pid be recycled between connect and pidfd_open);
//   - the (device, inode) of /proc/PID/exe, the binary that connected.
//
// Peer.Attest later reads the process's current state from /proc and then
// confirms, through the pidfd, that the process it read is still the one that
// connected. Invariants:
//   - a pid recycled after the peer exits never inherits its identity: every
//     /proc read is followed by a pidfd liveness check, and a dead or zombie
//     peer yields ErrProcessGone;
//   - a peer whose executable changed since connect (it, or a process it
//     handed the socket to, called exec) yields ErrExecAfterConnect, so a
//     binary selector can never be satisfied by a process that connected as
//     something else;
//   - the pidfd lives exactly as long as the connection: closing the
//     connection closes it;
//   - executable digests are cached per Credentials value (never globally),
//     keyed by (dev, inode, size, mtime, ctime) so an in-place rewrite of a
//     binary is hashed again.
//
// Linux only. Only the node agent's Workload API server should import this
// package.
package attest
