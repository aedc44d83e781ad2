package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unumos/unum/identity/selector"
	"github.com/unumos/unum/scheduler/cgroup"
	"github.com/unumos/unum/scheduler/executor/shim"
	"github.com/unumos/unum/scheduler/jobspec"
)

var (
	portNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func (s *TaskSpec) validate() error {
	if selector.CheckTaskID(s.ID) != nil {
		return fmt.Errorf("executor: task id %q is not [a-z0-9-]{1,64} beginning with a letter or digit", s.ID)
	}
	if s.Command == "" {
		return fmt.Errorf("executor: task %s: no command", s.ID)
	}
	if s.WorkDir != "" && !filepath.IsLocal(s.WorkDir) {
		return fmt.Errorf("executor: task %s: work dir %q is not a relative path inside the task folder", s.ID, s.WorkDir)
	}
	if s.CPUMillis < 0 || s.MemoryMiB < 0 {
		return fmt.Errorf("executor: task %s: negative resources", s.ID)
	}
	for k := range s.Env {
		if !envKeyRE.MatchString(k) {
			return fmt.Errorf("executor: task %s: bad environment variable name %q", s.ID, k)
		}
	}
	for _, v := range s.Env {
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("executor: task %s: environment value with a NUL byte", s.ID)
		}
	}
	for _, a := range append([]string{s.Command}, s.Args...) {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("executor: task %s: argument with a NUL byte", s.ID)
		}
	}
	for n, p := range s.Ports {
		if !portNameRE.MatchString(n) || p <= 0 || p > 65535 {
			return fmt.Errorf("executor: task %s: bad port %q=%d", s.ID, n, p)
		}
	}
	switch s.Restart.Policy {
	case "", RestartOnFailure, RestartAlways, RestartNever:
	default:
		return fmt.Errorf("executor: task %s: unknown restart policy %q", s.ID, s.Restart.Policy)
	}
	if s.Restart.MaxAttempts < 0 || s.Restart.Delay < 0 || s.Restart.MaxDelay < 0 || s.Restart.ResetAfter < 0 {
		return fmt.Errorf("executor: task %s: negative restart setting", s.ID)
	}
	return nil
}

// restartPolicy fills in the defaults documented on Restart.
func (s *TaskSpec) restartPolicy() Restart {
	r := s.Restart
	if r.Policy == "" {
		r.Policy = RestartOnFailure
		if s.Batch && r.MaxAttempts == 0 {
			r.MaxAttempts = 3
		}
	}
	if r.Delay == 0 {
		r.Delay = time.Second
	}
	if r.MaxDelay == 0 {
		r.MaxDelay = time.Minute
	}
	r.MaxDelay = max(r.MaxDelay, r.Delay)
	if r.ResetAfter == 0 {
		r.ResetAfter = 5 * r.MaxDelay
	}
	return r
}

type task struct {
	spec   TaskSpec
	once   bool   // a RunOnce task, owned by its caller
	dir    string // Dir/<id>; "" until prepared
	cancel context.CancelFunc
	done   chan struct{} // closed once finished and cleaned up
	logs   [2]*logSink   // stdout, stderr (nil for RunOnce)

	// Guarded by e.mu.
	removed    bool
	finished   bool
	stopReason string

	// Owned by the supervisor (set in prepare, released in finish).
	uid     uint32
	release func()

	mu        sync.Mutex
	st        TaskStatus
	group     *cgroup.Group // the current run's, while it exists
	proc      bool          // a process was started and not yet waited for
	fenceKill bool          // Fence killed the current process
}

func (e *Executor) newTask(spec TaskSpec, once bool) *task {
	return &task{
		spec: spec,
		once: once,
		done: make(chan struct{}),
		st: TaskStatus{ID: spec.ID, Namespace: spec.Namespace, Job: spec.Job, Index: spec.Index,
			SPIFFEID: spec.SPIFFEID, State: Pending},
	}
}

func (t *task) update(e *Executor, f func(*TaskStatus)) {
	t.mu.Lock()
	f(&t.st)
	t.mu.Unlock()
	e.changed()
}

func (t *task) status(usage bool) TaskStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.st
	if usage && t.group != nil && t.proc {
		if s, err := t.group.Stats(); err == nil {
			st.CPUNanos, st.MemoryBytes = s.CPUNanos, s.MemoryBytes
		}
	}
	return st
}

