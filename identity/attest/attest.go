package attest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/unumos/unum/identity/selector"
)

// Sentinel errors returned (wrapped) by Attest.
var (
	// ErrProcessGone means the process that connected has exited (or is a
	// zombie, or its connection was closed): whatever now has its pid is not
	// the caller.
	ErrProcessGone = errors.New("peer process is gone")
	// ErrExecAfterConnect means the peer's executable is not the one that
	// connected: the process, or one that inherited the socket, called exec.
	ErrExecAfterConnect = errors.New("process executed a different binary after connecting")
)

// AuthType is what Peer.AuthType returns.
const AuthType = "unix-peer-attest"

const procRoot = "/proc"

// transportCreds implements credentials.TransportCredentials.
type transportCreds struct {
	cache *hashCache
	// taskRoot is the cgroup v2 path of the node's task root, "" when task
	// attestation is off. See WithTaskCgroups.
	taskRoot string
	// optErr is an invalid option: every handshake fails with it, so a
	// misconfigured attestor identifies no one rather than guessing.
	optErr error
	// usePeerPidfd is false only in tests that exercise the pidfd_open
	// fallback for kernels without SO_PEERPIDFD.
	usePeerPidfd bool
}

var _ credentials.TransportCredentials = (*transportCreds)(nil)

// Option configures Credentials.
type Option func(*transportCreds)

// WithTaskCgroups turns on task attestation: Attest reports, as
// selector.Process.Task, the task whose cgroup the peer runs in. root is the
// cgroup v2 path (relative to the v2 hierarchy's root as seen from the
// agent's cgroup namespace, as in the "0::" line of /proc/self/cgroup; on
// this hybrid host the hierarchy is mounted at /sys/fs/cgroup/unified) of
// the group under which the node's executor creates one group per task,
// named by the task id. A process in ROOT/TASK or any group below it is
// attested as TASK; any other process has no task.
//
// root must satisfy CheckTaskCgroupRoot; if it does not, every handshake of
// these credentials fails with that error (fail closed). Callers should check
// it first to report the mistake at start-up.
func WithTaskCgroups(root string) Option {
	return func(c *transportCreds) {
		if err := CheckTaskCgroupRoot(root); err != nil {
			c.optErr = fmt.Errorf("WithTaskCgroups: %w", err)
			return
		}
		c.taskRoot = root
	}
}

// Credentials returns server-side transport credentials for a unix socket
// listener. Each call gets its own executable digest cache, shared by the
// peers of every connection it accepts.
func Credentials(opts ...Option) credentials.TransportCredentials {
	c := &transportCreds{cache: newHashCache(defaultHashCacheSize), usePeerPidfd: true}
	for _, o := range opts {
		o(c)
	}
	return c
}

// ClientHandshake is not supported: these credentials only identify peers of
// a server.
func (c *transportCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("attest: credentials are server-side only")
}

// ServerHandshake captures the connecting process. It reads nothing from the
// connection: Workload API clients speak plain gRPC over the socket.
func (c *transportCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.optErr != nil {
		return nil, nil, fmt.Errorf("attest: %w", c.optErr)
	}
	p, err := c.capture(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("attest: %w", err)
	}
	return &conn{Conn: raw, peer: p}, p, nil
}

// Info describes the protocol; the security is local, not cryptographic.
func (c *transportCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: AuthType}
}

// Clone returns credentials sharing the digest cache.
func (c *transportCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName is unused by gRPC and meaningless for a server.
func (c *transportCreds) OverrideServerName(string) error { return nil }

func (c *transportCreds) capture(raw net.Conn) (*Peer, error) {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("connection %T is not a unix socket", raw)
	}
	if _, ok := raw.LocalAddr().(*net.UnixAddr); !ok {
		return nil, fmt.Errorf("connection on %s is not a unix socket", raw.LocalAddr().Network())
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw connection: %w", err)
	}
	var (
		cred   *unix.Ucred
		pidfd  = -1
		getErr error
	)
	if err := rc.Control(func(fd uintptr) {
		cred, pidfd, getErr = c.peerOf(int(fd))
	}); err != nil {
		return nil, fmt.Errorf("raw connection: %w", err)
	}
	if getErr != nil {
		return nil, getErr
	}
	p := &Peer{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		pid:            int(cred.Pid),
		uid:            cred.Uid,
		gid:            cred.Gid,
		pidfd:          pidfd,
		cache:          c.cache,
		taskRoot:       c.taskRoot,
	}
	// The binary the peer runs now, read while the pidfd pins the process.
	// This is the reference Attest compares against to detect exec.
	var st unix.Stat_t
	if err := unix.Stat(p.procPath("exe"), &st); err != nil {
		err = p.goneOr(fmt.Errorf("stat executable of pid %d: %w", p.pid, err))
		p.close()
		return nil, err
	}
	if err := p.alive(); err != nil {
		p.close()
		return nil, err
	}
	p.exeDev, p.exeIno = st.Dev, st.Ino
	return p, nil
}

