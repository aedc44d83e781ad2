package faultcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/devcluster"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/spawn"
	"github.com/unumos/unum/node"
	"github.com/unumos/unum/storage/meta"
)

// TrustDomain is the fault cluster's trust domain.
const TrustDomain = "fault.test"

// Ports every node listens on, each on its own address.
const (
	apiPort        = 7443
	enrollPort     = 7444
	etcdClientPort = 7445
	etcdPeerPort   = 7446
)

// readyTimeout bounds one node's start on two busy cores.
const readyTimeout = 2 * time.Minute

// Options configure a cluster. Zero durations keep the nodes' defaults,
// except the etcd timings, which default to relaxed ones (two busy cores
// must not cause elections).
type Options struct {
	// Binary is the unum executable (required).
	Binary string
	// Control nodes run compute and control; Compute nodes compute only.
	// Control must be at least 1.
	Control, Compute int
	// SVIDTTL, NodeLease and DownGrace are passed to every node
	// (--svid-ttl, --node-lease, --down-grace).
	SVIDTTL, NodeLease, DownGrace time.Duration
	// EtcdHeartbeat and EtcdElection default to 250ms and 2.5s.
	EtcdHeartbeat, EtcdElection time.Duration
}

// Cluster is a running fault cluster. Methods that may fail take the test
// (or subtest) they fail; those that goroutines or require.Eventually
// conditions may call (Run, Status, WaitReady, Kill) return errors instead.
type Cluster struct {
	o      Options
	prefix string
	lock   *runLock
	dir    string
	net    *network
	nodes  []*Node
	sp     *spawn.Spawner

	// The deadline guard (see guard) and the test's cleanup both clean
	// up; whichever comes first does it.
	guardStop   chan struct{}
	guardWG     sync.WaitGroup
	cleanupOnce sync.Once
}

// guardMargin is how long before the test's deadline the guard cleans up:
// enough for cleanup (a few seconds) on busy cores.
const guardMargin = 30 * time.Second

// guard cleans up at the given time unless the test ends first, and fails
// the test saying why. What the test does afterwards fails (its nodes and
// namespaces are gone); go test's own timeout then finds nothing left.
func (c *Cluster) guard(t testing.TB, at time.Time) {
	c.guardWG.Add(1)
	go func() {
		defer c.guardWG.Done()
		timer := time.NewTimer(time.Until(at))
		defer timer.Stop()
		select {
		case <-c.guardStop:
		case <-timer.C:
			t.Errorf("faultcluster: the test's deadline is %s away: cleaning up the cluster now", guardMargin)
			c.cleanupOnce.Do(func() { c.cleanup(t) })
		}
	}()
}

// checkForwarding fails when bridged traffic between the nodes would be
// dropped: with br_netfilter loaded, frames crossing the bridge traverse
// the root namespace's FORWARD chain, and a DROP policy there cuts every
// node off from every other.
func checkForwarding(ctx context.Context) error {
	b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		return nil // br_netfilter not loaded, or not calling iptables
	}
	out, err := run(ctx, "iptables", "-S", "FORWARD")
	if err != nil {
		return err
	}
	if strings.Contains(out, "-P FORWARD DROP") {
		return errors.New("br_netfilter is loaded (net.bridge.bridge-nf-call-iptables=1) and the FORWARD policy is DROP: " +
			"traffic between the nodes on the bridge would be dropped; set net.bridge.bridge-nf-call-iptables=0 or accept the bridge in FORWARD")
	}
	return nil
}

// Node is one node of the cluster.
type Node struct {
	Name    string
	Control bool
	// Dir is its data folder; node.log in it holds its output.
	Dir   string
	index int
	addr  string

	mu   sync.Mutex
	proc *spawn.Proc // nil once killed
}

// API is the node's API address (HOST:PORT), reachable from the test.
func (n *Node) API() string { return net.JoinHostPort(n.addr, strconv.Itoa(apiPort)) }

// Enroll is the node's enrolment address.
func (n *Node) Enroll() string { return net.JoinHostPort(n.addr, strconv.Itoa(enrollPort)) }

// EtcdClientURL is the node's etcd client URL (control nodes).
func (n *Node) EtcdClientURL() string {
	return "https://" + net.JoinHostPort(n.addr, strconv.Itoa(etcdClientPort))
}

// Socket is the node's Workload API socket.
func (n *Node) Socket() string { return node.Layout{Dir: n.Dir}.Socket() }

