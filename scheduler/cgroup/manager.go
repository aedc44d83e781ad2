package cgroup

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/unumos/unum/identity/selector"
)

// AgentLeaf is the leaf group a node process moves itself into on a pure v2
// host before it enables controllers for its subtree: cgroup v2 lets a group
// either hold processes or hand controllers to its children, not both (the
// "no internal processes" rule), which is how systemd's delegation works.
const AgentLeaf = "unum-agent"

// cfsPeriod is the CFS period used for CPU quotas, in microseconds: the
// kernel's default, so a quota of N millicores is N*100 µs per period.
const cfsPeriod = 100000

// managed are the controllers the Manager sets limits with.
var managed = []string{"cpu", "memory", "pids"}

var (
	nodeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// Limits are one task's resource limits; zero means unlimited.
type Limits struct {
	CPUMillis   int64 // millicores: 1000 is one CPU
	MemoryBytes int64
	Pids        int64
}

// Manager creates and removes the task groups of one node. Its methods are
// safe for concurrent use: after New it holds no mutable state.
type Manager struct {
	node    string
	layout  Layout
	v2Root  string            // <v2 own>/unum-<node>
	v2Ctrls []string          // managed controllers enabled for task groups in v2
	v1Roots map[string]string // managed controller -> <v1 own>/unum-<node>, when v2 lacks it
	report  Report
}

// New places the node's task root in every hierarchy it uses and enables
// controllers where v2 has them. A controller v2 has but cannot hand to the
// task root (the node's group is not delegated to it) is reported as not
// enforced with the reason, unless a v1 hierarchy holds it.
func New(l Layout, nodeName string) (*Manager, error) {
	if !nodeNameRE.MatchString(nodeName) {
		return nil, fmt.Errorf("cgroup: node name %q is not a valid path element ([a-z0-9._-], up to 63)", nodeName)
	}
	if l.V2.Mount == "" || l.V2.Own == "" {
		return nil, ErrNoV2
	}
	m := &Manager{node: nodeName, layout: l, v1Roots: map[string]string{}}
	base := l.V2.Own
	var want []string
	for _, c := range managed {
		if l.HasV2(c) {
			want = append(want, c)
		}
	}
	notes := map[string]string{}
	if len(want) > 0 {
		var err error
		base, err = delegate(l, want)
		if err != nil {
			for _, c := range want {
				notes[c] = err.Error()
			}
			want = nil
		}
	}
	m.v2Root = filepath.Join(base, "unum-"+nodeName)
	if err := mkdirExist(m.v2Root); err != nil {
		return nil, fmt.Errorf("cgroup: create v2 task root: %w", err)
	}
	if len(want) > 0 {
		if err := writeFile(filepath.Join(m.v2Root, "cgroup.subtree_control"), enableLine(want)); err != nil {
			for _, c := range want {
				notes[c] = fmt.Sprintf("enable in %s: %v", m.v2Root, err)
			}
			want = nil
		}
	}
	m.v2Ctrls = want
	for _, c := range managed {
		if slices.Contains(m.v2Ctrls, c) {
			continue
		}
		v1, ok := l.V1For(c)
		if !ok {
			continue
		}
		root := filepath.Join(v1.Own, "unum-"+nodeName)
		if err := mkdirExist(root); err != nil {
			notes[c] = fmt.Sprintf("create v1 %s task root: %v", c, err)
			continue
		}
		m.v1Roots[c] = root
	}
	m.report = m.buildReport(notes)
	return m, nil
}

// delegate makes the node's own v2 group hand the controllers to its
// children and returns the group to create the task root in. On the v2 root
// the no-internal-processes rule does not apply; elsewhere the node process
// first moves itself into AgentLeaf.
func delegate(l Layout, want []string) (string, error) {
	own := l.V2.Own
	if filepath.Base(own) == AgentLeaf {
		// Another Manager in this process (unum dev) has moved us already.
		own = filepath.Dir(own)
	}
	if own != l.V2.Mount {
		leaf := filepath.Join(own, AgentLeaf)
		if err := mkdirExist(leaf); err != nil {
			return "", fmt.Errorf("create %s: %w", leaf, err)
		}
		if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
			return "", fmt.Errorf("move the node process into %s: %w", leaf, err)
		}
	}
	if err := writeFile(filepath.Join(own, "cgroup.subtree_control"), enableLine(want)); err != nil {
		return "", fmt.Errorf("enable %s in %s (is the group delegated to unum, and are other processes in it?): %w",
			strings.Join(want, ","), own, err)
	}
	return own, nil
}

