package kernel

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/threatmodel"
)

// escapeSet: the helper commands the LSM layer must refuse in the task
// subtree.
func escapeSet(t *testing.T) []string {
	sleeper := exec.Command("sleep", "60")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	mnt := t.TempDir()
	return []string{
		fmt.Sprintf("ptrace %d", sleeper.Process.Pid),
		"bpf",
		"mount " + mnt,
		"init_module",
		"finit_module",
		fmt.Sprintf("socket %d %d %d", unix.AF_PACKET, unix.SOCK_RAW, 0),
		fmt.Sprintf("socket %d %d %d", unix.AF_PACKET, unix.SOCK_DGRAM, 0),
	}
}

// outsideAnswers runs the escape set outside any task subtree. No call may
// get EPERM there (module loading gets ENOEXEC, after the security hooks,
// or ENOSYS on a kernel without modules), so when TestLSMEscapeSet sees
// EPERM inside it is the LSM layer's doing.
func outsideAnswers(t *testing.T, cmds []string) []string {
	var out []string
	for _, c := range cmds {
		a := errnoName(helperDo(strings.Fields(c)))
		require.NotEqual(t, "EPERM", a, "outside the task subtree: %s", c)
		out = append(out, a)
	}
	return out
}

func TestEscapeSetControl(t *testing.T) {
	requireCgroupBPF(t)
	t.Log(outsideAnswers(t, escapeSet(t)))
}

// TestLSMEscapeSet (T-106): with the BPF LSM layer, a process anywhere in
// the task subtree, bound or not, as root, is refused ptrace, bpf(),
// mount, module loading and packet sockets, and keeps netlink sockets.
func TestLSMEscapeSet(t *testing.T) {
	requireCgroupBPF(t)
	if c := Probe(); !c.LSM {
		t.Skip(threatmodel.KernelLacks("bpf-lsm") + "probe: " + c.Reason)
	}
	f := newFixture(t)
	require.NoError(t, f.e.Close())
	e, err := Open(t.Context(), Config{PinDir: f.pinDir, Cgroup: f.taskRoot, LSM: true})
	require.NoError(t, err)
	defer e.Close()
	st, err := e.Stats()
	require.NoError(t, err)
	require.Contains(t, st.Layers, enforcement.LayerLSM)
	require.Contains(t, st.Programs, "lsm/bpf")

	cmds := escapeSet(t)
	outside := outsideAnswers(t, cmds)
	dir, _ := f.group("stray")
	h := f.start(dir)
	for i, c := range cmds {
		want := "EPERM"
		if outside[i] == "ENOSYS" { // the kernel has no such call at all
			want = "ENOSYS"
		}
		require.Equal(t, want, h.do(t, "%s", c), c)
	}
	// Netlink is not egress, and SOCK_RAW is how it is opened (Go's
	// net.Interfaces, glibc's getaddrinfo with AI_ADDRCONFIG): allowed.
	require.Equal(t, "ok", h.do(t, "socket %d %d %d", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE))
}

// TestLSMRefusedKeepsNetwork: asking for the LSM layer on a kernel that
// refuses it still loads the network layer, and says why LSM is missing.
func TestLSMRefusedKeepsNetwork(t *testing.T) {
	requireCgroupBPF(t)
	c := Probe()
	cfg := Config{LSM: true}
	if c.LSM {
		// This kernel loads the layer: stand in for one that refuses it.
		cfg.lsmRefusal = errors.New("operation not permitted (simulated)")
	}
	f := newFixture(t)
	require.NoError(t, f.e.Close())
	cfg.PinDir, cfg.Cgroup = f.pinDir, f.taskRoot
	e, err := Open(t.Context(), cfg)
	require.NoError(t, err)
	defer e.Close()
	st, err := e.Stats()
	require.NoError(t, err)
	require.Equal(t, []string{enforcement.LayerNetwork}, st.Layers)
	require.Contains(t, st.LSMReason, "kernel refused BPF LSM")
	dir, _ := f.group("stray")
	l := listenTCP(t, "127.0.0.1:0")
	require.Equal(t, "EPERM", f.start(dir).do(t, "tcp %s", l))
	t.Logf("probe: %+v", c)
}

// TestProbe: as root on a kernel with cgroup BPF, the probe says so and
// names the cgroup v2 mount; its LSM answer is the real load's.
func TestProbe(t *testing.T) {
	mount := requireCgroupBPF(t)
	c := Probe()
	require.True(t, c.CgroupBPF)
	require.Equal(t, mount, c.CgroupV2)
	require.Equal(t, c.LSM, loadLSMProbe() == nil)
	if !c.LSM {
		require.NotEmpty(t, c.Reason)
	}
}
