//go:build amd64 || arm64

package shim

import (
	"cmp"
	"fmt"
	"slices"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The task's seccomp filter is a deny list: every system call is allowed
// except the escape set below, which fails with EPERM (clone3 with ENOSYS).
// The set is Docker's default profile read as "what a task without
// capabilities is refused" (its allow list minus the calls it grants only
// with a capability), plus ptrace and process_vm_* which Docker allows on
// 4.8+ kernels and which this issue denies outright. Each group says why.
//
// A deny list and not an allow list: tasks are arbitrary programs, and a
// new kernel's new harmless call must not break them; the price is that a
// new dangerous call is allowed until it is added here (the Landlock and
// BPF layers, and the missing capabilities, still hold).

// denial is one system call the filter refuses outright.
type denial struct {
	name  string
	nr    uint32
	errno unix.Errno
}

// deniedSyscalls is the whole list for this architecture, in the order the
// filter checks them.
func deniedSyscalls() []denial {
	eperm := func(names map[string]uintptr) []denial {
		out := make([]denial, 0, len(names))
		for n, nr := range names {
			out = append(out, denial{name: n, nr: uint32(nr), errno: unix.EPERM})
		}
		return out
	}
	var out []denial
	// Reading or changing other processes (even of the same uid, inside the
	// task): ptrace injects code, process_vm_* read and write memory, kcmp
	// and pidfd_getfd pry into another process's files, process_madvise
	// acts on its memory.
	out = append(out, eperm(map[string]uintptr{
		"ptrace": unix.SYS_PTRACE, "process_vm_readv": unix.SYS_PROCESS_VM_READV,
		"process_vm_writev": unix.SYS_PROCESS_VM_WRITEV, "kcmp": unix.SYS_KCMP,
		"pidfd_getfd": unix.SYS_PIDFD_GETFD, "process_madvise": unix.SYS_PROCESS_MADVISE,
	})...)
	// Kernel attack surface a task has no use for: BPF programs and maps,
	// perf events (both a steady source of kernel exploits and of
	// information about other processes), userfaultfd (the classic way to
	// win kernel races), io_uring (executes operations outside seccomp's
	// view), fanotify (watching the host's files).
	out = append(out, eperm(map[string]uintptr{
		"bpf": unix.SYS_BPF, "perf_event_open": unix.SYS_PERF_EVENT_OPEN, "userfaultfd": unix.SYS_USERFAULTFD,
		"io_uring_setup": unix.SYS_IO_URING_SETUP, "io_uring_enter": unix.SYS_IO_URING_ENTER,
		"io_uring_register": unix.SYS_IO_URING_REGISTER, "fanotify_init": unix.SYS_FANOTIFY_INIT,
	})...)
	// Mounts: changing what a path means is how a process escapes a
	// file-system view (the new mount API included).
	out = append(out, eperm(map[string]uintptr{
		"mount": unix.SYS_MOUNT, "umount2": unix.SYS_UMOUNT2, "pivot_root": unix.SYS_PIVOT_ROOT,
		"chroot": unix.SYS_CHROOT, "open_tree": unix.SYS_OPEN_TREE, "open_tree_attr": unix.SYS_OPEN_TREE_ATTR,
		"move_mount": unix.SYS_MOVE_MOUNT, "fsopen": unix.SYS_FSOPEN, "fsconfig": unix.SYS_FSCONFIG,
		"fsmount": unix.SYS_FSMOUNT, "fspick": unix.SYS_FSPICK, "mount_setattr": unix.SYS_MOUNT_SETATTR,
	})...)
	// Namespaces: a user namespace hands the task every capability inside
	// it, which opens kernel code written for root; setns joins another
	// process's namespaces; listns enumerates the host's. clone is checked
	// by argument below; unshare is refused whatever its flags (CLONE_FILES
	// and CLONE_FS alone are harmless but rarely used this way).
	out = append(out, eperm(map[string]uintptr{
		"unshare": unix.SYS_UNSHARE, "setns": unix.SYS_SETNS, "listns": unix.SYS_LISTNS,
	})...)
	// Loading code into the kernel or replacing it.
	out = append(out, eperm(map[string]uintptr{
		"init_module": unix.SYS_INIT_MODULE, "finit_module": unix.SYS_FINIT_MODULE,
		"delete_module": unix.SYS_DELETE_MODULE, "kexec_load": unix.SYS_KEXEC_LOAD,
		"kexec_file_load": unix.SYS_KEXEC_FILE_LOAD,
	})...)
	// Kernel keyrings are not namespaced: keys are shared by uid across the
	// machine, and a reused uid would inherit them.
	out = append(out, eperm(map[string]uintptr{
		"add_key": unix.SYS_ADD_KEY, "request_key": unix.SYS_REQUEST_KEY, "keyctl": unix.SYS_KEYCTL,
	})...)
	// Host-wide state a task must not touch (each also needs a capability the
	// task lacks: refused here too, so no kernel code behind them runs):
	// clocks, the hostname, swap, quotas, reboot, process accounting, the
	// kernel log, file handles that bypass path checks ("shocker"), NUMA
	// policies and pages of other processes, LSM attributes.
	out = append(out, eperm(map[string]uintptr{
		"settimeofday": unix.SYS_SETTIMEOFDAY, "clock_settime": unix.SYS_CLOCK_SETTIME,
		"sethostname": unix.SYS_SETHOSTNAME, "setdomainname": unix.SYS_SETDOMAINNAME,
		"swapon": unix.SYS_SWAPON, "swapoff": unix.SYS_SWAPOFF, "quotactl": unix.SYS_QUOTACTL,
		"quotactl_fd": unix.SYS_QUOTACTL_FD, "reboot": unix.SYS_REBOOT, "acct": unix.SYS_ACCT,
		"syslog": unix.SYS_SYSLOG, "vhangup": unix.SYS_VHANGUP, "lookup_dcookie": unix.SYS_LOOKUP_DCOOKIE,
		"open_by_handle_at": unix.SYS_OPEN_BY_HANDLE_AT, "mbind": unix.SYS_MBIND,
		"set_mempolicy": unix.SYS_SET_MEMPOLICY, "get_mempolicy": unix.SYS_GET_MEMPOLICY,
		"set_mempolicy_home_node": unix.SYS_SET_MEMPOLICY_HOME_NODE, "migrate_pages": unix.SYS_MIGRATE_PAGES,
		"move_pages": unix.SYS_MOVE_PAGES, "lsm_get_self_attr": unix.SYS_LSM_GET_SELF_ATTR,
		"lsm_set_self_attr": unix.SYS_LSM_SET_SELF_ATTR, "lsm_list_modules": unix.SYS_LSM_LIST_MODULES,
	})...)
	out = append(out, eperm(archDenied())...)
	// clone3 passes its flags in a struct seccomp cannot read: ENOSYS makes
	// the C library fall back to clone, whose flags the filter does check.
	out = append(out, denial{name: "clone3", nr: unix.SYS_CLONE3, errno: unix.ENOSYS})
	// Map order is random: sort so the filter is the same on every start.
	slices.SortFunc(out, func(a, b denial) int { return cmp.Compare(a.nr, b.nr) })
	return out
}

// nsFlags are the namespace flags clone(2) may carry in its first
// argument: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
// NEWNET. CLONE_NEWTIME (0x80) cannot be passed to clone: that byte is the
// exit signal; it reaches the kernel only through unshare and clone3, both
// refused. The kernel reads only the low 32 bits of clone's flags.
const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// personalities are the values a task may set: Docker's list (the
// default, PER_LINUX32, UNAME26 and both, and 0xffffffff, which only
// queries). Anything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, …) weakens
// the task's own exploit mitigations.
func personalities() []uint32 { return []uint32{0x0, 0x0008, 0x20000, 0x20008, 0xffffffff} }

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// argLo is the offset of the low 32 bits of argument i. seccomp loads
// 32-bit words in the machine's byte order; both supported architectures
// are little-endian.
func argLo(i int) uint32 { return offArgs + 8*uint32(i) }

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
)

