package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/scheduler/executor/shim"
)

func TestTaskConfinedAndIdentified(t *testing.T) {
	t.Setenv("UNUM_TEST_NODE_SECRET", "leak") // the node's environment must not reach tasks
	release := make(chan struct{})
	var mu sync.Mutex
	var waited []string
	h := start(t, func(c *Config) {
		c.WaitIdentity = func(ctx context.Context, id string) error {
			mu.Lock()
			waited = append(waited, id)
			mu.Unlock()
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	spec := sh("conf", "echo started > started; exec sleep 1000")
	spec.Env = map[string]string{"FOO": "bar", "SPIFFE_ENDPOINT_SOCKET": "unix:///evil", "HOME": "/root"}
	spec.Ports = map[string]int{"http-api": 8080}
	spec.MemoryMiB = 48
	spec.CPUMillis = 500
	h.e.Assign([]TaskSpec{spec})

	// Before WaitIdentity returns nothing runs: the group exists and is empty.
	st := h.waitState(t, "conf", Starting)
	require.Zero(t, st.PID)
	work := filepath.Join(h.dir, "conf", "work")
	time.Sleep(100 * time.Millisecond)
	require.NoFileExists(t, filepath.Join(work, "started"))
	pids, err := os.ReadFile(filepath.Join(h.m.Root(), "conf", "cgroup.procs"))
	require.NoError(t, err)
	require.Empty(t, strings.TrimSpace(string(pids)))
	close(release)

	st = h.waitState(t, "conf", Running)
	mu.Lock()
	require.Equal(t, []string{"conf"}, waited)
	mu.Unlock()
	require.GreaterOrEqual(t, st.UID, uint32(DefaultUIDLo))
	require.LessOrEqual(t, st.UID, uint32(DefaultUIDHi))

	ps := procStatus(t, st.PID)
	require.Equal(t, "1", ps["NoNewPrivs"])
	u := strconv.FormatUint(uint64(st.UID), 10)
	require.Equal(t, strings.Join([]string{u, u, u, u}, "\t"), ps["Uid"])
	require.Equal(t, strings.Join([]string{u, u, u, u}, "\t"), ps["Gid"])
	require.Equal(t, "", ps["Groups"])
	require.Equal(t, "0000000000000000", ps["CapEff"])
	require.Equal(t, "0000000000000000", ps["CapBnd"])

	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.PID))
	require.NoError(t, err)
	l := h.m.Report()
	require.Contains(t, l.Grouping.How, h.m.Root())
	require.Contains(t, string(cg), "0::"+strings.TrimPrefix(filepath.Join(h.m.Root(), "conf"), v2Mount(t))+"\n")
	if l.Memory.Enforced && strings.Contains(l.Memory.How, "cgroup v1") {
		memRoot := strings.Fields(l.Memory.How)[3]
		require.Contains(t, string(cg), ":memory:"+strings.TrimPrefix(filepath.Join(memRoot, "conf"), "/sys/fs/cgroup/memory")+"\n")
		lim, err := os.ReadFile(filepath.Join(memRoot, "conf", "memory.limit_in_bytes"))
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(48<<20), strings.TrimSpace(string(lim)))
	}
	if strings.Contains(l.CPU.How, "cgroup v1 cpu") {
		cpuRoot := strings.Fields(l.CPU.How)[5]
		require.Contains(t, string(cg), ":cpu:"+strings.TrimPrefix(filepath.Join(cpuRoot, "conf"), "/sys/fs/cgroup/cpu")+"\n")
		q, err := os.ReadFile(filepath.Join(cpuRoot, "conf", "cpu.cfs_quota_us"))
		require.NoError(t, err)
		require.Equal(t, "50000", strings.TrimSpace(string(q)))
	}

	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", st.PID))
	require.NoError(t, err)
	// The shell adds PWD and reorders what it passes to exec.
	vars := slices.DeleteFunc(strings.Split(strings.TrimRight(string(env), "\x00"), "\x00"),
		func(s string) bool { return strings.HasPrefix(s, "PWD=") })
	slices.Sort(vars)
	require.Equal(t, []string{
		"FOO=bar",
		"HOME=" + work,
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"SPIFFE_ENDPOINT_SOCKET=unix:///run/unum-test/agent.sock",
		"TMPDIR=" + filepath.Join(h.dir, "conf", "tmp"),
		"UNUM_JOB=j",
		"UNUM_NAMESPACE=default",
		"UNUM_PORT_HTTP_API=8080",
		"UNUM_TASK_ID=conf",
	}, vars)
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", st.PID))
	require.NoError(t, err)
	require.Equal(t, work, cwd)
	for _, d := range []string{work, filepath.Join(h.dir, "conf", "tmp")} {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), d)
		require.Equal(t, st.UID, fi.Sys().(*syscall.Stat_t).Uid, d)
	}
	// The shim's filter holds in the task (mode 2: filter), and the
	// executor reports the layers it applies.
	own, err := strconv.Atoi(procStatus(t, os.Getpid())["Seccomp_filters"])
	require.NoError(t, err)
	require.Equal(t, "2", ps["Seccomp"])
	require.Equal(t, strconv.Itoa(own+1), ps["Seccomp_filters"], "one filter more than the node's own")
	c := h.e.Confinement()
	require.Contains(t, c.Layers, "seccomp")
	if shim.LandlockABI() > 0 {
		require.Equal(t, []string{"seccomp", "landlock"}, c.Layers)
		require.Equal(t, shim.LandlockABI(), c.LandlockABI)
	}

	require.Eventually(t, func() bool { return h.task(t, "conf").CPUNanos > 0 }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"grouping: " + l.Grouping.How, "cpu: " + l.CPU.How, "memory: " + l.Memory.How, "pids: " + l.Pids.How},
		h.e.Limits().Lines())
}

