// Package kernel owns unum's BPF programs and their loader: the network
// layer (cgroup/connect4, connect6, sendmsg4, sendmsg6 and sock_create,
// bpf/net.c) and the optional BPF LSM layer (bpf/lsm.c), both attached to
// the node's task root so that they govern every process in the task
// subtree, whether or not it went through the task shim; and the optional
// syscall audit layer (bpf/syscall.c, syscall.go), which decides nothing
// and reports the calls the task shim's seccomp filter refused under the
// task root.
//
// # What the programs decide
//
// A connect, or an unconnected UDP sendmsg, is allowed only when the
// calling cgroup is bound to an identity (the cgroups map) and the rules
// map holds a rule of that identity covering the destination: address
// prefix, port (0: any) and protocol (0: any), tried as (any, port),
// (proto, port), (proto, any), (any, any): the compiler writes every
// listener rule with protocol any and a port, so the common allowed
// connect costs one lookup. A cgroup with no binding is
// denied everything (default deny). IPv4 rules and destinations live in
// ::ffff:0:0/96 with family AF_INET in the key, so an IPv4-mapped IPv6
// destination is judged exactly as the IPv4 address, and an IPv6 rule
// (even ::/0) never opens IPv4.
//
// Socket creation is an allow list (cgroup/sock_create): the only IPv4 and
// IPv6 sockets a task may create are TCP (SOCK_STREAM, IPPROTO_TCP) and
// UDP (SOCK_DGRAM, IPPROTO_UDP), the two whose every destination the
// connect and sendmsg hooks see; protocol 0 is resolved by the kernel
// before the hook runs, so it counts as TCP or UDP. Everything else is
// refused, bound or not: raw sockets, ICMP "ping" sockets (an unconnected
// sendto on them reaches no sendmsg hook), SCTP, UDP-Lite, and MPTCP,
// whose further subflows the kernel creates and connects by itself, out
// of the hooks' view of the task. (Go's net package tries MPTCP first for
// listeners and falls back to TCP on any error: such a task works and
// shows up as sock_create events.) The kernel runs cgroup/sock_create for
// AF_INET and AF_INET6 only, so packet sockets are refused by the LSM
// layer (socket_create) where it loads, and otherwise only by the missing
// CAP_NET_RAW. The LSM layer keeps netlink sockets of every type (SOCK_RAW
// is how Go's net.Interfaces and glibc's getaddrinfo open them): netlink
// reaches the local kernel, not the network.
//
// A refusal returns EPERM and puts an event on the events ring buffer;
// audit-only (per binding, or for the whole node in the settings map,
// which also covers unbound cgroups) allows and reports instead. An event
// carries the socket's protocol in 8 bits (Proto, 0 when it does not fit)
// and in full (SockProto: IPPROTO_MPTCP is 262). ReadEvents skips a
// record it cannot decode and counts it in Stats.Undecodable: one bad
// record must not stop the reading of the others.
//
// # Pin layout
//
//	PINDIR/maps/{cgroups,rules,settings,events,dropped}  the network maps
//	PINDIR/maps/task_root                               LSM and syscall audit: the task root (cgroup array)
//	PINDIR/maps/{audited_syscalls,syscall_events}       syscall audit: the watched numbers, its ring buffer
//	PINDIR/links/{connect4,connect6,sendmsg4,sendmsg6,sock_create}
//	PINDIR/links/lsm_{socket_create,ptrace_access_check,bpf,sb_mount,kernel_read_file,kernel_load_data}
//	PINDIR/links/syscall_exit                           syscall audit: raw_tracepoint/sys_exit
//
// Objects share a map by declaring it identically under the same name:
// loading pins by name, so the syscall object's cgroups and dropped are
// the network object's and its task_root is the LSM object's
// (TestSyscallLayoutMatchesBTF holds the definitions equal).
//
// PINDIR is on a bpffs; Open mounts one at /sys/fs/bpf when PINDIR is
// below it and nothing is mounted there.
//
// # Adoption and upgrade
//
// Enforcement outlives the agent: Close releases only the process's
// handles, and the pinned links keep the programs attached. Open adopts
// what it finds: pinned maps whose type, key, value, size and flags match
// the programs are reused with their contents; an incompatible one (an
// upgrade changed its layout) is unpinned, recreated empty, logged, and
// named by Recreated so the caller can audit it: an emptied map denies
// until the agent syncs again, which fails closed. A change of meaning
// that keeps the sizes must rename the map. A pinned cgroup link on the
// same task root and hook is updated in place with the new program
// (BPF_LINK_UPDATE: no moment without a program, never two); one on
// another cgroup (the root was recreated, or the configuration changed) is
// replaced, the new link attached before the old one is detached. LSM
// links cannot be updated in place: the new one is attached and pinned
// before the old one is let go, so for a moment both refuse. Remove
// detaches and unpins everything, for a node being removed and for tests.
//
// # Why the LSM layer is a separate object
//
// Kernels differ: many refuse BPF LSM (this development machine's returns
// EPERM for every trampoline-based program, and features.HaveProgramType
// agrees). Loading both from one collection would make the network layer
// hostage to the LSM layer. Probe loads the real LSM object rather than
// trust the feature probe alone; Open with Config.LSM keeps the network
// layer when LSM is refused and says why in Stats.LSMReason. The LSM
// hooks read no argument except socket_create's: being under the task root
// (bpf_current_task_under_cgroup) is the decision. task_fix_setuid is not
// hooked: the shim itself changes uid inside the task cgroup.
//
// # The syscall audit layer
//
// raw_tracepoint/sys_exit sees every system call's return on the machine,
// including calls seccomp refused (they skip sys_enter, not the exit
// work). It reports those that failed with EPERM, under the task root,
// whose number is in audited_syscalls (Config.Syscalls, the shim's list):
// number, first two arguments, pid, command, cgroup and identity. The
// caller decides which are the filter's (the shim's FilterModel). Its
// cost is global: a syscall tracepoint with a program puts every thread
// on the slow syscall path (BenchmarkSyscallAuditCost). It reads pt_regs
// at offsets set per architecture before loading (regs_*.go), checked
// against the kernel's BTF by TestRegsOffsetsMatchKernelBTF; on other
// architectures it does not load. Its link cannot be updated in place:
// like the LSM links, the new one is attached before the old one goes.
//
// # Layout checks
//
// The Go mirrors of the C structs (layout.go) are checked against the
// compiled objects' BTF by TestLayoutMatchesBTF. The objects and their Go
// loaders (net_bpf*.go, lsm_bpf*.go, syscall_bpf*.go and .o) are generated by `make
// generate-bpf` and committed, so a build needs no clang.
//
// Only the node agent (node/), the bench (kbench) and cmd/unum's tests
// import this package.
package kernel
