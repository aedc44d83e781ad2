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

// TestReaperKillsTasksWhenTheNodeDies: the reaper (this test binary
// re-executed) kills every process of the task root, double-forked ones
// included, once its stdin's writer is gone, as when the node process dies.
func TestReaperKillsTasksWhenTheNodeDies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creates cgroups: needs root; CI runs as root")
	}
	root := filepath.Join(v2Mount(t), fmt.Sprintf("unum-reaper-test-%d", os.Getpid()))
	task := filepath.Join(root, "t1")
	require.NoError(t, os.MkdirAll(task, 0o755))
	t.Cleanup(func() {
		_ = Kill(root, 5*time.Second)
		_ = RemoveTree(root, 5*time.Second)
	})
	dir, err := os.Open(task)
	require.NoError(t, err)
	defer dir.Close()
	// A task whose shell double-forks a sleeper and then sleeps itself.
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

	self, err := os.Executable()
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	reaper := exec.Command(self, Arg, root)
	reaper.Stdin = r
	require.NoError(t, reaper.Start())
	r.Close()
	// The reaper waits while its writer lives.
	time.Sleep(200 * time.Millisecond)
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, 0), "a task died while the node lived")
	}
	w.Close() // the node dies
	require.NoError(t, reaper.Wait())
	require.NoFileExists(t, filepath.Join(root, "cgroup.procs"), "the reaper removes the task root")
	for _, pid := range pids {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		require.True(t, err != nil || strings.Contains(string(st), ") Z "), "pid %d survived the reaper", pid)
	}
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
