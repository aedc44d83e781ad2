package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
)

// Helper modes: the test binary re-executes itself to play the connecting
// process, so the attacks run against real processes and real sockets.
const (
	envHelper = "ATTEST_TEST_HELPER"
	envSock   = "ATTEST_TEST_SOCK"
	envExec   = "ATTEST_TEST_EXEC"
	envFD     = "ATTEST_TEST_FD"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envHelper) {
	case "":
		os.Exit(m.Run())
	case "hold":
		helperHold()
	case "exec":
		helperExec()
	case "inherited":
		helperInherited()
	case "wait":
		_, _ = io.Copy(io.Discard, os.Stdin)
	default:
		fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", os.Getenv(envHelper))
		os.Exit(2)
	}
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "helper: "+format+"\n", args...)
	os.Exit(3)
}

// helperHold connects and holds the connection until stdin closes.
func helperHold() {
	c, err := net.Dial("unix", os.Getenv(envSock))
	if err != nil {
		die("dial: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{'c'}); err != nil {
		die("write: %v", err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// helperExec connects, waits until the server has captured it, then execs
// another binary that keeps using the inherited socket.
func helperExec() {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		die("socket: %v", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: os.Getenv(envSock)}); err != nil {
		die("connect: %v", err)
	}
	var b [1]byte
	if n, err := unix.Read(fd, b[:]); n != 1 || err != nil {
		die("read handshake byte: %d %v", n, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		die("clear cloexec: %v", err)
	}
	// syscall.Exec, unlike os/exec, does not de-duplicate the environment,
	// and Go takes the first of duplicate keys: drop ours first.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envHelper+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, envHelper+"=inherited", envFD+"="+strconv.Itoa(fd))
	bin := os.Getenv(envExec)
	die("exec: %v", syscall.Exec(bin, []string{bin}, env))
}

// helperInherited announces on the inherited socket that the exec happened.
func helperInherited() {
	fd, err := strconv.Atoi(os.Getenv(envFD))
	if err != nil {
		die("fd: %v", err)
	}
	if _, err := unix.Write(fd, []byte{'e'}); err != nil {
		die("write: %v", err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// socketDir returns a short directory (unix socket paths must be < 108
// bytes) that other uids may traverse.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ua")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	return dir
}

// copyTestBinary copies the test binary to dir: a different inode than the
// original, and readable by other uids (go test's build directory is not).
func copyTestBinary(t *testing.T, dir, name string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	src, err := os.Open(self)
	require.NoError(t, err)
	defer src.Close()
	path := filepath.Join(dir, name)
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	return path
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type harness struct {
	t     *testing.T
	dir   string
	sock  string
	ln    net.Listener
	creds *transportCreds
}

func newHarness(t *testing.T, usePeerPidfd bool) *harness {
	t.Helper()
	dir := socketDir(t)
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	require.NoError(t, os.Chmod(sock, 0o666))
	c := Credentials().(*transportCreds)
	c.usePeerPidfd = usePeerPidfd
	return &harness{t: t, dir: dir, sock: sock, ln: ln, creds: c}
}

// accept accepts one connection and runs the server handshake on it.
func (h *harness) accept() (net.Conn, *Peer) {
	h.t.Helper()
	raw, err := h.ln.Accept()
	require.NoError(h.t, err)
	c, info, err := h.creds.ServerHandshake(raw)
	require.NoError(h.t, err)
	h.t.Cleanup(func() { c.Close() })
	p, ok := info.(*Peer)
	require.True(h.t, ok)
	return c, p
}

// start runs the test binary (or bin) in a helper mode.
func (h *harness) start(bin, mode string, cred *syscall.Credential, extraEnv ...string) (*exec.Cmd, io.WriteCloser) {
	h.t.Helper()
	var attr *syscall.SysProcAttr
	if cred != nil {
		attr = &syscall.SysProcAttr{Credential: cred}
	}
	return h.startAttr(bin, mode, attr, extraEnv...)
}

// startAttr is start with any process attributes (a cgroup to start in).
func (h *harness) startAttr(bin, mode string, attr *syscall.SysProcAttr, extraEnv ...string) (*exec.Cmd, io.WriteCloser) {
	h.t.Helper()
	cmd := exec.Command(bin)
	// GORACE: a -race binary otherwise sleeps a second before exiting.
	cmd.Env = append(os.Environ(), envHelper+"="+mode, envSock+"="+h.sock, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = attr
	stdin, err := cmd.StdinPipe()
	require.NoError(h.t, err)
	require.NoError(h.t, cmd.Start())
	h.t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd, stdin
}

func readByte(t *testing.T, c net.Conn, want byte) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	require.NoError(t, err)
	require.Equal(t, want, b[0])
}

var pidfdModes = []struct {
	name         string
	usePeerPidfd bool
}{
	{"SO_PEERPIDFD", true},
	{"pidfd_open fallback", false},
}

func TestAttestSelf(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	for _, mode := range pidfdModes {
		t.Run(mode.name, func(t *testing.T) {
			h := newHarness(t, mode.usePeerPidfd)
			client, err := net.Dial("unix", h.sock)
			require.NoError(t, err)
			defer client.Close()
			_, p := h.accept()

			require.Equal(t, os.Getpid(), p.PID())
			require.Equal(t, uint32(os.Geteuid()), p.ConnectUID())
			require.Equal(t, AuthType, p.AuthType())

			proc, err := p.Attest()
			require.NoError(t, err)
			require.Equal(t, os.Getpid(), proc.PID)
			require.Equal(t, uint32(os.Geteuid()), proc.UID)
			require.Equal(t, uint32(os.Getegid()), proc.GIDs[0])
			require.Equal(t, self, proc.Path)
			sum, err := proc.SHA256()
			require.NoError(t, err)
			require.Equal(t, fileSHA256(t, self), sum)
		})
	}
}

// A process running as another uid is attested with that uid, its groups and
// its own binary: attestation reads the kernel's view, not anything the
// client says.
func TestAttestOtherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a child process with another uid")
	}
	for _, mode := range pidfdModes {
		t.Run(mode.name, func(t *testing.T) {
			h := newHarness(t, mode.usePeerPidfd)
			bin := copyTestBinary(t, h.dir, "helper")
			cred := &syscall.Credential{Uid: 4242, Gid: 4243, Groups: []uint32{4244}}
			cmd, _ := h.start(bin, "hold", cred)
			c, p := h.accept()
			readByte(t, c, 'c')

			require.Equal(t, cmd.Process.Pid, p.PID())
			require.Equal(t, uint32(4242), p.ConnectUID())
			require.Equal(t, uint32(4243), p.ConnectGID())
			proc, err := p.Attest()
			require.NoError(t, err)
			require.Equal(t, uint32(4242), proc.UID)
			require.Equal(t, []uint32{4243, 4244}, proc.GIDs)
			require.Equal(t, bin, proc.Path)
			sum, err := proc.SHA256()
			require.NoError(t, err)
			require.Equal(t, fileSHA256(t, bin), sum)
		})
	}
}

// A process connects, then execs a different binary that keeps using the
// socket (the binary selector would otherwise be satisfied by whatever the
// connector chose to run). Attest must refuse it.
func TestExecAfterConnect(t *testing.T) {
	h := newHarness(t, true)
	other := copyTestBinary(t, h.dir, "other")
	self, err := os.Executable()
	require.NoError(t, err)

	h.start(self, "exec", nil, envExec+"="+other)
	c, p := h.accept()
	before, err := p.Attest()
	require.NoError(t, err, "before the exec the connecting binary is attested")
	require.Equal(t, self, before.Path)

	_, err = c.Write([]byte{'h'}) // the child may exec now
	require.NoError(t, err)
	readByte(t, c, 'e') // the exec'd binary speaks on the inherited socket

	_, err = p.Attest()
	require.ErrorIs(t, err, ErrExecAfterConnect)
	require.ErrorContains(t, err, other)

	// A digest computed lazily from an earlier attestation must not hash
	// the new binary either.
	_, err = before.SHA256()
	require.ErrorIs(t, err, ErrExecAfterConnect)
}

// A process that exits after connecting is gone, whether it is still a
// zombie or already reaped (its pid free for reuse).
func TestProcessGone(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	for _, mode := range pidfdModes {
		t.Run(mode.name, func(t *testing.T) {
			h := newHarness(t, mode.usePeerPidfd)
			cmd, stdin := h.start(self, "hold", nil)
			c, p := h.accept()
			readByte(t, c, 'c')
			_, err := p.Attest()
			require.NoError(t, err)

			require.NoError(t, stdin.Close())
			// Unreaped: wait until the kernel shows a zombie.
			require.Eventually(t, func() bool {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
				return err == nil && strings.Contains(string(b), "State:\tZ")
			}, 10*time.Second, 5*time.Millisecond)
			_, err = p.Attest()
			require.ErrorIs(t, err, ErrProcessGone, "zombie")

			require.NoError(t, cmd.Wait())
			_, err = p.Attest()
			require.ErrorIs(t, err, ErrProcessGone, "reaped")
		})
	}
}

// Closing the connection closes the pidfd: the peer can no longer be
// attested and no fd leaks.
func TestCloseReleasesPidfd(t *testing.T) {
	h := newHarness(t, true)
	client, err := net.Dial("unix", h.sock)
	require.NoError(t, err)
	defer client.Close()
	c, p := h.accept()
	fd := p.pidfd
	require.GreaterOrEqual(t, fd, 0)

	require.NoError(t, c.Close())
	require.Equal(t, -1, p.pidfd)
	_, err = p.Attest()
	require.ErrorIs(t, err, ErrProcessGone)
	_ = c.Close() // a second close must not close whatever now has the fd number
	require.Equal(t, -1, p.pidfd)
}

func TestHandshakeRefusesNonUnix(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	raw, err := ln.Accept()
	require.NoError(t, err)
	defer raw.Close()
	_, _, err = Credentials().ServerHandshake(raw)
	require.ErrorContains(t, err, "not a unix socket")

	_, _, err = Credentials().ClientHandshake(t.Context(), "x", client)
	require.ErrorContains(t, err, "server-side only")
}

func TestPeerFromContext(t *testing.T) {
	_, err := PeerFromContext(t.Context())
	require.ErrorContains(t, err, "no peer")
}

func TestDigestCacheSeesRewrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bin")
	require.NoError(t, os.WriteFile(path, []byte("version one"), 0o755))
	c := newHashCache(2)
	sum := func() string {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fd)
		var st unix.Stat_t
		require.NoError(t, unix.Fstat(fd, &st))
		s, err := c.sum(fd, &st)
		require.NoError(t, err)
		return s
	}
	first := sum()
	require.Equal(t, fileSHA256(t, path), first)
	require.Equal(t, first, sum(), "cached")

	// Same inode, same size, mtime forced back: ctime still changes.
	info, err := os.Stat(path)
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("version two"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(path, info.ModTime(), info.ModTime()))
	second := sum()
	require.NotEqual(t, first, second)
	require.Equal(t, fileSHA256(t, path), second)

	// Eviction keeps the cache bounded.
	for i := range 5 {
		c.put(fileKey{ino: uint64(1000 + i)}, "x")
	}
	require.Len(t, c.mu.sums, 2)
}

func TestParseStatus(t *testing.T) {
	const ok = "Name:\tx\nState:\tS (sleeping)\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t6 9 10 \n"
	tests := []struct {
		name    string
		in      string
		want    status
		wantErr string
	}{
		{name: "effective ids", in: ok, want: status{uid: 2, gids: []uint32{6, 9, 10}}},
		{name: "no groups", in: strings.Replace(ok, "6 9 10 ", "", 1), want: status{uid: 2, gids: []uint32{6}}},
		{name: "zombie", in: strings.Replace(ok, "S (sleeping)", "Z (zombie)", 1), want: status{uid: 2, gids: []uint32{6, 9, 10}, zombie: true}},
		{name: "missing uid", in: strings.Replace(ok, "Uid:", "Xid:", 1), wantErr: "missing"},
		{name: "missing groups", in: strings.Replace(ok, "Groups:", "Grp:", 1), wantErr: "missing"},
		{name: "short uid", in: strings.Replace(ok, "\t3\t4", "", 1), wantErr: "fields"},
		{name: "bad gid", in: strings.Replace(ok, "\t6\t7", "\tx\t7", 1), wantErr: "Gid"},
		{name: "bad group", in: strings.Replace(ok, "9 10", "9 -1", 1), wantErr: "Groups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("State:\tS\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t6 9\n"))
	f.Add([]byte("Uid:\t\t\t\t\nGid:\nGroups:\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStatus(b)
		if err == nil && len(st.gids) == 0 {
			t.Fatalf("parsed status without an effective gid: %#v", st)
		}
	})
}

var _ credentials.AuthInfo = (*Peer)(nil)