// prepare gives the task a uid, its folder and its cgroups.
func (e *Executor) prepare(t *task) error {
	uid, release, err := e.uids.allocate()
	if err != nil {
		return err
	}
	t.uid, t.release = uid, release
	t.mu.Lock()
	t.st.UID = uid
	t.mu.Unlock()

	// Dir/<id>/ is root's (0711) so the task cannot replace logs/ with a
	// symlink the executor would then write through; work/ is the task's.
	t.dir = filepath.Join(e.cfg.Dir, t.spec.ID)
	if err := os.RemoveAll(t.dir); err != nil {
		return fmt.Errorf("executor: task %s: clear folder: %w", t.spec.ID, err)
	}
	if err := os.Mkdir(t.dir, 0o711); err != nil {
		return fmt.Errorf("executor: task %s: folder: %w", t.spec.ID, err)
	}
	// work/ is HOME, tmp/ is TMPDIR: the task's own, and with Landlock the
	// only folders it may write (no shared /tmp).
	for _, name := range taskFolders() {
		p := filepath.Join(t.dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("executor: task %s: folder: %w", t.spec.ID, err)
		}
		if err := os.Chown(p, int(uid), int(uid)); err != nil {
			return fmt.Errorf("executor: task %s: folder: %w", t.spec.ID, err)
		}
	}
	if !t.once {
		logs := filepath.Join(t.dir, "logs")
		if err := os.Mkdir(logs, 0o700); err != nil {
			return fmt.Errorf("executor: task %s: logs: %w", t.spec.ID, err)
		}
		for i, name := range streams {
			s, err := openSink(logs, name, e.cfg.LogMaxBytes, e.cfg.LogFiles)
			if err != nil {
				return fmt.Errorf("executor: task %s: %w", t.spec.ID, err)
			}
			t.logs[i] = s
		}
	}
	return nil
}

// taskFolders are the folders of Dir/<id>/ that the task owns.
func taskFolders() []string { return []string{"work", "tmp"} }

// finish removes the task's work and tmp folders (runProcess removed its cgroups),
// gives its uid back and records its final state.
func (e *Executor) finish(t *task) {
	// runProcess removed the run's cgroups already.
	if t.dir != "" {
		// Before the uid is given back: its next holder must not inherit files.
		for _, name := range taskFolders() {
			if err := os.RemoveAll(filepath.Join(t.dir, name)); err != nil {
				e.cfg.Log.Error("remove task folder", "task", t.spec.ID, "folder", name, "err", err)
			}
		}
		if t.once {
			_ = os.RemoveAll(t.dir)
		}
	}
	if t.release != nil {
		// Before the uid is given back too: its IPC objects.
		if err := sweepIPC(t.uid, e.uids.mqueue); err != nil {
			e.cfg.Log.Error("remove the task uid's IPC objects", "task", t.spec.ID, "uid", t.uid, "err", err)
		}
		t.release()
	}
	for _, s := range t.logs {
		if s != nil {
			s.close()
		}
	}
	e.mu.Lock()
	t.mu.Lock()
	if !t.st.State.Terminal() || t.removed {
		if !t.st.State.Terminal() {
			t.st.State = Killed
		}
		if t.stopReason != "" {
			t.st.Message = t.stopReason
		} else if t.st.Message == "" {
			t.st.Message = "executor stopped"
		}
	}
	if t.st.FinishedAt.IsZero() {
		t.st.FinishedAt = e.cfg.Clock()
	}
	t.st.PID = 0
	t.mu.Unlock()
	t.finished = true
	close(t.done)
	if t.removed || t.once {
		e.retireLocked(t)
	}
	e.mu.Unlock()
	e.poke() // a re-assigned id may be waiting for this one to go
	e.changed()
}

