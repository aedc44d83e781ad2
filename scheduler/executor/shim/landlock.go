package shim

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Landlock is the file system a task may reach; everything else is
// refused with EACCES by the kernel, whatever the mode bits say.
//
// Landlock is applied with the syscalls directly (not go-landlock): the
// shim restricts only the thread that execs, exactly like no_new_privs,
// and needs neither go-landlock's all-threads machinery (libpsx, which
// under cgo wraps pthread_create for the whole binary) nor its policy
// language.
type Landlock struct {
	// MinABI is the Landlock ABI the node probed and reports; the shim
	// fails closed on a kernel below it, so a task never silently runs with
	// less than the node says. At least 1.
	MinABI int `json:"min_abi"`
	// RW are folders the task reads, writes and executes in: its work
	// folder (HOME) and its tmp folder (TMPDIR).
	RW []string `json:"rw"`
	// RX are read-only and executable: system binaries and libraries.
	RX []string `json:"rx"`
	// RO are read-only, not executable: /etc, /proc, /sys.
	RO []string `json:"ro"`
	// Dev are device files read and written, ioctl allowed: /dev/null, …
	Dev []string `json:"dev"`
}

// Landlock access rights by the ABI that introduced them.
const (
	llV1 = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM
	llV2 = unix.LANDLOCK_ACCESS_FS_REFER
	llV3 = unix.LANDLOCK_ACCESS_FS_TRUNCATE
	llV5 = unix.LANDLOCK_ACCESS_FS_IOCTL_DEV

	// The rights a rule on a file (not a folder) may carry.
	llFile = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | llV3 | llV5

	llRead  = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	llExec  = unix.LANDLOCK_ACCESS_FS_EXECUTE
	llRW    = llV1 | llV2 | llV3 // not IOCTL_DEV: no device lives in a task's folders
	llDev   = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | llV3 | llV5
	scopeV6 = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
)

// landlockHandled returns what a ruleset handles on a kernel with the ABI:
// every file-system right this code knows up to that ABI, and from ABI 6
// both scopes. Not handled, so not restricted by Landlock:
//   - network rights (ABI 4, 10): the BPF cgroup layer owns the network;
//   - LANDLOCK_ACCESS_FS_RESOLVE_UNIX (ABI 9, connect(2) to pathname unix
//     sockets): below ABI 9 no Landlock rule can restrict connect(2) to a
//     pathname socket at all; the Workload API socket is reached through
//     its mode bits and the agent's peer attestation (see doc.go).
func landlockHandled(abi int) (fs, scoped uint64) {
	if abi >= 1 {
		fs |= llV1
	}
	if abi >= 2 {
		fs |= llV2
	}
	if abi >= 3 {
		fs |= llV3
	}
	if abi >= 5 {
		fs |= llV5
	}
	if abi >= 6 {
		scoped |= scopeV6
	}
	return fs, scoped
}

// LandlockABI returns the kernel's Landlock ABI version, 0 without Landlock
// (not built, or not in the boot-time LSM list).
func LandlockABI() int {
	v, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0
	}
	return int(v)
}

// llRule is one path and the rights it grants.
type llRule struct {
	path   string
	access uint64
}

// rules lists the spec's paths with their rights, then the executables the
// task's command needs (exe: the command and its interpreters).
func (l *Landlock) rules(exe []string) []llRule {
	var out []llRule
	add := func(paths []string, access uint64) {
		for _, p := range paths {
			out = append(out, llRule{p, access})
		}
	}
	add(l.RW, llRW)
	add(l.RX, llRead|llExec)
	add(l.RO, llRead)
	add(l.Dev, llDev)
	add(exe, unix.LANDLOCK_ACCESS_FS_READ_FILE|llExec)
	return out
}

// restrictLandlock builds the ruleset and enforces it on the calling thread
// (the one that execs; its domain passes to the task and to everything the
// task starts). It needs no_new_privs on this thread.
func restrictLandlock(l *Landlock, exe []string) error {
	abi := LandlockABI()
	if abi < max(l.MinABI, 1) {
		return fmt.Errorf("landlock: kernel ABI %d, the node requires %d", abi, max(l.MinABI, 1))
	}
	fs, scoped := landlockHandled(abi)
	// The first three fields (24 bytes) are all this code sets; the kernel
	// accepts any size whose bytes past what it knows are zero.
	attr := unix.LandlockRulesetAttr{Handled_access_fs: fs, Scoped: scoped}
	size := unsafe.Offsetof(attr.Quiet_access_fs)
	rfd, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	if errno != 0 {
		return fmt.Errorf("landlock: create ruleset (ABI %d): %w", abi, errno)
	}
	defer unix.Close(int(rfd))
	for _, r := range l.rules(exe) {
		if err := addRule(int(rfd), r.path, r.access&fs); err != nil {
			return err
		}
	}
	var flags uintptr
	if abi >= 7 {
		// Denials after the exec are the task's: log them (to the kernel's
		// audit log, where audit is on); by default only denials of the
		// program that called restrict_self (the shim) would be.
		flags = unix.LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_RESTRICT_SELF, rfd, flags, 0); errno != 0 {
		return fmt.Errorf("landlock: restrict self: %w", errno)
	}
	return nil
}

// addRule grants access beneath path (or to the file at path: then only
// the file rights). A path that does not exist is an error: the executor
// lists only paths it found, and a silently dropped rule would be a task
// that fails later with a less clear error.
func addRule(rfd int, path string, access uint64) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("landlock: rule for %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("landlock: rule for %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		access &= llFile
	}
	if access == 0 {
		return nil
	}
	attr := unix.LandlockPathBeneathAttr{Allowed_access: access, Parent_fd: int32(fd)}
	if _, _, errno := unix.RawSyscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(rfd), unix.LANDLOCK_RULE_PATH_BENEATH,
		uintptr(unsafe.Pointer(&attr)), 0, 0, 0); errno != 0 {
		return fmt.Errorf("landlock: rule for %s: %w", path, errno)
	}
	return nil
}
