package kernel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
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

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
)

// The test binary doubles as the processes the tests place in cgroups:
// UNUM_KERNEL_HELPER selects the role.
const helperEnv = "UNUM_KERNEL_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "serve":
		serveHelper(os.Stdin, os.Stdout)
		os.Exit(0)
	case "open":
		if err := openHelper(); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(2)
}

// serveHelper answers one command per line with "ok" or an errno name:
//
//	tcp ADDR:PORT        connect a TCP socket (AF_INET for IPv4, else AF_INET6)
//	udp ADDR:PORT        sendto on an unconnected UDP socket
//	socket FAM TYPE PROTO
//	listen               net.Listen("tcp", "127.0.0.1:0"), as a Go server would
func serveHelper(in io.Reader, out io.Writer) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		fmt.Fprintln(out, errnoName(helperDo(f)))
	}
}

func helperDo(f []string) error {
	switch {
	case len(f) == 2 && (f[0] == "tcp" || f[0] == "udp"):
		ap, err := netip.ParseAddrPort(f[1])
		if err != nil {
			return err
		}
		fam, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()})
		if ap.Addr().Is4() {
			fam, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
		}
		typ := unix.SOCK_STREAM
		if f[0] == "udp" {
			typ = unix.SOCK_DGRAM
		}
		fd, err := unix.Socket(fam, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if f[0] == "tcp" {
			return unix.Connect(fd, sa)
		}
		return unix.Sendto(fd, []byte("hello"), 0, sa)
	case len(f) == 2 && f[0] == "ptrace":
		// Opening another process's memory is a ptrace attach check
		// (PTRACE_MODE_ATTACH), without leaving a tracer behind.
		pid, err := strconv.Atoi(f[1])
		if err != nil {
			return err
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/mem", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	case len(f) == 1 && f[0] == "bpf":
		// BPF_MAP_CREATE of a small array.
		attr := [5]uint32{unix.BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0}
		fd, _, en := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if en != 0 {
			return en
		}
		return unix.Close(int(fd))
	case len(f) == 2 && f[0] == "mount":
		if err := unix.Mount("none", f[1], "tmpfs", 0, ""); err != nil {
			return err
		}
		return unix.Unmount(f[1], 0)
	case len(f) == 1 && f[0] == "init_module":
		// Not an ELF: without the LSM layer the kernel answers ENOEXEC
		// after the security hook has run.
		return unix.InitModule(make([]byte, 128), "")
	case len(f) == 1 && f[0] == "finit_module":
		fd, err := unix.Open("/dev/zero", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.FinitModule(fd, "", 0)
	case len(f) == 2 && f[0] == "ptrace-attach":
		// The system call itself (the seccomp filter sees it by number).
		pid, err := strconv.Atoi(f[1])
		if err != nil {
			return err
		}
		if err := unix.PtraceAttach(pid); err != nil {
			return err
		}
		return unix.PtraceDetach(pid)
	case len(f) == 1 && f[0] == "keyctl":
		_, err := unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_SESSION_KEYRING, 0, 0, 0)
		return err
	case len(f) == 1 && f[0] == "seccomp":
		return installTestFilter()
	case len(f) == 1 && f[0] == "listen":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		return ln.Close()
	case len(f) == 4 && f[0] == "socket":
		var n [3]int
		for i := range n {
			v, err := strconv.Atoi(f[i+1])
			if err != nil {
				return err
			}
			n[i] = v
		}
		fd, err := unix.Socket(n[0], n[1]|unix.SOCK_CLOEXEC, n[2])
		if err != nil {
			return err
		}
		return unix.Close(fd)
	}
	return fmt.Errorf("unknown command %q", f)
}

// installTestFilter puts every thread of the helper under a seccomp
// filter that refuses ptrace, bpf, mount and keyctl with EPERM, as the
// task shim's filter does (the shim's own is installed on the exec thread
// only and needs an exec).
func installTestFilter() error {
	prog := []bpf.Instruction{bpf.LoadAbsolute{Off: 0, Size: 4}}
	for _, nr := range []uint32{unix.SYS_PTRACE, unix.SYS_BPF, unix.SYS_MOUNT, unix.SYS_KEYCTL} {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipFalse: 1},
			bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)})
	}
	prog = append(prog, bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	if _, _, en := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog))); en != 0 {
		return en
	}
	return nil
}

func errnoName(err error) string {
	if err == nil {
		return "ok"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return unix.ErrnoName(en)
	}
	return "error: " + err.Error()
}

// openHelper plays an agent: it opens the enforcer, binds a cgroup, adds
// rules, says "ready" and waits to be killed.
func openHelper() error {
	id, err := strconv.ParseUint(os.Getenv("UNUM_BIND"), 10, 64)
	if err != nil {
		return err
	}
	r, err := enforcement.ParseRule(os.Getenv("UNUM_RULE"))
	if err != nil {
		return err
	}
	e, err := Open(context.Background(), Config{PinDir: os.Getenv("UNUM_PIN"), Cgroup: os.Getenv("UNUM_CGROUP")})
	if err != nil {
		return err
	}
	if err := e.Bind(id, enforcement.Binding{Identity: 7}); err != nil {
		return err
	}
	if err := e.ApplyRules(map[enforcement.IdentityNum][]enforcement.Rule{7: {r}}, nil); err != nil {
		return err
	}
	fmt.Println("ready")
	select {}
}

