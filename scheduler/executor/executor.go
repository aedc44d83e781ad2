package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unumos/unum/scheduler/cgroup"
	"github.com/unumos/unum/scheduler/executor/shim"
)

// Restart policies.
const (
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"
	RestartNever     = "never"
)

// Restart says when a task that exited is started again. Backoff starts at
// Delay and doubles after every restart up to MaxDelay. A run that lasted at
// least ResetAfter resets the backoff and the attempt count: a service that
// crashes once a day is not given up on after MaxAttempts days.
type Restart struct {
	Policy string // "on-failure" (default) | "always" | "never"
	// MaxAttempts is how many restarts in a row are allowed before the task
	// is failed (restarts, not runs: 3 means up to 4 runs); 0 = unlimited,
	// except that a batch task with no policy at all gets 3.
	MaxAttempts int
	Delay       time.Duration // default 1s
	MaxDelay    time.Duration // default 1m, at least Delay
	ResetAfter  time.Duration // default 5*MaxDelay
}

// TaskSpec is one task the node must run.
type TaskSpec struct {
	ID             string // allocation id (selector.CheckTaskID); also the cgroup name
	Namespace, Job string
	Index          int
	SPIFFEID       string
	Command        string
	Args           []string
	Env            map[string]string
	WorkDir        string // relative to the task's own folder ("" = the folder)
	CPUMillis      int64
	MemoryMiB      int64
	Ports          map[string]int // exported as UNUM_PORT_<NAME> (upper-cased, '-' -> '_')
	Batch          bool           // a batch task that exits 0 is complete and not restarted
	Restart        Restart
}

// State is a task's lifecycle state.
type State string

// Task states. complete, failed and killed are terminal, except that a task
// killed by Fence starts again on Unfence while it is still assigned.
const (
	Pending    State = "pending"
	Starting   State = "starting"
	Running    State = "running"
	Restarting State = "restarting"
	Complete   State = "complete"
	Failed     State = "failed"
	Killed     State = "killed"
)

// Terminal reports whether the state is final.
func (s State) Terminal() bool { return s == Complete || s == Failed || s == Killed }

// TaskStatus is a task's state as reported in `unum ps`.
type TaskStatus struct {
	ID                    string
	Namespace, Job        string
	Index                 int
	SPIFFEID              string
	State                 State
	PID                   int
	UID                   uint32
	ExitCode              int    // 128+n when killed by signal n
	Signal                string // e.g. "SIGKILL"; "" when it exited
	Restarts              int
	StartedAt, FinishedAt time.Time
	CPUNanos              uint64
	MemoryBytes           uint64
	Message               string
}

// UIDRange is an inclusive range of dynamic uids for tasks.
type UIDRange struct{ Lo, Hi uint32 }

// DefaultUIDLo-DefaultUIDHi (the default UIDRange) sits above what passwd files (below 60000), systemd's
// DynamicUser (61184-65519) and subordinate uid ranges for containers
// (100000 up to a few million) usually use, stays below 2^31 so tools that
// print uids as signed ints show them right, and excludes 0 and -1.
const (
	DefaultUIDLo = 2147000000
	DefaultUIDHi = 2147065535
)

// DefaultUIDLockDir is where executors on one machine coordinate uids.
const DefaultUIDLockDir = "/run/unum/uids"

// Config configures an Executor. It is not modified after New.
type Config struct {
	// Dir is the node's task folder, e.g. DIR/tasks; each task gets
	// Dir/<id>/ with work/ and tmp/ (its own, owned by its uid) and logs/.
	Dir     string
	Cgroups *cgroup.Manager
	UIDs    UIDRange // default DefaultUIDLo-DefaultUIDHi; never includes 0
	// UIDLockDir holds one lock file per uid in use, shared by every
	// executor on the machine (default DefaultUIDLockDir).
	UIDLockDir string
	ShimPath   string // the unum binary (os.Executable()); tests pass the test binary
	SocketPath string // Workload API socket: SPIFFE_ENDPOINT_SOCKET=unix://<path>
	// WaitIdentity is called before every exec and returns once the task's
	// SVID exists; an error keeps the task from starting (and counts as a
	// failed run). nil: no wait.
	WaitIdentity func(ctx context.Context, taskID string) error
	// Bind is called once a run's cgroup exists, before anything runs in
	// it: kernel enforcement maps the group (its v2 directory) to the
	// task's identity. An error keeps the task from starting (a failed
	// run). Unbind is called once that group is removed. nil: no binding.
	Bind        func(ctx context.Context, taskID, cgroupDir string) error
	Unbind      func(taskID string)
	OnChange    func() // called, without locks held, after a task state change
	LogMaxBytes int64  // rotate a log file at this size (default 10 MiB)
	LogFiles    int    // rotated files kept per stream (default 3)
	PidsMax     int64  // pids limit per task (default 4096)
	// MqueueDir is where the POSIX message queues are mounted when
	// /dev/mqueue is not (default DefaultMqueueDir).
	MqueueDir string
	// ReadOnlyPaths are folders or files every task may read and execute
	// besides the system folders (/usr, /bin, /lib…), e.g. /nix/store or a
	// shared tool folder. Each must exist and be absolute.
	ReadOnlyPaths []string
	// RequireLandlock makes New fail on a kernel without Landlock instead
	// of running tasks with seccomp alone (which Confinement reports).
	RequireLandlock bool
	Clock           func() time.Time
	Log             *slog.Logger
}

