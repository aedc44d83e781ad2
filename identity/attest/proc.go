package attest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// status is what Attest needs from /proc/PID/status.
type status struct {
	uid    uint32   // effective uid
	gids   []uint32 // effective gid, then supplementary groups
	zombie bool
}

// readStatus parses /proc/PID/status. Missing or malformed fields are errors:
// attestation fails closed rather than guess.
func readStatus(path string) (status, error) {
	// One open and one read into a stack buffer: os.ReadFile's extra fstat
	// and EOF read cost a third of the time on this hot path. The kernel
	// fills the whole (about 1.5 KiB) file in the first read.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return status{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var buf [8192]byte
	n, err := readFull(fd, buf[:])
	if err != nil {
		return status{}, &os.PathError{Op: "read", Path: path, Err: err}
	}
	if n == len(buf) {
		return status{}, fmt.Errorf("%s is larger than %d bytes", path, len(buf))
	}
	return parseStatus(buf[:n])
}

// readFull reads until buf is full or EOF.
func readFull(fd int, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func parseStatus(b []byte) (status, error) {
	var (
		st                          status
		haveState, haveUID, haveGID bool
		haveGroups                  bool
		groups                      []uint32
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "State":
			haveState = true
			st.zombie = strings.HasPrefix(val, "Z") || strings.HasPrefix(val, "X")
		case "Uid", "Gid":
			// real, effective, saved set, filesystem: the effective id is
			// what the kernel checks permissions against.
			f := strings.Fields(val)
			if len(f) != 4 {
				return status{}, fmt.Errorf("status: %s line has %d fields, want 4", key, len(f))
			}
			id, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil {
				return status{}, fmt.Errorf("status: %s: %w", key, err)
			}
			if key == "Uid" {
				st.uid, haveUID = uint32(id), true
			} else {
				st.gids, haveGID = append(st.gids[:0], uint32(id)), true
			}
		case "Groups":
			haveGroups = true
			for _, g := range strings.Fields(val) {
				id, err := strconv.ParseUint(g, 10, 32)
				if err != nil {
					return status{}, fmt.Errorf("status: Groups: %w", err)
				}
				groups = append(groups, uint32(id))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return status{}, fmt.Errorf("status: %w", err)
	}
	if !haveState || !haveUID || !haveGID || !haveGroups {
		return status{}, errors.New("status: missing State, Uid, Gid or Groups")
	}
	for _, g := range groups {
		if g != st.gids[0] {
			st.gids = append(st.gids, g)
		}
	}
	return st, nil
}

// readExe resolves /proc/PID/exe. A deleted binary reads as "PATH (deleted)",
// which no clean path selector can equal: such a process matches no path.
func readExe(path string) (string, error) {
	p, err := os.Readlink(path)
	if err != nil {
		return "", fmt.Errorf("resolve executable: %w", err)
	}
	return p, nil
}
