package attest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/internal/pidsteer"
)

// cgroupTree is a real cgroup v2 group made for one test, under which the
// test creates a task root and task groups. It is removed, with anything
// still running in it, when the test ends.
type cgroupTree struct {
	dir string // directory of the group in the v2 mount
	rel string // its cgroup v2 path, as /proc/PID/cgroup names it
}

// newCgroupTree needs root and a cgroup v2 mount; it skips only when not
// root (CI runs as root, so the task paths are always exercised there).
func newCgroupTree(t *testing.T) *cgroupTree {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups and move processes between them")
	}
	mount, mountRoot := cgroup2Mount(t)
	name := fmt.Sprintf("unum-attest-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	c := &cgroupTree{dir: filepath.Join(mount, name), rel: path.Join(mountRoot, name)}
	require.NoError(t, os.Mkdir(c.dir, 0o755))
	t.Cleanup(func() { removeCgroupTree(t, c.dir) })
	return c
}

// cgroup2Mount returns the mount point of the cgroup v2 hierarchy (on a
// hybrid host /sys/fs/cgroup/unified) and the cgroup path it shows.
func cgroup2Mount(t *testing.T) (mount, root string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		fields := strings.Fields(pre)
		require.GreaterOrEqual(t, len(fields), 5, "mountinfo line %q", sc.Text())
		return fields[4], fields[3]
	}
	require.NoError(t, sc.Err())
	t.Fatal("no cgroup v2 hierarchy is mounted")
	return "", ""
}

// removeCgroupTree kills whatever still runs below dir and removes its groups,
// deepest first.
func removeCgroupTree(t *testing.T, dir string) {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		t.Errorf("kill cgroup %s: %v", dir, err)
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := unix.Rmdir(dirs[i])
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				t.Errorf("remove cgroup %s: %v", dirs[i], err)
				break
			}
			time.Sleep(10 * time.Millisecond) // killed processes are still exiting
		}
	}
}

// mkdir creates the group sub (a slash-separated path) below the tree and
// returns its directory.
func (c *cgroupTree) mkdir(t *testing.T, sub string) string {
	t.Helper()
	dir := filepath.Join(c.dir, sub)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// openGroup returns an fd for exec.Cmd's SysProcAttr.CgroupFD, closed when
// the test ends.
func openGroup(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// inGroup starts the child directly in the group at dir (clone3 with
// CLONE_INTO_CGROUP), so it never runs a single instruction elsewhere.
func inGroup(t *testing.T, dir string, cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: openGroup(t, dir), Credential: cred}
}

func moveTo(t *testing.T, dir string, pid int) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0))
}

// A process started in ROOT/TASK, or in a group below it, is attested as
// TASK; the root itself, sibling groups that are not task ids, and processes
// elsewhere have no task. Without WithTaskCgroups nothing has a task.
func TestAttestTask(t *testing.T) {
	tree := newCgroupTree(t)
	root := tree.rel + "/node1"
	webDir := tree.mkdir(t, "node1/web-0")
	subDir := tree.mkdir(t, "node1/web-0/worker")
	rootDir := tree.mkdir(t, "node1")
	oddDir := tree.mkdir(t, "node1/Not_A_Task")
	self, err := os.Executable()
	require.NoError(t, err)

	for _, mode := range pidfdModes {
		t.Run(mode.name, func(t *testing.T) {
			for _, tt := range []struct {
				name, dir, want string
			}{
				{"task group", webDir, "web-0"},
				{"below the task group", subDir, "web-0"},
				{"task root itself", rootDir, ""},
				{"not a task id", oddDir, ""},
				{"outside the tree", "", ""},
			} {
				t.Run(tt.name, func(t *testing.T) {
					h := newHarness(t, mode.usePeerPidfd)
					h.creds = Credentials(WithTaskCgroups(root)).(*transportCreds)
					h.creds.usePeerPidfd = mode.usePeerPidfd
					var attr *syscall.SysProcAttr
					if tt.dir != "" {
						attr = inGroup(t, tt.dir, nil)
					}
					h.startAttr(self, "hold", attr)
					c, p := h.accept()
					readByte(t, c, 'c')
					proc, err := p.Attest()
					require.NoError(t, err)
					require.Equal(t, tt.want, proc.Task)
				})
			}
		})
	}

	t.Run("task attestation off", func(t *testing.T) {
		h := newHarness(t, true)
		h.startAttr(self, "hold", inGroup(t, webDir, nil))
		c, p := h.accept()
		readByte(t, c, 'c')
		proc, err := p.Attest()
		require.NoError(t, err)
		require.Empty(t, proc.Task)
	})
}