// Addr is the node's IP address on the bridge.
func (n *Node) Addr() string { return n.addr }

// PID is the node process's pid, 0 when it is not running.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return 0
	}
	return n.proc.Cmd.Process.Pid
}

// Start creates the network and the cluster: `unum init` in the first
// node's namespace, then every other node joined with a join token from
// `unum node join-token`, one at a time, each waited for until the control
// plane reports it ready (a control node: also an etcd voter). It skips the
// test when not root or a tool is missing, and cleans everything up when
// the test ends.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the fault cluster needs root (network namespaces, iptables, cgroups); CI runs as root")
	}
	if m := missingTools(); len(m) > 0 {
		t.Skipf("the fault cluster needs %s in PATH (make deps installs them)", strings.Join(m, ", "))
	}
	if o.Binary == "" || o.Control < 1 {
		t.Fatalf("faultcluster: Binary and at least one control node are required")
	}
	if o.EtcdHeartbeat == 0 {
		o.EtcdHeartbeat = 250 * time.Millisecond
	}
	if o.EtcdElection == 0 {
		o.EtcdElection = 2500 * time.Millisecond
	}
	ctx := context.Background()
	if err := checkForwarding(ctx); err != nil {
		t.Fatalf("faultcluster: %v", err)
	}
	if err := sweep(ctx); err != nil {
		t.Logf("faultcluster: sweeping an earlier run's leftovers: %v", err)
	}
	lock, err := newRunLock()
	if err != nil {
		t.Fatalf("faultcluster: %v", err)
	}
	prefix := lock.prefix
	c := &Cluster{o: o, prefix: prefix, lock: lock, sp: spawn.New(), guardStop: make(chan struct{})}
	t.Cleanup(func() {
		close(c.guardStop)
		c.guardWG.Wait()
		c.cleanupOnce.Do(func() { c.cleanup(t) })
	})
	// go test -timeout panics and exits without running cleanups: a run
	// that times out would leave its namespaces behind until the next
	// run's sweep. So clean up before the deadline, while the test runs.
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			c.guard(t, deadline.Add(-guardMargin))
		}
	}
	c.dir, err = os.MkdirTemp("", prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	dir := c.dir
	// Tasks run as dynamic uids that must reach nothing here but their own
	// folders, which the executor makes; 0711 lets them traverse.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range o.Control + o.Compute {
		name := fmt.Sprintf("%s-c%d", prefix, i+1)
		if i >= o.Control {
			name = fmt.Sprintf("%s-w%d", prefix, i+1-o.Control)
		}
		names = append(names, name)
	}
	c.net, err = setUpNetwork(ctx, prefix, names)
	if err != nil {
		t.Fatalf("faultcluster: network: %v", err)
	}
	for i, name := range names {
		c.nodes = append(c.nodes, &Node{Name: name, Control: i < o.Control, Dir: filepath.Join(dir, name),
			index: i, addr: c.net.nodes[i].addr.String()})
	}
	start := time.Now()
	c.create(ctx, t)
	t.Logf("figure: fault cluster of %d nodes (%d control) ready in %s", len(c.nodes), o.Control, time.Since(start).Round(100*time.Millisecond))
	return c
}

// Nodes are every node, control nodes first.
func (c *Cluster) Nodes() []*Node { return slices.Clone(c.nodes) }

// ControlNodes are the control nodes.
func (c *Cluster) ControlNodes() []*Node {
	return slices.DeleteFunc(c.Nodes(), func(n *Node) bool { return !n.Control })
}

// ComputeOnly are the nodes without the control role.
func (c *Cluster) ComputeOnly() []*Node {
	return slices.DeleteFunc(c.Nodes(), func(n *Node) bool { return n.Control })
}

// Node is the node called name; it fails t if there is none.
func (c *Cluster) Node(t testing.TB, name string) *Node {
	t.Helper()
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("faultcluster: no node %s", name)
	return nil
}

// AdminConfig is the admin client config, listing every control node.
func (c *Cluster) AdminConfig() string { return filepath.Join(c.dir, "admin.yaml") }

// Env is the environment for the CLI as admin, failing over across every
// control node.
func (c *Cluster) Env() []string { return []string{"UNUM_CONFIG=" + c.AdminConfig()} }

// EnvAt is the environment for the CLI as admin talking to n only.
func (c *Cluster) EnvAt(n *Node) []string { return append(c.Env(), "UNUM_ADDR="+n.API()) }

