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

	"github.com/stretchr/testify/require"
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

// startReaper runs the reaper (this test binary re-executed) on root and
// returns the write end of its keepalive pipe.
func startReaper(t *testing.T, root string) (*exec.Cmd, *os.File) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	reaper := exec.Command(self, Arg, root)
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