// peerOf reads the peer credentials and a pidfd for the socket fd.
func (c *transportCreds) peerOf(fd int) (*unix.Ucred, int, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, -1, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	if cred.Pid <= 0 {
		// A peer in a pid namespace we cannot see reports pid 0: there is no
		// process we could attest.
		return nil, -1, fmt.Errorf("SO_PEERCRED: peer pid %d is not visible from this pid namespace", cred.Pid)
	}
	if c.usePeerPidfd {
		pidfd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		switch {
		case err == nil:
			// The kernel takes the pidfd and SO_PEERCRED's pid from the same
			// struct pid captured at connect(2): they name one process.
			return cred, pidfd, nil
		case errors.Is(err, unix.ESRCH):
			return nil, -1, fmt.Errorf("SO_PEERPIDFD: %w", ErrProcessGone)
		case errors.Is(err, unix.ENOPROTOOPT), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
			// Kernel older than 6.5: fall back below.
		default:
			return nil, -1, fmt.Errorf("SO_PEERPIDFD: %w", err)
		}
	}
	pidfd, err := unix.PidfdOpen(int(cred.Pid), 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, -1, fmt.Errorf("pidfd_open(%d): %w", cred.Pid, ErrProcessGone)
		}
		return nil, -1, fmt.Errorf("pidfd_open(%d): %w", cred.Pid, err)
	}
	// The pid came from SO_PEERCRED before pidfd_open: re-read it and make
	// sure the process is alive now, so the pidfd names the connecting
	// process unless the pid was recycled within this very short window.
	again, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || again.Pid != cred.Pid {
		unix.Close(pidfd)
		return nil, -1, fmt.Errorf("SO_PEERCRED changed while opening a pidfd for pid %d", cred.Pid)
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		unix.Close(pidfd)
		return nil, -1, fmt.Errorf("pidfd of pid %d: %w", cred.Pid, ErrProcessGone)
	}
	return cred, pidfd, nil
}

// Peer is the process at the other end of an attested connection. It is the
// connection's credentials.AuthInfo and owns a pidfd, closed with the
// connection. Its methods are safe for concurrent use.
type Peer struct {
	credentials.CommonAuthInfo

	// Immutable after the handshake.
	pid            int
	uid, gid       uint32 // SO_PEERCRED, as of connect(2)
	exeDev, exeIno uint64 // executable at handshake
	cache          *hashCache
	taskRoot       string // "" when task attestation is off

	// mu guards pidfd: Attest and digest computations hold it shared while
	// they rely on the pidfd; close holds it exclusively. -1 once closed.
	mu    sync.RWMutex
	pidfd int
}

var _ credentials.AuthInfo = (*Peer)(nil)

// AuthType implements credentials.AuthInfo.
func (p *Peer) AuthType() string { return AuthType }

// PID is the peer's process id.
func (p *Peer) PID() int { return p.pid }

// ConnectUID is the peer's effective uid when it connected (SO_PEERCRED).
func (p *Peer) ConnectUID() uint32 { return p.uid }

// ConnectGID is the peer's effective gid when it connected (SO_PEERCRED).
func (p *Peer) ConnectGID() uint32 { return p.gid }

// PeerFromContext returns the attested peer of a gRPC call.
func PeerFromContext(ctx context.Context) (*Peer, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errors.New("attest: no peer in request context")
	}
	p, ok := pr.AuthInfo.(*Peer)
	if !ok || p == nil {
		return nil, fmt.Errorf("attest: connection was not attested (auth info %T): serve with attest.Credentials", pr.AuthInfo)
	}
	return p, nil
}

