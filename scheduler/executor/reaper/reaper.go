// Package reaper is the task reaper: a small process (`unum` re-executing
// itself) that a compute node starts beside its executor and that kills
// every task of the node when the node process dies, however it dies, or
// stops running (stopped, hung) for longer than its fencing deadline.
//
// Tasks must not outlive their node process: a node that crashed no longer
// fences itself, and the scheduler re-places its tasks after the lease and
// grace period, so surviving tasks would run twice. The reaper holds the
// read end of a pipe whose only write end the node process holds (close on
// exec, so no task inherits it); when the node exits, the kernel closes the
// write end, the reaper reads EOF and, once the fencing deadline of the
// node's last keepalive has passed, kills the whole task root (cgroup.kill
// on the root kills every task group below it, and every process that
// double-forked within them). Until that deadline the tasks keep running,
// under the BPF programs the node pinned: enforcement survives the node
// process, and a node restarted in time kills the old reaper and takes over
// (it restarts the tasks). A node that stops cleanly writes Stop first.
//
// When the dead node's tasks are killed and its roots removed, the reaper
// also takes down the BPF programs the node pinned (PinsFlag): nothing is
// left to enforce on or to audit, and a leftover raw_tracepoint/sys_exit
// link (the syscall audit layer) would slow every system call on the
// machine until some later node start swept it. It never does so while a
// restarted node owns them: that node stops this reaper (and waits for it
// to exit) before it opens its programs. After Stop the node removes its
// pins itself.
//
// A node process that is stopped (SIGSTOP, a frozen cgroup) or hung cannot
// fence itself either, and its tasks keep running. So the node writes a
// keepalive line every second carrying its current fencing deadline in
// milliseconds (KeepaliveEvery); when no keepalive arrives for that long,
// the reaper kills the tasks and keeps watching (the node, if it resumes,
// finds it missed its heartbeats and fences itself). It runs in its own session and ignores
// terminal signals, so a Ctrl-C to the node's process group does not take it
// away before the node has stopped its tasks in order.
//
// Only cmd/unum (and test binaries that run compute nodes) call Main.
package reaper

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement/kernel"
)

// Arg is the first argument that makes `unum` the reaper.
const Arg = "__unum-task-reaper"

// PinsFlag prefixes the argument that names the node's BPF pin directory
// (the last argument, so that os.Args[2] stays the v2 root a restarted
// node checks before it stops this reaper).
const PinsFlag = "--pins="

// Main runs the reaper: os.Args[2] is the node's cgroup v2 task root, and
// any further arguments its v1 task roots (absolute cgroup directories),
// then optionally PinsFlag and the node's BPF pin directory. When the node
// is gone it kills the v2 root's processes, then removes every root's
// groups; when the node died (no Stop) and that succeeded, it removes the
// pin directory. It never returns.
func Main() {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	roots := os.Args[2:]
	pinDir := ""
	if n := len(roots); n > 0 && strings.HasPrefix(roots[n-1], PinsFlag) {
		pinDir, roots = strings.TrimPrefix(roots[n-1], PinsFlag), roots[:n-1]
		if !filepath.IsAbs(pinDir) || filepath.Clean(pinDir) != pinDir || pinDir == "/" {
			fmt.Fprintf(os.Stderr, "unum task reaper: %q is not a BPF pin directory\n", pinDir)
			os.Exit(2)
		}
	}
	if len(roots) == 0 {
		fmt.Fprintln(os.Stderr, "unum task reaper: want the task roots, the cgroup v2 one first")
		os.Exit(2)
	}
	for _, root := range roots {
		if !filepath.IsAbs(root) || filepath.Clean(root) != root || !exists(filepath.Join(root, "cgroup.procs")) {
			fmt.Fprintf(os.Stderr, "unum task reaper: %q is not a cgroup directory\n", root)
			os.Exit(2)
		}
	}
	died := watch(os.Stdin, roots[0], time.Now)
	err := Kill(roots[0], 10*time.Second)
	for _, root := range roots {
		err = errors.Join(err, RemoveTree(root, 5*time.Second))
	}
	// Only once no task is left: while one may be, its programs must keep
	// enforcing.
	if err == nil && died && pinDir != "" {
		err = RemovePins(pinDir)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "unum task reaper: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// RemovePins takes down the programs pinned under pinDir (links detached
// first, then the pins). A missing pinDir is not an error; one that is not
// on a BPF file system is refused, so that a wrong argument cannot make
// the reaper delete some other directory.
func RemovePins(pinDir string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(pinDir, &fs); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("remove the node's BPF pins %s: %w", pinDir, err)
	}
	if fs.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("remove the node's BPF pins: %s is not on a BPF file system", pinDir)
	}
	if err := kernel.Remove(pinDir); err != nil {
		return fmt.Errorf("remove the node's BPF pins: %w", err)
	}
	return nil
}

