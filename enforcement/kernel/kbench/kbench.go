package kbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/scheduler/cgroup"
	"github.com/unumos/unum/scheduler/executor/reaper"
)

// Options says what to measure. Zero fields take the defaults.
type Options struct {
	// Entries: allow-list sizes of the bench identity (besides the rule
	// that allows the bench's listener). Default 0, 1,000 and 10,000.
	Entries []int
	// Connects per round and configuration. Default 1,000.
	Connects int
	// Rounds; the configurations take turns in each. Default 9.
	Rounds int
	// Iptables also measures iptables OUTPUT rules of the same counts, in
	// a network namespace of the bench's own.
	Iptables bool
	Log      *slog.Logger
}

// Config names what was between the process and its connect.
type Config string

const (
	ConfigNone     Config = "none"     // no program attached, no rules
	ConfigBPF      Config = "bpf"      // the enforcement programs, Entries allow rules
	ConfigIptables Config = "iptables" // Entries non-matching OUTPUT rules, then ACCEPT
)

// Result is one configuration's figure.
type Result struct {
	Config  Config
	Entries int
	// Proto: "tcp" (a loopback handshake, what a client pays) or "udp"
	// (connect() of a UDP socket: no handshake, so the hook's own cost is
	// most of it).
	Proto string
	// NsPerConnect: median over the rounds of each round's median
	// connect() time.
	NsPerConnect float64
	// AddedNs: NsPerConnect minus that of ConfigNone with the same Proto,
	// what the configuration adds to a connect() (0 for ConfigNone).
	AddedNs float64
	// Rounds: every round's median, in order.
	Rounds []float64
}

// Report is what Run measured.
type Report struct {
	Results []Result
	// Iptables is the iptables version used, or why it was not measured.
	Iptables string
	Kernel   string
}

// Run measures connect() to a TCP listener on 127.0.0.1 from the calling
// process placed in a cgroup: one with no program attached; task cgroups
// under the enforcement programs, one per Entries count, each bound to an
// identity with that many allow rules (all in the one rules map, as on a
// node with many identities); and (Iptables) network namespaces with as
// many iptables rules. The configurations take turns within every round,
// so a noisy neighbour spreads over all of them instead of skewing one.
// The process moves itself between cgroups (all its threads move with it)
// and returns to its own cgroup at the end; everything it made (cgroups,
// pins, namespaces) is removed.
func Run(ctx context.Context, opts Options) (Report, error) {
	opts = opts.withDefaults()
	b, err := setup(ctx, opts)
	if err != nil {
		return Report{}, err
	}
	defer b.close()
	var rep Report
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		rep.Kernel = unix.ByteSliceToString(uts.Release[:])
	}

	type config struct {
		c       Config
		entries int
		proto   string
		measure func(int) ([]time.Duration, error)
	}
	var configs []config
	for _, proto := range []string{"tcp", "udp"} {
		configs = append(configs, config{ConfigNone, 0, proto, func(n int) ([]time.Duration, error) {
			return b.measureIn(b.plain, proto, b.lnAddr, n)
		}})
	}
	for _, n := range opts.Entries {
		dir, err := b.taskWith(n)
		if err != nil {
			return rep, err
		}
		for _, proto := range []string{"tcp", "udp"} {
			configs = append(configs, config{ConfigBPF, n, proto, func(k int) ([]time.Duration, error) {
				return b.measureIn(dir, proto, b.lnAddr, k)
			}})
		}
	}
	rep.Iptables = "not asked for"
	if opts.Iptables {
		ver, err := iptablesVersion()
		rep.Iptables = ver
		if err != nil {
			rep.Iptables = "not measured: " + err.Error()
		}
		for i, n := range opts.Entries {
			if err != nil {
				break
			}
			ns, err := newNetns(ctx, fmt.Sprintf("%s-%d", b.name, i))
			if err != nil {
				return rep, err
			}
			defer ns.close()
			if err := ns.setRules(ctx, n); err != nil {
				return rep, err
			}
			configs = append(configs, config{ConfigIptables, n, "tcp", func(k int) ([]time.Duration, error) { return b.measureNetns(ns, k) }})
		}
	}

	results := make([]Result, len(configs))
	for i, c := range configs {
		results[i] = Result{Config: c.c, Entries: c.entries, Proto: c.proto}
		if _, err := c.measure(opts.Connects / 4); err != nil { // warm up
			return rep, err
		}
	}
	for range opts.Rounds {
		for i, c := range configs {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			ds, err := c.measure(opts.Connects)
			if err != nil {
				return rep, err
			}
			results[i].Rounds = append(results[i].Rounds, float64(median(ds).Nanoseconds()))
		}
	}
	base := map[string]float64{}
	for i := range results {
		results[i].NsPerConnect = median(results[i].Rounds)
		if results[i].Config == ConfigNone {
			base[results[i].Proto] = results[i].NsPerConnect
		}
	}
	for i := range results {
		r := &results[i]
		r.AddedNs = r.NsPerConnect - base[r.Proto]
		opts.Log.Info("measured", "config", string(r.Config), "entries", r.Entries, "proto", r.Proto,
			"ns_per_connect", int(r.NsPerConnect), "added_ns", int(r.AddedNs))
	}
	rep.Results = results
	return rep, nil
}