// Attest reads the peer's current uid, groups, executable and (with
// WithTaskCgroups) task cgroup from /proc and confirms, through the pidfd,
// that the process read is the one that connected. Errors wrap
// ErrProcessGone or ErrExecAfterConnect where they apply. The returned
// Process computes the executable digest lazily, from the very inode the
// process runs, and only if it is still the connecting one.
//
// Nothing is remembered between calls: the cgroup in particular is read
// afresh every time, so a process moved out of its task's group (only root
// can move it: cgroup.procs files are root-owned) has no task on its next
// call.
func (p *Peer) Attest() (selector.Process, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.aliveLocked(); err != nil {
		return selector.Process{}, err
	}
	st, err := readStatus(p.procPath("status"))
	if err != nil {
		return selector.Process{}, p.goneOrLocked(fmt.Errorf("attest pid %d: %w", p.pid, err))
	}
	path, err := readExe(p.procPath("exe"))
	if err != nil {
		return selector.Process{}, p.goneOrLocked(fmt.Errorf("attest pid %d: %w", p.pid, err))
	}
	var exe unix.Stat_t
	if err := unix.Stat(p.procPath("exe"), &exe); err != nil {
		return selector.Process{}, p.goneOrLocked(fmt.Errorf("attest pid %d: stat executable: %w", p.pid, err))
	}
	var task string
	if p.taskRoot != "" {
		if task, err = readTask(p.procPath("cgroup"), p.taskRoot); err != nil {
			return selector.Process{}, p.goneOrLocked(fmt.Errorf("attest pid %d: task: %w", p.pid, err))
		}
	}
	// Everything above was read by pid; only now do we know it was read from
	// the process the pidfd pins and not from a successor with its pid.
	if err := p.aliveLocked(); err != nil {
		return selector.Process{}, err
	}
	if st.zombie {
		return selector.Process{}, fmt.Errorf("attest pid %d: %w (zombie)", p.pid, ErrProcessGone)
	}
	if exe.Dev != p.exeDev || exe.Ino != p.exeIno {
		return selector.Process{}, fmt.Errorf("attest pid %d (now %s): %w", p.pid, path, ErrExecAfterConnect)
	}
	return selector.Process{
		PID:    p.pid,
		UID:    st.uid,
		GIDs:   st.gids,
		Path:   path,
		Task:   task,
		SHA256: p.lazyDigest(),
	}, nil
}

// lazyDigest returns a memoised digest function for one attestation.
func (p *Peer) lazyDigest() func() (string, error) {
	var (
		mu   sync.Mutex
		done bool
		sum  string
		err  error
	)
	return func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			sum, err = p.digest()
			done = true
		}
		return sum, err
	}
}

// digest hashes the executable through /proc/PID/exe, which opens the inode
// the process runs even if its path was replaced or deleted.
func (p *Peer) digest() (string, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.pidfd < 0 {
		return "", fmt.Errorf("hash executable of pid %d: %w (connection closed)", p.pid, ErrProcessGone)
	}
	fd, err := unix.Open(p.procPath("exe"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", p.goneOrLocked(fmt.Errorf("hash executable of pid %d: %w", p.pid, err))
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("hash executable of pid %d: fstat: %w", p.pid, err)
	}
	if err := p.aliveLocked(); err != nil {
		return "", err
	}
	if st.Dev != p.exeDev || st.Ino != p.exeIno {
		return "", fmt.Errorf("hash executable of pid %d: %w", p.pid, ErrExecAfterConnect)
	}
	return p.cache.sum(fd, &st)
}

func (p *Peer) procPath(name string) string {
	return procRoot + "/" + strconv.Itoa(p.pid) + "/" + name
}

// alive reports ErrProcessGone unless the pidfd's process still exists.
func (p *Peer) alive() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.aliveLocked()
}

func (p *Peer) aliveLocked() error {
	if p.pidfd < 0 {
		return fmt.Errorf("pid %d: %w (connection closed)", p.pid, ErrProcessGone)
	}
	if err := unix.PidfdSendSignal(p.pidfd, 0, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d: %w", p.pid, ErrProcessGone)
		}
		return fmt.Errorf("pid %d: pidfd_send_signal: %w", p.pid, err)
	}
	return nil
}

// goneOr returns ErrProcessGone if the peer died (the likely reason a /proc
// read failed), else err.
func (p *Peer) goneOr(err error) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.goneOrLocked(err)
}

func (p *Peer) goneOrLocked(err error) error {
	if aerr := p.aliveLocked(); aerr != nil {
		return aerr
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		// /proc/PID/exe of a zombie (or a process mid-exit) is gone while the
		// process still answers signals.
		return fmt.Errorf("%w: %w", ErrProcessGone, err)
	}
	return err
}

func (p *Peer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// conn ties the peer's pidfd to the connection's lifetime.
type conn struct {
	net.Conn
	peer *Peer
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.peer.close)
	return err
}
