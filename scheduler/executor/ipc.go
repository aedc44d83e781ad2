package executor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The IPC a task leaves behind in the machine's shared namespaces: System V
// shared memory, message queues and semaphore sets, and POSIX message
// queues. Landlock and the seccomp filter do not mediate System V IPC, and
// its objects outlive their creator, so a task given a reused uid could
// attach what an earlier one left. Before a uid is handed out, and again
// when a finished task gives it back, every object that uid owns or
// created is removed (systemd's RemoveIPC does the same for users who log
// out).

// sysvKinds are the System V IPC kinds: the /proc/sysvipc file and the
// *ctl syscall that removes an object of that kind.
var sysvKinds = []struct {
	file string
	ctl  uintptr
}{
	{"shm", unix.SYS_SHMCTL},
	{"msg", unix.SYS_MSGCTL},
	{"sem", unix.SYS_SEMCTL},
}

// ipcRMID is IPC_RMID.
const ipcRMID = 0

// sysvObject is one line of a /proc/sysvipc file.
type sysvObject struct {
	id, uid, cuid uint32
}

// parseSysvipc reads a /proc/sysvipc file: a header naming the columns,
// then one object per line. The id is the second column (shmid, msqid,
// semid); uid and cuid are found by name.
func parseSysvipc(data []byte) ([]sysvObject, error) {
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) == 0 || len(bytes.TrimSpace(lines[0])) == 0 {
		return nil, errors.New("no header")
	}
	header := strings.Fields(string(lines[0]))
	col := func(name string) int {
		for i, h := range header {
			if h == name {
				return i
			}
		}
		return -1
	}
	uidCol, cuidCol := col("uid"), col("cuid")
	if len(header) < 2 || uidCol < 0 || cuidCol < 0 {
		return nil, fmt.Errorf("header %q lacks an id, uid or cuid column", lines[0])
	}
	var out []sysvObject
	for _, l := range lines[1:] {
		f := strings.Fields(string(l))
		if len(f) == 0 {
			continue
		}
		if len(f) != len(header) {
			return nil, fmt.Errorf("line %q: %d columns, the header has %d", l, len(f), len(header))
		}
		var o sysvObject
		for _, c := range []struct {
			i int
			v *uint32
		}{{1, &o.id}, {uidCol, &o.uid}, {cuidCol, &o.cuid}} {
			n, err := strconv.ParseUint(f[c.i], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("line %q: %w", l, err)
			}
			*c.v = uint32(n)
		}
		out = append(out, o)
	}
	return out, nil
}

// sweepIPC removes the System V IPC objects uid owns or created, and the
// POSIX message queues it owns in mqueueDir ("" when no mqueue file system
// is mounted for the executor). No process runs under uid when it is
// called (the task's cgroup was killed).
func sweepIPC(uid uint32, mqueueDir string) error {
	var errs []error
	for _, k := range sysvKinds {
		data, err := os.ReadFile(filepath.Join("/proc/sysvipc", k.file))
		if errors.Is(err, os.ErrNotExist) {
			continue // a kernel without System V IPC
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs, err := parseSysvipc(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("/proc/sysvipc/%s: %w", k.file, err))
			continue
		}
		for _, o := range objs {
			if o.uid != uid && o.cuid != uid {
				continue
			}
			// shmctl(id, IPC_RMID, NULL), msgctl(id, IPC_RMID, NULL),
			// semctl(id, 0, IPC_RMID): IPC_RMID and semnum are both 0.
			_, _, errno := unix.Syscall(k.ctl, uintptr(o.id), ipcRMID, 0)
			if errno != 0 && errno != unix.EINVAL && errno != unix.EIDRM {
				errs = append(errs, fmt.Errorf("remove %s %d of uid %d: %w", k.file, o.id, uid, errno))
			}
		}
	}
	if mqueueDir != "" {
		ents, err := os.ReadDir(mqueueDir)
		if err != nil {
			errs = append(errs, err)
		}
		for _, ent := range ents {
			info, err := ent.Info()
			if err != nil {
				continue
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == uid {
				if err := os.Remove(filepath.Join(mqueueDir, ent.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// mqueueMagic is the mqueue file system's magic number (statfs).
const mqueueMagic = 0x19800202

// DefaultMqueueDir is where the executor mounts the machine's POSIX
// message queues when /dev/mqueue is not such a mount, to find a uid's.
const DefaultMqueueDir = "/run/unum/mqueue"

// mqueueMount returns a mount of the machine's POSIX message queues:
// /dev/mqueue when it is one, else fallback, mounted there if needed.
func mqueueMount(fallback string) (string, error) {
	isMqueue := func(dir string) bool {
		var st unix.Statfs_t
		return unix.Statfs(dir, &st) == nil && st.Type == mqueueMagic
	}
	if isMqueue("/dev/mqueue") {
		return "/dev/mqueue", nil
	}
	if isMqueue(fallback) {
		return fallback, nil
	}
	if err := os.MkdirAll(fallback, 0o700); err != nil {
		return "", err
	}
	if err := unix.Mount("mqueue", fallback, "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("mount mqueue at %s: %w", fallback, err)
	}
	return fallback, nil
}
