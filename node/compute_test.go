package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/scheduler/cgroup"
	"github.com/unumos/unum/scheduler/executor"
	"github.com/unumos/unum/scheduler/jobspec"
)

// newComputeNode is a node named name with a real executor (real
// cgroups, task folder reachable by task uids) and a real audit log, in a
// temporary folder, for tests of the node's compute half without a
// cluster. Its executor does not run until the test runs it.
func newComputeNode(t *testing.T, name string) (*node, *audit.Log) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o711))
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o711))
	layout, err := cgroup.DetectHost()
	require.NoError(t, err)
	mgr, err := cgroup.New(layout, cgroupName(name, dir))
	require.NoError(t, err)
	t.Cleanup(func() { _ = mgr.RemoveRoots() })
	self, err := os.Executable()
	require.NoError(t, err)
	ex, err := executor.New(executor.Config{Dir: filepath.Join(dir, "tasks"), Cgroups: mgr, ShimPath: self,
		SocketPath: filepath.Join(dir, "agent.sock"), Log: quietLog()})
	require.NoError(t, err)
	h, err := audit.NewSigningKeyset()
	require.NoError(t, err)
	signer, err := audit.NewSigner(name, h)
	require.NoError(t, err)
	log, err := audit.Open(audit.Config{Dir: filepath.Join(dir, "audit"), Node: name, Signer: signer, Logger: quietLog()})
	require.NoError(t, err)
	t.Cleanup(func() { log.Close() })
	n := &node{log: quietLog(), cfg: &Config{Name: name}, l: Layout{Dir: dir}, audit: log,
		id:      spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("unum.test"), "/node/"+name),
		compute: &compute{exec: ex, cgroups: mgr, kick: make(chan struct{}, 1), start: time.Now()}}
	return n, log
}

// TestFencing: a node whose heartbeats go unanswered past the fencing
// deadline kills its tasks (a real executor, real cgroups, a real
// process) and starts none until a heartbeat is answered again; both are
// audited.
func TestFencing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs a task: needs root for cgroups and the dynamic uid; CI runs as root")
	}
	n, log := newComputeNode(t, "fence")
	ex := n.compute.exec
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	n.compute.mu.fenceAfter = time.Hour
	j, err := jobspec.Parse([]byte("name: f\ntype: service\ntask: {command: /bin/sleep, args: [\"1000\"]}\nresources: {cpu: 100, memory: 32}\nrestart: {policy: always, delay: 100ms, max_delay: 200ms}\n"))
	require.NoError(t, err)
	canon, err := j.Canonical()
	require.NoError(t, err)
	alloc := &unumv1.Allocation{Id: "fence0000000001", Namespace: "default", Job: "f", SpiffeId: "spiffe://unum.test/ns/default/job/f",
		Resources: &unumv1.Resources{CpuMillis: 100, MemoryMib: 32}, SpecJson: string(canon)}
	sync := func(rev int64, allocs ...*unumv1.Allocation) {
		n.applyAllocations(&unumv1.SyncAgentResponse{AllocationsLoaded: true, Revision: rev, Allocations: allocs})
	}
	sync(1, alloc)
	pid := waitRunning(t, ex, 0)

	go n.fenceLoop(ctx)
	// Heartbeats stop being answered: the deadline passes.
	n.compute.mu.Lock()
	n.compute.mu.fenceAfter = 300 * time.Millisecond
	n.compute.mu.Unlock()
	require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 10*time.Second, 20*time.Millisecond, "fenced task still alive")
	requireNothingRuns := func(why string) {
		t.Helper()
		time.Sleep(500 * time.Millisecond)
		for _, ts := range ex.Tasks(false) {
			require.NotEqual(t, executor.Running, ts.State, why)
		}
	}
	requireNothingRuns("a task started while fenced")

	// A heartbeat is answered again (stored at revision 10): not enough,
	// the allocations may have moved meanwhile. A sync older than the
	// heartbeat is not enough either.
	n.heartbeatAnswered(time.Now(), &unumv1.HeartbeatResponse{FenceAfterMs: 60_000, Revision: 10})
	requireNothingRuns("a task restarted on the heartbeat alone")
	sync(9, alloc)
	requireNothingRuns("a task restarted from a view older than the heartbeat")
	// The partition outlived the grace period: the task was re-placed
	// elsewhere, and the fresh view no longer names it. It never restarts.
	sync(10)
	requireNothingRuns("a task re-placed elsewhere restarted here")
	n.compute.mu.Lock()
	require.False(t, n.compute.mu.fenced)
	n.compute.mu.Unlock()
	// Placed here again: it runs.
	sync(11, alloc)
	waitRunning(t, ex, pid)

	fences := 0
	require.NoError(t, log.Scan(context.Background(), 0, func(_ uint64, raw []byte) bool {
		if strings.Contains(string(raw), `"action":"`+audit.ActionNodeFence+`"`) {
			fences++
		}
		return true
	}))
	require.Equal(t, 2, fences, "fence and unfence are audited")
}

// waitRunning waits for the executor's one task to run with a pid other
// than not, and returns it.
func waitRunning(t *testing.T, ex *executor.Executor, not int) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		for _, ts := range ex.Tasks(false) {
			if ts.State == executor.Running && ts.PID != not && ts.PID != 0 {
				pid = ts.PID
				return true
			}
		}
		return false
	}, 20*time.Second, 20*time.Millisecond)
	return pid
}
