package cgroup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// newHostManager builds a Manager on this machine's real hierarchy under a
// node name unique to the test, and removes its roots afterwards.
func newHostManager(t *testing.T) (*Manager, Layout) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups in the host's hierarchy")
	}
	l, err := DetectHost()
	require.NoError(t, err)
	var b [4]byte
	_, _ = rand.Read(b[:])
	m, err := New(l, "test-"+hex.EncodeToString(b[:]))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := m.Sweep(ctx)
		require.NoError(t, err)
		require.NoError(t, m.RemoveRoots())
		for _, d := range append([]string{m.v2Root}, rootsOf(m)...) {
			require.NoDirExists(t, d)
		}
	})
	return m, l
}

func rootsOf(m *Manager) []string {
	var out []string
	for _, r := range m.v1Roots {
		out = append(out, r)
	}
	return out
}

func TestHostReport(t *testing.T) {
	m, l := newHostManager(t)
	r := m.Report()
	require.True(t, r.Grouping.Enforced)
	require.Equal(t, "cgroup v2 "+filepath.Join(l.V2.Own, "unum-"+m.node), r.Grouping.How)
	for c, e := range map[string]Enforcement{"cpu": r.CPU, "memory": r.Memory, "pids": r.Pids} {
		v1, hasV1 := l.V1For(c)
		switch {
		case l.HasV2(c):
			require.True(t, e.Enforced, c)
			require.Contains(t, e.How, "cgroup v2 ", c)
		case hasV1:
			require.True(t, e.Enforced, c)
			require.Contains(t, e.How, "cgroup v1 "+c, c)
			require.Contains(t, e.How, filepath.Join(v1.Own, "unum-"+m.node), c)
		default:
			require.False(t, e.Enforced, c)
			require.Contains(t, e.How, "not enforced", c)
		}
	}
	lines := r.Lines()
	require.Len(t, lines, 4)
	require.True(t, strings.HasPrefix(lines[1], "cpu: "))
	t.Logf("report on this host:\n%s", strings.Join(lines, "\n"))
}

func TestReportNotEnforced(t *testing.T) {
	// A layout with v2 only and no controllers: every limit says why it is
	// not enforced; no file system access is needed to build the report.
	m := &Manager{v2Root: "/sys/fs/cgroup/unum-n1", v1Roots: map[string]string{}}
	r := m.buildReport(map[string]string{"memory": "enable in X: permission denied"})
	require.Equal(t, []string{
		"grouping: cgroup v2 /sys/fs/cgroup/unum-n1",
		"cpu: not enforced (no cpu controller in cgroup v2 or v1)",
		"memory: not enforced (enable in X: permission denied)",
		"pids: not enforced (no pids controller in cgroup v2 or v1)",
	}, r.Lines())
	require.False(t, r.CPU.Enforced || r.Memory.Enforced || r.Pids.Enforced)
}

