package faultcluster

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSweepTouchesOnlyDeadRunsMarkedLinks: the sweep leaves a run whose
// lock is held alone, and once the lock is free removes the links marked
// with its prefix, and only those: a link merely named like the run's stays.
func TestSweepTouchesOnlyDeadRunsMarkedLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creates links and /run/unum-faultcluster: needs root; CI runs as root")
	}
	if m := missingTools(); len(m) > 0 {
		t.Skipf("needs %v in PATH (make deps installs them)", m)
	}
	ctx := context.Background()
	l, err := newRunLock()
	require.NoError(t, err)
	marked, unmarked := l.prefix+"br", l.prefix+"v9"
	t.Cleanup(func() {
		for _, name := range []string{marked, unmarked} {
			if linkExists(ctx, name) {
				_, _ = run(ctx, "ip", "link", "del", name)
			}
		}
		_ = os.Remove(lockPath(l.prefix))
		_ = l.f.Close()
	})
	for _, args := range [][]string{
		{"link", "add", marked, "type", "bridge"},
		{"link", "set", "dev", marked, "alias", linkMark(l.prefix)},
		{"link", "add", unmarked, "type", "bridge"},
	} {
		_, err := run(ctx, "ip", args...)
		require.NoError(t, err)
	}

	// Alive: nothing is touched.
	require.NoError(t, sweep(ctx))
	require.True(t, linkExists(ctx, marked), "the sweep removed a live run's link")
	require.FileExists(t, lockPath(l.prefix))

	// Dead (the lock is released without removing the file, as when the
	// process dies): its marked link goes, then its lock file.
	require.NoError(t, l.f.Close())
	require.NoError(t, sweep(ctx))
	require.False(t, linkExists(ctx, marked), "the sweep left a dead run's marked link")
	require.True(t, linkExists(ctx, unmarked), "the sweep removed a link for its name alone")
	require.NoFileExists(t, lockPath(l.prefix))
}