// supervise runs one assigned task until it is complete, failed, removed or
// the executor stops.
func (e *Executor) supervise(ctx context.Context, t *task) {
	defer e.finish(t)
	if err := e.prepare(t); err != nil {
		e.cfg.Log.Error("prepare task", "task", t.spec.ID, "err", err)
		t.update(e, func(st *TaskStatus) { st.State, st.Message = Failed, err.Error() })
		return
	}
	rp := t.spec.restartPolicy()
	streak, delay := 0, rp.Delay
	for {
		if !e.waitUnfenced(ctx, t) {
			return
		}
		res := e.runProcess(ctx, t, t.logs[0], t.logs[1])
		if ctx.Err() != nil {
			return
		}
		if res.fenced {
			t.update(e, func(st *TaskStatus) { st.State = Killed })
			continue
		}
		ok := res.err == nil && res.code == 0
		msg := res.describe()
		var final State
		switch {
		case ok && (t.spec.Batch || rp.Policy != RestartAlways):
			final = Complete
		case rp.Policy == RestartNever:
			final = Failed
		}
		if final == "" {
			if res.ran >= rp.ResetAfter {
				streak, delay = 0, rp.Delay
			}
			streak++
			if rp.MaxAttempts > 0 && streak > rp.MaxAttempts {
				final = Failed
				msg += fmt.Sprintf("; gave up after %d restarts", rp.MaxAttempts)
			}
		}
		if final != "" {
			t.update(e, func(st *TaskStatus) { st.State, st.Message = final, msg })
			return
		}
		t.update(e, func(st *TaskStatus) {
			st.State, st.Restarts = Restarting, st.Restarts+1
			st.Message = fmt.Sprintf("%s; restarting in %v", msg, delay)
		})
		e.cfg.Log.Info("task restarting", "task", t.spec.ID, "why", msg, "delay", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, rp.MaxDelay)
	}
}

type runResult struct {
	err    error // the task did not start (or its identity never came)
	code   int
	signal string
	ran    time.Duration
	fenced bool // Fence stopped it (before or after start)
}

func (r runResult) describe() string {
	switch {
	case r.err != nil:
		return r.err.Error()
	case r.fenced:
		return "killed by fence"
	case r.signal != "":
		return "killed by " + r.signal
	default:
		return fmt.Sprintf("exited with code %d", r.code)
	}
}

// runProcess starts the shim for one run of the task and waits for it. When
// the task's process exits the whole group is killed: what it left behind
// (daemonized children) does not outlive it.
func (e *Executor) runProcess(ctx context.Context, t *task, stdout, stderr io.Writer) runResult {
	t.update(e, func(st *TaskStatus) { st.State, st.Message = Starting, "" })
	// A new group for every run: a group that was killed takes no new
	// processes (see cgroup.Group.Kill).
	g, err := e.cfg.Cgroups.Create(t.spec.ID, cgroup.Limits{
		CPUMillis:   t.spec.CPUMillis,
		MemoryBytes: t.spec.MemoryMiB << 20,
		Pids:        e.cfg.PidsMax,
	})
	if err != nil {
		return runResult{err: err}
	}
	t.mu.Lock()
	t.group = g
	t.mu.Unlock()
	removed := false // by the normal path below, once the task exited
	defer func() {
		if !removed {
			e.removeGroup(t, g)
		}
		t.mu.Lock()
		t.group = nil
		t.mu.Unlock()
	}()
	if e.cfg.Bind != nil {
		if err := e.cfg.Bind(ctx, t.spec.ID, g.V2Dir()); err != nil {
			return runResult{err: fmt.Errorf("kernel enforcement: %w", err)}
		}
	}
	if e.cfg.WaitIdentity != nil {
		if err := e.cfg.WaitIdentity(ctx, t.spec.ID); err != nil {
			return runResult{err: fmt.Errorf("identity not ready: %w", err)}
		}
	}
	specJSON, err := json.Marshal(e.shimSpec(t, g))
	if err != nil {
		return runResult{err: fmt.Errorf("encode shim spec: %w", err)}
	}
	var pipes [4][2]*os.File // spec, exec, stdout, stderr: {read, write}
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			return runResult{err: fmt.Errorf("pipe: %w", err)}
		}
		defer r.Close()
		defer w.Close()
		pipes[i] = [2]*os.File{r, w}
	}
	specR, specW := pipes[0][0], pipes[0][1]
	execR, execW := pipes[1][0], pipes[1][1]
	outR, outW := pipes[2][0], pipes[2][1]
	errR, errW := pipes[3][0], pipes[3][1]

	t.mu.Lock()
	cmd := e.shimCommand(g, specR, execW, outW, errW)
	if e.fenced.Load() {
		t.mu.Unlock()
		return runResult{fenced: true}
	}
	if ctx.Err() != nil {
		t.mu.Unlock()
		return runResult{err: ctx.Err()}
	}
	if err := cmd.Start(); err != nil {
		t.mu.Unlock()
		return runResult{err: fmt.Errorf("start task shim: %w", err)}
	}
	started := e.cfg.Clock()
	t.proc = true
	t.fenceKill = false
	t.st.PID, t.st.StartedAt, t.st.FinishedAt, t.st.ExitCode, t.st.Signal = cmd.Process.Pid, started, time.Time{}, 0, ""
	t.mu.Unlock()

	for _, f := range []*os.File{specR, execW, outW, errW} {
		f.Close()
	}
	stopKill := context.AfterFunc(ctx, func() { _ = g.Kill() })
	defer stopKill()
	var copiers sync.WaitGroup
	copiers.Go(func() { copyLines(outR, stdout) })
	copiers.Go(func() { copyLines(errR, stderr) })
	// The shim reads the spec to its end; a shim that died early gets EPIPE
	// here, and its exit status tells why.
	_, _ = specW.Write(specJSON)
	specW.Close()
	// EOF on the exec pipe: the command runs (close-on-exec) or the shim died.
	if msg, _ := io.ReadAll(io.LimitReader(execR, 4096)); len(msg) == 0 {
		t.update(e, func(st *TaskStatus) {
			if st.PID == cmd.Process.Pid {
				st.State = Running
			}
		})
	}
	waitErr := cmd.Wait()
	stopKill()
	// Leftovers (a daemonized grandchild) die with the task; then the pipes
	// reach EOF and the copiers end.
	e.removeGroup(t, g)
	removed = true
	copiers.Wait()

	res := runResult{ran: e.cfg.Clock().Sub(started)}
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		res.err = fmt.Errorf("wait: %w", waitErr)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if ws.Signaled() {
			res.signal = unix.SignalName(ws.Signal())
			res.code = 128 + int(ws.Signal())
		} else {
			res.code = ws.ExitStatus()
		}
	}
	t.mu.Lock()
	t.proc = false
	res.fenced = t.fenceKill
	t.fenceKill = false
	t.st.ExitCode, t.st.Signal, t.st.FinishedAt, t.st.PID = res.code, res.signal, e.cfg.Clock(), 0
	t.mu.Unlock()
	return res
}

