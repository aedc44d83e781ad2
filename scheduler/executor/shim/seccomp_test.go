//go:build amd64 || arm64

package shim

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData lays out struct seccomp_data for x/net/bpf's VM, which loads
// words big-endian (network order): each 32-bit word is written that way
// so the VM reads the values the kernel would read in host order.
func seccompData(arch, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], nr)
	binary.BigEndian.PutUint32(b[offArch:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[argLo(i):], uint32(a))
		binary.BigEndian.PutUint32(b[argLo(i)+4:], uint32(a>>32))
	}
	return b
}

func verdict(t *testing.T, vm *bpf.VM, arch, nr uint32, args ...uint64) string {
	t.Helper()
	r, err := vm.Run(seccompData(arch, nr, args...))
	require.NoError(t, err)
	switch v := uint32(r); {
	case v == retAllow:
		return "allow"
	case v == retKill:
		return "kill"
	case v&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_ERRNO:
		return unix.ErrnoName(unix.Errno(v & unix.SECCOMP_RET_DATA))
	default:
		return fmt.Sprintf("%#x", v)
	}
}

func TestSeccompFilterVerdicts(t *testing.T) {
	prog := seccompFilter()
	raw, err := bpf.Assemble(prog)
	require.NoError(t, err)
	require.LessOrEqual(t, len(raw), 4096, "BPF_MAXINSNS")
	vm, err := bpf.NewVM(prog)
	require.NoError(t, err)

	const native = auditArch
	for _, tc := range []struct {
		name string
		nr   uintptr
		args []uint64
		want string
	}{
		{"read", unix.SYS_READ, nil, "allow"},
		{"execve", unix.SYS_EXECVE, nil, "allow"},
		{"openat", unix.SYS_OPENAT, nil, "allow"},
		{"landlock_restrict_self", unix.SYS_LANDLOCK_RESTRICT_SELF, nil, "allow"},
		{"ptrace", unix.SYS_PTRACE, []uint64{unix.PTRACE_ATTACH, 1}, "EPERM"},
		{"bpf", unix.SYS_BPF, nil, "EPERM"},
		{"mount", unix.SYS_MOUNT, nil, "EPERM"},
		{"umount2", unix.SYS_UMOUNT2, nil, "EPERM"},
		{"fsopen", unix.SYS_FSOPEN, nil, "EPERM"},
		{"init_module", unix.SYS_INIT_MODULE, nil, "EPERM"},
		{"finit_module", unix.SYS_FINIT_MODULE, nil, "EPERM"},
		{"kexec_load", unix.SYS_KEXEC_LOAD, nil, "EPERM"},
		{"keyctl", unix.SYS_KEYCTL, nil, "EPERM"},
		{"unshare any flags", unix.SYS_UNSHARE, []uint64{unix.CLONE_FILES}, "EPERM"},
		{"setns", unix.SYS_SETNS, nil, "EPERM"},
		{"perf_event_open", unix.SYS_PERF_EVENT_OPEN, nil, "EPERM"},
		{"userfaultfd", unix.SYS_USERFAULTFD, nil, "EPERM"},
		{"io_uring_setup", unix.SYS_IO_URING_SETUP, nil, "EPERM"},
		{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, nil, "EPERM"},
		{"clone3", unix.SYS_CLONE3, nil, "ENOSYS"},
		// Thread creation by the Go runtime and by glibc; fork; vfork with pidfd.
		{"clone thread", unix.SYS_CLONE, []uint64{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
			unix.CLONE_SYSVSEM | unix.CLONE_THREAD}, "allow"},
		{"clone fork", unix.SYS_CLONE, []uint64{uint64(unix.SIGCHLD)}, "allow"},
		{"clone vfork pidfd", unix.SYS_CLONE, []uint64{unix.CLONE_VFORK | unix.CLONE_VM | unix.CLONE_PIDFD | uint64(unix.SIGCHLD)}, "allow"},
		{"clone newuser", unix.SYS_CLONE, []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, "EPERM"},
		{"clone newns", unix.SYS_CLONE, []uint64{unix.CLONE_NEWNS}, "EPERM"},
		{"clone newnet", unix.SYS_CLONE, []uint64{unix.CLONE_NEWNET}, "EPERM"},
		{"clone newpid", unix.SYS_CLONE, []uint64{unix.CLONE_NEWPID}, "EPERM"},
		{"clone newcgroup", unix.SYS_CLONE, []uint64{unix.CLONE_NEWCGROUP}, "EPERM"},
		{"clone newipc", unix.SYS_CLONE, []uint64{unix.CLONE_NEWIPC}, "EPERM"},
		{"clone newuts", unix.SYS_CLONE, []uint64{unix.CLONE_NEWUTS}, "EPERM"},
		// The kernel ignores clone's high 32 bits: so does the filter.
		{"clone high bits only", unix.SYS_CLONE, []uint64{1 << 40}, "allow"},
		{"socket tcp", unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC}, "allow"},
		{"socket udp6", unix.SYS_SOCKET, []uint64{unix.AF_INET6, unix.SOCK_DGRAM}, "allow"},
		{"socket unix", unix.SYS_SOCKET, []uint64{unix.AF_UNIX, unix.SOCK_STREAM}, "allow"},
		{"socket netlink raw", unix.SYS_SOCKET, []uint64{unix.AF_NETLINK, unix.SOCK_RAW | unix.SOCK_CLOEXEC}, "allow"},
		{"socket raw ip", unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP}, "EPERM"},
		{"socket raw ip nonblock", unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_RAW | unix.SOCK_NONBLOCK}, "EPERM"},
		{"socket raw ip6", unix.SYS_SOCKET, []uint64{unix.AF_INET6, unix.SOCK_RAW}, "EPERM"},
		{"socket packet", unix.SYS_SOCKET, []uint64{unix.AF_PACKET, unix.SOCK_DGRAM}, "EPERM"},
		{"socket alg", unix.SYS_SOCKET, []uint64{unix.AF_ALG, unix.SOCK_SEQPACKET}, "EPERM"},
		{"socket vsock", unix.SYS_SOCKET, []uint64{unix.AF_VSOCK, unix.SOCK_STREAM}, "EPERM"},
		{"personality query", unix.SYS_PERSONALITY, []uint64{0xffffffff}, "allow"},
		{"personality linux", unix.SYS_PERSONALITY, []uint64{0}, "allow"},
		{"personality no aslr", unix.SYS_PERSONALITY, []uint64{0x0040000}, "EPERM"},
		{"personality read implies exec", unix.SYS_PERSONALITY, []uint64{0x0400000}, "EPERM"},
	} {
		require.Equal(t, tc.want, verdict(t, vm, native, uint32(tc.nr), tc.args...), tc.name)
	}

	// Another architecture's entry point is killed, whatever the number:
	// i386's int 0x80 on amd64 (where 26 is ptrace, 21 mount), arm32 on arm64.
	for _, arch := range []uint32{unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_ARM, unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_AARCH64} {
		if arch == native {
			continue
		}
		for _, nr := range []uint32{0, 21, 26, uint32(unix.SYS_READ)} {
			require.Equal(t, "kill", verdict(t, vm, arch, nr), "arch %#x nr %d", arch, nr)
		}
	}
	if foreignNrBits != 0 {
		// x32: the x86_64 arch value with __X32_SYSCALL_BIT set.
		require.Equal(t, "kill", verdict(t, vm, native, foreignNrBits|uint32(unix.SYS_READ)))
		require.Equal(t, "kill", verdict(t, vm, native, foreignNrBits|uint32(unix.SYS_MOUNT)))
	}

	// Every denial in the table gets its errno, and the table has no
	// duplicates (a duplicate means a name bound to the wrong number).
	seen := map[uint32]string{}
	for _, d := range deniedSyscalls() {
		require.NotContains(t, seen, d.nr, "%s and %s share a number", d.name, seen[d.nr])
		seen[d.nr] = d.name
		require.Equal(t, unix.ErrnoName(d.errno), verdict(t, vm, native, d.nr), d.name)
	}
	require.Contains(t, seen, uint32(unix.SYS_PTRACE))
}

// The filter is the same on every start: map iteration order must not leak
// into it.
func TestSeccompFilterDeterministic(t *testing.T) {
	a, err := bpf.Assemble(seccompFilter())
	require.NoError(t, err)
	for range 5 {
		b, err := bpf.Assemble(seccompFilter())
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
}
