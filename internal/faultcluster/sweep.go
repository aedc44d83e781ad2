package faultcluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/scheduler/executor/reaper"
)

const (
	cgroupRoot = "/sys/fs/cgroup"
	bpfPinRoot = "/sys/fs/bpf/unum"
	// lockDir holds one <prefix>.lock per run, flocked by the run for its
	// whole life: the one proof that a run is alive.
	lockDir = "/run/unum-faultcluster"
	// binDirPattern names the folders test binaries build unum into
	// (os.MkdirTemp pattern); each holds a flock on its folder while it
	// runs (lockDirectory).
	binDirPattern = "unum-fault-bin-*"
)

// runLock is a run's hold on its prefix.
type runLock struct {
	prefix string
	f      *os.File
}

// newRunLock picks a fresh prefix and locks it: it makes a lock file under
// a temporary name, flocks it, and only then links it to <prefix>.lock, so
// no sweep can ever see the prefix's lock file unlocked while the run
// lives. link fails if the name exists: two runs (or two Start calls in one
// binary) never share a prefix.
func newRunLock() (*runLock, error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("run lock: %w", err)
	}
	for range 100 {
		prefix := runPrefix + randomName(5)
		tmp, err := os.CreateTemp(lockDir, ".new-*")
		if err != nil {
			return nil, fmt.Errorf("run lock: %w", err)
		}
		if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("run lock %s: %w", tmp.Name(), err)
		}
		err = os.Link(tmp.Name(), lockPath(prefix))
		os.Remove(tmp.Name())
		if errors.Is(err, fs.ErrExist) {
			tmp.Close()
			continue
		}
		if err != nil {
			tmp.Close()
			return nil, fmt.Errorf("run lock: %w", err)
		}
		return &runLock{prefix: prefix, f: tmp}, nil
	}
	return nil, errors.New("run lock: no free prefix in 100 tries")
}

func lockPath(prefix string) string { return filepath.Join(lockDir, prefix+".lock") }

// release removes the lock file, then lets the lock go: a sweep that
// opened the file before it was removed finds, once it holds the lock,
// that the path no longer names its file, and leaves it.
func (l *runLock) release() error {
	err := os.Remove(lockPath(l.prefix))
	return errors.Join(err, l.f.Close())
}

func randomName(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// tryLock takes an exclusive flock on path without waiting. ok is false
// when someone else holds it or path is gone or was replaced meanwhile.
func tryLock(path string) (f *os.File, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		f.Close()
		return nil, false
	}
	// The path must still name the file we locked (see release).
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
		f.Close()
		return nil, false
	}
	return f, true
}

// lockDirectory holds a flock on dir (a binDirPattern folder) until the returned
// file is closed, so that sweeps of other test binaries leave it alone.
func lockDirectory(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// sweep removes what dead runs left behind: every <prefix>.lock that no
// run holds names a run whose test process is gone (crashed, killed, timed
// out). Only objects a lock file names are touched: namespaces and links
// of that prefix (links only when they carry its mark), its nodes' task
// reapers, cgroups and BPF pins, its data folder; then the lock file. It
// also removes binDirPattern folders no test binary holds.
func sweep(ctx context.Context) error {
	var errs []error
	ents, err := os.ReadDir(lockDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sweep: %w", err)
	}
	for _, e := range ents {
		prefix, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok || !strings.HasPrefix(prefix, runPrefix) {
			continue
		}
		f, ok := tryLock(lockPath(prefix))
		if !ok {
			continue // a live run's
		}
		err := sweepRun(ctx, prefix)
		if err == nil {
			// Gone only once everything is: a failed sweep is retried.
			err = os.Remove(lockPath(prefix))
		}
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("sweep %s: %w", prefix, err))
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPattern))
	for _, d := range dirs {
		// Binaries of older versions of this package hold no lock: a
		// folder written in the last quarter hour may be a live one's.
		if st, err := os.Stat(d); err != nil || time.Since(st.ModTime()) < 15*time.Minute {
			continue
		}
		if f, ok := tryLock(d); ok {
			errs = append(errs, os.RemoveAll(d))
			f.Close()
		}
	}
	return errors.Join(errs...)
}

// sweepRun removes what the dead run prefix left.
func sweepRun(ctx context.Context, prefix string) error {
	var errs []error
	if out, err := run(ctx, "ip", "netns", "list"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
				if _, err := run(ctx, "ip", "netns", "del", f[0]); err != nil {
					errs = append(errs, err)
				}
			}
		}
	} else {
		errs = append(errs, err)
	}
	if out, err := run(ctx, "ip", "-j", "link", "show"); err == nil {
		var links []struct {
			Name  string `json:"ifname"`
			Alias string `json:"ifalias"`
		}
		if err := json.Unmarshal([]byte(out), &links); err != nil {
			errs = append(errs, fmt.Errorf("ip -j link show: %w", err))
		}
		for _, l := range links {
			if l.Alias == linkMark(prefix) {
				if _, err := run(ctx, "ip", "link", "del", l.Name); err != nil {
					errs = append(errs, err)
				}
			}
		}
	} else {
		errs = append(errs, err)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"-*"))
	for _, d := range dirs {
		// The reapers first: they would remove task groups under us.
		nodes, _ := os.ReadDir(d)
		for _, n := range nodes {
			if n.IsDir() {
				errs = append(errs, stopReaper(filepath.Join(d, n.Name())))
			}
		}
	}
	errs = append(errs, removeNodeState(prefix+"-"))
	for _, d := range dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}

// removeNodeState kills the tasks of every node whose name starts with
// namePrefix (a node's name, or a run's prefix and "-") and removes their
// cgroups and BPF pins.
func removeNodeState(namePrefix string) error {
	var errs []error
	// Task roots are unum-NODE-<suffix>.
	for _, g := range findCgroups(namePrefix) {
		errs = append(errs, reaper.Kill(g, 10*time.Second), reaper.RemoveTree(g, 5*time.Second))
	}
	// The agent pins under NODE-<suffix>; Remove detaches the links too.
	if ents, err := os.ReadDir(bpfPinRoot); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), namePrefix) {
				errs = append(errs, kernel.Remove(filepath.Join(bpfPinRoot, e.Name())))
			}
		}
	}
	return errors.Join(errs...)
}

// findCgroups returns the task roots unum-<namePrefix>…, in every mounted
// hierarchy and at any depth (the memory hierarchy nests them under the
// node process's own group).
func findCgroups(namePrefix string) []string {
	var out []string
	_ = filepath.WalkDir(cgroupRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), "unum-"+namePrefix) {
			out = append(out, path)
			return filepath.SkipDir
		}
		return nil
	})
	return out
}

// stopReaper kills the task reaper a node started (its pid is in the node's
// data folder, reaper.pid) if it still runs, and waits until it is gone.
// The pid is pinned with a pidfd before its command line is checked: a pid
// reused by anything but a reaper is left alone.
func stopReaper(nodeDir string) error {
	b, err := os.ReadFile(filepath.Join(nodeDir, "reaper.pid"))
	if err != nil {
		return nil // none started, or the node removed it on a clean stop
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone
	}
	defer unix.Close(pfd)
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) < 2 || args[1] != reaper.Arg {
		return nil
	}
	if err := unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill task reaper %d of %s: %w", pid, nodeDir, err)
	}
	fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 10_000)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil || n == 0:
			return fmt.Errorf("task reaper %d of %s did not exit: %v", pid, nodeDir, err)
		default:
			return nil
		}
	}
}
