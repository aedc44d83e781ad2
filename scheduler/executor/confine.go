package executor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/scheduler/executor/shim"
)

// The file system every task sees through Landlock, besides its own work
// and tmp folders (read-write) and its command with its interpreters
// (read, execute).
//
// /sys is readable: the C library counts CPUs from it, Go sizes GOMAXPROCS
// from the cgroup files under it, JVMs read their limits there; it holds
// nothing a local user cannot read already, and every write needs root.
// /proc is readable for the task's own /proc/self (maps, fds, limits) and
// what tools read (meminfo, cpuinfo, mounts); other processes' sensitive
// files there are guarded by ptrace access checks (T-092). Neither is
// writable: a task cannot change its own oom_score_adj or the like.
// Not listed, so refused: /tmp, /var/tmp, /dev/shm and /run (shared
// folders where tasks would leave files for the next holder of a uid or
// meet each other), /home, /root, /var, /srv, /mnt, /media, and the node's
// own data folders.
func systemRX() []string {
	return []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt"}
}

func systemRO() []string { return []string{"/etc", "/proc", "/sys"} }

func devices() []string {
	return []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}
}

// Confinement is what the executor applies to every task it starts.
type Confinement struct {
	// Layers are enforcement.LayerSeccomp and, when the kernel has it,
	// enforcement.LayerLandlock.
	Layers []string
	// LandlockABI is the Landlock ABI the tasks' rulesets are built for;
	// 0 when Landlock is not applied.
	LandlockABI int
}

// Confinement reports what every task gets; it is fixed at New (a probe of
// the kernel), and every task's shim fails closed rather than start with
// less.
func (e *Executor) Confinement() Confinement {
	c := Confinement{Layers: []string{enforcement.LayerSeccomp}, LandlockABI: e.landlockABI}
	if e.landlockABI > 0 {
		c.Layers = append(c.Layers, enforcement.LayerLandlock)
	}
	return c
}

// Layers is Confinement().Layers.
func (e *Executor) Layers() []string { return e.Confinement().Layers }

// confineSpec is the shim's Confine for a task with the given work and
// tmp folders. It is built for every run, not once at New: a few stats and
// a read of /etc per start, so a run sees /etc's links as they are now
// (resolv.conf moves when the resolver changes).
func (e *Executor) confineSpec(work, tmp string) shim.Confine {
	c := shim.Confine{Seccomp: true}
	if e.landlockABI == 0 {
		return c
	}
	rx := append(existing(systemRX()), e.cfg.ReadOnlyPaths...)
	ro := existing(systemRO())
	ro = append(ro, etcLinkTargets(append(slices.Clone(rx), ro...))...)
	c.Landlock = &shim.Landlock{
		MinABI: e.landlockABI,
		RW:     []string{work, tmp},
		RX:     rx,
		RO:     ro,
		Dev:    existing(devices()),
	}
	return c
}

// existing keeps the paths that exist (/lib32 and /opt often do not).
func existing(paths []string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// etcLinkTargets returns the targets of /etc's top-level symbolic links
// that lie outside covered (e.g. /etc/resolv.conf ->
// /run/systemd/resolve/stub-resolv.conf): Landlock checks the file a link
// leads to, and what /etc names is meant to be read.
func etcLinkTargets(covered []string) []string {
	ents, err := os.ReadDir("/etc")
	if err != nil {
		return nil
	}
	var out []string
	for _, ent := range ents {
		if ent.Type()&os.ModeSymlink == 0 {
			continue
		}
		target, err := filepath.EvalSymlinks(filepath.Join("/etc", ent.Name()))
		if err != nil || within(target, covered) || within(target, out) {
			continue
		}
		out = append(out, target)
	}
	return out
}

// within reports whether p is one of dirs or beneath one.
func within(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}
