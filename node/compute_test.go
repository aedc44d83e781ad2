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
)

// TestFencing: a node whose heartbeats go unanswered past the fencing
// deadline kills its tasks (a real executor, real cgroups, a real
// process) and starts none until a heartbeat is answered again; both are
// audited.
func TestFencing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs a task: needs root for cgroups and the dynamic uid; CI runs as root")
	}
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o711))
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o711))
	layout, err := cgroup.DetectHost()
	require.NoError(t, err)
	mgr, err := cgroup.New(layout, cgroupName("fence", dir))
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	ex, err := executor.New(executor.Config{Dir: filepath.Join(dir, "tasks"), NodeName: "fence", Cgroups: mgr, ShimPath: self,
		SocketPath: filepath.Join(dir, "agent.sock"), Log: quietLog()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = mgr.RemoveRoots() })

	h, err := audit.NewSigningKeyset()
	require.NoError(t, err)
	signer, err := audit.NewSigner("fence", h)
	require.NoError(t, err)
	log, err := audit.Open(audit.Config{Dir: filepath.Join(dir, "audit"), Node: "fence", Signer: signer, Logger: quietLog()})
	require.NoError(t, err)
	t.Cleanup(func() { log.Close() })

	n := &node{log: quietLog(), cfg: &Config{Name: "fence"}, audit: log, id: spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("unum.test"), "/node/fence"),
		compute: &compute{exec: ex, cgroups: mgr, layout: layout, kick: make(chan struct{}, 1)}}
	n.compute.lastAck.Store(time.Now().UnixNano())
	n.compute.fenceAfter.Store(int64(time.Hour))
	ex.Assign([]executor.TaskSpec{{ID: "fence0000000001", Namespace: "default", Job: "f", Command: "/bin/sleep", Args: []string{"1000"},
		CPUMillis: 100, MemoryMiB: 32, Restart: executor.Restart{Policy: executor.RestartAlways, Delay: 100 * time.Millisecond, MaxDelay: 200 * time.Millisecond}}})
	pid := waitRunning(t, ex, 0)

	go n.fenceLoop(ctx)
	// Heartbeats stop being answered: the deadline passes.
	n.compute.fenceAfter.Store(int64(300 * time.Millisecond))
	require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 10*time.Second, 20*time.Millisecond, "fenced task still alive")
	require.True(t, n.compute.fenced.Load())
	time.Sleep(500 * time.Millisecond)
	for _, ts := range ex.Tasks(false) {
		require.NotEqual(t, executor.Running, ts.State, "a task started while fenced")
	}

	// A heartbeat is answered: tasks run again.
	n.heartbeatAnswered(time.Now(), &unumv1.HeartbeatResponse{FenceAfterMs: 60_000})
	require.False(t, n.compute.fenced.Load())
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
