package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/scheduler/cgroup"
	"github.com/unumos/unum/scheduler/executor/shim"
)

// copyExec copies an executable into dir with the mode, owned by root.
func copyExec(t *testing.T, src, dir string, mode os.FileMode) string {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	dst := filepath.Join(dir, filepath.Base(src))
	require.NoError(t, os.WriteFile(dst, b, 0o755))
	require.NoError(t, os.Chown(dst, 0, 0))
	require.NoError(t, os.Chmod(dst, mode))
	return dst
}

// asUID runs a command as uid without no_new_privs: the control that shows
// what a setuid binary does when nothing stops it.
func asUID(t *testing.T, uid uint32, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

// T-090: a task cannot become root through a setuid binary.
func TestAttackSetuidCannotRegainRoot(t *testing.T) {
	dir := traversable(t)
	// Landlock would refuse to exec the copies outside the system folders:
	// let it, so the test shows what no_new_privs alone does.
	h := start(t, func(c *Config) { c.ReadOnlyPaths = []string{dir} })
	suidID := copyExec(t, "/usr/bin/id", dir, os.ModeSetuid|0o755)
	suidSh := copyExec(t, "/usr/bin/dash", dir, os.ModeSetuid|0o755)
	// The control: without no_new_privs these copies make an unprivileged
	// uid root, so the file system honours setuid and the attack is real.
	require.Equal(t, "0", asUID(t, uint32(DefaultUIDHi), suidID, "-u"), "setuid is not honoured here; the attack test proves nothing")
	require.Equal(t, "0", asUID(t, uint32(DefaultUIDHi), suidSh, "-p", "-c", "id -u"))

	code, out, _ := runOnce(t, h.e, sh("suid", fmt.Sprintf(
		`%s -u; %s -p -c 'id -u'; su -c 'id -u' root </dev/null >/dev/null 2>&1; echo su=$?; grep -E '^(NoNewPrivs|CapBnd|CapPrm)' /proc/self/status`,
		suidID, suidSh)))
	require.Equal(t, 0, code)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 6, out)
	uid, err := strconv.ParseUint(lines[0], 10, 32)
	require.NoError(t, err)
	require.NotZero(t, uid)
	require.Equal(t, lines[0], lines[1], "a setuid shell stays the task uid")
	require.NotEqual(t, "su=0", lines[2])
	require.Equal(t, "CapPrm:\t0000000000000000", lines[3])
	require.Equal(t, "CapBnd:\t0000000000000000", lines[4])
	require.Equal(t, "NoNewPrivs:\t1", lines[5])
}

// T-091: a task cannot move itself out of its cgroups.
func TestAttackCgroupEscape(t *testing.T) {
	h := start(t, nil)
	l, err := cgroup.DetectHost()
	require.NoError(t, err)
	targets := []string{
		filepath.Join(l.V2.Mount, "cgroup.procs"),
		filepath.Join(l.V2.Own, "cgroup.procs"),
		filepath.Join(h.m.Root(), "cgroup.procs"),
	}
	for _, m := range l.V1 {
		targets = append(targets, filepath.Join(m.Mount, "cgroup.procs"), filepath.Join(m.Own, "cgroup.procs"))
	}
	var script strings.Builder
	for _, p := range targets {
		fmt.Fprintf(&script, "if echo $$ > %s 2>/dev/null; then echo escaped %s; fi\n", p, p)
	}
	// Nor make a child group of its own to move into.
	fmt.Fprintf(&script, "mkdir %s/sub 2>/dev/null && echo made a group\n", filepath.Join(h.m.Root(), "esc"))
	script.WriteString("cat /proc/self/cgroup\n")
	code, out, _ := runOnce(t, h.e, sh("esc", script.String()))
	require.Equal(t, 0, code)
	require.NotContains(t, out, "escaped")
	require.NotContains(t, out, "made a group")
	rel := strings.TrimPrefix(filepath.Join(h.m.Root(), "esc"), l.V2.Mount)
	require.Contains(t, out, "0::"+rel+"\n", "still in its v2 group")
	r := h.e.Limits()
	if strings.HasPrefix(r.Memory.How, "cgroup v1 memory ") {
		memRoot := strings.Fields(r.Memory.How)[3]
		v1, _ := l.V1For("memory")
		require.Contains(t, out, ":memory:"+strings.TrimPrefix(filepath.Join(memRoot, "esc"), v1.Mount)+"\n", "still in its v1 memory group")
	}
}

