package reaper

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/threatmodel"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		Main()
	}
	os.Exit(m.Run())
}

// v2Mount finds the cgroup v2 mount point.
func v2Mount(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, " - cgroup2 "); i >= 0 {
			return strings.Fields(line)[4]
		}
	}
	t.Skip("no cgroup v2 mount on this host")
	return ""
}

// startTasks makes a task root with one task group in which a shell
// double-forks a sleeper and then sleeps itself, and returns the root and
// the two sleepers' pids.
func startTasks(t *testing.T, name string) (string, []int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creates cgroups: needs root; CI runs as root")
	}
	root := filepath.Join(v2Mount(t), fmt.Sprintf("unum-reaper-%s-%d", name, os.Getpid()))
	task := filepath.Join(root, "t1")
	require.NoError(t, os.MkdirAll(task, 0o755))
	t.Cleanup(func() {
		_ = Kill(root, 5*time.Second)
		_ = RemoveTree(root, 5*time.Second)
	})
	dir, err := os.Open(task)
	require.NoError(t, err)
	defer dir.Close()
	sh := exec.Command("/bin/sh", "-c", "(sleep 1000 &) ; exec sleep 1000")
	sh.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd()), Setsid: true}
	require.NoError(t, sh.Start())
	go func() { _ = sh.Wait() }()
	// Wait until the shell has exec'd and its subshell has forked and
	// exited: exactly two sleeps are left.
	var pids []int
	require.Eventually(t, func() bool {
		pids = subtreePids(root)
		if len(pids) != 2 {
			return false
		}
		for _, pid := range pids {
			comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
			if err != nil || strings.TrimSpace(string(comm)) != "sleep" {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond)
	return root, pids
}

// startReaper runs the reaper (this test binary re-executed) on root, and
// the further arguments, and returns the write end of its keepalive pipe.
func startReaper(t *testing.T, root string, more ...string) (*exec.Cmd, *os.File) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	reaper := exec.Command(self, append([]string{Arg, root}, more...)...)
	reaper.Stdin = r
	require.NoError(t, reaper.Start())
	r.Close()
	return reaper, w
}

func requireAlive(t *testing.T, pids []int, why string) {
	t.Helper()
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, 0), why)
	}
}

func requireDead(t *testing.T, pids []int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, pid := range pids {
			st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			if err == nil && !strings.Contains(string(st), ") Z ") {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "tasks survived the reaper")
}

// TestReaperKillsTasksWhenTheNodeDies: once its stdin's writer is gone, as
// when the node process dies, the reaper kills every process of the task
// root, the double-forked one included, and removes the root: at once when
// the node never sent a keepalive, else at the fencing deadline of the
// last one (the tasks run on until then).
func TestReaperKillsTasksWhenTheNodeDies(t *testing.T) {
	t.Run("no keepalive", func(t *testing.T) {
		root, pids := startTasks(t, "dies")
		reaper, w := startReaper(t, root)
		time.Sleep(200 * time.Millisecond)
		requireAlive(t, pids, "a task died while the node lived")
		w.Close() // the node dies
		require.NoError(t, reaper.Wait())
		requireDead(t, pids)
		require.NoFileExists(t, filepath.Join(root, "cgroup.procs"), "the reaper removes the task root")
	})
	t.Run("after the deadline", func(t *testing.T) {
		root, pids := startTasks(t, "dies-late")
		reaper, w := startReaper(t, root)
		_, err := w.Write(Keepalive(1500 * time.Millisecond))
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond)
		died := time.Now()
		w.Close() // the node dies
		time.Sleep(500 * time.Millisecond)
		requireAlive(t, pids, "a task died before its dead node's fencing deadline")
		require.NoError(t, reaper.Wait())
		require.GreaterOrEqual(t, time.Since(died), 1300*time.Millisecond, "killed before the deadline")
		requireDead(t, pids)
		require.NoFileExists(t, filepath.Join(root, "cgroup.procs"), "the reaper removes the task root")
	})
	t.Run("clean stop", func(t *testing.T) {
		root, pids := startTasks(t, "stops")
		reaper, w := startReaper(t, root)
		_, err := w.Write(Keepalive(time.Hour))
		require.NoError(t, err)
		_, err = w.Write(Stop())
		require.NoError(t, err)
		w.Close()
		require.NoError(t, reaper.Wait(), "the reaper waited for the deadline after a clean stop")
		requireDead(t, pids)
	})
}

