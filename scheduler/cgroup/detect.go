package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/unumos/unum/internal/mountinfo"
)

// ErrNoV2 is returned by Detect on a host without a cgroup v2 hierarchy.
var ErrNoV2 = errors.New("cgroup v2 is not mounted (the executor needs it for task grouping, cgroup.kill and BPF)")

// Layout is where the node's cgroup hierarchies are and where the node
// process sits in each. Paths are absolute directories on the host.
type Layout struct {
	// V2 is the unified hierarchy (required).
	V2 V2Mount
	// V1 are the v1 hierarchies that carry controllers, sorted by mount
	// point. Named hierarchies (name=systemd) are left out.
	V1 []V1Mount
}

// V2Mount is the cgroup v2 hierarchy.
type V2Mount struct {
	// Mount is the mount point, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified.
	Mount string
	// Own is the directory of the node process's own cgroup.
	Own string
	// Root is the mount's root within the hierarchy ("/" unless a subtree
	// is bind-mounted): what /proc/PID/cgroup paths are relative to.
	Root string
	// Controllers are those available to Own (its cgroup.controllers),
	// sorted; Detect leaves it empty, DetectHost fills it.
	Controllers []string
}

// V1Mount is one cgroup v1 hierarchy.
type V1Mount struct {
	Mount       string
	Controllers []string // sorted, e.g. [cpu cpuacct]
	Own         string   // directory of the node process's own group
}

// HasV2 reports whether v2 offers the controller to the node's cgroup.
func (l Layout) HasV2(controller string) bool {
	return slices.Contains(l.V2.Controllers, controller)
}

// V1For returns the v1 hierarchy holding the controller.
func (l Layout) V1For(controller string) (V1Mount, bool) {
	for _, m := range l.V1 {
		if slices.Contains(m.Controllers, controller) {
			return m, true
		}
	}
	return V1Mount{}, false
}

// DetectHost reads /proc/self/mountinfo, /proc/self/cgroup and the own v2
// group's cgroup.controllers.
func DetectHost() (Layout, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return Layout{}, fmt.Errorf("read mountinfo: %w", err)
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return Layout{}, fmt.Errorf("read own cgroups: %w", err)
	}
	l, err := Detect(mi, cg)
	if err != nil {
		return Layout{}, err
	}
	ctrls, err := os.ReadFile(filepath.Join(l.V2.Own, "cgroup.controllers"))
	if err != nil {
		return Layout{}, fmt.Errorf("read v2 controllers: %w", err)
	}
	l.V2.Controllers = strings.Fields(string(ctrls))
	slices.Sort(l.V2.Controllers)
	return l, nil
}

type mountEntry struct {
	root, point, fstype string
	super               []string
}

// Detect parses the contents of /proc/self/mountinfo and /proc/self/cgroup.
// It is a pure function: the v2 controllers are not known from these two
// files and are left empty.
func Detect(mountinfo, procSelfCgroup []byte) (Layout, error) {
	mounts, err := parseMountinfo(mountinfo)
	if err != nil {
		return Layout{}, err
	}
	own, err := parseProcCgroup(procSelfCgroup)
	if err != nil {
		return Layout{}, err
	}
	var l Layout
	seen := map[string]bool{}
	for _, m := range mounts {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && !filepath.IsAbs(m.point) {
			return Layout{}, fmt.Errorf("cgroup mount point %q is not absolute", m.point)
		}
		switch m.fstype {
		case "cgroup2":
			if l.V2.Mount != "" {
				continue // the first mount wins; a bind mount elsewhere is the same hierarchy
			}
			p, ok := own[""]
			if !ok {
				return Layout{}, fmt.Errorf("cgroup v2 mounted at %s but /proc/self/cgroup has no 0:: line", m.point)
			}
			l.V2.Mount, l.V2.Root = m.point, m.root
			l.V2.Own = ownDir(m, p)
		case "cgroup":
			var ctrls []string
			for _, o := range m.super {
				if isV1Controller(o) {
					ctrls = append(ctrls, o)
				}
			}
			if len(ctrls) == 0 {
				continue // name=systemd and other named hierarchies
			}
			slices.Sort(ctrls)
			key := strings.Join(ctrls, ",")
			if seen[key] {
				continue
			}
			p, ok := own[key]
			if !ok {
				return Layout{}, fmt.Errorf("cgroup v1 %s mounted at %s but not listed in /proc/self/cgroup", key, m.point)
			}
			seen[key] = true
			l.V1 = append(l.V1, V1Mount{Mount: m.point, Controllers: ctrls, Own: ownDir(m, p)})
		}
	}
	if l.V2.Mount == "" {
		return Layout{}, ErrNoV2
	}
	slices.SortFunc(l.V1, func(a, b V1Mount) int { return strings.Compare(a.Mount, b.Mount) })
	return l, nil
}

// ownDir maps a cgroup path from /proc/self/cgroup to a directory under the
// mount. A mount whose root is not "/" (a bind-mounted subtree, a container
// without a cgroup namespace) exposes the path below its root.
func ownDir(m mountEntry, cgPath string) string {
	rel := cgPath
	if m.root != "/" {
		if r, ok := strings.CutPrefix(cgPath, m.root); ok && (r == "" || r[0] == '/') {
			rel = r
		}
	}
	return filepath.Join(m.point, path.Clean("/"+rel))
}

var v1Controllers = []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb",
	"memory", "misc", "net_cls", "net_prio", "perf_event", "pids", "rdma"}

func isV1Controller(opt string) bool { return slices.Contains(v1Controllers, opt) }

func parseMountinfo(b []byte) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		// ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			return nil, fmt.Errorf("mountinfo line %d: no separator: %q", n, line)
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 6 || len(g) < 3 {
			return nil, fmt.Errorf("mountinfo line %d: too few fields: %q", n, line)
		}
		out = append(out, mountEntry{
			root:   mountinfo.Unescape(f[3]),
			point:  mountinfo.Unescape(f[4]),
			fstype: g[0],
			super:  strings.Split(g[2], ","),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

// parseProcCgroup returns the own cgroup path per hierarchy, keyed by its
// sorted controller list ("" for v2, "cpu,cpuacct" for a co-mounted v1).
func parseProcCgroup(b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("/proc/self/cgroup line %d: want ID:CONTROLLERS:PATH: %q", n, line)
		}
		var ctrls []string
		for _, c := range strings.Split(parts[1], ",") {
			if isV1Controller(c) {
				ctrls = append(ctrls, c)
			}
		}
		if parts[0] != "0" && len(ctrls) == 0 {
			continue // a named v1 hierarchy
		}
		slices.Sort(ctrls)
		out[strings.Join(ctrls, ",")] = parts[2]
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("/proc/self/cgroup: %w", err)
	}
	return out, nil
}
