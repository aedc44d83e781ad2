package pidsteer

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
)

// LockPath is the file whose flock serialises pid steering across test
// processes. /run is a tmpfs on every systemd host: no stale state
// survives a reboot, and the flock is released when its holder dies.
const LockPath = "/run/unum-test-pidsteer.lock"

// attempts bounds the retries: each is one fork, so a busy machine (a
// parallel `go test ./...` compiling and starting binaries) can take the
// pid a few hundred times before Start gets it.
const attempts = 2000

// Start starts the command build returns until one gets pid want, by
// setting the pid namespace's last allocated pid just below it; build is
// called once per attempt and must return an unstarted command. Commands
// that got another pid are killed and reaped at once; the returned one
// when the test ends.
func Start(t testing.TB, want int, build func() *exec.Cmd) *exec.Cmd {
	t.Helper()
	unlock, err := lock()
	if err != nil {
		t.Fatalf("pidsteer: %v", err)
	}
	defer unlock()
	for range attempts {
		// Writing ns_last_pid needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE
		// in the pid namespace's user namespace: root has it.
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(want-1)), 0); err != nil {
			t.Fatalf("pidsteer: steer pid allocation: %v", err)
		}
		cmd := build()
		if err := cmd.Start(); err != nil {
			t.Fatalf("pidsteer: start %s: %v", cmd.Path, err)
		}
		if cmd.Process.Pid == want {
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			return cmd
		}
		// Another process on the machine (or a thread of this one) took it.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Fatalf("pidsteer: pid %d was not handed out again in %d attempts", want, attempts)
	return nil
}

// lock takes LockPath's flock, waiting for another process's steering to
// end.
func lock() (unlock func(), err error) {
	f, err := os.OpenFile(LockPath, os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", LockPath, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", LockPath, err)
	}
	// Closing the file releases the lock.
	return func() { f.Close() }, nil
}