func enableLine(ctrls []string) string {
	var b strings.Builder
	for i, c := range ctrls {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("+" + c)
	}
	return b.String()
}

// Root is the node's v2 task root.
func (m *Manager) Root() string { return m.v2Root }

// Create makes the task's groups and applies its limits. The v2 group is
// always made; a v1 group is made in each v1 hierarchy the Manager uses. A
// group left over from an earlier run is an error: Sweep first.
func (m *Manager) Create(taskID string, lim Limits) (g *Group, err error) {
	if selector.CheckTaskID(taskID) != nil {
		return nil, fmt.Errorf("cgroup: task id %q is not [a-z0-9-]{1,64} beginning with a letter or digit", taskID)
	}
	if lim.CPUMillis < 0 || lim.MemoryBytes < 0 || lim.Pids < 0 {
		return nil, fmt.Errorf("cgroup: task %s: negative limit %+v", taskID, lim)
	}
	g = m.group(taskID)
	if err := os.Mkdir(g.v2Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: create task group: %w", err)
	}
	defer func() {
		if err != nil {
			_ = g.removeDirs()
		}
	}()
	for _, d := range g.v1Dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup: create task group: %w", err)
		}
	}
	if err := m.applyLimits(g, lim); err != nil {
		return nil, fmt.Errorf("cgroup: task %s: %w", taskID, err)
	}
	fd, err := os.OpenFile(g.v2Dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup: open task group: %w", err)
	}
	g.dir = fd
	return g, nil
}

// group names the task's directories without touching the file system.
func (m *Manager) group(taskID string) *Group {
	g := &Group{id: taskID, m: m, v2Dir: filepath.Join(m.v2Root, taskID)}
	for _, c := range managed {
		root, ok := m.v1Roots[c]
		if !ok {
			continue
		}
		d := filepath.Join(root, taskID)
		if !slices.Contains(g.v1Dirs, d) { // co-mounted controllers share a directory
			g.v1Dirs = append(g.v1Dirs, d)
		}
	}
	return g
}

