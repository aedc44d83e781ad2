package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Arg is the first argument that makes the unum binary run as the shim.
const Arg = "__unum-task-shim"

// SpecFD is the file descriptor the Spec arrives on (exec.Cmd.ExtraFiles[0]).
const SpecFD = 3

// ExecFD is the write end of a pipe (exec.Cmd.ExtraFiles[1]) that the shim
// leaves open until its execve: it closes by itself (close-on-exec) when
// the command runs, and carries the error when the shim fails first, so the
// executor knows when the task really runs.
const ExecFD = 4

// maxSpec bounds what the shim reads from SpecFD.
const maxSpec = 4 << 20

// DefaultPath is the PATH a task gets when its spec sets none.
const DefaultPath = "/usr/local/bin:/usr/bin:/bin"

// Spec is everything the shim needs, resolved by the executor.
type Spec struct {
	TaskID  string   `json:"task_id"`
	UID     uint32   `json:"uid"`
	GID     uint32   `json:"gid"`
	Dir     string   `json:"dir"`  // absolute working directory
	Command string   `json:"cmd"`  // a path, or a name looked up in the env's PATH
	Args    []string `json:"args"` // argv[1:]
	Env     []string `json:"env"`  // KEY=VALUE, the task's whole environment
	// CgroupProcs are the v1 cgroup.procs files to join.
	CgroupProcs []string `json:"cgroup_procs"`
	// Confine are the layers applied just before the exec.
	Confine Confine `json:"confine"`
}

// Validate checks what the shim relies on.
func (s *Spec) Validate() error {
	switch {
	case s.UID == 0 || s.GID == 0:
		return fmt.Errorf("task %s: uid %d gid %d: a task never runs as root", s.TaskID, s.UID, s.GID)
	case s.UID == math.MaxUint32 || s.GID == math.MaxUint32:
		return fmt.Errorf("task %s: uid or gid is -1", s.TaskID)
	case !filepath.IsAbs(s.Dir):
		return fmt.Errorf("task %s: work dir %q is not absolute", s.TaskID, s.Dir)
	case s.Command == "":
		return fmt.Errorf("task %s: no command", s.TaskID)
	}
	for _, p := range s.CgroupProcs {
		if !filepath.IsAbs(p) || filepath.Base(p) != "cgroup.procs" {
			return fmt.Errorf("task %s: %q is not a cgroup.procs file", s.TaskID, p)
		}
	}
	for _, kv := range s.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsRune(kv, 0) {
			return fmt.Errorf("task %s: bad environment entry %q", s.TaskID, k)
		}
	}
	if err := s.Confine.validate(); err != nil {
		return fmt.Errorf("task %s: %w", s.TaskID, err)
	}
	return nil
}

// Main runs the shim. It never returns.
func Main() {
	err := run()
	msg := fmt.Sprintf("unum task shim: %v\n", err)
	if f := os.NewFile(ExecFD, "exec"); f != nil {
		_, _ = f.WriteString(msg)
	}
	os.Stderr.WriteString(msg)
	os.Exit(127)
}

func run() error {
	// no_new_privs, the bounding set and the ambient set are per-thread
	// attributes and execve keeps the calling thread's: everything from
	// here to the exec happens on this one thread, never unlocked.
	runtime.LockOSThread()

	f := os.NewFile(SpecFD, "spec")
	if f == nil {
		return errors.New("no spec file descriptor")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSpec+1))
	f.Close()
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	if len(b) > maxSpec {
		return fmt.Errorf("spec larger than %d bytes", maxSpec)
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return err
	}
	pid := strconv.Itoa(os.Getpid())
	for _, p := range s.CgroupProcs {
		if err := os.WriteFile(p, []byte(pid), 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	// Close-on-exec rather than close: the Go runtime's own descriptors
	// (epoll, its wakeup pipe) must live until the exec.
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	if err := dropPrivileges(s.UID, s.GID); err != nil {
		return err
	}
	if err := os.Chdir(s.Dir); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	syscall.Umask(0o022)
	path, err := lookPath(s.Command, s.Env)
	if err != nil {
		return err
	}
	if err := confine(&s, path); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	argv := append([]string{s.Command}, s.Args...)
	err = syscall.Exec(path, argv, s.Env)
	return fmt.Errorf("exec %s: %w", path, err)
}

func dropPrivileges(uid, gid uint32) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	// A root process keeps its bounding set across setuid; emptying it means
	// no later exec can hand a capability back, even a file capability.
	last, err := lastCap()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	// The syscall package applies these to every thread of the process.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("clear supplementary groups: %w", err)
	}
	if err := syscall.Setresgid(int(gid), int(gid), int(gid)); err != nil {
		return fmt.Errorf("setresgid %d: %w", gid, err)
	}
	if err := syscall.Setresuid(int(uid), int(uid), int(uid)); err != nil {
		return fmt.Errorf("setresuid %d: %w", uid, err)
	}
	return verifyDropped()
}

// verifyDropped fails closed unless the process can no longer become root.
func verifyDropped() error {
	if syscall.Setuid(0) == nil {
		return errors.New("setuid(0) succeeded after dropping privileges")
	}
	if syscall.Setgid(0) == nil {
		return errors.New("setgid(0) succeeded after dropping privileges")
	}
	if syscall.Getuid() == 0 || syscall.Geteuid() == 0 || syscall.Getgid() == 0 || syscall.Getegid() == 0 {
		return errors.New("still uid or gid 0 after dropping privileges")
	}
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil || nnp != 1 {
		return fmt.Errorf("no_new_privs not set (%d, %v)", nnp, err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for _, d := range data {
		if d.Effective != 0 || d.Permitted != 0 || d.Inheritable != 0 {
			return fmt.Errorf("capabilities left after dropping privileges: %+v", data)
		}
	}
	return nil
}

func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read cap_last_cap: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("cap_last_cap: %w", err)
	}
	return n, nil
}

// lookPath resolves cmd the way a shell would, with the PATH of the task's
// environment (not the node's), checking executability as the task uid.
func lookPath(cmd string, env []string) (string, error) {
	if strings.Contains(cmd, "/") {
		return cmd, nil
	}
	path := DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, cmd)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH %q", cmd, path)
}
