package node

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/scheduler/executor/shim"
)

// TestDenialsAggregate: a task looping on a forbidden connect makes one
// event at once and one more per window with the repeats counted; other
// kinds are separate; the per-minute count sees every denial and forgets
// those older than a minute.
func TestDenialsAggregate(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	a := newDenials(10 * time.Second)
	vault := denial{key: denyKey{task: "t1", hook: enforcement.HookConnect4, addr: netip.MustParseAddr("10.0.0.2"), port: 8200, proto: enforcement.ProtoTCP},
		spiffe: "spiffe://td/ns/shop/job/web", identity: 7, family: 2}
	etcd := vault
	etcd.key.port = 2379

	require.True(t, a.add(vault, t0), "the first is recorded at once")
	for i := 1; i <= 5; i++ {
		require.False(t, a.add(vault, t0.Add(time.Duration(i)*time.Second)), "a repeat within the window")
	}
	require.True(t, a.add(etcd, t0.Add(time.Second)), "another destination is another kind")
	require.Empty(t, a.expire(t0.Add(9*time.Second)), "no window is over yet")
	got := a.expire(t0.Add(10 * time.Second))
	require.Len(t, got, 1, "etcd had no repeat: nothing more to record")
	require.Equal(t, 5, got[0].count)
	require.Equal(t, vault.key, got[0].key)
	require.Equal(t, vault.spiffe, got[0].spiffe)
	require.Equal(t, vault.identity, got[0].identity, "a repeat keeps what the kernel judged with")
	require.Equal(t, vault.family, got[0].family)
	require.Equal(t, t0.Add(time.Second), got[0].since, "repeats since the first repeat")
	require.Empty(t, a.expire(t0.Add(11*time.Second)), "both windows ended")
	require.True(t, a.add(vault, t0.Add(12*time.Second)), "a new window starts with a recorded event")

	require.Equal(t, int64(8), a.perMinute(t0.Add(12*time.Second)))
	require.Equal(t, int64(1), a.perMinute(t0.Add(65*time.Second)), "only the denial at +12 s is within the minute")
	require.Equal(t, int64(0), a.perMinute(t0.Add(5*time.Minute)))
}

// TestDenialsBounded: a task scanning destinations cannot grow the
// aggregation without bound: past the cap its denials are counted under
// its task and hook, with no destination.
func TestDenialsBounded(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	a := newDenials(10 * time.Second)
	a.max = 3
	scan := func(port uint16) denial {
		return denial{key: denyKey{task: "t1", hook: enforcement.HookConnect4, addr: netip.MustParseAddr("10.0.0.9"), port: port, proto: enforcement.ProtoTCP}, identity: 7}
	}
	recorded := 0
	for p := uint16(1); p <= 100; p++ {
		if a.add(scan(p), t0) {
			recorded++
		}
	}
	require.Equal(t, 3, recorded, "the first of each kind up to the cap")
	require.Len(t, a.pending, 4, "the cap plus one overflow kind")
	got := a.expire(t0.Add(10 * time.Second))
	require.Len(t, got, 1)
	require.True(t, got[0].key.overflow)
	require.False(t, got[0].key.addr.IsValid())
	require.Equal(t, 97, got[0].count)
}

// TestSyscallDenials: a task looping on a refused call makes one event
// per window like a connect; each call is its own kind. Of the EPERMs the
// syscall audit layer reports, only the seccomp filter's are recorded: a
// socket the sock_create hook refused is that hook's event already.
func TestSyscallDenials(t *testing.T) {
	m, err := shim.NewFilterModel()
	if err != nil {
		t.Skip("no seccomp filter on this architecture: " + err.Error())
	}
	e := &enforcer{model: m}
	for _, tc := range []struct {
		name       string
		nr         uint32
		arg0, arg1 uint64
		errno      unix.Errno
		want       string
	}{
		{"ptrace", unix.SYS_PTRACE, unix.PTRACE_ATTACH, 1, unix.EPERM, "ptrace"},
		{"clone with a user namespace", unix.SYS_CLONE, unix.CLONE_NEWUSER, 0, unix.EPERM, "clone"},
		{"packet socket", unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW, unix.EPERM, "socket"},
		{"ping socket (the sock_create hook's)", unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, unix.EPERM, ""},
		{"clone3 (ENOSYS, not EPERM)", unix.SYS_CLONE3, 0, 0, unix.EPERM, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, ok := e.refusedBySeccomp(kernel.Event{Hook: enforcement.HookSyscall, Syscall: tc.nr,
				Args: [2]uint64{tc.arg0, tc.arg1}, Errno: tc.errno})
			require.Equal(t, tc.want != "", ok)
			require.Equal(t, tc.want, name)
		})
	}

	t0 := time.Unix(1_000_000, 0)
	a := newDenials(10 * time.Second)
	ptrace := denial{key: denyKey{task: "t1", hook: enforcement.HookSyscall, syscall: "ptrace"}, spiffe: "spiffe://td/ns/shop/job/web", identity: 7}
	bpf := ptrace
	bpf.key.syscall = "bpf"
	require.True(t, a.add(ptrace, t0))
	require.False(t, a.add(ptrace, t0.Add(time.Second)))
	require.True(t, a.add(bpf, t0.Add(time.Second)), "another call is another kind")
	got := a.expire(t0.Add(10 * time.Second))
	require.Len(t, got, 1)
	require.Equal(t, "ptrace", got[0].key.syscall)
	require.Equal(t, 1, got[0].count)

	// Only a task's process ran under the filter its shim installed: an
	// EPERM from one outside every task (it bypassed the shim) may be a
	// capability check's or the BPF LSM's, and its record says so.
	require.Equal(t, []string{"refused by the task's seccomp filter"}, denialReasons(ptrace))
	stray := ptrace
	stray.key.task, stray.identity, stray.spiffe = fmt.Sprintf("%s%d", outsideTaskPrefix, 4242), 0, ""
	reasons := denialReasons(stray)
	require.Equal(t, []string{"EPERM on ptrace under the task root, outside any task: the refusal may not be seccomp's"}, reasons)
	require.NotContains(t, strings.Join(reasons, " "), "refused by the task's seccomp filter")
}
