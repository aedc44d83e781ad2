package devcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
	"github.com/unumos/unum/internal/spawn"
	"github.com/unumos/unum/node"
)

// TrustDomain is the dev cluster's trust domain.
const TrustDomain = "unum.local"

// Relaxed etcd timings: two busy cores must not cause elections.
const (
	etcdHeartbeat = 250 * time.Millisecond
	etcdElection  = 2500 * time.Millisecond
	readyTimeout  = 90 * time.Second
)

// Options configure a dev cluster.
type Options struct {
	Nodes   int
	DataDir string
	// Binary is the unum executable to start nodes with (default: this one).
	Binary string
	// SVIDTTL is passed to the nodes (--svid-ttl); zero keeps their default.
	SVIDTTL time.Duration
	// NodeLease and DownGrace are passed to the control nodes
	// (--node-lease, --down-grace); zero keeps their defaults.
	NodeLease, DownGrace time.Duration
	// Out receives the "what next" text; Progress receives progress lines.
	Out, Progress io.Writer
	Log           *slog.Logger
}

// State is DIR/dev.json: what a resumed dev cluster needs.
type State struct {
	Nodes []NodeState `json:"nodes"`
}

// NodeState is one dev node.
type NodeState struct {
	Name    string     `json:"name"`
	Dir     string     `json:"dir"`
	Control bool       `json:"control"`
	Ports   node.Ports `json:"ports"`
}

func (n NodeState) socket() string { return node.Layout{Dir: n.Dir}.Socket() }

// metricsURL is where the node serves /metrics: the dev cluster's ports are
// all on 127.0.0.1, so plain HTTP.
func (n NodeState) metricsURL() string {
	addr := n.Ports.Metrics
	if addr == "" {
		addr, _ = node.DefaultMetricsListen(n.Ports.API)
	}
	return "http://" + addr + "/metrics"
}

// Run creates or resumes the dev cluster in o.DataDir and blocks until ctx
// ends; then it stops all nodes.
func Run(ctx context.Context, o Options) error {
	if o.Nodes < 1 {
		return errors.New("--nodes must be at least 1")
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Binary = exe
	}
	if o.DataDir == "" {
		d, err := os.MkdirTemp("", "unum-dev-")
		if err != nil {
			return err
		}
		o.DataDir = d
	}
	dir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	d := &dev{o: o, dir: dir, procs: map[string]*spawn.Proc{}}
	d.sp = spawn.New()
	defer d.sp.Close()
	defer d.stopAll()

	st, err := d.loadState()
	switch {
	case err == nil:
		if len(st.Nodes) != o.Nodes && o.Nodes != 1 {
			d.progress("resuming the dev cluster in %s with its %d nodes (--nodes is ignored on resume)", dir, len(st.Nodes))
		} else {
			d.progress("resuming the dev cluster in %s (%d nodes)", dir, len(st.Nodes))
		}
		if err := d.resume(ctx, st); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := d.create(ctx); err != nil {
			return err
		}
	default:
		return err
	}
	d.printNext()
	<-ctx.Done()
	d.progress("stopping %d nodes; the cluster stays in %s (resume it with: unum dev --data-dir %s)", len(d.state.Nodes), d.dir, d.dir)
	return nil
}

type dev struct {
	o     Options
	dir   string
	sp    *spawn.Spawner
	state State

	mu    sync.Mutex
	procs map[string]*spawn.Proc
}

func (d *dev) progress(format string, args ...any) {
	if d.o.Progress != nil {
		fmt.Fprintf(d.o.Progress, "unum dev: "+format+"\n", args...)
	}
}

func (d *dev) statePath() string { return filepath.Join(d.dir, "dev.json") }
func (d *dev) kekPath() string   { return filepath.Join(d.dir, "kek") }
func (d *dev) adminPath() string { return filepath.Join(d.dir, "admin.yaml") }

func (d *dev) loadState() (State, error) {
	data, err := os.ReadFile(d.statePath())
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return State{}, fmt.Errorf("%s: %w", d.statePath(), err)
	}
	return st, nil
}

func (d *dev) saveState() error {
	data, err := json.MarshalIndent(d.state, "", "  ")
	if err != nil {
		return err
	}
	return seal.WriteFileAtomic(d.statePath(), data, 0o644)
}