// Errors.
var (
	ErrFenced      = errors.New("executor is fenced: no task may start")
	ErrUnknownTask = errors.New("no such task")
	ErrTaskExists  = errors.New("task id already in use")
)

// historySize bounds the finished tasks kept for `unum ps --all` and logs
// after they left the assignment.
const historySize = 128

// Executor runs a node's tasks. Its methods are safe for concurrent use.
//
// # Locking
//
// e.mu guards the task table; t.mu guards one task's status and process.
// They are never held together except e.mu then t.mu in finish; the fenced
// flag is atomic so that a start (under t.mu) can check it without e.mu.
type Executor struct {
	cfg         Config
	landlockABI int // what every task's ruleset is built for; 0: no Landlock
	uids        *uidAllocator
	kick        chan struct{}
	fenced      atomic.Bool
	run         atomic.Bool

	mu struct {
		sync.Mutex
		desired     map[string]TaskSpec
		tasks       map[string]*task // assigned or RunOnce tasks, live or finished
		history     []*task          // tasks no longer assigned, oldest first
		fenceReason string
		unfenced    chan struct{} // closed while not fenced
	}
}

// New checks the configuration, prepares the task folder and removes what
// an earlier run of this node left behind: task cgroups (killing their
// processes) and task folders.
func New(cfg Config) (*Executor, error) {
	if cfg.Cgroups == nil {
		return nil, errors.New("executor: no cgroup manager")
	}
	if !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("executor: task folder %q is not absolute", cfg.Dir)
	}
	if cfg.ShimPath == "" {
		return nil, errors.New("executor: shim path is required")
	}
	if cfg.UIDs == (UIDRange{}) {
		cfg.UIDs = UIDRange{Lo: DefaultUIDLo, Hi: DefaultUIDHi}
	}
	if cfg.UIDs.Lo == 0 || cfg.UIDs.Hi < cfg.UIDs.Lo || cfg.UIDs.Hi == ^uint32(0) {
		return nil, fmt.Errorf("executor: uid range %d-%d must exclude 0 and -1", cfg.UIDs.Lo, cfg.UIDs.Hi)
	}
	cfg.UIDLockDir = cmp.Or(cfg.UIDLockDir, DefaultUIDLockDir)
	cfg.LogMaxBytes = cmp.Or(cfg.LogMaxBytes, 10<<20)
	if cfg.LogFiles == 0 {
		cfg.LogFiles = 3
	}
	cfg.PidsMax = cmp.Or(cfg.PidsMax, 4096)
	cfg.MqueueDir = cmp.Or(cfg.MqueueDir, DefaultMqueueDir)
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	for _, p := range cfg.ReadOnlyPaths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("executor: read-only path %q is not absolute", p)
		}
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("executor: read-only path: %w", err)
		}
	}
	// Fail closed: the seccomp layer is always applied, so a kernel that
	// cannot take it runs no task; Landlock is applied where the kernel has
	// it, and required when the configuration says so.
	support := shim.Probe()
	if support.SeccompErr != nil {
		return nil, fmt.Errorf("executor: the kernel cannot apply the task seccomp filter: %w", support.SeccompErr)
	}
	if cfg.RequireLandlock && support.LandlockABI == 0 {
		return nil, errors.New("executor: Landlock is required and the kernel has none (not built, or not in the lsm= boot list)")
	}
	mqueue, err := mqueueMount(cfg.MqueueDir)
	if err != nil {
		cfg.Log.Warn("no mount of the POSIX message queues: a uid's empty queues will not be swept", "err", err)
	}
	uids, err := newUIDAllocator(cfg.UIDLockDir, cfg.UIDs, mqueue)
	if err != nil {
		return nil, err
	}
	if err := prepareDir(cfg.Dir); err != nil {
		return nil, err
	}
	e := &Executor{cfg: cfg, landlockABI: support.LandlockABI, uids: uids, kick: make(chan struct{}, 1)}
	if e.landlockABI == 0 {
		cfg.Log.Warn("Landlock not available: tasks run without the file-system layer")
	}
	e.mu.desired = map[string]TaskSpec{}
	e.mu.tasks = map[string]*task{}
	e.mu.unfenced = make(chan struct{})
	close(e.mu.unfenced)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	swept, err := cfg.Cgroups.Sweep(ctx)
	if err != nil {
		return nil, fmt.Errorf("executor: remove an earlier run's task groups: %w", err)
	}
	if len(swept) > 0 {
		cfg.Log.Warn("killed tasks left by an earlier run", "count", len(swept))
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	for _, ent := range ents {
		if err := os.RemoveAll(filepath.Join(cfg.Dir, ent.Name())); err != nil {
			return nil, fmt.Errorf("executor: remove an earlier run's task folder: %w", err)
		}
	}
	return e, nil
}

