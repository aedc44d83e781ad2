package node

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sys/unix"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/identity/agent"
	"github.com/unumos/unum/identity/selector"
	"github.com/unumos/unum/scheduler/cgroup"
	"github.com/unumos/unum/scheduler/executor"
	"github.com/unumos/unum/scheduler/executor/reaper"
	"github.com/unumos/unum/scheduler/jobspec"
)

// A compute node's executor half: the allocations the control plane
// assigned to this node (from the sync stream) become the executor's
// desired set and the agent's task entries; heartbeats carry the node's
// capacity, limits and task states back; and a node that cannot get a
// heartbeat answered fences itself (kills every task) before the control
// plane re-places its tasks, so no task runs twice.

// allocEntryPrefix marks agent entries that stand for allocations (the CA
// confirms them against the allocation, control.confirmAlloc).
const allocEntryPrefix = "alloc:"

// execTaskPrefix starts the id of every exec task (allocation ids are hex).
const execTaskPrefix = "exec-"

// defaultFenceAfter is used until a heartbeat answer says otherwise; it
// matches the control plane's defaults (lease 10s + grace 20s / 2).
const defaultFenceAfter = 20 * time.Second

// compute is the executor and its lease bookkeeping.
type compute struct {
	exec     *executor.Executor
	cgroups  *cgroup.Manager
	capacity *unumv1.Resources
	ports    [2]int32 // the task port range (0, 0: the scheduler's default)
	// start is the monotonic reference of the lease bookkeeping (a wall
	// clock stepped back must not postpone fencing).
	start time.Time
	mu    struct {
		sync.Mutex
		// lastAck is when the last answered heartbeat was sent, since
		// start; fenceAfter the deadline past it; fenced whether tasks
		// were killed for want of a lease; unfenceAt (fenced only) the
		// etcd revision a sync response must reach before tasks run
		// again, 0 until a heartbeat is answered.
		lastAck, fenceAfter time.Duration
		fenced              bool
		unfenceAt           int64
	}
	// kick wakes the heartbeat loop after a task changed state.
	kick chan struct{}
	// enforce is the node's kernel enforcement (degraded without BPF).
	enforce *enforcer
	// stopped is set once the executor stopped every task and the reaper
	// removed the task roots (a clean stop).
	stopped atomic.Bool
	// reaper kills every task if this process dies (package reaper);
	// reaperPipe is the only write end of its stdin.
	reaper     *exec.Cmd
	reaperPipe *os.File
}

// startCompute sets up cgroups and the executor. It fails when the host
// cannot run tasks (no cgroup v2, not root): the node then serves the
// Workload API but reports no capacity, so nothing is placed on it.
func (n *node) startCompute() (_ *compute, err error) {
	layout, err := cgroup.DetectHost()
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	mgr, err := cgroup.New(layout, cgroupName(n.cfg.Name, n.l.Dir))
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	// A reaper left by an earlier run that died keeps that run's tasks
	// until its fencing deadline; this run takes them over (the executor
	// sweeps and restarts them), so the old reaper must not kill them, or
	// remove the roots, later.
	if err := stopOldReaper(n.l.path("reaper.pid"), mgr.Root(), n.log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// An earlier run's tasks may still be there (its reaper is
			// stopped): no run of this node supervises them now. Then no
			// executor will ever use the roots.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, serr := mgr.Sweep(ctx)
			if serr != nil {
				n.log.Error("kill an earlier run's tasks", "err", serr)
			}
			// Once no task is left, nothing is left to enforce on or to
			// audit: the pins (this run's or an earlier one's) go, or the
			// syscall audit layer's sys_exit link would slow every system
			// call until a later start swept it. The reaper was stopped
			// above and no other run of this node holds them.
			if rerr := mgr.RemoveRoots(); serr == nil && rerr == nil {
				if perr := kernel.Remove(filepath.Join(bpfPinRoot, cgroupName(n.cfg.Name, n.l.Dir))); perr != nil {
					n.log.Warn("remove BPF pins", "err", perr)
				}
			}
		}
	}()
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the unum binary for the task shim: %w", err)
	}
	c := &compute{cgroups: mgr, kick: make(chan struct{}, 1), capacity: n.capacity(),
		ports: [2]int32{int32(n.o.TaskPorts[0]), int32(n.o.TaskPorts[1])}}
	c.start = time.Now()
	c.mu.fenceAfter = defaultFenceAfter
	c.exec, err = executor.New(executor.Config{
		Dir:        n.l.path("tasks"),
		Cgroups:    mgr,
		ShimPath:   self,
		SocketPath: n.l.Socket(),
		WaitIdentity: func(ctx context.Context, id string) error {
			if strings.HasPrefix(id, execTaskPrefix) {
				// An exec task runs under its caller's delegated
				// credential, not a workload identity.
				return nil
			}
			return n.agent.WaitSVID(ctx, allocEntryPrefix+id)
		},
		Bind:   func(ctx context.Context, id, dir string) error { return c.enforce.bind(ctx, id, dir) },
		Unbind: func(id string) { c.enforce.unbind(id) },
		OnChange: func() {
			select {
			case c.kick <- struct{}{}:
			default:
			}
		},
		Log: n.log.With("component", "executor"),
	})
	if err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	// After the executor swept an earlier run's tasks: their cgroups'
	// bindings are stale.
	c.enforce = n.startEnforcement(c)
	defer func() {
		if err != nil {
			c.enforce.close(false)
		}
	}()
	if err := c.startReaper(self, n.l.path("reaper.pid")); err != nil {
		return nil, err
	}
	return c, nil
}

