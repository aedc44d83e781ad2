package executor

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/scheduler/cgroup"
	"github.com/unumos/unum/scheduler/executor/shim"
)

// helperArg makes the test binary, copied where task uids can run it, act
// as an attacker tool inside a task (see helperMain).
const helperArg = "__executor-test-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == shim.Arg {
		shim.Main()
	}
	if len(os.Args) > 2 && os.Args[1] == helperArg {
		os.Exit(helperMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// helperMain: "ptrace PID" tries PTRACE_ATTACH and prints the result.
func helperMain(args []string) int {
	switch args[0] {
	case "ptrace":
		pid, _ := strconv.Atoi(args[1])
		if err := syscall.PtraceAttach(pid); err != nil {
			fmt.Printf("ptrace: %v\n", err)
			return 1
		}
		fmt.Println("ptrace: attached")
		return 0
	}
	return 2
}

// traversable makes a temp dir and its parents reachable by task uids.
func traversable(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != filepath.Clean(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
		require.NoError(t, os.Chmod(p, 0o711))
	}
	return d
}

type harness struct {
	e    *Executor
	m    *cgroup.Manager
	dir  string
	wait func() // stops Run and waits for it
}

func newManager(t *testing.T) *cgroup.Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups, changes uids")
	}
	l, err := cgroup.DetectHost()
	require.NoError(t, err)
	var b [4]byte
	_, _ = rand.Read(b[:])
	m, err := cgroup.New(l, "xt-"+hex.EncodeToString(b[:]))
	require.NoError(t, err)
	return m
}

// start builds an executor on the real cgroup hierarchy and runs it.
func start(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	m := newManager(t)
	self, err := os.Executable()
	require.NoError(t, err)
	cfg := Config{
		Dir:        filepath.Join(traversable(t), "tasks"),
		Cgroups:    m,
		ShimPath:   self,
		SocketPath: "/run/unum-test/agent.sock",
	}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	h := &harness{e: e, m: m, dir: cfg.Dir}
	var once sync.Once
	h.wait = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(func() {
		h.wait()
		// Run's promise: every task dead, its groups and work folder gone.
		ents, err := os.ReadDir(m.Root())
		require.NoError(t, err)
		for _, ent := range ents {
			require.False(t, ent.IsDir(), "task group %s left after Run", ent.Name())
		}
		require.NoError(t, m.RemoveRoots())
	})
	return h
}

func (h *harness) task(t *testing.T, id string) TaskStatus {
	t.Helper()
	var out TaskStatus // the newest with the id: history sorts first
	for _, st := range h.e.Tasks(true) {
		if st.ID == id {
			out = st
		}
	}
	return out
}

func (h *harness) waitFor(t *testing.T, id string, ok func(TaskStatus) bool, what string) TaskStatus {
	t.Helper()
	var last TaskStatus
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if last = h.task(t, id); ok(last) {
			return last
		}
	}
	t.Fatalf("task %s never %s; last status %+v", id, what, last)
	return last
}

func (h *harness) waitState(t *testing.T, id string, s State) TaskStatus {
	t.Helper()
	return h.waitFor(t, id, func(st TaskStatus) bool { return st.State == s && (s != Running || st.PID != 0) }, string(s))
}

func sh(id, script string) TaskSpec {
	return TaskSpec{ID: id, Namespace: "default", Job: "j", Command: "/bin/sh", Args: []string{"-c", script}}
}

func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// alive reports whether pid runs (a zombie nobody reaps counts as dead).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// pidsOfUID lists running processes with the uid.
func pidsOfUID(t *testing.T, uid uint32) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || !alive(pid) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "Uid:"); ok && strings.Fields(rest)[0] == strconv.FormatUint(uint64(uid), 10) {
				out = append(out, pid)
			}
		}
	}
	return out
}

func runOnce(t *testing.T, e *Executor, spec TaskSpec) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := e.RunOnce(ctx, spec, &out, &errb)
	require.NoError(t, err)
	return code, out.String(), errb.String()
}

var _ io.Writer = (*logSink)(nil)

func cgroupLayout() (string, error) {
	l, err := cgroup.DetectHost()
	return l.V2.Mount, err
}
