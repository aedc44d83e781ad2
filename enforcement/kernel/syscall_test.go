package kernel

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/scheduler/executor/shim"
	"github.com/unumos/unum/threatmodel"
)

// requireSyscallAudit skips when the kernel cannot load the syscall audit
// layer, in the words the threat model's results check reads.
func requireSyscallAudit(t *testing.T) {
	t.Helper()
	requireCgroupBPF(t)
	if c := Probe(); !c.SyscallAudit {
		t.Skip(threatmodel.KernelLacks("bpf-syscall-audit") + c.SyscallReason)
	}
}

// openWithSyscalls reopens the fixture's enforcer with the syscall audit
// layer watching nrs.
func openWithSyscalls(t *testing.T, f *fixture, nrs []uint32) *Enforcer {
	t.Helper()
	require.NoError(t, f.e.Close())
	e, err := Open(t.Context(), Config{PinDir: f.pinDir, Cgroup: f.taskRoot, Syscalls: nrs})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	f.e = e
	return e
}

// TestSyscallAuditRecordsSeccompRefusals (T-130): a process in the task
// subtree refused a watched call by its seccomp filter gets EPERM and the
// layer reports it (number, arguments, errno, process, the cgroup and its
// identity): sys_exit runs for calls seccomp skipped. A call refused but
// not watched, and the same refusals outside the subtree, give no event.
func TestSyscallAuditRecordsSeccompRefusals(t *testing.T) {
	requireSyscallAudit(t)
	f := newFixture(t)
	e := openWithSyscalls(t, f, []uint32{unix.SYS_PTRACE, unix.SYS_BPF, unix.SYS_MOUNT})
	st, err := e.Stats()
	require.NoError(t, err)
	require.Contains(t, st.Layers, enforcement.LayerSyscallAudit)
	require.Contains(t, st.Programs, syscallLink)
	require.Empty(t, st.SyscallReason)
	f.readEvents()

	sleeper := exec.Command("sleep", "60")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	victim := sleeper.Process.Pid

	// Outside the subtree, under the same filter: refused, not reported.
	outside := filepath.Join(f.root, "outside")
	require.NoError(t, os.MkdirAll(outside, 0o755))
	o := startHelper(t, outside)
	require.Equal(t, "ok", o.do(t, "seccomp"))
	require.Equal(t, "EPERM", o.do(t, "ptrace-attach %d", victim))
	require.Equal(t, "EPERM", o.do(t, "bpf"))
	f.noEvent()

	dir, cg := f.group("task")
	require.NoError(t, e.Bind(cg, enforcement.Binding{Identity: 5}))
	h := f.start(dir)
	require.Equal(t, "ok", h.do(t, "seccomp"))
	require.Equal(t, "EPERM", h.do(t, "ptrace-attach %d", victim))
	ev := f.waitEvent(func(ev Event) bool { return ev.Hook == enforcement.HookSyscall })
	require.Equal(t, Event{CgroupID: cg, Identity: 5, Hook: enforcement.HookSyscall, Syscall: unix.SYS_PTRACE,
		Args: [2]uint64{unix.PTRACE_ATTACH, uint64(victim)}, Errno: unix.EPERM, PID: uint32(h.cmd.Process.Pid), Comm: ev.Comm}, ev)
	require.NotEmpty(t, ev.Comm)
	mnt := t.TempDir()
	require.Equal(t, "EPERM", h.do(t, "mount %s", mnt))
	ev = f.waitEvent(func(ev Event) bool { return ev.Hook == enforcement.HookSyscall })
	require.Equal(t, uint32(unix.SYS_MOUNT), ev.Syscall)
	// keyctl is refused by the filter but not watched.
	require.Equal(t, "EPERM", h.do(t, "keyctl"))
	f.noEvent()

	// A cgroup of the subtree without a binding: reported with identity 0.
	sdir, scg := f.group("stray")
	s := f.start(sdir)
	require.Equal(t, "ok", s.do(t, "seccomp"))
	require.Equal(t, "EPERM", s.do(t, "bpf"))
	ev = f.waitEvent(func(ev Event) bool { return ev.Hook == enforcement.HookSyscall })
	require.Equal(t, scg, ev.CgroupID)
	require.Equal(t, enforcement.IdentityNum(0), ev.Identity)
	require.Equal(t, uint32(unix.SYS_BPF), ev.Syscall)
}

