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
// # Tasks
//
// With WithTaskCgroups(root), Attest also reports the scheduled task the
// peer belongs to: the first path component below root of the peer's cgroup
// v2 path (the "0::" line of /proc/PID/cgroup), if it is a valid task id.
// The node's executor creates ROOT/TASK, owned by root, and starts the task's
// processes in it; children inherit it. Invariants:
//   - the cgroup is read by pid like everything else, and trusted only after
//     the pidfd check that follows it: a task that exits and whose pid is
//     recycled, even by a process in another task's group, yields
//     ErrProcessGone, never the other group's task;
//   - it is read on every Attest, never cached from connect: moving a
//     process between cgroups needs write access to the destination's
//     cgroup.procs and to that of the common ancestor (root-owned here), so
//     only root can move a task's process out, or any process in, and a
//     process moved out has no task from its next call on;
//   - anything unusual fails closed to "no task": a removed cgroup
//     (" (deleted)"), a path outside the agent's cgroup namespace, the root
//     itself, a directory name that is not a task id, or a v1-only host; a
//     malformed /proc/PID/cgroup is an error.
//
// Linux only. Only the node agent's Workload API server should import this
// package.
package attest