// stopOldReaper kills the reaper recorded in pidFile if it still runs and
// is this node's (its arguments name root), and waits until it is gone.
func stopOldReaper(pidFile, root string, log *slog.Logger) error {
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("task reaper pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return os.Remove(pidFile)
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return os.Remove(pidFile) // gone
	}
	defer unix.Close(pfd)
	// Read the arguments after pinning the process with its pidfd: a pid
	// reused by anything else than this node's reaper is left alone.
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return os.Remove(pidFile)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) < 3 || args[1] != reaper.Arg || args[2] != root {
		return os.Remove(pidFile)
	}
	log.Warn("an earlier run's task reaper still runs: stopping it, this run takes its tasks over", "pid", pid)
	if err := unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("stop the earlier task reaper %d: %w", pid, err)
	}
	// The pidfd becomes readable when the process exits.
	fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 10_000)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil || n == 0:
			return fmt.Errorf("the earlier task reaper %d did not exit: %v", pid, err)
		default:
			return os.Remove(pidFile)
		}
	}
}

// startReaper starts the task reaper: when this process dies, even by
// SIGKILL, it kills every task of this node at the fencing deadline of the
// last keepalive, so no task outlives the lease of the node that would
// fence it, and then removes the node's BPF pins (nothing is left to
// enforce on). Its pid goes to pidFile, for the next run to stop it.
func (c *compute) startReaper(self, pidFile string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("task reaper: %w", err)
	}
	args := append([]string{reaper.Arg}, c.cgroups.Roots()...)
	// The pin dir goes last: a restarted node recognises its reaper by the
	// v2 root right after Arg (stopOldReaper), and stops it before it opens
	// the pins again, so the reaper never removes pins a live node owns.
	args = append(args, reaper.PinsFlag+c.enforce.pinDir)
	cmd := exec.Command(self, args...)
	cmd.Stdin = r
	cmd.Stderr = os.Stderr
	// Its own session: a Ctrl-C to the node's process group does not reach
	// it. The pipe's write end is close-on-exec: no task inherits it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("task reaper: %w", err)
	}
	r.Close()
	c.reaper, c.reaperPipe = cmd, w
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		_ = c.stopReaper() // no task runs yet
		return fmt.Errorf("task reaper pid file: %w", err)
	}
	return nil
}

