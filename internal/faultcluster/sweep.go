package faultcluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	cgroupRoot = "/sys/fs/cgroup"
	bpfPinRoot = "/sys/fs/bpf/unum"
)

// sweep removes what runs whose test process is gone left behind:
// namespaces and links, the cgroups and BPF pins of their nodes (tasks
// killed first), and their data folders.
func sweep(ctx context.Context) error {
	errs := []error{sweepNetwork(ctx)}
	for _, g := range findCgroups(func(node string) bool { _, dead := deadRun(node); return dead }) {
		errs = append(errs, removeCgroup(g))
	}
	if ents, err := os.ReadDir(bpfPinRoot); err == nil {
		for _, e := range ents {
			if _, dead := deadRun(e.Name()); dead {
				errs = append(errs, os.RemoveAll(filepath.Join(bpfPinRoot, e.Name())))
			}
		}
	}
	if ents, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range ents {
			if _, dead := deadRun(e.Name()); dead && e.IsDir() && strings.Contains(e.Name(), "-") {
				errs = append(errs, os.RemoveAll(filepath.Join(os.TempDir(), e.Name())))
			}
		}
	}
	return errors.Join(errs...)
}

// removeNodeState kills the tasks of node (a node of this run) and removes
// its cgroups and BPF pins.
func removeNodeState(node string) error {
	var errs []error
	// Task roots are unum-NODE-<suffix>.
	for _, g := range findCgroups(func(n string) bool { return n == node || strings.HasPrefix(n, node+"-") }) {
		errs = append(errs, removeCgroup(g))
	}
	// The agent pins under NODE-<suffix>.
	if ents, err := os.ReadDir(bpfPinRoot); err == nil {
		for _, e := range ents {
			if e.Name() == node || strings.HasPrefix(e.Name(), node+"-") {
				errs = append(errs, os.RemoveAll(filepath.Join(bpfPinRoot, e.Name())))
			}
		}
	}
	return errors.Join(errs...)
}

// findCgroups returns the task roots unum-NODE, in every mounted hierarchy
// and at any depth (the memory hierarchy nests them under the node
// process's own group), whose NODE match says yes to.
func findCgroups(match func(node string) bool) []string {
	var out []string
	_ = filepath.WalkDir(cgroupRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if node, ok := strings.CutPrefix(d.Name(), "unum-"); ok && strings.HasPrefix(node, runPrefix) {
			if match(node) {
				out = append(out, path)
			}
			return filepath.SkipDir
		}
		return nil
	})
	return out
}

// removeCgroup kills every process in the group and below, then removes
// the groups, deepest first.
func removeCgroup(root string) error {
	if _, err := os.Stat(filepath.Join(root, "cgroup.kill")); err == nil {
		_ = os.WriteFile(filepath.Join(root, "cgroup.kill"), []byte("1"), 0)
	}
	var dirs []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	// v1 hierarchies have no cgroup.kill: signal what they hold.
	for _, dir := range dirs {
		data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	var last error
	for i := len(dirs) - 1; i >= 0; i-- {
		// A group empties only once its processes are reaped.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := syscall.Rmdir(dirs[i])
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if time.Now().After(deadline) {
				last = fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return last
}
