package shim

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/threatmodel"
)

func TestLandlockHandled(t *testing.T) {
	fs, sc := landlockHandled(0)
	require.Zero(t, fs|sc)
	fs, sc = landlockHandled(1)
	require.Equal(t, uint64(llV1), fs)
	require.Zero(t, sc)
	fs, _ = landlockHandled(3)
	require.Equal(t, uint64(llV1|llV2|llV3), fs)
	fs, sc = landlockHandled(7)
	require.Equal(t, uint64(llV1|llV2|llV3|llV5), fs)
	require.Equal(t, uint64(unix.LANDLOCK_SCOPE_SIGNAL|unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET), sc)
	fs, _ = landlockHandled(99)
	require.Zero(t, fs&unix.LANDLOCK_ACCESS_FS_RESOLVE_UNIX, "not handled: the Workload API socket must stay reachable")
}

// onConfinedThread runs f on a thread of its own that gets no_new_privs,
// the Landlock ruleset and the seccomp filter, as the shim's exec thread
// does. The thread is never unlocked, so it ends with the goroutine and
// nothing else in the test process is confined.
func onConfinedThread(t *testing.T, l *Landlock, exe []string, f func()) (time.Duration, error) {
	t.Helper()
	type res struct {
		d   time.Duration
		err error
	}
	done := make(chan res)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			done <- res{err: err}
			return
		}
		t0 := time.Now()
		err := restrictLandlock(l, exe)
		if err == nil {
			err = installSeccomp()
		}
		d := time.Since(t0)
		if err == nil {
			f()
		}
		done <- res{d, err}
	}()
	r := <-done
	return r.d, r.err
}

// The ruleset and the filter on one thread: what the rules allow works,
// what they do not is refused with EACCES whatever the mode bits say, and
// the escape set gets EPERM. The task-level attack tests are in
// scheduler/executor; this one needs no root.
func TestConfineOnThread(t *testing.T) {
	abi := LandlockABI()
	if abi == 0 {
		t.Skip(threatmodel.KernelLacks("landlock") + "the kernel has no Landlock (not built, or not in the lsm= boot list)")
	}
	rw := t.TempDir()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("s"), 0o666))
	l := &Landlock{MinABI: abi, RW: []string{rw}, RX: []string{"/usr", "/bin"}, RO: []string{"/etc", "/proc"},
		Dev: []string{"/dev/null"}}
	var got map[string]error
	d, err := onConfinedThread(t, l, nil, func() {
		got = map[string]error{}
		_, got["read outside"] = os.ReadFile(secret)
		got["write outside"] = os.WriteFile(filepath.Join(outside, "x"), nil, 0o666)
		_, got["read /etc/hosts"] = os.ReadFile("/etc/hosts")
		got["write /etc"] = os.WriteFile("/etc/unum-landlock-test", nil, 0o644)
		got["write rw"] = os.WriteFile(filepath.Join(rw, "x"), []byte("x"), 0o644)
		got["mkdir rw"] = os.Mkdir(filepath.Join(rw, "d"), 0o755)
		got["rename rw"] = os.Rename(filepath.Join(rw, "x"), filepath.Join(rw, "d", "x"))
		_, got["read /proc/self/status"] = os.ReadFile("/proc/self/status")
		got["write /dev/null"] = os.WriteFile("/dev/null", []byte("x"), 0o644)
		got["mount"] = unix.Mount("none", rw, "tmpfs", 0, "")
		got["ptrace"] = unix.PtraceAttach(os.Getpid())
	})
	require.NoError(t, err)
	t.Logf("Landlock ABI %d and seccomp applied in %v", abi, d)
	want := map[string]error{
		"read outside": unix.EACCES, "write outside": unix.EACCES, "read /etc/hosts": nil, "write /etc": unix.EACCES,
		"write rw": nil, "mkdir rw": nil, "rename rw": nil, "read /proc/self/status": nil, "write /dev/null": nil,
		"mount": unix.EPERM, "ptrace": unix.EPERM,
	}
	for k, w := range want {
		if w == nil {
			require.NoError(t, got[k], k)
		} else {
			require.ErrorIs(t, got[k], w, k)
		}
	}
	// This thread is not confined.
	_, err = os.ReadFile(secret)
	require.NoError(t, err)

	// A kernel below the node's ABI fails closed.
	_, err = onConfinedThread(t, &Landlock{MinABI: abi + 1, RW: []string{rw}}, nil, func() {})
	require.ErrorContains(t, err, "the node requires")
	// A path that is not there fails closed too.
	_, err = onConfinedThread(t, &Landlock{MinABI: 1, RW: []string{filepath.Join(rw, "missing")}}, nil, func() {})
	require.ErrorContains(t, err, "no such file")
}