// keepaliveLoop tells the reaper every second that this process still
// runs, with the current fencing deadline: a node stopped or hung for
// longer cannot fence itself, so the reaper does it.
func (n *node) keepaliveLoop(ctx context.Context) {
	c := n.compute
	t := time.NewTicker(reaper.KeepaliveEvery)
	defer t.Stop()
	failed := false
	for {
		c.mu.Lock()
		d := c.mu.fenceAfter
		c.mu.Unlock()
		if _, err := c.reaperPipe.Write(reaper.Keepalive(d)); err != nil && !failed && ctx.Err() == nil {
			failed = true
			n.log.Error("task reaper keepalive failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stopReaper lets the reaper go once the executor stopped every task; an
// error means it could not kill or remove everything.
func (c *compute) stopReaper() error {
	if c == nil || c.reaper == nil {
		return nil
	}
	// Every task is stopped: the reaper removes the roots now, not at the
	// fencing deadline.
	_, _ = c.reaperPipe.Write(reaper.Stop())
	c.reaperPipe.Close()
	return c.reaper.Wait()
}

// cgroupName names the node's task root: the node's name, and a digest of
// its data folder, because several nodes of several clusters may share a
// machine (unum dev, tests) and an executor kills whatever it finds under
// its own root when it starts.
func cgroupName(node, dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	return node + "-" + hex.EncodeToString(sum[:4])
}

// capacity is what this node offers to tasks: the configured figures, or
// every CPU and the memory the kernel reports.
func (n *node) capacity() *unumv1.Resources {
	r := &unumv1.Resources{CpuMillis: n.o.CPUMillis, MemoryMib: n.o.MemoryMiB}
	if r.CpuMillis <= 0 {
		r.CpuMillis = int64(runtime.NumCPU()) * 1000
	}
	if r.MemoryMib <= 0 {
		r.MemoryMib = memTotalMiB()
	}
	return r
}

func memTotalMiB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}

// enforcementMode is what the node reports as its enforcement mode.
func (c *compute) enforcementMode() string {
	if c == nil {
		// No executor: no task runs here, nothing to confine.
		return string(enforcement.ModeDegraded)
	}
	return c.enforce.mode()
}

// enforcementReport fills a heartbeat with the node's enforcement.
func (c *compute) enforcementReport(req *unumv1.HeartbeatRequest) {
	if c != nil {
		c.enforce.report(req)
	}
}

// kicked is closed-or-signalled when a task changed state (nil: never).
func (c *compute) kicked() <-chan struct{} {
	if c == nil {
		return nil
	}
	return c.kick
}

// taskRoot is the agent's task cgroup root, "" without an executor.
func (c *compute) taskRoot() string {
	if c == nil {
		return ""
	}
	return c.cgroups.V2Path()
}

// applyAllocations hands the node's allocations to the executor. Agent
// entries for them are built by allocEntries.
func (n *node) applyAllocations(resp *unumv1.SyncAgentResponse) {
	if n.compute == nil || !resp.GetAllocationsLoaded() {
		return
	}
	specs := make([]executor.TaskSpec, 0, len(resp.GetAllocations()))
	for _, a := range resp.GetAllocations() {
		spec, err := taskSpecOf(a)
		if err != nil {
			n.log.Warn("skipping allocation with an unreadable spec", "alloc", a.GetId(), "err", err)
			continue
		}
		specs = append(specs, spec)
	}
	c := n.compute
	// The network first: a task's run binds its cgroup to its identity,
	// which this sync may name.
	c.enforce.applySync(resp)
	c.exec.Assign(specs)
	// A fenced node runs tasks again only from a view of its allocations
	// at least as recent as its answered heartbeat: while it was cut off
	// the leader may have re-placed them.
	c.mu.Lock()
	unfence := c.mu.fenced && c.mu.unfenceAt > 0 && resp.GetRevision() >= c.mu.unfenceAt
	if unfence {
		// Under mu: the executor's fencing always follows c.mu.fenced.
		c.mu.fenced, c.mu.unfenceAt = false, 0
		c.exec.Unfence()
	}
	c.mu.Unlock()
	if unfence {
		n.log.Info("lease renewed and allocations synced: tasks may run again", "revision", resp.GetRevision())
		n.recordFence(false, fmt.Sprintf("heartbeats are answered again and the allocations are synced at revision %d", resp.GetRevision()))
	}
}

// taskSpecOf is what the executor runs for an allocation.
func taskSpecOf(a *unumv1.Allocation) (executor.TaskSpec, error) {
	j, err := jobspec.ParseCanonical([]byte(a.GetSpecJson()))
	if err != nil {
		return executor.TaskSpec{}, err
	}
	ports := map[string]int{}
	for k, v := range a.GetPorts() {
		ports[k] = int(v)
	}
	return executor.TaskSpec{
		ID: a.GetId(), Namespace: a.GetNamespace(), Job: a.GetJob(), Index: int(a.GetIndex()), SPIFFEID: a.GetSpiffeId(),
		Command: j.Task.Command, Args: j.Task.Args, Env: j.Task.Env, WorkDir: j.Task.WorkDir,
		CPUMillis: a.GetResources().GetCpuMillis(), MemoryMiB: a.GetResources().GetMemoryMib(),
		Ports: ports, Batch: j.Type == jobspec.TypeBatch,
		Restart: executor.Restart{Policy: j.Restart.Policy, MaxAttempts: j.Restart.Attempts, Delay: j.Restart.Delay, MaxDelay: j.Restart.MaxDelay},
	}, nil
}

// allocEntries are the agent entries of this node's allocations: the
// job's identity for exactly the processes in the task's cgroup.
func (n *node) allocEntries(allocs []*unumv1.Allocation) []agent.Entry {
	var out []agent.Entry
	for _, a := range allocs {
		id, err := spiffeid.FromString(a.GetSpiffeId())
		if err != nil {
			continue
		}
		sel, err := selector.Parse("unum:task:" + a.GetId())
		if err != nil {
			continue
		}
		out = append(out, agent.Entry{ID: allocEntryPrefix + a.GetId(), SPIFFEID: id, Selectors: []selector.Selector{sel}})
	}
	return out
}

// executorReport fills a heartbeat with the executor's state.
func (c *compute) executorReport(req *unumv1.HeartbeatRequest) {
	if c == nil {
		return
	}
	req.Compute = true
	req.Capacity = c.capacity
	req.PortLo, req.PortHi = c.ports[0], c.ports[1]
	req.Limits = c.exec.Limits().Lines()
	for _, t := range c.exec.States(true) {
		req.Tasks = append(req.Tasks, taskStatusProto(t))
	}
}

func taskStatusProto(t executor.TaskStatus) *unumv1.TaskStatus {
	return &unumv1.TaskStatus{
		Id: t.ID, Namespace: t.Namespace, Job: t.Job, Index: int32(t.Index), SpiffeId: t.SPIFFEID,
		State: string(t.State), Pid: int32(t.PID), Uid: t.UID, ExitCode: int32(t.ExitCode), Signal: t.Signal,
		Restarts: int32(t.Restarts), StartedAtUnix: unixOrZero(t.StartedAt), FinishedAtUnix: unixOrZero(t.FinishedAt),
		CpuNanos: t.CPUNanos, MemoryBytes: t.MemoryBytes, Message: t.Message,
	}
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// heartbeatAnswered notes an answered heartbeat sent at sent.
func (n *node) heartbeatAnswered(sent time.Time, resp *unumv1.HeartbeatResponse) {
	c := n.compute
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ms := resp.GetFenceAfterMs(); ms > 0 {
		c.mu.fenceAfter = time.Duration(ms) * time.Millisecond
	}
	c.mu.lastAck = sent.Sub(c.start)
	if c.mu.fenced && c.mu.unfenceAt == 0 {
		// Unfenced by applyAllocations, once a sync this recent arrives.
		c.mu.unfenceAt = max(resp.GetRevision(), 1)
	}
}

// fenceLoop kills every task when no heartbeat was answered for the
// fencing deadline: the control plane re-places a silent node's tasks
// after its lease and grace period, and the deadline comes first.
func (n *node) fenceLoop(ctx context.Context) {
	c := n.compute
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		since := time.Since(c.start) - c.mu.lastAck
		deadline := c.mu.fenceAfter
		fence := since > deadline && !c.mu.fenced
		reason := fmt.Sprintf("no heartbeat answered for %s (deadline %s): this node may no longer hold its tasks", since.Truncate(time.Millisecond), deadline)
		if fence {
			c.mu.fenced, c.mu.unfenceAt = true, 0
			c.exec.Fence(reason)
		}
		c.mu.Unlock()
		if !fence {
			continue
		}
		n.log.Warn("fenced: killed every task", "reason", reason)
		n.recordFence(true, reason)
	}
}

// FenceDetails are a node.fence event's details.
type FenceDetails struct {
	Fenced bool   `json:"fenced"`
	Reason string `json:"reason"`
}

func (n *node) recordFence(fenced bool, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := audit.Event{Kind: audit.KindNode, Action: audit.ActionNodeFence, Outcome: audit.Allow, Subject: n.id.String(),
		Resource: "node/-/" + n.cfg.Name}.WithDetails(FenceDetails{Fenced: fenced, Reason: reason})
	if err := n.audit.Record(ctx, &ev); err != nil {
		n.log.Error("audit record failed", "action", ev.Action, "err", err)
	}
}