func (d *dev) create(ctx context.Context) error {
	ports, err := node.FreeLoopbackPorts(d.o.Nodes)
	if err != nil {
		return err
	}
	for i := 0; i < d.o.Nodes; i++ {
		name := "node-" + strconv.Itoa(i+1)
		d.state.Nodes = append(d.state.Nodes, NodeState{
			Name:    name,
			Dir:     filepath.Join(d.dir, name),
			Control: i < 3,
			Ports:   ports[i],
		})
	}
	first := d.state.Nodes[0]
	d.progress("[1/%d] creating trust domain %s in %s", d.o.Nodes, TrustDomain, d.dir)
	err = node.Init(ctx, node.InitOptions{
		TrustDomain: TrustDomain, DataDir: first.Dir, KEKFile: d.kekPath(), Name: first.Name, Ports: first.Ports,
		EtcdHeartbeat: etcdHeartbeat, EtcdElection: etcdElection, Log: d.quietLog(),
		// A development cluster runs where it can: not root, or a kernel
		// without cgroup BPF, still runs tasks (degraded, and says so).
		EnforcementOptional: true,
	})
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	adminCfg, err := clientconfig.Load(node.Layout{Dir: first.Dir}.Admin())
	if err != nil {
		return err
	}
	if err := adminCfg.Save(d.adminPath()); err != nil {
		return err
	}
	if err := d.saveState(); err != nil {
		return err
	}
	if err := d.startAndWait(ctx, 0, nil); err != nil {
		return err
	}
	for i := 1; i < len(d.state.Nodes); i++ {
		n := d.state.Nodes[i]
		roles := []string{"compute"}
		if n.Control {
			roles = append(roles, "control")
		}
		tok, err := d.joinToken(ctx, n.Name, roles)
		if err != nil {
			return fmt.Errorf("join token for %s: %w", n.Name, err)
		}
		// The token goes in the environment, never on the command line:
		// /proc/PID/cmdline is readable by every local user.
		if err := d.startAndWait(ctx, i, []string{"--join", first.Ports.Enroll}, "UNUM_JOIN_TOKEN="+tok); err != nil {
			return err
		}
	}
	return nil
}

func (d *dev) resume(ctx context.Context, st State) error {
	d.state = st
	if len(st.Nodes) == 0 {
		return fmt.Errorf("%s lists no nodes", d.statePath())
	}
	for _, n := range st.Nodes {
		if _, err := os.Stat(node.Layout{Dir: n.Dir}.NodeConfig()); err != nil {
			return fmt.Errorf("%s was never created (an interrupted first start?): remove %s and run unum dev again", n.Name, d.dir)
		}
	}
	// A compute node down longer than its SVID lifetime cannot renew over
	// the network; the dev cluster, which holds every folder and the KEK,
	// re-issues it from node-1's intermediate.
	for _, n := range st.Nodes[1:] {
		if n.Control {
			continue
		}
		expired, err := node.NodeSVIDExpired(n.Dir, time.Now())
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if expired {
			if err := node.ReissueNodeSVID(st.Nodes[0].Dir, d.kekPath(), n.Dir); err != nil {
				return fmt.Errorf("re-issue the SVID of %s: %w", n.Name, err)
			}
			d.progress("%s: its node SVID had expired; issued a new one", n.Name)
		}
	}
	// The admin certificate lives a day; a resumed cluster gets a new one
	// from node-1's intermediate, as only its operator (holding the KEK)
	// can. Its addresses are filled in once the nodes are started.
	adminCfg, err := node.IssueAdminConfig(st.Nodes[0].Dir, d.kekPath(), nil)
	if err != nil {
		return fmt.Errorf("renew the admin certificate: %w", err)
	}
	if err := adminCfg.Save(d.adminPath()); err != nil {
		return err
	}
	// Start every node before waiting for any: a lone control node of
	// three has no quorum and would never report ready.
	procs := make([]*spawn.Proc, len(d.state.Nodes))
	for i := range d.state.Nodes {
		p, err := d.startNode(i, nil)
		if err != nil {
			return err
		}
		procs[i] = p
	}
	for i, n := range d.state.Nodes {
		if err := d.waitReady(ctx, n, procs[i]); err != nil {
			return fmt.Errorf("%s did not come up: %w (see %s)", n.Name, err, filepath.Join(n.Dir, "node.log"))
		}
		d.progress("[%d/%d] %s ready", i+1, len(d.state.Nodes), n.Name)
	}
	return d.updateAdminAddresses()
}