// prepareDir creates the task folder root-owned 0711 and checks that every
// ancestor lets task uids through (they need to reach their work folder).
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("executor: create task folder: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return fmt.Errorf("executor: task folder: %w", err)
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("executor: task folder: %w", err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("executor: task folder %s is unreachable by task uids: %s has mode %v (needs o+x)", dir, d, st.Mode().Perm())
		}
		if d == "/" {
			return nil
		}
	}
}

// Limits reports which resource limits this node enforces and how.
func (e *Executor) Limits() cgroup.Report { return e.cfg.Cgroups.Report() }

// Assign sets the tasks this node must run: ids not running yet start, ids
// no longer present are killed (the whole cgroup) and removed, ids already
// present are left alone (a finished task stays finished).
func (e *Executor) Assign(tasks []TaskSpec) {
	d := make(map[string]TaskSpec, len(tasks))
	for _, t := range tasks {
		d[t.ID] = t
	}
	e.mu.Lock()
	e.mu.desired = d
	e.mu.Unlock()
	e.poke()
}

func (e *Executor) poke() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (e *Executor) changed() {
	if e.cfg.OnChange != nil {
		e.cfg.OnChange()
	}
}

// Run starts and supervises the assigned tasks until ctx ends; then it kills
// every task and removes its cgroups and folders before returning.
func (e *Executor) Run(ctx context.Context) error {
	if !e.run.CompareAndSwap(false, true) {
		return errors.New("executor: Run called twice")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		e.reconcile(ctx, &wg)
		select {
		case <-e.kick:
		case <-ctx.Done():
			// Task contexts derive from ctx: every supervisor kills its
			// task and cleans up; wg.Wait (deferred) waits for them.
			return nil
		}
	}
}

func (e *Executor) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	if ctx.Err() != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, spec := range e.mu.desired {
		if _, ok := e.mu.tasks[id]; ok {
			continue // running, finished, or a removed incarnation still shutting down
		}
		t := e.newTask(spec, false)
		if err := spec.validate(); err != nil {
			t.st.State, t.st.Message, t.st.FinishedAt = Failed, err.Error(), e.cfg.Clock()
			t.finished = true
			close(t.done)
			e.mu.tasks[id] = t
			continue
		}
		tctx, cancel := context.WithCancel(ctx)
		t.cancel = cancel
		e.mu.tasks[id] = t
		wg.Go(func() { e.supervise(tctx, t) })
	}
	for id, t := range e.mu.tasks {
		if t.once || t.removed {
			continue
		}
		if _, ok := e.mu.desired[id]; ok {
			continue
		}
		t.removed = true
		t.stopReason = "removed from the node's assignment"
		if t.finished {
			e.retireLocked(t)
		} else {
			t.cancel()
		}
	}
}

// retireLocked moves a finished task from the table to the history.
func (e *Executor) retireLocked(t *task) {
	if e.mu.tasks[t.spec.ID] == t {
		delete(e.mu.tasks, t.spec.ID)
	}
	e.mu.history = append(e.mu.history, t)
	if n := len(e.mu.history) - historySize; n > 0 {
		for _, old := range e.mu.history[:n] {
			if old.dir != "" {
				_ = os.RemoveAll(old.dir) // its logs
			}
		}
		e.mu.history = slices.Delete(e.mu.history, 0, n)
	}
}

