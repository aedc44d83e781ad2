package faultcluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// procWatch records, from the kernel's process events (the proc connector,
// NETLINK_CONNECTOR / CN_IDX_PROC), when every process whose command line
// is exactly argv exec'd and exited. Unlike sampling /proc, it sees a copy
// however briefly it lived, and its timestamps (CLOCK_MONOTONIC, taken by
// the kernel at exec and exit) order copies exactly: "no task runs twice"
// becomes "no two copies' [exec, exit) intervals overlap".
//
// One residual gap: the command line is read from /proc when the exec
// event arrives; a process that exec'd and was gone before that cannot be
// told apart (it is counted in unreadable, and a test may require it 0
// when it matters).
type procWatch struct {
	want []byte
	fd   int
	stop chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex
	copies     map[int]*procCopy // by pid
	events     int               // exec and exit events received
	unreadable int               // exec events whose command line was gone
	err        error             // lost events or a socket error: no proof
}

// procCopy is one process with the watched command line. Times are
// CLOCK_MONOTONIC nanoseconds; exit is 0 while it runs.
type procCopy struct {
	pid        int
	exec, exit uint64
}

// Linux connector constants (linux/connector.h, linux/cn_proc.h).
const (
	cnIdxProc        = 1
	cnValProc        = 1
	procCnListen     = 1
	procCnIgnore     = 2
	procEventExec    = 0x00000002
	procEventExit    = 0x80000000
	nlmsgHdrLen      = 16
	cnMsgLen         = 20
	procEventHdrLen  = 16 // what, cpu, timestamp_ns
	procEventDataOff = nlmsgHdrLen + cnMsgLen + procEventHdrLen
)

// watchProcs starts watching for argv; the copies already running are
// read from /proc once the watch listens, so none falls in between. Their
// exec time is unknown (0): they come first.
func watchProcs(argv []string) (*procWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("proc connector socket: %w", err)
	}
	// Every process event of the machine arrives here: a large buffer, so
	// two busy cores do not make the kernel drop any (ENOBUFS says so).
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	// The reader wakes up every 100 ms to see whether it must stop.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("proc connector bind: %w", err)
	}
	if err := procCnControl(fd, procCnListen); err != nil {
		unix.Close(fd)
		return nil, err
	}
	w := &procWatch{want: []byte(joinArgv(argv)), fd: fd, stop: make(chan struct{}), copies: map[int]*procCopy{}}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.read()
	}()
	existing := procsRunning(argv)
	w.mu.Lock()
	for _, pid := range existing {
		if _, ok := w.copies[pid]; !ok {
			w.copies[pid] = &procCopy{pid: pid}
		}
	}
	w.mu.Unlock()
	return w, nil
}

func joinArgv(argv []string) string {
	var b bytes.Buffer
	for _, a := range argv {
		b.WriteString(a)
		b.WriteByte(0)
	}
	return b.String()
}

// procCnControl sends PROC_CN_MCAST_LISTEN or _IGNORE.
func procCnControl(fd int, op uint32) error {
	b := make([]byte, nlmsgHdrLen+cnMsgLen+4)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.NLMSG_DONE)
	binary.NativeEndian.PutUint32(b[8:], 0)                    // seq
	binary.NativeEndian.PutUint32(b[12:], uint32(os.Getpid())) // port
	binary.NativeEndian.PutUint32(b[16:], cnIdxProc)
	binary.NativeEndian.PutUint32(b[20:], cnValProc)
	binary.NativeEndian.PutUint16(b[32:], 4) // payload length
	binary.NativeEndian.PutUint32(b[36:], op)
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("proc connector listen: %w", err)
	}
	return nil
}

func (w *procWatch) read() {
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			w.fail(fmt.Errorf("proc connector: %w (events were lost: the watch proves nothing)", err))
			return
		}
		// One datagram may hold several netlink messages.
		for off := 0; off+procEventDataOff+8 <= n; {
			msgLen := int(binary.NativeEndian.Uint32(buf[off:]))
			if msgLen < nlmsgHdrLen || off+msgLen > n {
				break
			}
			w.event(buf[off : off+msgLen])
			off += (msgLen + 3) &^ 3
		}
	}
}

func (w *procWatch) event(m []byte) {
	if len(m) < procEventDataOff+8 {
		return
	}
	what := binary.NativeEndian.Uint32(m[nlmsgHdrLen+cnMsgLen:])
	ts := binary.NativeEndian.Uint64(m[nlmsgHdrLen+cnMsgLen+8:])
	pid := int(binary.NativeEndian.Uint32(m[procEventDataOff:]))
	tgid := int(binary.NativeEndian.Uint32(m[procEventDataOff+4:]))
	switch what {
	case procEventExec:
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(tgid) + "/cmdline")
		w.mu.Lock()
		defer w.mu.Unlock()
		w.events++
		if err != nil {
			w.unreadable++
			return
		}
		if bytes.Equal(cmdline, w.want) {
			if _, ok := w.copies[tgid]; !ok {
				w.copies[tgid] = &procCopy{pid: tgid, exec: ts}
			}
		}
	case procEventExit:
		// Per thread; the process is gone when its leader exits.
		if pid != tgid {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.events++
		if c, ok := w.copies[tgid]; ok && c.exit == 0 {
			c.exit = ts
		}
	}
}

func (w *procWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

// procWatchResult is what a watch saw.
type procWatchResult struct {
	copies     []procCopy // by exec time, the pre-existing ones first
	events     int
	unreadable int
	err        error
}

// halt stops the watch and returns what it saw.
func (w *procWatch) halt() procWatchResult {
	close(w.stop)
	w.wg.Wait()
	_ = procCnControl(w.fd, procCnIgnore)
	unix.Close(w.fd)
	r := procWatchResult{events: w.events, unreadable: w.unreadable, err: w.err}
	for _, c := range w.copies {
		r.copies = append(r.copies, *c)
	}
	slices.SortFunc(r.copies, func(a, b procCopy) int {
		if a.exec != b.exec {
			return int(int64(a.exec - b.exec))
		}
		return a.pid - b.pid
	})
	return r
}

// pids are the copies' pids, in exec order.
func (r procWatchResult) pids() []int {
	var out []int
	for _, c := range r.copies {
		out = append(out, c.pid)
	}
	return out
}

// overlap names two copies that ran at the same time, or is "" when every
// copy exec'd after the one before it exited: at most one ran at any
// instant.
func (r procWatchResult) overlap() string {
	for i := 1; i < len(r.copies); i++ {
		prev, cur := r.copies[i-1], r.copies[i]
		if prev.exit == 0 || cur.exec <= prev.exit {
			return fmt.Sprintf("pid %d exec'd at %s while pid %d (exec %s) had not exited (exit %s)",
				cur.pid, mono(cur.exec), prev.pid, mono(prev.exec), mono(prev.exit))
		}
	}
	return ""
}

// gap is the time between copy i-1's exit and copy i's exec.
func (r procWatchResult) gap(i int) time.Duration {
	return time.Duration(r.copies[i].exec - r.copies[i-1].exit)
}

func mono(ns uint64) string {
	if ns == 0 {
		return "-"
	}
	return time.Duration(ns).String()
}
