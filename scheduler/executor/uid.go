package executor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// uidAllocator hands out dynamic uids, lowest free first.
//
// # Machine-wide uniqueness
//
// `unum dev` runs several nodes, each with its own executor, on one machine,
// so an in-process set is not enough. Every uid in use has a lock file
// <lockdir>/<uid> held with flock(LOCK_EX) by the executor that owns it, for
// as long as its task lives: another executor's LOCK_NB attempt fails and it
// moves on. The kernel drops the lock when the holder dies; because a
// crashed node's tasks may outlive it until the next start sweeps them, a
// uid is also skipped while any process on the machine still runs under it
// (/proc/*/status).
//
// # IPC residue
//
// A uid is handed out only once the IPC objects it owns are removed
// (sweepIPC): a crashed node never swept what its tasks left. A finished
// task's uid is swept on release too, which frees the kernel memory at
// once rather than at the uid's next use.
type uidAllocator struct {
	dir string
	rng UIDRange
	// mqueue is a mount of the POSIX message queues ("": none, so a uid's
	// empty queues are not swept).
	mqueue string

	mu   sync.Mutex
	held map[uint32]*os.File
}

func newUIDAllocator(dir string, rng UIDRange, mqueue string) (*uidAllocator, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("executor: uid lock folder: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("executor: uid lock folder: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || sys.Uid != 0 || st.Mode().Perm()&0o022 != 0 {
		// Anyone who can write here can hold a lock and keep a uid from us, or
		// plant a symlink: the folder must be root's and not writable by others.
		return nil, fmt.Errorf("executor: uid lock folder %s must be a directory owned by root, not group or world writable (mode %v)",
			dir, st.Mode())
	}
	return &uidAllocator{dir: dir, rng: rng, mqueue: mqueue, held: map[uint32]*os.File{}}, nil
}

// allocate returns the lowest free uid and a function that frees it.
func (a *uidAllocator) allocate() (uint32, func(), error) {
	busy, err := uidsInUse()
	if err != nil {
		return 0, nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid := a.rng.Lo; ; uid++ {
		if _, ok := a.held[uid]; !ok && !busy[uid] {
			f, err := a.tryLock(uid)
			if err != nil {
				return 0, nil, err
			}
			if f != nil {
				a.held[uid] = f
				if err := sweepIPC(uid, a.mqueue); err != nil {
					a.freeLocked(uid)
					return 0, nil, fmt.Errorf("executor: uid %d: what an earlier holder left could not be removed: %w", uid, err)
				}
				return uid, func() { a.free(uid) }, nil
			}
		}
		if uid == a.rng.Hi {
			return 0, nil, fmt.Errorf("executor: every uid in %d-%d is in use", a.rng.Lo, a.rng.Hi)
		}
	}
}

func (a *uidAllocator) tryLock(uid uint32) (*os.File, error) {
	p := filepath.Join(a.dir, strconv.FormatUint(uint64(uid), 10))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("executor: uid lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("executor: uid lock %s: %w", p, err)
	}
	return f, nil
}

func (a *uidAllocator) free(uid uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.freeLocked(uid)
}

func (a *uidAllocator) freeLocked(uid uint32) {
	if f, ok := a.held[uid]; ok {
		f.Close() // drops the flock; the file stays for the next holder
		delete(a.held, uid)
	}
}

// uidsInUse returns every uid (real, effective, saved or filesystem) of
// every process on the machine.
func uidsInUse() (map[uint32]bool, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("executor: list processes: %w", err)
	}
	out := map[uint32]bool{}
	for _, ent := range ents {
		if _, err := strconv.Atoi(ent.Name()); err != nil {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", ent.Name(), "status"))
		if err != nil {
			continue // it exited
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
				for _, fld := range strings.Fields(rest) {
					if v, err := strconv.ParseUint(fld, 10, 32); err == nil {
						out[uint32(v)] = true
					}
				}
				break
			}
		}
		f.Close()
	}
	return out, nil
}