func (m *Manager) applyLimits(g *Group, lim Limits) error {
	if lim.CPUMillis > 0 {
		quota := max(lim.CPUMillis*cfsPeriod/1000, 1000) // the kernel's minimum quota is 1 ms
		if slices.Contains(m.v2Ctrls, "cpu") {
			if err := writeFile(filepath.Join(g.v2Dir, "cpu.max"), fmt.Sprintf("%d %d", quota, cfsPeriod)); err != nil {
				return err
			}
		} else if root, ok := m.v1Roots["cpu"]; ok {
			d := filepath.Join(root, g.id)
			if err := writeFile(filepath.Join(d, "cpu.cfs_period_us"), strconv.Itoa(cfsPeriod)); err != nil {
				return err
			}
			if err := writeFile(filepath.Join(d, "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10)); err != nil {
				return err
			}
		}
	}
	if lim.MemoryBytes > 0 {
		v := strconv.FormatInt(lim.MemoryBytes, 10)
		if slices.Contains(m.v2Ctrls, "memory") {
			if err := writeFile(filepath.Join(g.v2Dir, "memory.max"), v); err != nil {
				return err
			}
			// No swap: a task's memory limit means memory, not memory plus swap.
			if err := writeIfPresent(filepath.Join(g.v2Dir, "memory.swap.max"), "0"); err != nil {
				return err
			}
		} else if root, ok := m.v1Roots["memory"]; ok {
			d := filepath.Join(root, g.id)
			if err := writeFile(filepath.Join(d, "memory.limit_in_bytes"), v); err != nil {
				return err
			}
			// memsw is memory plus swap: equal to the memory limit means no swap.
			if err := writeIfPresent(filepath.Join(d, "memory.memsw.limit_in_bytes"), v); err != nil {
				return err
			}
		}
	}
	if lim.Pids > 0 {
		v := strconv.FormatInt(lim.Pids, 10)
		if slices.Contains(m.v2Ctrls, "pids") {
			if err := writeFile(filepath.Join(g.v2Dir, "pids.max"), v); err != nil {
				return err
			}
		} else if root, ok := m.v1Roots["pids"]; ok {
			if err := writeFile(filepath.Join(root, g.id, "pids.max"), v); err != nil {
				return err
			}
		}
	}
	return nil
}

// Sweep kills and removes every task group under the node's roots: groups a
// crashed earlier run left behind, whose processes nobody can reap or
// account for. It returns the task ids it removed, sorted.
func (m *Manager) Sweep(ctx context.Context) ([]string, error) {
	names := map[string]bool{}
	roots := []string{m.v2Root}
	for _, r := range m.v1Roots {
		roots = append(roots, r)
	}
	for _, r := range roots {
		ents, err := os.ReadDir(r)
		if err != nil {
			return nil, fmt.Errorf("cgroup: sweep %s: %w", r, err)
		}
		for _, e := range ents {
			if e.IsDir() && selector.CheckTaskID(e.Name()) == nil {
				names[e.Name()] = true
			}
		}
	}
	var out []string
	var errs []error
	for n := range names {
		g := m.group(n)
		if err := g.Remove(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, errors.Join(errs...)
}

// V2Path is the v2 task root as /proc/PID/cgroup names it (the path the
// agent attests tasks by), whatever the hierarchy's mount point and root.
func (m *Manager) V2Path() string {
	rel, err := filepath.Rel(m.layout.V2.Mount, m.v2Root)
	if err != nil {
		return ""
	}
	return path.Join("/", m.layout.V2.Root, rel)
}

// Roots are the node's task roots: the v2 root first, then the v1 roots.
func (m *Manager) Roots() []string {
	return append([]string{m.v2Root}, slices.Sorted(maps.Values(m.v1Roots))...)
}

// RemoveRoots removes the node's task roots (not the AgentLeaf the node
// process lives in). It fails while task groups remain: Sweep first.
func (m *Manager) RemoveRoots() error {
	var errs []error
	for _, d := range m.Roots() {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("cgroup: remove task root %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// Report says which limits are enforced and where.
func (m *Manager) Report() Report { return m.report }

func (m *Manager) buildReport(notes map[string]string) Report {
	r := Report{Grouping: Enforcement{Enforced: true, How: "cgroup v2 " + m.v2Root}}
	how := map[string]string{"cpu": "cfs quota", "memory": "", "pids": ""}
	for _, c := range managed {
		var e Enforcement
		switch {
		case slices.Contains(m.v2Ctrls, c):
			e = Enforcement{Enforced: true, How: fmt.Sprintf("cgroup v2 %s %s", v2File(c), m.v2Root)}
		case m.v1Roots[c] != "":
			s := "cgroup v1 " + c
			if how[c] != "" {
				s += " (" + how[c] + ")"
			}
			e = Enforcement{Enforced: true, How: s + " " + m.v1Roots[c]}
		default:
			reason := notes[c]
			if reason == "" {
				reason = "no " + c + " controller in cgroup v2 or v1"
			}
			e = Enforcement{How: "not enforced (" + reason + ")"}
		}
		switch c {
		case "cpu":
			r.CPU = e
		case "memory":
			r.Memory = e
		case "pids":
			r.Pids = e
		}
	}
	return r
}

func v2File(c string) string {
	switch c {
	case "cpu":
		return "cpu.max"
	case "memory":
		return "memory.max"
	default:
		return "pids.max"
	}
}

// Report is what a Manager enforces: one entry per resource.
type Report struct {
	Grouping, CPU, Memory, Pids Enforcement
}

// Enforcement is how one resource is limited, or why it is not.
type Enforcement struct {
	Enforced bool
	// How names the mechanism and the task root, e.g. "cgroup v1 cpu
	// (cfs quota) /sys/fs/cgroup/cpu/unum-n1", or "not enforced (why)".
	How string
}

// Lines renders the report for `unum status`, one line per resource.
func (r Report) Lines() []string {
	return []string{
		"grouping: " + r.Grouping.How,
		"cpu: " + r.CPU.How,
		"memory: " + r.Memory.How,
		"pids: " + r.Pids.How,
	}
}

func mkdirExist(d string) error {
	if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// writeFile writes a cgroup control file. It never creates a file: a missing
// control file means the controller is not there, which must be an error.
func writeFile(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if _, err := f.WriteString(v); err != nil {
		f.Close()
		return fmt.Errorf("write %q to %s: %w", v, p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

func writeIfPresent(p, v string) error {
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return writeFile(p, v)
}