// T-096: the cgroup is read on every Attest, not captured at connect: a
// process that root moves out of its task's group has no task on the same
// connection's next attestation, and one moved into another task's group is
// that task from then on (only root can do either).
func TestTaskReadOnEveryAttest(t *testing.T) {
	tree := newCgroupTree(t)
	root := tree.rel + "/node1"
	webDir := tree.mkdir(t, "node1/web-0")
	dbDir := tree.mkdir(t, "node1/db-1")
	self, err := os.Executable()
	require.NoError(t, err)

	h := newHarness(t, true)
	h.creds = Credentials(WithTaskCgroups(root)).(*transportCreds)
	cmd, _ := h.startAttr(self, "hold", inGroup(t, webDir, nil))
	c, p := h.accept()
	readByte(t, c, 'c')
	proc, err := p.Attest()
	require.NoError(t, err)
	require.Equal(t, "web-0", proc.Task)

	moveTo(t, tree.dir, cmd.Process.Pid)
	proc, err = p.Attest()
	require.NoError(t, err)
	require.Empty(t, proc.Task, "moved out of the task group")

	moveTo(t, dbDir, cmd.Process.Pid)
	proc, err = p.Attest()
	require.NoError(t, err)
	require.Equal(t, "db-1", proc.Task, "moved into another task's group")
}

// T-095: a task that connects and exits is gone, zombie or reaped, and its
// recycled pid is not trusted: when the pid is taken by a new process in
// another task's group (forced with ns_last_pid), an attestation by pid alone
// would read that group; the pidfd check refuses it.
func TestTaskPidReuse(t *testing.T) {
	tree := newCgroupTree(t)
	root := tree.rel + "/node1"
	webDir := tree.mkdir(t, "node1/web-0")
	dbDir := tree.mkdir(t, "node1/db-1")
	self, err := os.Executable()
	require.NoError(t, err)

	for _, mode := range pidfdModes {
		t.Run(mode.name, func(t *testing.T) {
			h := newHarness(t, mode.usePeerPidfd)
			h.creds = Credentials(WithTaskCgroups(root)).(*transportCreds)
			h.creds.usePeerPidfd = mode.usePeerPidfd
			cmd, stdin := h.startAttr(self, "hold", inGroup(t, webDir, nil))
			c, p := h.accept()
			readByte(t, c, 'c')
			proc, err := p.Attest()
			require.NoError(t, err)
			require.Equal(t, "web-0", proc.Task)
			pid := cmd.Process.Pid

			require.NoError(t, stdin.Close())
			require.Eventually(t, func() bool {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
				return err == nil && strings.Contains(string(b), "State:\tZ")
			}, 10*time.Second, 5*time.Millisecond)
			_, err = p.Attest()
			require.ErrorIs(t, err, ErrProcessGone, "zombie")
			require.NoError(t, cmd.Wait())
			_, err = p.Attest()
			require.ErrorIs(t, err, ErrProcessGone, "reaped")

			// The discriminating case: with the pid recycled, the /proc reads
			// succeed and describe the other task's process; only the pidfd
			// tells them apart.
			victim := pidsteer.Start(t, pid, func() *exec.Cmd {
				v := exec.Command(self)
				v.Env = append(os.Environ(), envHelper+"=wait", "GORACE=atexit_sleep_ms=0")
				v.SysProcAttr = inGroup(t, dbDir, nil)
				// The helper waits until its stdin closes: when the test
				// ends (the pipe's end is the command's, closed by Wait).
				_, err := v.StdinPipe()
				require.NoError(t, err)
				return v
			})
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", victim.Process.Pid))
			require.NoError(t, err)
			require.Contains(t, string(b), "0::"+root+"/db-1\n", "the recycled pid is now another task's process")
			_, err = p.Attest()
			require.ErrorIs(t, err, ErrProcessGone, "recycled pid in another task's group")
		})
	}
}