// pinSyscallAudit pins, as a node does, the enforcement programs with the
// syscall audit layer (a raw_tracepoint/sys_exit link) on root under a
// fresh pin dir, and lets go of its handles as a dying node does: the
// pins stay. It returns the pin dir and the sys_exit link's id.
func pinSyscallAudit(t *testing.T, root string) (string, link.ID) {
	t.Helper()
	if c := kernel.Probe(); !c.CgroupBPF {
		t.Skipf("kernel lacks cgroup BPF: %s", c.Reason)
	} else if !c.SyscallAudit {
		t.Skip(threatmodel.KernelLacks("bpf-syscall-audit") + c.SyscallReason)
	}
	pinDir := filepath.Join("/sys/fs/bpf", filepath.Base(root))
	t.Cleanup(func() { _ = kernel.Remove(pinDir) })
	e, err := kernel.Open(t.Context(), kernel.Config{PinDir: pinDir, Cgroup: root, Syscalls: []uint32{unix.SYS_PTRACE}})
	require.NoError(t, err)
	require.NoError(t, e.Close())
	l, err := link.LoadPinnedLink(filepath.Join(pinDir, "links", "syscall_exit"), nil)
	require.NoError(t, err, "the syscall audit link is pinned")
	defer l.Close()
	info, err := l.Info()
	require.NoError(t, err)
	return pinDir, info.ID
}

// requireLinkGone fails unless the kernel no longer holds link id: its
// pin gone is not enough, the program must be detached.
func requireLinkGone(t *testing.T, id link.ID) {
	t.Helper()
	l, err := link.NewFromID(id)
	if err == nil {
		l.Close()
	}
	require.ErrorIs(t, err, os.ErrNotExist, "the sys_exit link is still attached")
}

// TestReaperRemovesTheDeadNodesPins: a node that dies without a clean
// stop leaves its BPF programs pinned, the syscall audit layer's sys_exit
// link among them (it slows every system call on the machine); once the
// reaper killed the tasks and removed the roots at the fencing deadline,
// it detaches them and removes the pin dir. Until then they stay (the
// tasks still run, enforced). After a clean stop the reaper leaves them to
// the node, which removes them itself.
func TestReaperRemovesTheDeadNodesPins(t *testing.T) {
	t.Run("after the deadline", func(t *testing.T) {
		root, pids := startTasks(t, "pins")
		pinDir, id := pinSyscallAudit(t, root)
		reaper, w := startReaper(t, root, PinsFlag+pinDir)
		_, err := w.Write(Keepalive(time.Second))
		require.NoError(t, err)
		w.Close() // the node dies
		time.Sleep(300 * time.Millisecond)
		requireAlive(t, pids, "a task died before its dead node's fencing deadline")
		require.DirExists(t, pinDir, "the pins went while the tasks ran")
		require.NoError(t, reaper.Wait())
		requireDead(t, pids)
		require.NoFileExists(t, filepath.Join(root, "cgroup.procs"), "the reaper removes the task root")
		require.NoDirExists(t, pinDir, "the reaper removes the dead node's pins")
		requireLinkGone(t, id)
	})
	t.Run("clean stop", func(t *testing.T) {
		root, _ := startTasks(t, "pins-stop")
		pinDir, _ := pinSyscallAudit(t, root)
		reaper, w := startReaper(t, root, PinsFlag+pinDir)
		_, err := w.Write(Stop())
		require.NoError(t, err)
		w.Close()
		require.NoError(t, reaper.Wait())
		require.DirExists(t, pinDir, "after a clean stop the pins are the node's to remove")
	})
	t.Run("not a pin dir", func(t *testing.T) {
		root, pids := startTasks(t, "pins-wrong")
		keep := t.TempDir()
		reaper, w := startReaper(t, root, PinsFlag+keep)
		w.Close()
		require.Error(t, reaper.Wait(), "the reaper removed what is not on a BPF file system")
		requireDead(t, pids)
		require.DirExists(t, keep)
	})
}

// TestReaperKillsTasksOfAStalledNode: a node that stops sending keepalives
// (stopped, hung) for its fencing deadline has its tasks killed, while the
// reaper stays to watch; keepalives in time keep them alive.
func TestReaperKillsTasksOfAStalledNode(t *testing.T) {
	root, pids := startTasks(t, "stalls")
	reaper, w := startReaper(t, root)
	defer func() {
		w.Close()
		_ = reaper.Wait()
	}()
	for range 8 {
		_, err := w.Write(Keepalive(300 * time.Millisecond))
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond)
	}
	requireAlive(t, pids, "a task died while keepalives arrived in time")
	// The node stalls: the pipe stays open, nothing more arrives.
	requireDead(t, pids)
	require.Nil(t, reaper.ProcessState, "the reaper keeps watching a stalled node")
	require.NoError(t, reaper.Process.Signal(syscall.Signal(0)))
}

func TestReaperRefusesWhatIsNotACgroup(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	for _, arg := range []string{"relative/path", "/tmp", "/sys/fs/cgroup/../../etc"} {
		out, err := exec.Command(self, Arg, arg).CombinedOutput()
		require.Error(t, err, "%s", arg)
		require.Contains(t, string(out), "is not a cgroup directory")
	}
}
