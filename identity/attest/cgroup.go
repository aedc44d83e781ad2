package attest

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unumos/unum/identity/selector"
)

// Bounds on /proc/PID/cgroup. A hybrid host lists a dozen hierarchies; each
// path is at most PATH_MAX. Anything larger is refused (attestation fails
// closed) rather than read without limit.
const (
	cgroupReadChunk = 4096
	maxCgroupFile   = 64 << 10
)

// deletedSuffix is what the kernel appends to the cgroup v2 path of a process
// whose cgroup was removed (proc_cgroup_show).
const deletedSuffix = " (deleted)"

// CheckTaskCgroupRoot reports whether root can be a node's task cgroup root:
// an absolute, clean cgroup v2 path other than "/" (the v2 root is never a
// dedicated task root: every process on the host lives below it).
func CheckTaskCgroupRoot(root string) error {
	switch {
	case root == "":
		return errors.New("task cgroup root is empty")
	case strings.ContainsAny(root, "\x00\n"):
		return fmt.Errorf("task cgroup root %q contains a NUL or newline", root)
	case !path.IsAbs(root):
		return fmt.Errorf("task cgroup root %q is not absolute (want a cgroup v2 path such as /unum/tasks)", root)
	case path.Clean(root) != root:
		return fmt.Errorf("task cgroup root %q is not clean (want %q)", root, path.Clean(root))
	case root == "/":
		return errors.New("task cgroup root must not be the cgroup v2 root: every process on the host is below it")
	case len(root) > 4096:
		return fmt.Errorf("task cgroup root is %d bytes, longer than PATH_MAX", len(root))
	}
	return nil
}

// readTask reads /proc/PID/cgroup and returns the task whose cgroup under
// root the process is in, or "". The caller confirms through the pidfd that
// the file it read belonged to the connecting process.
func readTask(file, root string) (string, error) {
	b, err := readProcFile(file)
	if err != nil {
		return "", err
	}
	task, err := taskFromCgroupFile(b, root)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	return task, nil
}

// readProcFile reads a small /proc file: one read into a stack buffer in the
// common case, growing up to maxCgroupFile otherwise.
func readProcFile(file string) (string, error) {
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: file, Err: err}
	}
	defer unix.Close(fd)
	var buf [cgroupReadChunk]byte
	n, err := readFull(fd, buf[:])
	if err != nil {
		return "", &os.PathError{Op: "read", Path: file, Err: err}
	}
	if n < len(buf) {
		return string(buf[:n]), nil
	}
	out := append([]byte(nil), buf[:n]...)
	for n == len(buf) {
		if len(out) >= maxCgroupFile {
			return "", fmt.Errorf("%s is larger than %d bytes", file, maxCgroupFile)
		}
		n, err = readFull(fd, buf[:])
		if err != nil {
			return "", &os.PathError{Op: "read", Path: file, Err: err}
		}
		out = append(out, buf[:n]...)
	}
	return string(out), nil
}

// taskFromCgroupFile returns the task id a process is attested with, given
// the content of its /proc/PID/cgroup and the node's task cgroup root (a
// clean absolute cgroup v2 path, see CheckTaskCgroupRoot):
//   - the cgroup v2 line is "0::PATH"; a file without one (a v1-only host)
//     yields "" (the process is in no task), more than one is an error;
//   - PATH equal to ROOT/TASK or below it yields TASK, provided TASK is a
//     valid task id (selector.CheckTaskID); anything else yields "";
//   - a PATH that ends in " (deleted)" (the cgroup was removed, so the
//     process is exiting), is not absolute and clean (it starts with "/.."
//     when the process is outside the reader's cgroup namespace), or names
//     ROOT itself yields "".
//
// The kernel writes names unescaped and refuses '\n' in them, so each line
// is one hierarchy; a ':' in a path is part of the path. Malformed lines are
// errors: attestation fails closed rather than guess.
func taskFromCgroupFile(content, root string) (string, error) {
	var (
		v2     string
		haveV2 bool
	)
	rest := content
	for rest != "" {
		line, tail, found := strings.Cut(rest, "\n")
		if !found {
			return "", errors.New("cgroup: last line is not terminated")
		}
		rest = tail
		id, after, ok1 := strings.Cut(line, ":")
		controllers, p, ok2 := strings.Cut(after, ":")
		if !ok1 || !ok2 || id == "" || strings.Trim(id, "0123456789") != "" {
			return "", fmt.Errorf("cgroup: malformed line %.80q", line)
		}
		if id != "0" || controllers != "" {
			continue // a v1 hierarchy: not where task groups are
		}
		if haveV2 {
			return "", errors.New("cgroup: more than one cgroup v2 line")
		}
		v2, haveV2 = p, true
	}
	if !haveV2 {
		return "", nil
	}
	return taskOfPath(v2, root), nil
}

// taskOfPath maps a cgroup v2 path to the task it belongs to under root, or
// "".
func taskOfPath(p, root string) string {
	if strings.HasSuffix(p, deletedSuffix) {
		return ""
	}
	if !path.IsAbs(p) || path.Clean(p) != p {
		return ""
	}
	rel, ok := strings.CutPrefix(p, root+"/")
	if !ok {
		return ""
	}
	task, _, _ := strings.Cut(rel, "/")
	if selector.CheckTaskID(task) != nil {
		return ""
	}
	return task
}
