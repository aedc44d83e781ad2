// Package executor runs a compute node's tasks: the node daemon hands it the
// node's assignments (Assign) and it makes each one a confined process.
//
// A task start: a dynamic uid (uid.go: lowest free in the range, unique on
// the machine across executors, its IPC residue removed first: ipc.go), its
// folder Dir/<id>/ (root's, 0711) with work/ (the task's own folder: its
// uid, 0700, HOME and the base of WorkDir), tmp/ (its TMPDIR, likewise) and
// logs/ (root's, 0700, written by the executor from pipes); then, for each
// run, its cgroups (package cgroup; v2 always, v1 where the limits live on
// a hybrid host), the enforcement binding of its v2 group (Config.Bind),
// the identity wait (Config.WaitIdentity: the task's SVID exists before it
// runs), then the task shim (package shim: unum re-executed with shim.Arg)
// born in the task's v2 group through CLONE_INTO_CGROUP, with the spec on
// a pipe. The shim joins the v1 groups, sets no_new_privs, drops
// to the uid, confines itself and execs the command: the task is the
// executor's child, reaped by exec.Cmd.Wait.
//
// Confinement (confine.go): every task gets the shim's seccomp filter
// (New fails on a kernel that cannot take it) and, where the kernel has
// Landlock (Config.RequireLandlock makes it mandatory), a ruleset: its own
// work/ (HOME) and tmp/ (TMPDIR) read-write, the system folders and
// Config.ReadOnlyPaths read-only and executable, /etc, /proc, /sys
// read-only, a few devices, its command. New probes the kernel once;
// Confinement and Layers report what every task gets, and the shim fails a
// start rather than apply less.
//
// Invariants:
//   - a task never runs as uid 0, and no two live tasks on the machine share
//     a uid; a task's work and tmp folders and its IPC objects are removed
//     before its uid is released, and a uid's IPC objects before it is
//     handed out (a crashed node released without sweeping);
//   - every task runs with the layers Confinement reports, or not at all;
//   - when a task's main process exits, or the task is removed, fenced or
//     the executor stops, its whole cgroup is killed (cgroup.kill): nothing
//     it forked outlives it;
//   - a task removed from the assignment or killed by Fence is never
//     restarted as a failure; Fence starts nothing until Unfence;
//   - on Run's return every task is dead and its cgroups and work and tmp folders
//     are gone; New sweeps what a crashed earlier run left.
//
// Restarts follow TaskSpec.Restart (see Restart for the backoff and its
// reset). Logs are rotated per stream (logs.go).
//
// Imported by the node daemon (node/) only; the shim is also imported by
// cmd/unum.
package executor