// Fence kills every task now and starts nothing until Unfence: the node
// could not renew its lease, so the control plane may place its tasks
// elsewhere, and none may run twice.
func (e *Executor) Fence(reason string) {
	e.fenced.Store(true) // before any t.mu: a start that follows sees it
	e.mu.Lock()
	if e.mu.fenceReason == "" {
		e.mu.unfenced = make(chan struct{})
	}
	e.mu.fenceReason = cmp.Or(reason, "fenced")
	ts := slices.Collect(maps.Values(e.mu.tasks))
	e.mu.Unlock()
	for _, t := range ts {
		t.mu.Lock()
		if t.proc {
			t.fenceKill = true
			if err := t.group.Kill(); err != nil {
				e.cfg.Log.Error("fence: kill task", "task", t.spec.ID, "err", err)
			}
		}
		t.mu.Unlock()
		if t.once && t.cancel != nil {
			t.cancel()
		}
	}
	e.cfg.Log.Warn("executor fenced: every task killed", "reason", reason)
	e.changed()
}

// Unfence allows starts again; assigned tasks that Fence killed start again.
func (e *Executor) Unfence() {
	e.mu.Lock()
	if e.mu.fenceReason != "" {
		e.mu.fenceReason = ""
		e.fenced.Store(false)
		close(e.mu.unfenced)
	}
	e.mu.Unlock()
	e.changed()
}

// waitUnfenced blocks while the executor is fenced; false when ctx ended.
func (e *Executor) waitUnfenced(ctx context.Context, t *task) bool {
	for {
		e.mu.Lock()
		ch, reason := e.mu.unfenced, e.mu.fenceReason
		e.mu.Unlock()
		select {
		case <-ch:
			return ctx.Err() == nil
		default:
		}
		t.update(e, func(st *TaskStatus) {
			if !st.State.Terminal() {
				st.State = Pending
			}
			st.Message = "fenced: " + reason
		})
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// Tasks lists the tasks sorted by id, with live CPU and memory usage.
// Finished ones (terminal states, and tasks no longer assigned) are
// included only when asked.
func (e *Executor) Tasks(includeFinished bool) []TaskStatus {
	return e.tasks(includeFinished, true)
}

// States is Tasks without the CPU and memory figures: it reads no cgroup
// files (the node's heartbeat reports states every few seconds).
func (e *Executor) States(includeFinished bool) []TaskStatus {
	return e.tasks(includeFinished, false)
}

func (e *Executor) tasks(includeFinished, usage bool) []TaskStatus {
	e.mu.Lock()
	ts := slices.Collect(maps.Values(e.mu.tasks))
	if includeFinished {
		ts = append(ts, e.mu.history...)
	}
	e.mu.Unlock()
	out := make([]TaskStatus, 0, len(ts))
	for _, t := range ts {
		st := t.status(usage)
		if !includeFinished && st.State.Terminal() {
			continue
		}
		out = append(out, st)
	}
	slices.SortStableFunc(out, func(a, b TaskStatus) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), a.StartedAt.Compare(b.StartedAt))
	})
	return out
}

// lookup finds the current task with the id, or the latest retired one.
func (e *Executor) lookup(id string) *task {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t, ok := e.mu.tasks[id]; ok {
		return t
	}
	for i := len(e.mu.history) - 1; i >= 0; i-- {
		if e.mu.history[i].spec.ID == id {
			return e.mu.history[i]
		}
	}
	return nil
}

// RunOnce runs a short confined batch task (`unum exec`): the same shim,
// cgroup and dynamic uid as any task, no restart, output streamed to stdout
// and stderr, the whole cgroup killed when ctx ends. It returns the exit code
// (128+n for signal n); err reports a task that could not start.
func (e *Executor) RunOnce(ctx context.Context, spec TaskSpec, stdout, stderr io.Writer) (int, error) {
	if err := spec.validate(); err != nil {
		return -1, err
	}
	if e.fenced.Load() {
		return -1, ErrFenced
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := e.newTask(spec, true)
	t.cancel = cancel
	e.mu.Lock()
	if _, ok := e.mu.tasks[spec.ID]; ok {
		e.mu.Unlock()
		return -1, fmt.Errorf("executor: %w: %s", ErrTaskExists, spec.ID)
	}
	e.mu.tasks[spec.ID] = t
	e.mu.Unlock()
	defer e.finish(t)
	if err := e.prepare(t); err != nil {
		t.update(e, func(st *TaskStatus) { st.State, st.Message = Failed, err.Error() })
		return -1, err
	}
	res := e.runProcess(ctx, t, stdout, stderr)
	if res.err != nil {
		t.update(e, func(st *TaskStatus) { st.State, st.Message = Failed, res.err.Error() })
		return -1, res.err
	}
	state := Complete
	switch {
	case ctx.Err() != nil || res.fenced:
		state = Killed
	case res.code != 0:
		state = Failed
	}
	t.update(e, func(st *TaskStatus) { st.State, st.Message = state, res.describe() })
	return res.code, nil
}
