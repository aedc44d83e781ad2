package executor

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

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

// helperMain: "ptrace PID" tries PTRACE_ATTACH and prints the result;
// "ops OP…" runs each attempt in order and prints "OP: ok" or "OP: ERRNO"
// per line (see helperOp).
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
	case "ops":
		for _, op := range args[1:] {
			name, arg, _ := strings.Cut(op, "=")
			fmt.Printf("%s: %s\n", name, result(helperOp(name, arg)))
		}
		return 0
	}
	return 2
}

// result names an attempt's outcome: "ok" or the errno's name.
func result(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// helperOp makes one attempt from inside a task, with the raw system call
// where the point is the call itself.
func helperOp(name, arg string) error {
	switch name {
	case "ptrace-child":
		// A process of the same uid, in the same task: only seccomp stops it.
		child := exec.Command("/bin/sleep", "100")
		if err := child.Start(); err != nil {
			return err
		}
		defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
		return syscall.PtraceAttach(child.Process.Pid)
	case "ptrace-pidfile", "kill-pidfile":
		pid, err := awaitPid(arg)
		if err != nil {
			return err
		}
		if name == "kill-pidfile" {
			return unix.Kill(pid, unix.SIGKILL)
		}
		return syscall.PtraceAttach(pid)
	case "signal0-pidfile":
		pid, err := awaitPid(arg)
		if err != nil {
			return err
		}
		return unix.Kill(pid, 0)
	case "bpf":
		// BPF_MAP_CREATE of a 1-entry array: the smallest real request.
		attr := [5]uint32{2 /* BPF_MAP_TYPE_ARRAY */, 4, 4, 1, 0}
		fd, _, errno := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno != 0 {
			return errno
		}
		return unix.Close(int(fd))
	case "mount":
		return unix.Mount("none", ".", "tmpfs", 0, "")
	case "umount":
		return unix.Unmount("/proc", unix.MNT_DETACH)
	case "init_module":
		return unix.InitModule([]byte("\x7fELF"), "")
	case "finit_module":
		f, err := os.Open("/dev/null")
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.FinitModule(int(f.Fd()), "", 0)
	case "kexec_load":
		_, _, errno := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0, 0, 0)
		return errnoOrNil(errno)
	case "unshare-user":
		return unix.Unshare(unix.CLONE_NEWUSER)
	case "setns":
		f, err := os.Open("/proc/self/ns/net")
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
	case "clone-user":
		// clone(2) with CLONE_NEWUSER (Go uses clone, not clone3, here).
		c := exec.Command("/bin/true")
		c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
		return c.Run()
	case "clone3":
		// A NULL struct: EINVAL when the kernel looks at it, ENOSYS when
		// the filter answers first. Never forks.
		_, _, errno := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
		return errnoOrNil(errno)
	case "fork":
		return exec.Command("/bin/true").Run()
	case "keyctl":
		_, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, true)
		return err
	case "perf":
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_TASK_CLOCK,
			Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{})), Bits: unix.PerfBitDisabled | unix.PerfBitExcludeKernel}
		fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	case "raw-socket", "packet-socket":
		fam, typ, proto := unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP
		if name == "packet-socket" {
			fam, typ, proto = unix.AF_PACKET, unix.SOCK_DGRAM, 0
		}
		fd, err := unix.Socket(fam, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	case "personality-noaslr":
		_, _, errno := unix.Syscall(unix.SYS_PERSONALITY, 0x0040000 /* ADDR_NO_RANDOMIZE */, 0, 0)
		return errnoOrNil(errno)
	case "mq_open", "mq_open-existing":
		// A POSIX message queue outlives its creator, like a file in /tmp. The
		// raw call takes the name without the C library's leading slash.
		qname := append([]byte(arg), 0)
		flags := unix.O_CREAT | unix.O_RDWR | unix.O_CLOEXEC
		if name == "mq_open-existing" {
			flags = unix.O_RDONLY | unix.O_CLOEXEC
		}
		fd, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(&qname[0])), uintptr(flags), 0o600, 0, 0, 0)
		if errno != 0 {
			return errno
		}
		return unix.Close(int(fd))
	case "sysv-leave":
		// Creates one object of each System V kind and leaves them, printing
		// their ids ("shmid: N" lines) for the test to look for.
		for _, k := range []struct {
			name string
			nr   uintptr
			a2   uintptr
		}{{"shmid", unix.SYS_SHMGET, 4096}, {"msqid", unix.SYS_MSGGET, 0o600}, {"semid", unix.SYS_SEMGET, 1}} {
			a3 := uintptr(0o600)
			if k.name == "msqid" {
				a3 = 0
			}
			id, _, errno := unix.Syscall(k.nr, 0 /* IPC_PRIVATE */, k.a2, a3)
			if errno != 0 {
				return errno
			}
			fmt.Printf("%s: %d\n", k.name, id)
		}
		return nil
	case "sysv-shm":
		// Created and removed at once: it shows the call is not refused.
		id, _, errno := unix.Syscall(unix.SYS_SHMGET, 0 /* IPC_PRIVATE */, 4096, 0o600)
		if errno != 0 {
			return errno
		}
		_, _, errno = unix.Syscall(unix.SYS_SHMCTL, id, 0 /* IPC_RMID */, 0)
		return errnoOrNil(errno)
	case "read":
		_, err := os.ReadFile(arg)
		return err
	case "write":
		return os.WriteFile(arg, []byte("x"), 0o644)
	case "list":
		_, err := os.ReadDir(arg)
		return err
	case "exec":
		return exec.Command(arg).Run()
	case "connect-unix", "connect-abstract":
		if name == "connect-abstract" {
			arg = "@" + arg
		}
		c, err := net.Dial("unix", arg)
		if err != nil {
			return err
		}
		return c.Close()
	}
	return fmt.Errorf("unknown op %q", name)
}

func errnoOrNil(e syscall.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

// awaitPid waits for a file holding a pid (written by the test as root).
func awaitPid(path string) (int, error) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "\n") {
			return strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	return 0, errors.New("no pid file")
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