func (d *dev) quietLog() *slog.Logger {
	if d.o.Log != nil {
		return d.o.Log
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startAndWait starts node i and waits until the cluster reports it ready
// (and, for a control node, its etcd member promoted to voter).
func (d *dev) startAndWait(ctx context.Context, i int, extra []string, env ...string) error {
	n := d.state.Nodes[i]
	start := time.Now()
	p, err := d.startNode(i, extra, env...)
	if err != nil {
		return err
	}
	if err := d.waitReady(ctx, n, p); err != nil {
		return fmt.Errorf("%s did not come up: %w (see %s)", n.Name, err, filepath.Join(n.Dir, "node.log"))
	}
	d.progress("[%d/%d] %s ready in %.1fs", i+1, len(d.state.Nodes), n.Name, time.Since(start).Seconds())
	return d.updateAdminAddresses()
}

// startNode starts node i's process.
func (d *dev) startNode(i int, extra []string, env ...string) (*spawn.Proc, error) {
	n := d.state.Nodes[i]
	roles := "compute"
	if n.Control {
		roles = "compute,control"
	}
	d.progress("[%d/%d] starting %s (%s) api=%s", i+1, len(d.state.Nodes), n.Name, roles, n.Ports.API)
	args := []string{"node", "--data-dir", n.Dir,
		"--listen", n.Ports.API, "--enroll-listen", n.Ports.Enroll,
		"--etcd-client-listen", n.Ports.EtcdClient, "--etcd-peer-listen", n.Ports.EtcdPeer,
		"--etcd-heartbeat", etcdHeartbeat.String(), "--etcd-election", etcdElection.String(),
	}
	if n.Ports.Metrics != "" {
		args = append(args, "--metrics-listen", n.Ports.Metrics)
	}
	if n.Control {
		args = append(args, "--kek-file", d.kekPath())
	}
	if d.o.SVIDTTL > 0 {
		args = append(args, "--svid-ttl", d.o.SVIDTTL.String())
	}
	// The nodes share 127.0.0.1: each gets its own task ports.
	args = append(args, "--task-ports", fmt.Sprintf("%d-%d", 20000+i*500, 20000+i*500+499))
	if d.o.NodeLease > 0 {
		args = append(args, "--node-lease", d.o.NodeLease.String())
	}
	if d.o.DownGrace > 0 {
		args = append(args, "--down-grace", d.o.DownGrace.String())
	}
	args = append(args, extra...)
	if err := os.MkdirAll(n.Dir, 0o711); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(filepath.Join(n.Dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.o.Binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(append(os.Environ(), "UNUM_CONFIG=", "UNUM_ADDR=", "UNUM_JOIN_TOKEN="), env...)
	p, err := d.sp.Start(cmd)
	logFile.Close()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", n.Name, err)
	}
	d.mu.Lock()
	d.procs[n.Name] = p
	d.mu.Unlock()
	_ = os.WriteFile(filepath.Join(n.Dir, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	if err := d.saveState(); err != nil {
		return nil, err
	}
	return p, nil
}

func (d *dev) client() (*unumv1.ClusterClient, func(), error) {
	cfg, err := clientconfig.Load(d.adminPath())
	if err != nil {
		return nil, nil, err
	}
	creds, err := cfg.Credentials()
	if err != nil {
		return nil, nil, err
	}
	// Dial the dev cluster's own nodes, whatever UNUM_ADDR says in the
	// shell that started unum dev.
	cc, err := rpc.Dial(creds, d.controlAddresses())
	if err != nil {
		return nil, nil, err
	}
	c := unumv1.NewClusterClient(cc)
	return &c, func() { cc.Close() }, nil
}

func (d *dev) waitReady(ctx context.Context, n NodeState, p *spawn.Proc) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last string
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("process exited: %v", p.Cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %s", readyTimeout, last)
		case <-time.After(250 * time.Millisecond):
		}
		c, closeFn, err := d.client()
		if err != nil {
			return err
		}
		sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := (*c).Status(sctx, &unumv1.StatusRequest{})
		scancel()
		closeFn()
		if err != nil {
			last = err.Error()
			continue
		}
		if NodeReady(st, n.Name, n.Control) {
			return nil
		}
		last = "waiting for " + n.Name + " to report ready"
	}
}

func (d *dev) joinToken(ctx context.Context, name string, roles []string) (string, error) {
	c, closeFn, err := d.client()
	if err != nil {
		return "", err
	}
	defer closeFn()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := (*c).CreateJoinToken(tctx, &unumv1.CreateJoinTokenRequest{Name: name, Roles: roles, TtlSeconds: 300})
	if err != nil {
		return "", err
	}
	return resp.GetToken(), nil
}

// updateAdminAddresses points DIR/admin.yaml at every running control node,
// so the CLI fails over when one is down.
func (d *dev) updateAdminAddresses() error {
	cfg, err := clientconfig.Load(d.adminPath())
	if err != nil {
		return err
	}
	cfg.Addresses = d.controlAddresses()
	return cfg.Save(d.adminPath())
}

// controlAddresses are the API addresses of the started control nodes.
func (d *dev) controlAddresses() []string {
	var addrs []string
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.state.Nodes {
		if _, started := d.procs[n.Name]; started && n.Control {
			addrs = append(addrs, n.Ports.API)
		}
	}
	return addrs
}

func (d *dev) printNext() {
	if d.o.Out == nil {
		return
	}
	// Name the binary the way the reader can run it.
	unum := d.o.Binary
	if p, err := exec.LookPath("unum"); err == nil && p == d.o.Binary {
		unum = "unum"
	}
	nodes := "1 node"
	if len(d.state.Nodes) != 1 {
		nodes = strconv.Itoa(len(d.state.Nodes)) + " nodes"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nunum dev: %s running in %s (trust domain %s)\n\n", nodes, d.dir, TrustDomain)
	fmt.Fprintf(&b, "In another terminal:\n\n  export UNUM_CONFIG=%s\n\n", d.adminPath())
	fmt.Fprintf(&b, "Workload API sockets (SPIFFE_ENDPOINT_SOCKET=unix://PATH):\n")
	for _, n := range d.state.Nodes {
		fmt.Fprintf(&b, "  %-8s %s\n", n.Name, n.socket())
	}
	fmt.Fprintf(&b, "\nMetrics (Prometheus, loopback only):\n")
	for _, n := range d.state.Nodes {
		fmt.Fprintf(&b, "  %-8s %s\n", n.Name, n.metricsURL())
	}
	fmt.Fprintf(&b, "\nTry:\n")
	fmt.Fprintf(&b, "  %s status\n", unum)
	fmt.Fprintf(&b, "  %s id register --spiffe-id spiffe://%s/ns/default/job/me --node node-1 --selector unix:uid:%d\n", unum, TrustDomain, os.Getuid())
	fmt.Fprintf(&b, "  %s id svid --socket %s\n", unum, d.state.Nodes[0].socket())
	fmt.Fprintf(&b, "  %s user add alice --role viewer     # then: unum login --addr %s\n", unum, d.state.Nodes[0].Ports.Enroll)
	fmt.Fprintf(&b, "  %s ca status\n", unum)
	fmt.Fprintf(&b, "  %s policy get --out policy && %s policy test policy   # the Rego policy: edit, test, apply\n", unum, unum)
	fmt.Fprintf(&b, "\nNode logs: %s/node-*/node.log. Ctrl-C stops every node.\n", d.dir)
	fmt.Fprint(d.o.Out, b.String())
}

// stopAll sends SIGTERM to every node, then SIGKILL to what is left after
// a grace period.
func (d *dev) stopAll() {
	d.mu.Lock()
	procs := make([]*spawn.Proc, 0, len(d.procs))
	for _, p := range d.procs {
		procs = append(procs, p)
	}
	d.mu.Unlock()
	for _, p := range procs {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(15 * time.Second)
	for _, p := range procs {
		select {
		case <-p.Done():
		case <-deadline:
			_ = p.Cmd.Process.Kill()
			<-p.Done()
		}
	}
}

// NodeReady reports whether a cluster status shows node name ready and,
// for a control node, a voting etcd member (a learner cannot yet keep a
// quorum). The fault cluster waits on the same answer.
func NodeReady(st *unumv1.StatusResponse, name string, control bool) bool {
	ready := false
	for _, x := range st.GetNodes() {
		if x.GetName() == name && x.GetReady() {
			ready = true
		}
	}
	if !ready || !control {
		return ready
	}
	for _, m := range st.GetEtcdMembers() {
		if m.GetName() == name && !m.GetLearner() {
			return true
		}
	}
	return false
}