func retErrno(e unix.Errno) uint32 {
	return unix.SECCOMP_RET_ERRNO | (uint32(e) & unix.SECCOMP_RET_DATA)
}

// seccompFilter assembles the task's filter:
//
//  1. kill the process if the call comes in through another architecture's
//     entry (i386's int 0x80 on amd64, arm32 on arm64) or, on amd64, the x32
//     ABI: their numbers mean other calls, and a deny list keyed on native
//     numbers would not see them;
//  2. clone with a namespace flag, socket of a refused family or type, and
//     personality with an unsafe value: EPERM (argument checks);
//  3. each denied call: its errno;
//  4. everything else: allowed.
//
// Every check is "compare, skip one": no jump ever needs more than a byte
// of offset, whatever the length of the list.
func seccompFilter() []bpf.Instruction {
	p := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: retKill},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
	}
	if foreignNrBits != 0 {
		p = append(p,
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: foreignNrBits, SkipFalse: 1},
			bpf.RetConstant{Val: retKill})
	}
	eperm := retErrno(unix.EPERM)

	// clone: refuse namespace flags. Its flags are the first argument on
	// amd64 and arm64 (s390x, which swaps them, is not supported).
	p = append(p,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_CLONE, SkipFalse: 4},
		bpf.LoadAbsolute{Off: argLo(0), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: nsFlags, SkipFalse: 1},
		bpf.RetConstant{Val: eperm},
		bpf.RetConstant{Val: retAllow},
	)

	// socket: Docker's refusals (AF_ALG, the kernel crypto API, a large
	// attack surface; AF_VSOCK, the path to a hypervisor) plus raw IP and
	// packet sockets, which would also need CAP_NET_RAW and which the BPF
	// sock_create hook refuses as well. Netlink keeps SOCK_RAW: that is how
	// netlink is used (Go's net.Interfaces among others).
	sock := []bpf.Instruction{
		bpf.LoadAbsolute{Off: argLo(0), Size: 4},
	}
	for _, fam := range []uint32{unix.AF_ALG, unix.AF_VSOCK, unix.AF_PACKET} {
		sock = append(sock,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: fam, SkipFalse: 1},
			bpf.RetConstant{Val: eperm})
	}
	sock = append(sock,
		// Not AF_INET and not AF_INET6: allowed.
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_INET, SkipTrue: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_INET6, SkipTrue: 1},
		bpf.RetConstant{Val: retAllow},
		bpf.LoadAbsolute{Off: argLo(1), Size: 4},
		// The type's low bits; SOCK_NONBLOCK and SOCK_CLOEXEC sit above.
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SOCK_RAW, SkipFalse: 1},
		bpf.RetConstant{Val: eperm},
		bpf.RetConstant{Val: retAllow},
	)
	p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_SOCKET, SkipFalse: uint8(len(sock))})
	p = append(p, sock...)

	// personality: only the values in personalities.
	pers := []bpf.Instruction{bpf.LoadAbsolute{Off: argLo(0), Size: 4}}
	for _, v := range personalities() {
		pers = append(pers,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1},
			bpf.RetConstant{Val: retAllow})
	}
	pers = append(pers, bpf.RetConstant{Val: eperm})
	p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_PERSONALITY, SkipFalse: uint8(len(pers))})
	p = append(p, pers...)

	for _, d := range deniedSyscalls() {
		p = append(p,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: d.nr, SkipFalse: 1},
			bpf.RetConstant{Val: retErrno(d.errno)})
	}
	return append(p, bpf.RetConstant{Val: retAllow})
}

// installSeccomp loads the filter on the calling thread: the one that
// execs, which carries it into the task (execve keeps the calling thread's
// filter; the shim's other threads end at the exec). It needs
// no_new_privs, which dropPrivileges set on this thread.
func installSeccomp() error {
	raw, err := bpf.Assemble(seccompFilter())
	if err != nil {
		return fmt.Errorf("assemble seccomp filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0,
		uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	return nil
}

// seccompAvailable reports whether this kernel takes filters with the
// actions the task's filter uses.
func seccompAvailable() error {
	for _, action := range []uint32{retKill, unix.SECCOMP_RET_ERRNO, retAllow} {
		a := action
		if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0,
			uintptr(unsafe.Pointer(&a))); errno != 0 {
			return fmt.Errorf("seccomp action %#x: %w", action, errno)
		}
	}
	return nil
}