// TestSyscallAuditWithTheShimsList: the shim's list loads as the watched
// set, and reopening (an agent restart) keeps one link and exactly the
// new set; without Syscalls the layer and its pin go.
func TestSyscallAuditWithTheShimsList(t *testing.T) {
	requireSyscallAudit(t)
	m, err := shim.NewFilterModel()
	require.NoError(t, err)
	f := newFixture(t)
	e := openWithSyscalls(t, f, m.Audited())
	var n int
	var k uint32
	var v uint8
	it := e.sys.AuditedSyscalls.Iterate()
	for it.Next(&k, &v) {
		_, _, refused := m.Refused(k, 0, 0)
		if k != unix.SYS_CLONE && k != unix.SYS_SOCKET && k != unix.SYS_PERSONALITY {
			require.True(t, refused, "watched %d is refused by the filter", k)
		}
		n++
	}
	require.NoError(t, it.Err())
	require.Equal(t, len(m.Audited()), n)
	require.NotContains(t, m.Audited(), uint32(unix.SYS_CLONE3), "clone3's ENOSYS is the C library's fallback path, not watched")

	e = openWithSyscalls(t, f, []uint32{unix.SYS_BPF})
	n = 0
	it = e.sys.AuditedSyscalls.Iterate()
	for it.Next(&k, &v) {
		require.Equal(t, uint32(unix.SYS_BPF), k)
		n++
	}
	require.Equal(t, 1, n)

	e = openWithSyscalls(t, f, nil)
	st, err := e.Stats()
	require.NoError(t, err)
	require.NotContains(t, st.Layers, enforcement.LayerSyscallAudit)
	require.Equal(t, "not asked for", st.SyscallReason)
	_, err = os.Stat(filepath.Join(linksDir(f.pinDir), syscallLink))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestFailedOpenLetsGoOfTheSyscallLink: an Open that fails past the
// refusals (here the watched set does not fit its map) leaves no
// raw_tracepoint/sys_exit link an earlier run pinned: the node runs
// degraded and reads no events, and the link would slow every system
// call on the machine.
func TestFailedOpenLetsGoOfTheSyscallLink(t *testing.T) {
	requireSyscallAudit(t)
	f := newFixture(t)
	openWithSyscalls(t, f, []uint32{unix.SYS_PTRACE})
	pin := filepath.Join(linksDir(f.pinDir), syscallLink)
	l, err := link.LoadPinnedLink(pin, nil)
	require.NoError(t, err)
	info, err := l.Info()
	require.NoError(t, err)
	l.Close()
	require.NoError(t, f.e.Close())

	tooMany := make([]uint32, 513) // the map holds 512
	for i := range tooMany {
		tooMany[i] = uint32(i)
	}
	_, err = Open(t.Context(), Config{PinDir: f.pinDir, Cgroup: f.taskRoot, Syscalls: tooMany})
	require.ErrorContains(t, err, "audit syscall")
	require.NoFileExists(t, pin)
	gone, err := link.NewFromID(info.ID)
	if err == nil {
		gone.Close()
	}
	require.ErrorIs(t, err, os.ErrNotExist, "the sys_exit link is still attached")
	// The next Open starts from scratch.
	e, err := Open(t.Context(), Config{PinDir: f.pinDir, Cgroup: f.taskRoot, Syscalls: []uint32{unix.SYS_PTRACE}})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	f.e = e
	require.FileExists(t, pin)
}

// TestRegsOffsetsMatchKernelBTF: the pt_regs offsets the sys_exit program
// reads at are the running kernel's.
func TestRegsOffsetsMatchKernelBTF(t *testing.T) {
	if regsNr == 0 {
		t.Skip(threatmodel.KernelLacks("bpf-syscall-audit") + "no pt_regs layout for this architecture: the layer does not load")
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		// Only the probe may excuse this test (the results check reads
		// the marker): where the layer loads, its offsets must be checked.
		if c := Probe(); !c.SyscallAudit {
			t.Skip(threatmodel.KernelLacks("bpf-syscall-audit") + c.SyscallReason)
		}
		t.Fatalf("the syscall audit layer loads but there is no kernel BTF to check its pt_regs offsets against: %v", err)
	}
	var regs *btf.Struct
	require.NoError(t, spec.TypeByName("pt_regs", &regs))
	for i, want := range []uint32{regsNr, regsArg0, regsArg1} {
		off, ok := memberOffset(regs, regsFields()[i])
		require.True(t, ok, "pt_regs has no %s", regsFields()[i])
		require.Equal(t, want, off, regsFields()[i])
	}
}

// memberOffset finds name ("x" or "x[i]") in st, looking through
// anonymous structs and unions.
func memberOffset(st btf.Type, name string) (uint32, bool) {
	var members []btf.Member
	switch c := st.(type) {
	case *btf.Struct:
		members = c.Members
	case *btf.Union:
		members = c.Members
	default:
		return 0, false
	}
	base, idx := name, -1
	if i := len(name) - 1; i > 0 && name[i] == ']' {
		for j := i; j >= 0; j-- {
			if name[j] == '[' {
				base = name[:j]
				idx = 0
				for _, c := range name[j+1 : i] {
					idx = idx*10 + int(c-'0')
				}
				break
			}
		}
	}
	for _, m := range members {
		if m.Name == "" {
			if off, ok := memberOffset(btf.UnderlyingType(m.Type), name); ok {
				return uint32(m.Offset.Bytes()) + off, true
			}
			continue
		}
		if m.Name != base {
			continue
		}
		off := uint32(m.Offset.Bytes())
		if idx >= 0 {
			arr, ok := btf.UnderlyingType(m.Type).(*btf.Array)
			if !ok {
				return 0, false
			}
			sz, err := btf.Sizeof(arr.Type)
			if err != nil {
				return 0, false
			}
			off += uint32(idx * sz)
		}
		return off, true
	}
	return 0, false
}

// BenchmarkSyscallAuditCost measures what the layer costs every thread of
// the machine: a getppid loop with no program on sys_exit ("detached")
// and with the layer attached ("attached"). The difference is the slow
// syscall path the tracepoint forces plus the program's early exit.
func BenchmarkSyscallAuditCost(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if c := Probe(); !c.SyscallAudit {
		b.Skip(c.SyscallReason)
	}
	b.Run("detached", func(b *testing.B) {
		for b.Loop() {
			unix.Getppid()
		}
	})
	b.Run("attached", func(b *testing.B) {
		l := attachForBench(b)
		defer l()
		for b.Loop() {
			unix.Getppid()
		}
	})
}

// attachForBench attaches the layer (unpinned, private maps) and returns
// its release.
func attachForBench(tb testing.TB) func() {
	tb.Helper()
	spec, err := loadSyscallSpec()
	require.NoError(tb, err)
	var objs syscallObjects
	require.NoError(tb, spec.LoadAndAssign(&objs, nil))
	l, err := attachRawSysExit(objs.SysExit)
	require.NoError(tb, err)
	return func() { l.Close(); objs.Close() }
}
