package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf/link"
)

// SweepDefunct removes the pin directories under root (one per node, e.g.
// /sys/fs/bpf/unum) whose cgroup links are all defunct: their task root
// was removed, so the kernel detached them (a link's cgroup id reads 0),
// and nothing is left to enforce or adopt. A node that crashed leaves its
// pins; this is how they go once its cgroups are gone. A directory with a
// live link, or with no link at all (an Open in progress), is kept. It
// returns what it removed. Removing a directory detaches its syscall audit
// link too, which would otherwise keep every thread of the machine on the
// slow syscall path.
func SweepDefunct(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("enforcer: sweep %s: %w", root, err)
	}
	var removed []string
	var errs []error
	for _, ent := range ents {
		if !ent.IsDir() {
			continue
		}
		dir := filepath.Join(root, ent.Name())
		defunct, err := allLinksDefunct(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !defunct {
			continue
		}
		if err := Remove(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// allLinksDefunct reports whether dir holds cgroup links and every one is
// detached from its (removed) cgroup.
func allLinksDefunct(dir string) (bool, error) {
	ents, err := os.ReadDir(linksDir(dir))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("enforcer: sweep %s: %w", dir, err)
	}
	n := 0
	for _, ent := range ents {
		// Only cgroup links say whether the task root is gone; the LSM
		// and syscall audit links hang on hooks, not on the root.
		if strings.HasPrefix(ent.Name(), lsmLinkPrefix) || ent.Name() == syscallLink {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(linksDir(dir), ent.Name()), nil)
		if err != nil {
			return false, fmt.Errorf("enforcer: sweep %s: %w", dir, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return false, fmt.Errorf("enforcer: sweep %s: %w", dir, err)
		}
		cg := info.Cgroup()
		if cg == nil || cg.CgroupId != 0 {
			return false, nil
		}
		n++
	}
	return n > 0, nil
}