func (o Options) withDefaults() Options {
	if o.Entries == nil {
		o.Entries = []int{0, 1000, 10000}
	}
	if o.Connects <= 0 {
		o.Connects = 1000
	}
	if o.Rounds <= 0 {
		o.Rounds = 9
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// median of a non-empty xs; the mean of the middle two when len(xs) is
// even (a Duration's halves round down).
func median[T ~int64 | ~float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// bench is the set-up shared by the measurements.
type bench struct {
	name     string
	base     string // the bench's cgroup
	plain    string // no programs
	taskRoot string
	ownCG    string // where the process came from
	pinDir   string
	e        *kernel.Enforcer
	listener net.Listener
	lnAddr   netip.AddrPort
	wg       sync.WaitGroup
	nextID   enforcement.IdentityNum
	filled   int // filler rules handed out so far
	log      *slog.Logger
}

func setup(ctx context.Context, opts Options) (_ *bench, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("bench enforce: it loads BPF programs and moves this process between cgroups: run it as root")
	}
	if c := kernel.Probe(); !c.CgroupBPF {
		return nil, fmt.Errorf("bench enforce: no cgroup BPF here: %s", c.Reason)
	}
	l, err := cgroup.DetectHost()
	if err != nil {
		return nil, fmt.Errorf("bench enforce: %w", err)
	}
	name := fmt.Sprintf("unum-bench-%d", os.Getpid())
	b := &bench{
		name:   name,
		base:   filepath.Join(l.V2.Mount, name),
		ownCG:  l.V2.Own,
		pinDir: filepath.Join("/sys/fs/bpf", name),
		log:    opts.Log,
	}
	b.plain = filepath.Join(b.base, "plain")
	b.taskRoot = filepath.Join(b.base, "tasks")
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	for _, d := range []string{b.plain, b.taskRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("bench enforce: %w", err)
		}
	}
	b.e, err = kernel.Open(ctx, kernel.Config{PinDir: b.pinDir, Cgroup: b.taskRoot, Log: opts.Log})
	if err != nil {
		return nil, err
	}
	b.listener, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench enforce: listen: %w", err)
	}
	b.lnAddr = b.listener.Addr().(*net.TCPAddr).AddrPort()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		acceptAll(b.listener)
	}()
	return b, nil
}

func acceptAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// filler is the i-th allow rule that never matches the bench's listener:
// one /32 in 10.0.0.0/8 per entry, port 80.
func filler(i int) enforcement.Rule {
	a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return enforcement.Rule{Prefix: netip.PrefixFrom(a, 32), Port: 80, Proto: enforcement.ProtoTCP}
}

// taskWith makes a task cgroup bound to a new identity allowed the
// listener and n filler rules (distinct from every other identity's), and
// returns its directory.
func (b *bench) taskWith(n int) (string, error) {
	b.nextID++
	id := b.nextID
	dir := filepath.Join(b.taskRoot, fmt.Sprintf("t%d", id))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bench enforce: %w", err)
	}
	cg, err := kernel.CgroupID(dir)
	if err != nil {
		return "", err
	}
	if err := b.e.Bind(cg, enforcement.Binding{Identity: id}); err != nil {
		return "", err
	}
	// The listener rule as Compile writes one (protocol any, the port), so
	// the figures are those of the common allowed connect.
	rs := []enforcement.Rule{{Prefix: netip.PrefixFrom(b.lnAddr.Addr(), 32), Port: b.lnAddr.Port(), Proto: enforcement.ProtoAny}}
	for range n {
		rs = append(rs, filler(b.filled))
		b.filled++
	}
	if err := b.e.ApplyRules(map[enforcement.IdentityNum][]enforcement.Rule{id: rs}, nil); err != nil {
		return "", err
	}
	// Make sure the figures are taken under enforcement: a port the
	// identity may not reach is refused.
	forbidden := netip.AddrPortFrom(b.lnAddr.Addr(), b.lnAddr.Port()^1)
	if _, err := b.measureIn(dir, "udp", forbidden, 1); !errors.Is(err, unix.EPERM) {
		return "", fmt.Errorf("bench enforce: a forbidden connect from %s was not refused (%v)", dir, err)
	}
	return dir, nil
}