func v2Mount(t *testing.T) string {
	l, err := cgroupLayout()
	require.NoError(t, err)
	return l
}

func TestWaitIdentityFailureKeepsTaskFromStarting(t *testing.T) {
	marker := traversable(t)
	require.NoError(t, os.Chmod(marker, 0o777))
	h := start(t, func(c *Config) {
		c.WaitIdentity = func(context.Context, string) error { return errors.New("no svid for you") }
	})
	spec := sh("noid", "touch "+marker+"/ran")
	spec.Restart = Restart{Policy: RestartNever}
	h.e.Assign([]TaskSpec{spec})
	st := h.waitState(t, "noid", Failed)
	require.Contains(t, st.Message, "identity not ready: no svid for you")
	require.NoFileExists(t, filepath.Join(marker, "ran"))
	require.Zero(t, st.StartedAt)
}

func TestRestartAfterKillWithBackoff(t *testing.T) {
	h := start(t, nil)
	spec := sh("rs", "exec sleep 1000")
	spec.Restart = Restart{Delay: 300 * time.Millisecond, MaxDelay: 10 * time.Second}
	h.e.Assign([]TaskSpec{spec})
	st := h.waitState(t, "rs", Running)
	uid := st.UID

	require.NoError(t, syscall.Kill(st.PID, syscall.SIGKILL))
	r := h.waitState(t, "rs", Restarting)
	require.Equal(t, "SIGKILL", r.Signal)
	require.Equal(t, 137, r.ExitCode)
	require.Equal(t, "killed by SIGKILL; restarting in 300ms", r.Message)
	st2 := h.waitState(t, "rs", Running)
	require.NotEqual(t, st.PID, st2.PID)
	require.Equal(t, 1, st2.Restarts)
	require.Equal(t, uid, st2.UID, "a task keeps its uid across restarts")

	require.NoError(t, syscall.Kill(st2.PID, syscall.SIGKILL))
	r = h.waitFor(t, "rs", func(s TaskStatus) bool { return s.State == Restarting && s.Restarts == 2 }, "restarting again")
	require.Equal(t, "killed by SIGKILL; restarting in 600ms", r.Message, "the delay doubles")
	h.waitFor(t, "rs", func(s TaskStatus) bool { return s.State == Running && s.PID != 0 && s.Restarts == 2 }, "running again")
}