// KeepaliveEvery is how often the node writes a keepalive.
const KeepaliveEvery = time.Second

// Keepalive is the line a node writes to its reaper: its fencing deadline.
func Keepalive(deadline time.Duration) []byte {
	return []byte(strconv.FormatInt(deadline.Milliseconds(), 10) + "\n")
}

// Stop is the line a node writes to its reaper when it shuts down
// cleanly, its tasks already stopped: the reaper then removes the roots at
// once instead of waiting for the fencing deadline.
func Stop() []byte { return []byte("stop\n") }

// watch returns when the node is gone. After Stop, that is at once. When
// in ends without it (the node died), it is at the fencing deadline of the
// last keepalive: until then the control plane still counts the tasks as
// the node's, so they keep running, confined and enforced (the BPF
// programs are pinned), and a node restarted meanwhile takes over (it
// kills this reaper first). A node that never sent a keepalive is gone at
// once. Meanwhile, whenever no keepalive arrives for the deadline the last
// one named, it kills the tasks under root and keeps watching. It reports
// whether the node died (in ended without Stop).
func watch(in io.Reader, root string, now func() time.Time) (died bool) {
	const stop = -1
	deadlines := make(chan time.Duration)
	go func() {
		defer close(deadlines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "stop" {
				deadlines <- stop
				return
			}
			ms, err := strconv.ParseInt(line, 10, 64)
			if err != nil || ms <= 0 {
				continue
			}
			deadlines <- time.Duration(ms) * time.Millisecond
		}
	}()
	var stall <-chan time.Time
	var timer *time.Timer
	for {
		select {
		case d, ok := <-deadlines:
			switch {
			case !ok && (timer == nil || stall == nil):
				// Died with no keepalive pending (none ever, or the
				// tasks were already killed for a stall).
				return true
			case !ok:
				died, deadlines = true, nil
				fmt.Fprintf(os.Stderr, "unum task reaper: the node died (%s): its tasks stay until its fencing deadline\n", now().UTC().Format(time.RFC3339))
				continue
			case d == stop:
				return false
			}
			if timer != nil {
				timer.Stop()
			}
			timer = time.NewTimer(d)
			stall = timer.C
		case <-stall:
			stall = nil
			if died {
				fmt.Fprintf(os.Stderr, "unum task reaper: the dead node's fencing deadline passed (%s): killing its tasks\n", now().UTC().Format(time.RFC3339))
				return true
			}
			fmt.Fprintf(os.Stderr, "unum task reaper: the node sent no keepalive within its fencing deadline (%s): killing its tasks\n", now().UTC().Format(time.RFC3339))
			if err := Kill(root, 10*time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "unum task reaper: %v\n", err)
			}
		}
	}
}

// RemoveTree removes the cgroup directory root and every group below it,
// deepest first, retrying while killed processes drain out.
func RemoveTree(root string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		var last error
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = err
			}
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove %s: %w", root, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills every process in the cgroup v2 subtree at root: with
// cgroup.kill where the kernel has it (5.14+), else by signalling every
// pid of every group until the subtree is empty or the time is up.
func Kill(root string, within time.Duration) error {
	err := os.WriteFile(filepath.Join(root, "cgroup.kill"), []byte("1"), 0)
	if err == nil || errors.Is(err, os.ErrNotExist) && !exists(root) {
		return nil
	}
	deadline := time.Now().Add(within)
	for {
		pids := subtreePids(root)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill tasks under %s: %d processes left", root, len(pids))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// subtreePids are the pids of every group at or below root.
func subtreePids(root string) []int {
	var pids []int
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}
