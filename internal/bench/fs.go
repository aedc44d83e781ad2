package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/unumos/unum/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// Filesystem names the filesystem a benchmark's data lives on: results on
// tmpfs and on a disk-backed ext4 differ wherever fsync is on the path.
type Filesystem struct {
	Path string `json:"path"`
	// Type is the mount's filesystem type from /proc/self/mountinfo
	// ("ext4", "tmpfs"), or the statfs magic's name when no mount matched.
	Type string `json:"type"`
	// StatfsType is statfs(2)'s f_type, named where known ("ext2/3/4").
	StatfsType string `json:"statfs_type"`
	MountPoint string `json:"mount_point,omitempty"`
	Source     string `json:"source,omitempty"`
	Options    string `json:"mount_options,omitempty"`
}

// DescribeFilesystem returns the filesystem that holds path.
func DescribeFilesystem(path string) (Filesystem, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Filesystem{}, err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	var st unix.Statfs_t
	if err := unix.Statfs(abs, &st); err != nil {
		return Filesystem{}, fmt.Errorf("statfs %s: %w", abs, err)
	}
	fs := Filesystem{Path: abs, StatfsType: magicName(int64(st.Type)), Type: magicName(int64(st.Type))}
	if data, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		if m, ok := mountFor(string(data), abs); ok {
			fs.Type, fs.MountPoint, fs.Source, fs.Options = m.fstype, m.point, m.source, m.options
		}
	}
	return fs, nil
}

func magicName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext2/3/4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.BCACHEFS_SUPER_MAGIC:
		return "bcachefs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	case unix.V9FS_MAGIC:
		return "9p"
	case unix.SQUASHFS_MAGIC:
		return "squashfs"
	case 0x2fc12fc1:
		return "zfs"
	}
	return fmt.Sprintf("0x%x", magic)
}

type mount struct {
	point, fstype, source, options string
}

// mountFor finds the mount holding path (absolute, symlinks resolved) in
// the text of /proc/self/mountinfo: the longest mount point that is path or
// one of its parents; of stacked mounts on one point, the last (topmost).
func mountFor(table, path string) (mount, bool) {
	var best mount
	found := false
	for line := range strings.Lines(table) {
		// ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(strings.TrimSpace(line), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 6 || len(g) < 2 {
			continue
		}
		point := mountinfo.Unescape(f[4])
		if !under(path, point) {
			continue
		}
		if found && len(point) < len(best.point) {
			continue
		}
		best = mount{point: point, fstype: g[0], source: mountinfo.Unescape(g[1]), options: f[5]}
		found = true
	}
	return best, found
}

func under(path, point string) bool {
	if point == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == point || strings.HasPrefix(path, point+"/")
}
