package cgroup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Group is one task's cgroups: its v2 group and its v1 groups. Methods are
// safe for concurrent use, except that FD must not be used after Remove.
type Group struct {
	id     string
	m      *Manager
	v2Dir  string
	v1Dirs []string
	dir    *os.File // the open v2 directory, for CLONE_INTO_CGROUP
}

// FD is the v2 group's directory file descriptor, for
// syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}: a child started
// that way is born in the group, with no window outside it.
func (g *Group) FD() int { return int(g.dir.Fd()) }

// V2Dir is the v2 group's directory.
func (g *Group) V2Dir() string { return g.v2Dir }

// V1Procs are the cgroup.procs files of the task's v1 groups, which the task
// shim joins itself (clone can only place a child in a v2 group).
func (g *Group) V1Procs() []string {
	out := make([]string, 0, len(g.v1Dirs))
	for _, d := range g.v1Dirs {
		out = append(out, filepath.Join(d, "cgroup.procs"))
	}
	return out
}

// Kill sends SIGKILL to every process in the group, descendants that
// double-forked included: they cannot leave the group. It uses cgroup.kill
// (Linux 5.14); without it, it freezes the group so nothing forks while it
// signals every pid in cgroup.procs, then thaws it so the dead can exit.
//
// A killed group is finished: remove it and create a new one for the next
// process. Linux 6.x counts kills per group (kill_seq) and a child cloned
// into a group with CLONE_INTO_CGROUP after a cgroup.kill is killed at birth
// (seen on 6.18; TestCloneIntoKilledGroup records it).
func (g *Group) Kill() error {
	err := writeFile(filepath.Join(g.v2Dir, "cgroup.kill"), "1")
	if err == nil {
		return nil
	}
	if _, serr := os.Stat(filepath.Join(g.v2Dir, "cgroup.kill")); !errors.Is(serr, os.ErrNotExist) {
		return fmt.Errorf("cgroup: kill task %s: %w", g.id, err)
	}
	if _, serr := os.Stat(g.v2Dir); serr != nil {
		return fmt.Errorf("cgroup: kill task %s: %w", g.id, serr)
	}
	return g.freezeKill()
}

func (g *Group) freezeKill() error {
	if err := writeFile(filepath.Join(g.v2Dir, "cgroup.freeze"), "1"); err != nil {
		return fmt.Errorf("cgroup: kill task %s: freeze: %w", g.id, err)
	}
	defer func() { _ = writeFile(filepath.Join(g.v2Dir, "cgroup.freeze"), "0") }()
	for range 100 {
		ev, err := os.ReadFile(filepath.Join(g.v2Dir, "cgroup.events"))
		if err != nil || bytes.Contains(ev, []byte("frozen 1")) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	pids, err := g.Pids()
	if err != nil {
		return err
	}
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("cgroup: kill task %s: pid %d: %w", g.id, p, err)
		}
	}
	return nil
}

// Pids lists the processes in the task's v2 group, sorted.
func (g *Group) Pids() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(g.v2Dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: task %s pids: %w", g.id, err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("cgroup: task %s pids: %q: %w", g.id, f, err)
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// Stats are a task's resource usage.
type Stats struct {
	CPUNanos    uint64 // CPU time used, user plus system
	MemoryBytes uint64 // memory charged now
}

// Stats reads CPU and memory usage from whichever hierarchy has them: v2
// cpu.stat (present with or without the cpu controller) or v1
// cpuacct.usage, and v2 memory.current or v1 memory.usage_in_bytes.
func (g *Group) Stats() (Stats, error) {
	var s Stats
	if b, err := os.ReadFile(filepath.Join(g.v2Dir, "cpu.stat")); err == nil {
		usec, err := flatKey(b, "usage_usec")
		if err != nil {
			return Stats{}, fmt.Errorf("cgroup: task %s cpu.stat: %w", g.id, err)
		}
		s.CPUNanos = usec * 1000
	} else if d, ok := g.v1Dir("cpuacct"); ok {
		if s.CPUNanos, err = readUint(filepath.Join(d, "cpuacct.usage")); err != nil {
			return Stats{}, fmt.Errorf("cgroup: task %s: %w", g.id, err)
		}
	}
	var err error
	if slices.Contains(g.m.v2Ctrls, "memory") {
		s.MemoryBytes, err = readUint(filepath.Join(g.v2Dir, "memory.current"))
	} else if d, ok := g.v1Dir("memory"); ok {
		s.MemoryBytes, err = readUint(filepath.Join(d, "memory.usage_in_bytes"))
	}
	if err != nil {
		return Stats{}, fmt.Errorf("cgroup: task %s: %w", g.id, err)
	}
	return s, nil
}

// v1Dir is the task's v1 directory in the hierarchy holding controller c.
func (g *Group) v1Dir(c string) (string, bool) {
	v1, ok := g.m.layout.V1For(c)
	if !ok {
		return "", false
	}
	for _, d := range g.v1Dirs {
		if strings.HasPrefix(d, v1.Own+"/") {
			return d, true
		}
	}
	return "", false
}

// Remove kills the group's processes and removes its directories in every
// hierarchy, retrying while the killed processes drain, until ctx ends.
// Removing a removed group succeeds.
func (g *Group) Remove(ctx context.Context) error {
	for {
		if err := g.Kill(); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		err := g.removeDirs()
		if err == nil {
			if g.dir != nil {
				g.dir.Close() // a second Remove closes again: harmless
			}
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("cgroup: remove task %s: %w", g.id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroup: remove task %s: processes did not drain: %w", g.id, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// removeDirs removes the v2 group first: while it still holds processes the
// v1 groups hold them too.
func (g *Group) removeDirs() error {
	for _, d := range append([]string{g.v2Dir}, g.v1Dirs...) {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			return &os.PathError{Op: "rmdir", Path: d, Err: err}
		}
	}
	return nil
}

func readUint(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return v, nil
}

// flatKey reads one key of a flat-keyed cgroup file ("key value" lines).
func flatKey(b []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s", key)
}
