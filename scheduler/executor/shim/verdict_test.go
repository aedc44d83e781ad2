//go:build amd64 || arm64

package shim

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestFilterModel: the model answers as the filter does, names the call,
// and watches exactly the calls the filter may refuse with EPERM.
func TestFilterModel(t *testing.T) {
	m, err := NewFilterModel()
	require.NoError(t, err)
	for _, tc := range []struct {
		name       string
		nr         uint32
		arg0, arg1 uint64
		want       string // "" when the filter allows it
		errno      unix.Errno
	}{
		{"ptrace", unix.SYS_PTRACE, unix.PTRACE_ATTACH, 1, "ptrace", unix.EPERM},
		{"bpf", unix.SYS_BPF, 0, 0, "bpf", unix.EPERM},
		{"mount", unix.SYS_MOUNT, 0, 0, "mount", unix.EPERM},
		{"clone3", unix.SYS_CLONE3, 0, 0, "clone3", unix.ENOSYS},
		{"clone with a user namespace", unix.SYS_CLONE, unix.CLONE_NEWUSER, 0, "clone", unix.EPERM},
		{"clone of a thread", unix.SYS_CLONE, unix.CLONE_VM | unix.CLONE_THREAD, 0, "", 0},
		{"packet socket", unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW, "socket", unix.EPERM},
		{"raw IPv4 socket", unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_RAW | unix.SOCK_CLOEXEC, "socket", unix.EPERM},
		// Refused by the BPF sock_create hook, not by the filter.
		{"ping socket", unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, "", 0},
		{"personality ADDR_NO_RANDOMIZE", unix.SYS_PERSONALITY, 0x0040000, 0, "personality", unix.EPERM},
		{"personality query", unix.SYS_PERSONALITY, 0xffffffff, 0, "", 0},
		{"getpid", unix.SYS_GETPID, 0, 0, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, errno, ok := m.Refused(tc.nr, tc.arg0, tc.arg1)
			require.Equal(t, tc.want != "", ok)
			require.Equal(t, tc.want, name)
			require.Equal(t, tc.errno, errno)
		})
	}
	audited := m.Audited()
	require.NotContains(t, audited, uint32(unix.SYS_CLONE3))
	for _, nr := range []uint32{unix.SYS_PTRACE, unix.SYS_BPF, unix.SYS_MOUNT, unix.SYS_CLONE, unix.SYS_SOCKET, unix.SYS_PERSONALITY} {
		require.Contains(t, audited, nr)
	}
	// Every denial the filter answers with EPERM is watched.
	for _, d := range deniedSyscalls() {
		if d.errno == unix.EPERM {
			require.Contains(t, audited, d.nr, d.name)
		}
	}
}
