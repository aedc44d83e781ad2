package spawn

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStartReapsAndCloseRefuses(t *testing.T) {
	s := New()
	p, err := s.Start(exec.Command("sleep", "60"))
	require.NoError(t, err)
	require.Equal(t, uintptr(syscall.SIGKILL), uintptr(p.Cmd.SysProcAttr.Pdeathsig))
	select {
	case <-p.Done():
		t.Fatal("Done closed while the child runs")
	case <-time.After(100 * time.Millisecond):
	}
	require.NoError(t, p.Cmd.Process.Kill())
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done never closed after the child was killed")
	}
	require.False(t, p.Cmd.ProcessState.Success())
	s.Close()
	_, err = s.Start(exec.Command("true"))
	require.True(t, errors.Is(err, ErrClosed), "%v", err)
}