func TestNewRejectsBadNames(t *testing.T) {
	l := Layout{V2: V2Mount{Mount: "/sys/fs/cgroup", Own: "/sys/fs/cgroup"}}
	for _, n := range []string{"", "../x", "a/b", "A", strings.Repeat("a", 64)} {
		_, err := New(l, n)
		require.ErrorContains(t, err, "not a valid path element", n)
	}
	_, err := New(Layout{}, "n1")
	require.ErrorIs(t, err, ErrNoV2)
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

func TestCreateAppliesLimits(t *testing.T) {
	m, _ := newHostManager(t)
	_, err := m.Create("BAD", Limits{})
	require.ErrorContains(t, err, "not [a-z0-9-]")
	g, err := m.Create("t1", Limits{CPUMillis: 250, MemoryBytes: 64 << 20, Pids: 100})
	require.NoError(t, err)
	defer func() { require.NoError(t, g.Remove(context.Background())) }()
	_, err = m.Create("t1", Limits{})
	require.ErrorIs(t, err, os.ErrExist, "a second group with the same id")

	if d, ok := m.v1Roots["cpu"]; ok {
		require.Equal(t, "100000", readTrim(t, filepath.Join(d, "t1", "cpu.cfs_period_us")))
		require.Equal(t, "25000", readTrim(t, filepath.Join(d, "t1", "cpu.cfs_quota_us")))
	} else if m.Report().CPU.Enforced {
		require.Equal(t, "25000 100000", readTrim(t, filepath.Join(g.V2Dir(), "cpu.max")))
	}
	if d, ok := m.v1Roots["memory"]; ok {
		require.Equal(t, strconv.Itoa(64<<20), readTrim(t, filepath.Join(d, "t1", "memory.limit_in_bytes")))
		if _, err := os.Stat(filepath.Join(d, "t1", "memory.memsw.limit_in_bytes")); err == nil {
			require.Equal(t, strconv.Itoa(64<<20), readTrim(t, filepath.Join(d, "t1", "memory.memsw.limit_in_bytes")))
		}
	} else if m.Report().Memory.Enforced {
		require.Equal(t, strconv.Itoa(64<<20), readTrim(t, filepath.Join(g.V2Dir(), "memory.max")))
	}
	if d, ok := m.v1Roots["pids"]; ok {
		require.Equal(t, "100", readTrim(t, filepath.Join(d, "t1", "pids.max")))
	} else if m.Report().Pids.Enforced {
		require.Equal(t, "100", readTrim(t, filepath.Join(g.V2Dir(), "pids.max")))
	}
	require.Len(t, g.V1Procs(), len(m.v1Roots))
}

// startIn starts a shell command born in the group's v2 cgroup and joined to
// its v1 groups the way the task shim does it (here by the shell itself).
func startIn(t *testing.T, g *Group, script string) *exec.Cmd {
	t.Helper()
	join := ""
	for _, p := range g.V1Procs() {
		join += "echo $$ > " + p + "; "
	}
	cmd := exec.Command("/bin/sh", "-c", join+script)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func TestProcessBornInGroup(t *testing.T) {
	m, l := newHostManager(t)
	g, err := m.Create("born", Limits{MemoryBytes: 32 << 20})
	require.NoError(t, err)
	cmd := startIn(t, g, "exec sleep 100")
	pid := cmd.Process.Pid
	require.Eventually(t, func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
		if err != nil {
			return false
		}
		s := string(b)
		rel := strings.TrimPrefix(g.V2Dir(), l.V2.Mount)
		if !strings.Contains(s, "0::"+rel+"\n") {
			return false
		}
		for _, d := range g.v1Dirs {
			for _, v1 := range l.V1 {
				if strings.HasPrefix(d, v1.Mount+"/") && !strings.Contains(s, ":"+strings.TrimPrefix(d, v1.Mount)+"\n") {
					return false
				}
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond)
	pids, err := g.Pids()
	require.NoError(t, err)
	require.Equal(t, []int{pid}, pids)
	st, err := g.Stats()
	require.NoError(t, err)
	require.NotZero(t, st.CPUNanos, "a process ran in the group")
	if m.Report().Memory.Enforced {
		require.NotZero(t, st.MemoryBytes)
	}

	require.NoError(t, g.Remove(context.Background()))
	require.Error(t, cmd.Wait(), "Remove kills first")
	for _, d := range append([]string{g.V2Dir()}, g.v1Dirs...) {
		require.NoDirExists(t, d)
	}
}

func TestKillForkBomb(t *testing.T) {
	m, _ := newHostManager(t)
	g, err := m.Create("bomb", Limits{Pids: 200})
	require.NoError(t, err)
	// Fifty sleeps, each double-forked so that its parent is gone and it is
	// reparented away from the shell: only the cgroup still ties them to the task.
	startIn(t, g, "for i in $(seq 50); do (sleep 1000 &) ; done; exec sleep 1000")
	require.Eventually(t, func() bool {
		p, err := g.Pids()
		return err == nil && len(p) >= 51
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, g.Kill())
	require.Eventually(t, func() bool {
		p, err := g.Pids()
		return err == nil && len(p) == 0
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, g.Remove(context.Background()))
}

func TestFreezeKillFallback(t *testing.T) {
	m, _ := newHostManager(t)
	g, err := m.Create("freeze", Limits{})
	require.NoError(t, err)
	startIn(t, g, "for i in $(seq 10); do (sleep 1000 &) ; done; exec sleep 1000")
	require.Eventually(t, func() bool {
		p, err := g.Pids()
		return err == nil && len(p) >= 11
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, g.freezeKill())
	require.Eventually(t, func() bool {
		p, err := g.Pids()
		return err == nil && len(p) == 0
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, "0", readTrim(t, filepath.Join(g.V2Dir(), "cgroup.freeze")), "thawed after the kill")
	require.NoError(t, g.Remove(context.Background()))
}

func TestSweepRemovesLeftovers(t *testing.T) {
	m, l := newHostManager(t)
	g, err := m.Create("left", Limits{MemoryBytes: 16 << 20})
	require.NoError(t, err)
	cmd := startIn(t, g, "exec sleep 1000")
	// A new Manager for the same node (the node restarted) finds and removes it.
	m2, err := New(l, m.node)
	require.NoError(t, err)
	ids, err := m2.Sweep(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"left"}, ids)
	require.Error(t, cmd.Wait())
	for _, d := range append([]string{g.V2Dir()}, g.v1Dirs...) {
		require.NoDirExists(t, d)
	}
}

// startWaited starts a command in the group; the returned channel owns its
// Wait and delivers the result.
func startWaited(t *testing.T, g *Group) <-chan error {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	waited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(waited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-waited })
	return done
}

// TestCloneIntoKilledGroup records the kernel behaviour that makes the
// executor use a new group for every run of a task: after cgroup.kill, a
// child cloned into the same group may be killed at birth (Linux 6.18
// does); a new group with the same name works.
func TestCloneIntoKilledGroup(t *testing.T) {
	m, _ := newHostManager(t)
	g, err := m.Create("again", Limits{})
	require.NoError(t, err)
	first := startWaited(t, g)
	require.NoError(t, g.Kill())
	select {
	case err := <-first:
		require.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Kill did not kill")
	}
	second := startWaited(t, g)
	select {
	case <-second:
		t.Log("this kernel kills a child cloned into a killed group")
	case <-time.After(500 * time.Millisecond):
		t.Log("this kernel lets a child into a killed group")
	}
	require.NoError(t, g.Remove(context.Background()))

	g, err = m.Create("again", Limits{})
	require.NoError(t, err)
	third := startWaited(t, g)
	select {
	case err := <-third:
		t.Fatalf("a child of a new group died: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	require.NoError(t, g.Remove(context.Background()))
}

// TestHostV2Path: the task root as /proc/PID/cgroup names it, which is what
// the agent attests tasks by: a process in the root reads exactly that.
func TestHostV2Path(t *testing.T) {
	m, _ := newHostManager(t)
	g, err := m.Create("v2path", Limits{})
	require.NoError(t, err)
	defer func() { require.NoError(t, g.Remove(context.Background())) }()
	cmd := exec.Command("/bin/cat", "/proc/self/cgroup")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}
	out, err := cmd.Output()
	require.NoError(t, err)
	require.Contains(t, strings.Split(string(out), "\n"), "0::"+m.V2Path()+"/v2path")
}

// TestV2PathUnderABindMount: where the hierarchy is mounted from a subtree,
// /proc/PID/cgroup names paths from the hierarchy's root, not the mount's.
func TestV2PathUnderABindMount(t *testing.T) {
	m := &Manager{layout: Layout{V2: V2Mount{Mount: "/sys/fs/cgroup", Root: "/pods/p1"}}, v2Root: "/sys/fs/cgroup/app/unum-n1"}
	require.Equal(t, "/pods/p1/app/unum-n1", m.V2Path())
	m.layout.V2.Root = "/"
	require.Equal(t, "/app/unum-n1", m.V2Path())
}