func (b *bench) close() {
	if b.listener != nil {
		b.listener.Close()
		b.wg.Wait()
	}
	if err := moveSelf(b.ownCG); err != nil {
		b.log.Warn("bench enforce: could not return to own cgroup", "err", err.Error())
	}
	if b.e != nil {
		b.e.Close()
	}
	if err := kernel.Remove(b.pinDir); err != nil {
		b.log.Warn("bench enforce: remove pins", "err", err.Error())
	}
	// The process has left: the groups are empty.
	if err := reaper.RemoveTree(b.base, 2*time.Second); err != nil {
		b.log.Warn("bench enforce: remove cgroups", "err", err.Error())
	}
}

// measureIn moves the process into cgroup dir, times n connects to addr,
// and moves it back to the plain cgroup.
func (b *bench) measureIn(dir, proto string, addr netip.AddrPort, n int) ([]time.Duration, error) {
	if err := moveSelf(dir); err != nil {
		return nil, err
	}
	ds, err := connects(proto, addr, n)
	if merr := moveSelf(b.plain); merr != nil && err == nil {
		err = merr
	}
	return ds, err
}

// connects times n blocking connect() calls to addr on the calling thread
// (TCP sockets are closed with RST, so no TIME_WAIT piles up). For "udp"
// nothing listens: a UDP connect sends nothing.
func connects(proto string, addr netip.AddrPort, n int) ([]time.Duration, error) {
	sa := &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	ds := make([]time.Duration, 0, n)
	for range n {
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("bench enforce: socket: %w", err)
		}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("bench enforce: linger: %w", err)
		}
		t0 := time.Now()
		err = unix.Connect(fd, sa)
		ds = append(ds, time.Since(t0))
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("bench enforce: connect %s: %w", addr, err)
		}
	}
	return ds, nil
}

// moveSelf moves the whole process (every thread) into the cgroup dir.
func moveSelf(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("bench enforce: move into %s: %w", dir, err)
	}
	return nil
}

func iptablesVersion() (string, error) {
	for _, tool := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("%s is not installed (make deps installs it)", tool)
		}
	}
	out, err := exec.Command("iptables", "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("iptables --version: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// netns is a network namespace of the bench's own, with lo up and a
// listener on 127.0.0.1.
type netns struct {
	name   string
	fd     int // the namespace
	ln     net.Listener
	lnAddr netip.AddrPort
	wg     sync.WaitGroup
}

func newNetns(ctx context.Context, name string) (_ *netns, err error) {
	ns := &netns{name: name, fd: -1}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench enforce: ip netns add: %v: %s", err, out)
	}
	defer func() {
		if err != nil {
			ns.close()
		}
	}()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench enforce: lo up: %v: %s", err, out)
	}
	ns.fd, err = unix.Open(filepath.Join("/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bench enforce: open netns: %w", err)
	}
	// The listening socket is made inside the namespace; accepting on it
	// works from any thread.
	var lfd int
	err = ns.inside(func() error {
		var err error
		lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			unix.Close(lfd)
			return err
		}
		return unix.Listen(lfd, 4096)
	})
	if err != nil {
		return nil, fmt.Errorf("bench enforce: listen in netns: %w", err)
	}
	f := os.NewFile(uintptr(lfd), "netns-listener")
	ns.ln, err = net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("bench enforce: listener: %w", err)
	}
	ns.lnAddr = ns.ln.Addr().(*net.TCPAddr).AddrPort()
	ns.wg.Add(1)
	go func() {
		defer ns.wg.Done()
		acceptAll(ns.ln)
	}()
	return ns, nil
}

// inside runs fn on a thread of its own that has entered the namespace.
// The thread is never unlocked, so the runtime discards it afterwards
// rather than reuse a thread in the wrong namespace.
func (ns *netns) inside(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// setRules replaces the namespace's filter table: n DROP rules that never
// match the listener, then an ACCEPT of it.
func (ns *netns) setRules(ctx context.Context, n int) error {
	var sb strings.Builder
	sb.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for i := range n {
		fmt.Fprintf(&sb, "-A OUTPUT -d %s -p tcp --dport 80 -j DROP\n", filler(i).Prefix)
	}
	fmt.Fprintf(&sb, "-A OUTPUT -d %s/32 -p tcp --dport %d -j ACCEPT\nCOMMIT\n", ns.lnAddr.Addr(), ns.lnAddr.Port())
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name, "iptables-restore")
	cmd.Stdin = strings.NewReader(sb.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bench enforce: iptables-restore of %d rules: %v: %s", n, err, out)
	}
	return nil
}

func (b *bench) measureNetns(ns *netns, n int) ([]time.Duration, error) {
	var ds []time.Duration
	err := ns.inside(func() error {
		var err error
		ds, err = connects("tcp", ns.lnAddr, n)
		return err
	})
	return ds, err
}

func (ns *netns) close() {
	if ns.ln != nil {
		ns.ln.Close()
		ns.wg.Wait()
	}
	if ns.fd >= 0 {
		unix.Close(ns.fd)
	}
	exec.Command("ip", "netns", "delete", ns.name).Run()
}