func TestRestartPolicies(t *testing.T) {
	h := start(t, nil)
	fast := func(p string, n int) Restart {
		// ResetAfter well above a run: on a loaded machine a run of "exit 3"
		// can last past 5*MaxDelay and reset the count this test counts.
		return Restart{Policy: p, MaxAttempts: n, Delay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond,
			ResetAfter: time.Minute}
	}
	cases := []struct {
		spec     TaskSpec
		state    State
		restarts int
		code     int
		msg      string
	}{
		{spec: withRestart(sh("onf-ok", "exit 0"), fast(RestartOnFailure, 2)), state: Complete, msg: "exited with code 0"},
		{spec: withRestart(sh("onf-bad", "exit 3"), fast(RestartOnFailure, 2)), state: Failed, restarts: 2, code: 3,
			msg: "exited with code 3; gave up after 2 restarts"},
		{spec: withRestart(sh("never-bad", "exit 3"), fast(RestartNever, 0)), state: Failed, code: 3, msg: "exited with code 3"},
		{spec: withRestart(sh("always-ok", "exit 0"), fast(RestartAlways, 2)), state: Failed, restarts: 2,
			msg: "exited with code 0; gave up after 2 restarts"},
		{spec: batch(withRestart(sh("batch-always", "exit 0"), fast(RestartAlways, 2))), state: Complete},
		// A batch task with no policy: on-failure, at most 3 restarts.
		{spec: batch(withRestart(sh("batch-default", "exit 1"), Restart{Delay: 10 * time.Millisecond})), state: Failed, restarts: 3, code: 1},
		{spec: sh("badcmd", "exit 0"), state: Failed},
	}
	cases[len(cases)-1].spec.Command = "no-such-command-anywhere"
	cases[len(cases)-1].spec.Restart = fast(RestartNever, 0)
	var specs []TaskSpec
	for _, c := range cases {
		specs = append(specs, c.spec)
	}
	h.e.Assign(specs)
	for _, c := range cases {
		t.Run(c.spec.ID, func(t *testing.T) {
			st := h.waitFor(t, c.spec.ID, func(s TaskStatus) bool { return s.State.Terminal() }, "finished")
			require.Equal(t, c.state, st.State, st.Message)
			require.Equal(t, c.restarts, st.Restarts)
			if c.spec.ID == "badcmd" {
				require.Equal(t, 127, st.ExitCode, "the shim exits 127 when the command is missing")
				return
			}
			require.Equal(t, c.code, st.ExitCode)
			if c.msg != "" {
				require.Equal(t, c.msg, st.Message)
			}
		})
	}
	// Finished tasks are hidden unless asked for, and keep their state while assigned.
	require.Empty(t, h.e.Tasks(false))
	require.Len(t, h.e.Tasks(true), len(cases))
	require.True(t, slices.IsSortedFunc(h.e.Tasks(true), func(a, b TaskStatus) int { return strings.Compare(a.ID, b.ID) }))
	var logs []string
	require.NoError(t, h.e.Logs(context.Background(), "badcmd", false, func(s string, l []byte) error {
		logs = append(logs, s+": "+string(l))
		return nil
	}))
	require.Equal(t, []string{`stderr: unum task shim: command "no-such-command-anywhere" not found in PATH "/usr/local/bin:/usr/bin:/bin"`}, logs)
}

func withRestart(s TaskSpec, r Restart) TaskSpec { s.Restart = r; return s }
func batch(s TaskSpec) TaskSpec                  { s.Batch = true; return s }