// requireCgroupBPF skips when the test cannot run here, saying why, and
// returns the cgroup v2 mount point.
func requireCgroupBPF(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and makes cgroups")
	}
	c := Probe()
	if !c.CgroupBPF {
		t.Skipf("kernel lacks cgroup BPF: %s", c.Reason)
	}
	return c.CgroupV2
}

// fixture is a test's own cgroup subtree (ROOT/tasks is the task root),
// pin directory and enforcer, removed at the end of the test.
type fixture struct {
	t        *testing.T
	root     string // the test's cgroup, parent of the task root
	taskRoot string
	pinDir   string
	e        *Enforcer
	events   chan Event
}

func newFixture(t *testing.T) *fixture {
	mount := requireCgroupBPF(t)
	name := fmt.Sprintf("unum-kernel-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
	f := &fixture{
		t:      t,
		root:   filepath.Join(mount, name),
		pinDir: filepath.Join("/sys/fs/bpf", name),
		events: make(chan Event, 1024),
	}
	f.taskRoot = filepath.Join(f.root, "tasks")
	require.NoError(t, os.MkdirAll(f.taskRoot, 0o755))
	t.Cleanup(func() { removeCgroupTree(t, f.root) })
	t.Cleanup(func() { require.NoError(t, Remove(f.pinDir)) })
	f.e = f.open()
	return f
}

// open opens (another) enforcer on the fixture's pin dir and task root.
func (f *fixture) open() *Enforcer {
	e, err := Open(context.Background(), Config{PinDir: f.pinDir, Cgroup: f.taskRoot})
	require.NoError(f.t, err)
	f.t.Cleanup(func() { e.Close() })
	return e
}

// readEvents delivers the enforcer's events to f.events until the test ends.
func (f *fixture) readEvents() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := f.e.ReadEvents(ctx, func(ev Event) { f.events <- ev })
		if err != nil {
			f.t.Errorf("read events: %v", err)
		}
	}()
	f.t.Cleanup(func() { cancel(); wg.Wait() })
}

// waitEvent returns the first event matching ok, failing after 5s.
func (f *fixture) waitEvent(ok func(Event) bool) Event {
	f.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-f.events:
			if ok(ev) {
				return ev
			}
		case <-timeout:
			f.t.Fatal("no matching event within 5s")
		}
	}
}

// noEvent fails if an event arrives within a short while.
func (f *fixture) noEvent() {
	f.t.Helper()
	select {
	case ev := <-f.events:
		f.t.Fatalf("unexpected event %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
}

// group makes a cgroup under the task root and returns it with its id.
func (f *fixture) group(name string) (string, uint64) {
	dir := filepath.Join(f.taskRoot, name)
	require.NoError(f.t, os.MkdirAll(dir, 0o755))
	id, err := CgroupID(dir)
	require.NoError(f.t, err)
	return dir, id
}

// helper is a serveHelper process running in a cgroup.
type helper struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// start runs a helper in the cgroup dir, as root (so that capabilities are
// never what refuses it).
func (f *fixture) start(dir string) *helper {
	f.t.Helper()
	return startHelper(f.t, dir)
}

func startHelper(t *testing.T, dir string) *helper {
	t.Helper()
	cg, err := os.Open(dir)
	require.NoError(t, err)
	defer cg.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=serve")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &helper{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return h
}

// do runs one command in the helper and returns its answer.
func (h *helper) do(t *testing.T, format string, args ...any) string {
	t.Helper()
	_, err := fmt.Fprintf(h.in, format+"\n", args...)
	require.NoError(t, err)
	require.True(t, h.out.Scan(), "helper answered nothing: %v", h.out.Err())
	return h.out.Text()
}

func removeCgroupTree(t *testing.T, dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.WriteFile(filepath.Join(dirs[i], "cgroup.kill"), []byte("1"), 0)
		var err error
		for range 50 {
			if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove cgroup %s: %v", dirs[i], err)
		}
	}
}

// listenTCP listens on addr (port 0) and accepts until the test ends.
func listenTCP(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// listenUDP binds a UDP socket on addr for the test.
func listenUDP(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenPacket("udp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// attached counts the programs attached to the cgroup dir at hook at.
func attached(t *testing.T, dir string, at ebpf.AttachType) int {
	t.Helper()
	cg, err := os.Open(dir)
	require.NoError(t, err)
	defer cg.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: at})
	require.NoError(t, err)
	return len(res.Programs)
}

func rules(id enforcement.IdentityNum, rs ...string) map[enforcement.IdentityNum][]enforcement.Rule {
	out := map[enforcement.IdentityNum][]enforcement.Rule{}
	for _, s := range rs {
		r, err := enforcement.ParseRule(s)
		if err != nil {
			panic(err)
		}
		out[id] = append(out[id], r)
	}
	return out
}

// loadPinnedLinkInfo returns the link id and program id of a pinned link.
func loadPinnedLinkInfo(path string) ([2]uint64, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return [2]uint64{}, err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return [2]uint64{}, err
	}
	return [2]uint64{uint64(info.ID), uint64(info.Program)}, nil
}