func (c *Cluster) kekPath() string { return filepath.Join(c.dir, "kek") }

// Result is a finished CLI command.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Unum runs the CLI (see Run) and fails t if it could not run at all; a
// non-zero exit is a Result, not a failure.
func (c *Cluster) Unum(t testing.TB, env []string, args ...string) Result {
	t.Helper()
	r, err := c.Run(context.Background(), env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Run runs the CLI in the test's own namespace with env added to the
// test's environment (UNUM_CONFIG and UNUM_ADDR cleared first), for at
// most cliTimeout. The error is for a command that could not run or was
// killed; a non-zero exit is in the Result. Goroutines use Run, not Unum.
func (c *Cluster) Run(ctx context.Context, env []string, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.o.Binary, args...)
	cmd.Env = append(append(os.Environ(), "UNUM_CONFIG=", "UNUM_ADDR="), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return r, fmt.Errorf("run unum %v: %w", args, ctx.Err())
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		return r, fmt.Errorf("run unum %v: %w", args, err)
	}
	return r, nil
}

// cliTimeout bounds one CLI command; the commands pass their own, shorter
// --timeout where they may wait for an unreachable node.
const cliTimeout = 90 * time.Second

// create runs `unum init` for the first node and starts and joins the rest.
func (c *Cluster) create(ctx context.Context, t testing.TB) {
	t.Helper()
	first := c.nodes[0]
	args := append([]string{"init", "--trust-domain", TrustDomain, "--data-dir", first.Dir, "--kek-file", c.kekPath(),
		"--name", first.Name, "--enforcement-optional"}, c.listenArgs(first)...)
	// init starts etcd on the node's addresses to write the first state:
	// it runs in the node's namespace too.
	if out, err := inNS(ctx, c.net.nodes[0].ns, c.o.Binary, args...); err != nil {
		t.Fatalf("faultcluster: %v\n%s", err, out)
	}
	cfg, err := clientconfig.Load(node.Layout{Dir: first.Dir}.Admin())
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Save(c.AdminConfig()); err != nil {
		t.Fatal(err)
	}
	c.startAndWait(t, first)
	for _, n := range c.nodes[1:] {
		roles := "compute"
		if n.Control {
			roles = "compute,control"
		}
		r := c.Unum(t, c.Env(), "node", "join-token", "--name", n.Name, "--roles", roles, "--ttl", "5m")
		if r.Code != 0 {
			t.Fatalf("faultcluster: join token for %s: %s", n.Name, r.Stderr)
		}
		tok := strings.TrimSpace(r.Stdout)
		if tok == "" || strings.ContainsAny(tok, " \n") {
			t.Fatalf("faultcluster: join token for %s: want one token, got %q", n.Name, r.Stdout)
		}
		// The token goes in the environment, never on the command line.
		c.startAndWait(t, n, "--join", first.Enroll(), "UNUM_JOIN_TOKEN="+tok)
	}
}

func (c *Cluster) listenArgs(n *Node) []string {
	return []string{"--listen", n.API(), "--enroll-listen", n.Enroll(),
		"--etcd-client-listen", net.JoinHostPort(n.addr, strconv.Itoa(etcdClientPort)),
		"--etcd-peer-listen", net.JoinHostPort(n.addr, strconv.Itoa(etcdPeerPort)),
		"--etcd-heartbeat", c.o.EtcdHeartbeat.String(), "--etcd-election", c.o.EtcdElection.String()}
}

// startAndWait starts n (extra: flags, then "K=V" environment entries) and
// waits until it is ready; the admin config then lists it if it is a
// control node.
func (c *Cluster) startAndWait(t testing.TB, n *Node, extra ...string) {
	t.Helper()
	c.startNode(t, n, extra...)
	if err := c.WaitReady(n); err != nil {
		t.Fatalf("faultcluster: %v", err)
	}
	if err := c.updateAdminAddresses(); err != nil {
		t.Fatalf("faultcluster: %v", err)
	}
}

// startNode starts n from its data folder without waiting for it.
func (c *Cluster) startNode(t testing.TB, n *Node, extra ...string) {
	t.Helper()
	args := append([]string{"--net=" + nsPath(c.net.nodes[n.index].ns), "--", c.o.Binary, "node", "--data-dir", n.Dir}, c.listenArgs(n)...)
	if n.Control {
		args = append(args, "--kek-file", c.kekPath())
	}
	if c.o.SVIDTTL > 0 {
		args = append(args, "--svid-ttl", c.o.SVIDTTL.String())
	}
	if c.o.NodeLease > 0 {
		args = append(args, "--node-lease", c.o.NodeLease.String())
	}
	if c.o.DownGrace > 0 {
		args = append(args, "--down-grace", c.o.DownGrace.String())
	}
	// Each node's tasks get their own ports, as on the machines they stand
	// for (and so two nodes' tasks never look alike in a test).
	lo := 24000 + n.index*200
	args = append(args, "--task-ports", fmt.Sprintf("%d-%d", lo, lo+199))
	// Each node's syscall audit program would make every system call on
	// this one machine slower (they stack, one per node); the fault tests
	// do not look at seccomp refusals.
	args = append(args, "--syscall-audit=false")
	var env []string
	for _, e := range extra {
		if strings.HasPrefix(e, "-") || !strings.Contains(e, "=") {
			args = append(args, e)
		} else {
			env = append(env, e)
		}
	}
	if err := os.MkdirAll(n.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(n.Dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// nsenter execs the node (no --fork): the pid is the node's.
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(append(os.Environ(), "UNUM_CONFIG=", "UNUM_ADDR=", "UNUM_JOIN_TOKEN="), env...)
	p, err := c.sp.Start(cmd)
	if err != nil {
		t.Fatalf("faultcluster: start %s: %v", n.Name, err)
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
}

// WaitReady waits until the control plane reports n ready (and, for a
// control node, its etcd member a voter), or n's process exits.
func (c *Cluster) WaitReady(n *Node) error {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s is not running", n.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	last := "no answer yet"
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited: %v (see %s)", n.Name, p.Cmd.ProcessState, filepath.Join(n.Dir, "node.log"))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %s (see %s)", n.Name, readyTimeout, last, filepath.Join(n.Dir, "node.log"))
		case <-time.After(250 * time.Millisecond):
		}
		st, err := c.Status(ctx, n)
		if err != nil {
			last = err.Error()
			continue
		}
		if devcluster.NodeReady(st, n.Name, n.Control) {
			return nil
		}
		last = "not reported ready"
	}
}

// Status asks the control plane for the cluster's status: n's own API when
// n is a control node that is running (a node knows best whether it is
// up), else any running control node.
func (c *Cluster) Status(ctx context.Context, n *Node) (*unumv1.StatusResponse, error) {
	var addrs []string
	if n != nil && n.Control && n.PID() != 0 {
		addrs = []string{n.API()}
	} else {
		addrs = c.runningControlAPIs()
	}
	if len(addrs) == 0 {
		return nil, errors.New("no control node running")
	}
	cfg, err := clientconfig.Load(c.AdminConfig())
	if err != nil {
		return nil, err
	}
	creds, err := cfg.Credentials()
	if err != nil {
		return nil, err
	}
	cc, err := rpc.Dial(creds, addrs)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return unumv1.NewClusterClient(cc).Status(sctx, &unumv1.StatusRequest{})
}

func (c *Cluster) runningControlAPIs() []string {
	var addrs []string
	for _, n := range c.nodes {
		if n.Control && n.PID() != 0 {
			addrs = append(addrs, n.API())
		}
	}
	return addrs
}

// updateAdminAddresses points the admin config at every started control
// node.
func (c *Cluster) updateAdminAddresses() error {
	cfg, err := clientconfig.Load(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("admin config: %w", err)
	}
	var addrs []string
	for _, n := range c.nodes {
		if n.Control && (n.PID() != 0 || slices.Contains(cfg.Addresses, n.API())) {
			addrs = append(addrs, n.API())
		}
	}
	cfg.Addresses = addrs
	if err := cfg.Save(c.AdminConfig()); err != nil {
		return fmt.Errorf("admin config: %w", err)
	}
	return nil
}

// Etcd is a client of the control plane's etcd with the first control
// node's member certificate: for tests that check what the control plane
// stored (the scheduler leader's key, say). The caller closes it.
func (c *Cluster) Etcd(ctx context.Context) (*clientv3.Client, error) {
	var eps []string
	for _, n := range c.ControlNodes() {
		eps = append(eps, n.EtcdClientURL())
	}
	return meta.NewClient(ctx, eps, node.Layout{Dir: c.nodes[0].Dir}.EtcdTLS())
}

// Kill sends SIGKILL to n's process and waits until it is gone.
func (c *Cluster) Kill(n *Node) {
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.Done()
}

// Stop sends SIGSTOP to n: it holds its sockets and answers nothing.
func (c *Cluster) Stop(t testing.TB, n *Node) { t.Helper(); c.signal(t, n, syscall.SIGSTOP) }

// Cont sends SIGCONT to n.
func (c *Cluster) Cont(t testing.TB, n *Node) { t.Helper(); c.signal(t, n, syscall.SIGCONT) }

func (c *Cluster) signal(t testing.TB, n *Node, sig syscall.Signal) {
	t.Helper()
	pid := n.PID()
	if pid == 0 {
		t.Fatalf("faultcluster: %s is not running", n.Name)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("faultcluster: %s to %s: %v", sig, n.Name, err)
	}
}

// Restart starts n again (killing it first if it still runs) from its
// data folder and waits until it is ready.
func (c *Cluster) Restart(t testing.TB, n *Node) {
	t.Helper()
	c.Kill(n)
	c.startAndWait(t, n)
}

// Partition cuts the cluster into groups: every node of one group stops
// reaching every node of the others (DROP both ways in both namespaces).
// Nodes in no group keep reaching everyone. The test process reaches every
// node throughout.
func (c *Cluster) Partition(t testing.TB, groups ...[]*Node) {
	t.Helper()
	ctx := context.Background()
	for gi, g := range groups {
		for _, a := range g {
			for gj, h := range groups {
				if gi == gj {
					continue
				}
				for _, b := range h {
					if err := c.net.drop(ctx, a.index, c.net.nodes[b.index].addr); err != nil {
						t.Fatalf("faultcluster: partition: %v", err)
					}
				}
			}
		}
	}
}

// Isolate cuts n off from every other node.
func (c *Cluster) Isolate(t testing.TB, n *Node) {
	t.Helper()
	rest := slices.DeleteFunc(c.Nodes(), func(m *Node) bool { return m == n })
	c.Partition(t, []*Node{n}, rest)
}

// Heal removes every partition.
func (c *Cluster) Heal(t testing.TB) {
	t.Helper()
	for _, n := range c.nodes {
		if err := c.net.flush(context.Background(), n.index); err != nil {
			t.Fatalf("faultcluster: heal: %v", err)
		}
	}
}

// Slow limits n's link, both ways, to rate (tc syntax, "1mbit") with queues
// of up to latency: a congested link.
func (c *Cluster) Slow(t testing.TB, n *Node, rate string, latency time.Duration) {
	t.Helper()
	if err := c.net.shape(context.Background(), n.index, rate, latency); err != nil {
		t.Fatalf("faultcluster: slow %s: %v", n.Name, err)
	}
}

// Unslow removes n's rate limit.
func (c *Cluster) Unslow(t testing.TB, n *Node) {
	t.Helper()
	if err := c.net.unshape(context.Background(), n.index); err != nil {
		t.Fatalf("faultcluster: unslow %s: %v", n.Name, err)
	}
}

// cleanup kills every node and its tasks and removes everything the run
// made. On failure it first logs the end of each node's log.
func (c *Cluster) cleanup(t testing.TB) {
	ctx := context.Background()
	if t.Failed() {
		for _, n := range c.nodes {
			t.Logf("faultcluster: last lines of %s's log:\n%s", n.Name, tail(filepath.Join(n.Dir, "node.log"), 40))
		}
	}
	for _, n := range c.nodes {
		// SIGKILL ends a stopped (SIGSTOP) process too.
		c.Kill(n)
	}
	c.sp.Close()
	var errs []error
	// The reapers would kill the tasks at the fencing deadline and remove
	// the groups; cleanup does it now, so they go first.
	for _, n := range c.nodes {
		errs = append(errs, stopReaper(n.Dir))
	}
	errs = append(errs, removeNodeState(c.prefix+"-"))
	if c.net != nil {
		errs = append(errs, c.net.tearDown(ctx))
	}
	if c.dir != "" {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	// Last: while the lock is held, no sweep touches what is left.
	if err := errors.Join(errs...); err == nil {
		errs = append(errs, c.lock.release())
	} else {
		// Keep the lock file (closing it releases the lock): the next
		// sweep retries.
		errs = append(errs, c.lock.f.Close())
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("faultcluster: cleanup: %v", err)
	}
}

func tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