func TestAssignRemovalKillsWholeTree(t *testing.T) {
	h := start(t, nil)
	// The grandchild double-forks away from the task's process.
	h.e.Assign([]TaskSpec{sh("tree", "sh -c 'sleep 1001 &' ; sleep 1002 & exec sleep 1003")})
	st := h.waitState(t, "tree", Running)
	var pids []int
	require.Eventually(t, func() bool { pids = pidsOfUID(t, st.UID); return len(pids) == 3 }, 10*time.Second, 20*time.Millisecond)

	h.e.Assign(nil)
	st = h.waitFor(t, "tree", func(s TaskStatus) bool { return s.State == Killed && s.FinishedAt.After(s.StartedAt) }, "killed")
	require.Equal(t, "removed from the node's assignment", st.Message)
	require.Eventually(t, func() bool {
		for _, p := range pids {
			if alive(p) {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(h.m.Root(), "tree"))
		return errors.Is(err, os.ErrNotExist)
	}, 10*time.Second, 20*time.Millisecond)
	require.NoDirExists(t, filepath.Join(h.dir, "tree", "work"))
	require.Empty(t, h.e.Tasks(false))

	// The same id assigned again is a new task.
	h.e.Assign([]TaskSpec{sh("tree", "exec sleep 1000")})
	st2 := h.waitState(t, "tree", Running)
	require.NotEqual(t, st.PID, st2.PID)
}

func TestFenceKillsAllAndBlocksStarts(t *testing.T) {
	h := start(t, nil)
	h.e.Assign([]TaskSpec{sh("f1", "exec sleep 1000"), sh("f2", "exec sleep 1000")})
	a := h.waitState(t, "f1", Running)
	b := h.waitState(t, "f2", Running)

	h.e.Fence("lease lost")
	// Fence returns once both were sent SIGKILL; they die at once.
	require.Eventually(t, func() bool { return !alive(a.PID) && !alive(b.PID) }, 2*time.Second, 5*time.Millisecond)
	for _, id := range []string{"f1", "f2"} {
		st := h.waitFor(t, id, func(s TaskStatus) bool { return s.PID == 0 && s.Message == "fenced: lease lost" }, "fenced")
		require.Equal(t, 0, st.Restarts, "a fenced task is not restarted as a failure")
	}
	h.e.Assign([]TaskSpec{sh("f1", "exec sleep 1000"), sh("f2", "exec sleep 1000"), sh("f3", "exec sleep 1000")})
	time.Sleep(300 * time.Millisecond)
	for _, st := range h.e.Tasks(true) {
		require.Zero(t, st.PID, "%s started while fenced", st.ID)
		require.NotEqual(t, Running, st.State)
	}
	_, err := h.e.RunOnce(context.Background(), sh("once", "true"), nil, nil)
	require.ErrorIs(t, err, ErrFenced)

	h.e.Unfence()
	for _, id := range []string{"f1", "f2", "f3"} {
		h.waitState(t, id, Running)
	}
}

func TestLogsRotatedAndFollowed(t *testing.T) {
	h := start(t, func(c *Config) { c.LogMaxBytes = 256; c.LogFiles = 2 })
	h.e.Assign([]TaskSpec{sh("logs", `for i in $(seq 101 200); do echo out-$i; echo err-$i >&2; done
i=1000; while true; do i=$((i+1)); echo tick-$i; sleep 0.02; done`)})
	h.waitState(t, "logs", Running)
	// Wait until the burst is written (the ticks follow it).
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(filepath.Join(h.dir, "logs", "logs", "stderr.log"))
		o, _ := os.ReadFile(filepath.Join(h.dir, "logs", "logs", "stdout.log"))
		return strings.Contains(string(b), "err-200") && strings.Contains(string(o), "tick-")
	}, 10*time.Second, 20*time.Millisecond)

	for _, n := range []string{"stdout.log", "stdout.log.1", "stdout.log.2", "stderr.log", "stderr.log.1", "stderr.log.2"} {
		fi, err := os.Stat(filepath.Join(h.dir, "logs", "logs", n))
		require.NoError(t, err, n)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		require.Zero(t, fi.Sys().(*syscall.Stat_t).Uid, "logs are root's, not the task's")
		require.LessOrEqual(t, fi.Size(), int64(256))
	}
	require.NoFileExists(t, filepath.Join(h.dir, "logs", "logs", "stdout.log.3"))

	var errs []string
	require.NoError(t, h.e.Logs(context.Background(), "logs", false, func(s string, l []byte) error {
		if s == "stderr" {
			errs = append(errs, string(l))
		}
		return nil
	}))
	// stderr holds the newest err- lines, contiguous, oldest first; the
	// oldest went with rotation.
	require.Equal(t, "err-200", errs[len(errs)-1])
	require.Greater(t, len(errs), 40)
	require.Less(t, len(errs), 100)
	first, _ := strconv.Atoi(strings.TrimPrefix(errs[0], "err-"))
	for i, l := range errs {
		require.Equal(t, fmt.Sprintf("err-%d", first+i), l)
	}

	// Follow across several rotations: ticks arrive in order, none lost.
	ctx, cancel := context.WithCancel(context.Background())
	var ticks []int
	err := h.e.Logs(ctx, "logs", true, func(s string, l []byte) error {
		if v, ok := strings.CutPrefix(string(l), "tick-"); ok && s == "stdout" {
			n, _ := strconv.Atoi(v)
			ticks = append(ticks, n)
			if len(ticks) >= 60 {
				cancel()
			}
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	for i := 1; i < len(ticks); i++ {
		require.Equal(t, ticks[i-1]+1, ticks[i], "ticks %v", ticks)
	}

	// Follow ends by itself once the task is gone.
	done := make(chan error, 1)
	go func() {
		done <- h.e.Logs(context.Background(), "logs", true, func(string, []byte) error { return nil })
	}()
	h.e.Assign(nil)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("follow did not end after the task finished")
	}
	err = h.e.Logs(context.Background(), "nope", false, func(string, []byte) error { return nil })
	require.ErrorIs(t, err, ErrUnknownTask)
}

func TestRunOnce(t *testing.T) {
	h := start(t, nil)
	code, out, errOut := runOnce(t, h.e, sh("once-1", "echo hello; echo oops >&2; id -u; exit 7"))
	require.Equal(t, 7, code)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	require.Equal(t, "hello", lines[0])
	uid, err := strconv.ParseUint(lines[1], 10, 32)
	require.NoError(t, err)
	require.NotZero(t, uid)
	require.Equal(t, "oops\n", errOut)
	st := h.task(t, "once-1")
	require.Equal(t, Failed, st.State)
	require.Equal(t, uint32(uid), st.UID)

	// The whole cgroup dies when ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	code, err = h.e.RunOnce(ctx, sh("once-2", "sleep 1000 & exec sleep 1001"), nil, nil)
	require.NoError(t, err)
	require.Equal(t, 128+int(syscall.SIGKILL), code)
	require.Less(t, time.Since(t0), 5*time.Second)
	require.Equal(t, Killed, h.task(t, "once-2").State)
	require.NoDirExists(t, filepath.Join(h.m.Root(), "once-2"))
	require.NoDirExists(t, filepath.Join(h.dir, "once-2"))

	_, err = h.e.RunOnce(context.Background(), TaskSpec{ID: "Bad!", Command: "true"}, nil, nil)
	require.ErrorContains(t, err, "is not [a-z0-9-]")
}

func TestValidateSpec(t *testing.T) {
	ok := sh("ok", "true")
	require.NoError(t, ok.validate())
	for name, mut := range map[string]func(*TaskSpec){
		"id":         func(s *TaskSpec) { s.ID = "../x" },
		"command":    func(s *TaskSpec) { s.Command = "" },
		"workdir":    func(s *TaskSpec) { s.WorkDir = "../../etc" },
		"abs":        func(s *TaskSpec) { s.WorkDir = "/etc" },
		"env":        func(s *TaskSpec) { s.Env = map[string]string{"A=B": "x"} },
		"nul":        func(s *TaskSpec) { s.Args = []string{"a\x00b"} },
		"port":       func(s *TaskSpec) { s.Ports = map[string]int{"http": 70000} },
		"portname":   func(s *TaskSpec) { s.Ports = map[string]int{"a b": 80} },
		"policy":     func(s *TaskSpec) { s.Restart.Policy = "sometimes" },
		"negative":   func(s *TaskSpec) { s.MemoryMiB = -1 },
		"negdelay":   func(s *TaskSpec) { s.Restart.Delay = -time.Second },
		"negattempt": func(s *TaskSpec) { s.Restart.MaxAttempts = -1 },
	} {
		s := ok
		mut(&s)
		require.Error(t, s.validate(), name)
	}
	r := (&TaskSpec{Batch: true}).restartPolicy()
	require.Equal(t, Restart{Policy: RestartOnFailure, MaxAttempts: 3, Delay: time.Second, MaxDelay: time.Minute, ResetAfter: 5 * time.Minute}, r)
	r = (&TaskSpec{Restart: Restart{Delay: 2 * time.Minute}}).restartPolicy()
	require.Equal(t, 2*time.Minute, r.MaxDelay, "MaxDelay is at least Delay")
	require.Zero(t, r.MaxAttempts, "services restart without limit by default")
}

func TestNewChecks(t *testing.T) {
	m := newManager(t)
	t.Cleanup(func() { require.NoError(t, m.RemoveRoots()) })
	base := Config{Dir: filepath.Join(traversable(t), "tasks"), Cgroups: m, ShimPath: "/bin/true"}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"uid 0":      {func(c *Config) { c.UIDs = UIDRange{Lo: 0, Hi: 10} }, "must exclude 0"},
		"uid -1":     {func(c *Config) { c.UIDs = UIDRange{Lo: 10, Hi: ^uint32(0)} }, "must exclude 0"},
		"relative":   {func(c *Config) { c.Dir = "tasks" }, "not absolute"},
		"no cgroups": {func(c *Config) { c.Cgroups = nil }, "no cgroup manager"},
		"unreachable": {func(c *Config) {
			d := filepath.Join(t.TempDir(), "private")
			require.NoError(t, os.Mkdir(d, 0o700)) // a task uid cannot get through
			c.Dir = filepath.Join(d, "tasks")
		}, "unreachable by task uids"},
		"relative read-only path": {func(c *Config) { c.ReadOnlyPaths = []string{"opt"} }, "is not absolute"},
		"missing read-only path": {func(c *Config) { c.ReadOnlyPaths = []string{"/nonexistent-unum"} },
			"read-only path: stat /nonexistent-unum"},
		"lock dir writable": {func(c *Config) {
			d := t.TempDir()
			require.NoError(t, os.Chmod(d, 0o777))
			c.UIDLockDir = d
		}, "not group or world writable"},
	} {
		t.Run(name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			_, err := New(c)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
