package pidsteer

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A pid freed by a process that exited is handed to the next one.
func TestStartReusesAPid(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing ns_last_pid needs root; CI runs as root")
	}
	gone := exec.Command("true")
	require.NoError(t, gone.Run())
	cmd := Start(t, gone.Process.Pid, func() *exec.Cmd { return exec.Command("sleep", "60") })
	require.Equal(t, gone.Process.Pid, cmd.Process.Pid)
}

// While a test steers, another process cannot: lock is an flock on
// LockPath, which flock(1) from another process finds taken.
func TestLockExcludesOtherProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("LockPath is under /run; CI runs as root")
	}
	flockBin, err := exec.LookPath("flock")
	require.NoError(t, err, "flock(1), of util-linux")
	unlock, err := lock()
	require.NoError(t, err)
	err = exec.Command(flockBin, "--nonblock", LockPath, "true").Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "another process took the lock while this one held it")
	require.Equal(t, 1, exit.ExitCode())
	unlock()
	require.NoError(t, exec.Command(flockBin, "--nonblock", LockPath, "true").Run(), "released")
}

// The unum binary does not link this package: it is for tests only.
func TestNotLinkedIntoUnum(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/unumos/unum/cmd/unum").Output()
	require.NoError(t, err)
	require.NotContains(t, strings.Split(string(out), "\n"), "github.com/unumos/unum/internal/pidsteer")
}