func (e *Executor) removeGroup(t *task, g *cgroup.Group) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Remove(ctx); err != nil {
		e.cfg.Log.Error("remove task cgroups", "task", t.spec.ID, "err", err)
	}
	if e.cfg.Unbind != nil {
		e.cfg.Unbind(t.spec.ID)
	}
}

// shimCommand is the shim's exec.Cmd: nothing of the task in argv or the
// environment (other local users can read both in /proc); the spec goes
// through the pipe at shim.SpecFD; the child is born in the task's v2
// group and leads its own session.
func (e *Executor) shimCommand(g *cgroup.Group, spec, execNotify, stdout, stderr *os.File) *exec.Cmd {
	cmd := exec.Command(e.cfg.ShimPath, shim.Arg)
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{spec, execNotify} // shim.SpecFD, shim.ExecFD
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD(), Setsid: true}
	return cmd
}

// shimSpec resolves the task's spec for the shim.
func (e *Executor) shimSpec(t *task, g *cgroup.Group) shim.Spec {
	work, tmp := filepath.Join(t.dir, "work"), filepath.Join(t.dir, "tmp")
	env := map[string]string{"PATH": shim.DefaultPath}
	maps.Copy(env, t.spec.Env)
	for name, port := range t.spec.Ports {
		env[jobspec.PortEnv(name)] = fmt.Sprint(port)
	}
	// Set by the executor, never by the spec: these say who the task is and
	// where its identity comes from.
	env["HOME"] = work
	env["TMPDIR"] = tmp
	env["UNUM_TASK_ID"] = t.spec.ID
	env["UNUM_JOB"] = t.spec.Job
	env["UNUM_NAMESPACE"] = t.spec.Namespace
	if e.cfg.SocketPath != "" {
		env["SPIFFE_ENDPOINT_SOCKET"] = "unix://" + e.cfg.SocketPath
	} else {
		delete(env, "SPIFFE_ENDPOINT_SOCKET")
	}
	kv := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		kv = append(kv, k+"="+env[k])
	}
	return shim.Spec{
		TaskID:      t.spec.ID,
		UID:         t.uid,
		GID:         t.uid,
		Dir:         filepath.Join(work, t.spec.WorkDir),
		Command:     t.spec.Command,
		Args:        t.spec.Args,
		Env:         kv,
		CgroupProcs: g.V1Procs(),
		Confine:     e.confineSpec(work, tmp),
	}
}