// T-092: a task cannot signal, ptrace or read the environment of another
// task's process.
func TestAttackOtherTaskProcess(t *testing.T) {
	helperDir := traversable(t)
	helper := copyExec(t, mustExecutable(t), helperDir, 0o755)
	// The attacker is a shell that runs the helper: Landlock lets it
	// execute from the helper's folder.
	h := start(t, func(c *Config) { c.ReadOnlyPaths = []string{helperDir} })
	// The helper really can attach when allowed: root attaches to a child.
	victimOfRoot := exec.Command("/bin/sleep", "1000")
	require.NoError(t, victimOfRoot.Start())
	out, err := exec.Command(helper, helperArg, "ptrace", strconv.Itoa(victimOfRoot.Process.Pid)).Output()
	require.NoError(t, err)
	require.Equal(t, "ptrace: attached\n", string(out))
	_ = victimOfRoot.Process.Kill()
	_ = victimOfRoot.Wait()

	victim := sh("victim", "exec sleep 1000")
	victim.Env = map[string]string{"VICTIM_SECRET": "hunter2"}
	h.e.Assign([]TaskSpec{victim})
	v := h.waitState(t, "victim", Running)
	code, got, _ := runOnce(t, h.e, sh("attacker", fmt.Sprintf(
		`kill -9 %[1]d 2>/dev/null; echo kill=$?; cat /proc/%[1]d/environ 2>/dev/null; echo environ=$?; %[2]s %[3]s ptrace %[1]d`,
		v.PID, helper, helperArg)))
	require.Equal(t, 1, code, got)
	require.Equal(t, "kill=1\nenviron=1\nptrace: operation not permitted\n", got)
	require.NotContains(t, got, "hunter2")
	time.Sleep(100 * time.Millisecond)
	after := h.task(t, "victim")
	require.Equal(t, Running, after.State)
	require.Equal(t, v.PID, after.PID)
	require.Zero(t, after.Restarts)
}

func mustExecutable(t *testing.T) string {
	p, err := os.Executable()
	require.NoError(t, err)
	return p
}

// T-093: uids are never 0 and never shared by two live tasks, even across
// executors of several nodes on one machine.
func TestAttackUIDNeverZeroNeverShared(t *testing.T) {
	a := start(t, nil)
	b := start(t, nil)
	var specs []TaskSpec
	for i := range 4 {
		specs = append(specs, sh(fmt.Sprintf("u%d", i), "exec sleep 1000"))
	}
	a.e.Assign(specs)
	b.e.Assign(specs) // the same ids on another node
	seen := map[uint32]string{}
	for _, h := range []*harness{a, b} {
		for _, s := range specs {
			st := h.waitState(t, s.ID, Running)
			require.NotZero(t, st.UID)
			require.GreaterOrEqual(t, st.UID, uint32(DefaultUIDLo))
			require.NotContains(t, seen, st.UID, "uid %d of %s shared", st.UID, s.ID)
			seen[st.UID] = s.ID
			require.Equal(t, strconv.FormatUint(uint64(st.UID), 10), strings.Fields(procStatus(t, st.PID)["Uid"])[1])
		}
	}

	// The shim itself refuses uid 0, whatever the executor asks.
	dir := traversable(t)
	code, stderr := runShim(t, shim.Spec{TaskID: "root", UID: 0, GID: 0, Dir: dir, Command: "/usr/bin/id"})
	require.Equal(t, 127, code)
	require.Contains(t, stderr, "a task never runs as root")
}

