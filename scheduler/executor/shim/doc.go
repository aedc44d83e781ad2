// Package shim is the task shim: the unum binary re-executed by the executor
// (the way runc and minijail re-execute themselves) to turn itself into a
// task. It runs as root, born in the task's cgroup v2 group, and in order:
//
//  1. reads the Spec from file descriptor SpecFD (a pipe: never argv or the
//     environment, which other local users can read in /proc) and closes it;
//  2. joins the task's cgroup v1 groups (clone placed it in v2 already);
//  3. marks every other file descriptor close-on-exec;
//  4. sets PR_SET_NO_NEW_PRIVS, so no setuid binary or file capability can
//     raise privileges again, and empties the capability bounding and
//     ambient sets;
//  5. clears supplementary groups and sets gid and uid (setresgid,
//     setresuid) to the task's dynamic uid;
//  6. verifies it cannot become root again (setuid(0) fails, no capability
//     left, uid and gid are not 0) and that no_new_privs holds;
//  7. changes to the work directory, as the task uid;
//  8. resolves the command through the spec environment's PATH;
//  9. confines the exec thread as Spec.Confine says: first the Landlock
//     ruleset (landlock.go: the task's work and tmp folders read-write,
//     system folders read-only, the command and the interpreters the
//     kernel opens to exec it, found by interp.go, readable and
//     executable; signals and abstract unix sockets scoped to the task),
//     then the seccomp filter (seccomp.go: the escape set refused with
//     EPERM, clone with a namespace flag too, clone3 with ENOSYS, another
//     architecture's entry killed);
//  10. execve's the command with exactly the spec's environment.
//
// Both layers are per thread, like no_new_privs, and pass to the task
// through the execve on that thread. A layer the spec asks for and the
// kernel cannot apply, or a Landlock ABI below the spec's MinABI, fails the
// start: the shim never runs a task with less than the node reports. Probe
// says what the kernel supports; the node calls it once.
//
// Main never returns: it execs the task or exits 127 with the reason on
// stderr (which the executor captures into the task's stderr log) and on
// ExecFD.
//
// FilterModel runs the same filter in user space (x/net/bpf's VM) so the
// node can tell which EPERMs the kernel's syscall audit layer reports are
// the filter's, and name them; its Audited list is the set that layer
// watches, so the shim's table is the single source of both.
//
// Imported by cmd/unum (the hook at the top of main), scheduler/executor
// (which builds the Spec and calls Probe) and node (FilterModel); it must
// stay small and import nothing of unum (golang.org/x/sys and x/net/bpf
// only).
package shim
