package kernel

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSweepDefunct: pins whose task root is gone are removed; the pins of
// a live task root are kept, and still enforce.
func TestSweepDefunct(t *testing.T) {
	mount := requireCgroupBPF(t)
	name := fmt.Sprintf("unum-sweep-test-%d", os.Getpid())
	pins := filepath.Join("/sys/fs/bpf", name)
	cg := filepath.Join(mount, name)
	// With the syscall audit layer where it loads: its link is not a
	// cgroup link, and must neither keep the pins alive nor outlive them.
	var syscalls []uint32
	if Probe().SyscallAudit {
		syscalls = []uint32{unix.SYS_BPF}
	}
	open := func(node string) (*Enforcer, string) {
		root := filepath.Join(cg, node)
		require.NoError(t, os.MkdirAll(root, 0o755))
		e, err := Open(context.Background(), Config{PinDir: filepath.Join(pins, node), Cgroup: root, Syscalls: syscalls})
		require.NoError(t, err)
		return e, root
	}
	t.Cleanup(func() { removeCgroupTree(t, cg) })
	t.Cleanup(func() {
		_ = Remove(filepath.Join(pins, "live"))
		_ = Remove(filepath.Join(pins, "gone"))
		_ = os.RemoveAll(pins)
	})
	live, _ := open("live")
	defer live.Close()
	gone, goneRoot := open("gone")
	var sysLink [2]uint64
	if syscalls != nil {
		var err error
		sysLink, err = loadPinnedLinkInfo(filepath.Join(linksDir(filepath.Join(pins, "gone")), syscallLink))
		require.NoError(t, err)
	}
	require.NoError(t, gone.Close())
	// A crashed node's task root is removed (by its reaper): the kernel
	// detaches its links, and its pins are garbage.
	removeCgroupTree(t, goneRoot)
	require.NoError(t, os.MkdirAll(filepath.Join(pins, "opening", "maps"), 0o700)) // an Open in progress: no links yet

	// The kernel releases a removed cgroup's programs asynchronously.
	var removed []string
	require.Eventually(t, func() bool {
		var err error
		removed, err = SweepDefunct(pins)
		require.NoError(t, err)
		return len(removed) > 0
	}, 10*time.Second, 50*time.Millisecond, "the defunct pins stayed")
	require.Equal(t, []string{filepath.Join(pins, "gone")}, removed)
	require.NoDirExists(t, filepath.Join(pins, "gone"))
	require.DirExists(t, filepath.Join(pins, "live", "links"))
	require.DirExists(t, filepath.Join(pins, "opening"))
	st, err := live.Stats()
	require.NoError(t, err)
	require.Contains(t, st.Programs, "connect4")
	require.NoError(t, os.RemoveAll(filepath.Join(pins, "opening")))
	if syscalls != nil {
		_, err := link.NewFromID(link.ID(sysLink[0]))
		require.ErrorIs(t, err, os.ErrNotExist, "the swept node's sys_exit link is still attached")
	}
}