// runShim runs the test binary as the shim with spec and returns its exit
// code and stderr.
func runShim(t *testing.T, spec shim.Spec) (int, string) {
	t.Helper()
	specR, specW, err := os.Pipe()
	require.NoError(t, err)
	execR, execW, err := os.Pipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd := exec.Command(mustExecutable(t), shim.Arg)
	cmd.Env = []string{}
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{specR, execW}
	require.NoError(t, cmd.Start())
	specR.Close()
	execW.Close()
	require.NoError(t, json.NewEncoder(specW).Encode(spec))
	specW.Close()
	msg, _ := io.ReadAll(execR)
	_ = cmd.Wait()
	require.Contains(t, stderr.String(), strings.TrimSpace(string(msg)), "the exec pipe carries the same error")
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// T-094: the spec never appears in the shim's argv or environment, which
// any local user can read in /proc; the task's own environment is readable
// only by its uid (and root).
func TestAttackSpecNotInArgvOrEnv(t *testing.T) {
	h := start(t, nil)
	m := h.m
	g, err := m.Create("spec", cgroup.Limits{})
	require.NoError(t, err)
	defer func() { require.NoError(t, g.Remove(context.Background())) }()
	uid, release, err := h.e.uids.allocate()
	require.NoError(t, err)
	defer release()
	work := traversable(t)
	require.NoError(t, os.Chown(work, int(uid), int(uid)))

	specR, specW, err := os.Pipe()
	require.NoError(t, err)
	execR, execW, err := os.Pipe()
	require.NoError(t, err)
	cmd := h.e.shimCommand(g, specR, execW, nil, nil)
	require.Equal(t, []string{mustExecutable(t), shim.Arg}, cmd.Args)
	require.Empty(t, cmd.Env)
	require.NotNil(t, cmd.Env, "nil would pass the node's environment on")
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	specR.Close()
	execW.Close()

	// The shim now waits for its spec: look at it from outside.
	pid := cmd.Process.Pid
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && string(b) == mustExecutable(t)+"\x00"+shim.Arg+"\x00"
	}, 5*time.Second, 5*time.Millisecond)
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	require.NoError(t, err)
	require.Empty(t, env)

	spec := shim.Spec{TaskID: "spec", UID: uid, GID: uid, Dir: work, Command: "/bin/sleep", Args: []string{"1000"},
		Env: []string{"DB_PASSWORD=hunter2"}, CgroupProcs: g.V1Procs()}
	require.NoError(t, json.NewEncoder(specW).Encode(spec))
	specW.Close()
	msg, _ := io.ReadAll(execR)
	require.Empty(t, string(msg), "the shim failed")
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	require.NoError(t, err)
	require.Equal(t, "/bin/sleep\x001000\x00", string(cmdline))

	// Another task (another uid) cannot read the secret.
	_, out, _ := runOnce(t, h.e, sh("reader", fmt.Sprintf("cat /proc/%d/environ; echo rc=$?", pid)))
	require.Equal(t, "rc=1\n", out)
}

// TestAttackLogFolder: the executor (root) writes a task's logs in a folder
// the task cannot touch, so a task cannot make root write through a link
// it planted: every attempt to replace, remove or plant into it fails, and
// the executor's log is still a regular file holding what the task wrote.
func TestAttackLogFolder(t *testing.T) {
	h := start(t, nil)
	h.e.Assign([]TaskSpec{sh("logattack", `
		ln -s /etc/passwd ../logs/stdout.log.1 2>/dev/null && echo planted-link
		rm -rf ../logs 2>/dev/null; test -d ../logs || echo removed-logs
		mv ../logs ../old 2>/dev/null && echo moved-logs
		ln -s /etc ../logs2 2>/dev/null && echo planted-beside
		echo attempts-done
		exec sleep 1000`)})
	h.waitState(t, "logattack", Running)
	var out []string
	require.Eventually(t, func() bool {
		out = nil
		_ = h.e.Logs(context.Background(), "logattack", false, func(s string, l []byte) error {
			out = append(out, s+": "+strings.TrimSpace(string(l)))
			return nil
		})
		return slices.Contains(out, "stdout: attempts-done")
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"stdout: attempts-done"}, out, "a task changed its log folder")
	logs := filepath.Join(h.dir, "logattack", "logs")
	st, err := os.Lstat(logs)
	require.NoError(t, err)
	require.True(t, st.IsDir())
	ents, err := os.ReadDir(logs)
	require.NoError(t, err)
	for _, e := range ents {
		require.True(t, e.Type().IsRegular(), "%s in the log folder is not a regular file", e.Name())
	}
}
