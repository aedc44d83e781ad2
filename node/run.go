package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/control"
	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/agent"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/identity/selector"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
	"github.com/unumos/unum/policy"
	"github.com/unumos/unum/storage/meta"
)

const heartbeatEvery = 2 * time.Second

// shadowChangesKept is how many decisions a shadow would have changed a
// node holds for shadow reports (explain reads the audit log).
const shadowChangesKept = 10000

// Options configure `unum node`.
type Options struct {
	DataDir string
	// KEKFile unseals the CA keys on control nodes; it must live outside
	// DataDir.
	KEKFile string
	// Ports are used when joining; a node that already exists keeps the
	// addresses in its node.yaml.
	Ports    Ports
	JoinAddr string
	Token    string
	// SVIDTTL is the lifetime of the workload X509-SVIDs this node's CA
	// signs (control nodes; default 1h).
	SVIDTTL time.Duration
	// NodeSVIDTTL is the lifetime of node SVIDs this node's CA signs
	// (default NodeSVIDTTL); LeafRetention how long a retired root stays in
	// the bundle after the last control node switched (default: see
	// control.Config). Tests shorten both.
	NodeSVIDTTL, LeafRetention time.Duration
	// RevocationBound is how old this node's revocation view may get
	// before it refuses privileged actions (default revocation.DefaultBound).
	RevocationBound time.Duration
	// PolicyBound is how long this node may go without confirming that it
	// serves the latest policy revision before it refuses privileged
	// actions (default policy.DefaultStaleBound).
	PolicyBound                 time.Duration
	EtcdHeartbeat, EtcdElection time.Duration
	Log                         *slog.Logger
	// AuditFS is the file system the audit log writes through (nil: the
	// OS's); tests inject errors here.
	AuditFS vfs.FS
	// CPUMillis and MemoryMiB are what a compute node offers to tasks
	// (default: every CPU and all memory the kernel reports).
	CPUMillis, MemoryMiB int64
	// TaskPorts is the range of ports the scheduler gives this node's
	// tasks (zero: its default, 20000-32767); nodes sharing an address
	// (unum dev) need ranges of their own.
	TaskPorts [2]int
	// NodeLease and DownGrace (control nodes) set the scheduler's lease
	// and grace period (control.DefaultNodeLease, DefaultDownGrace);
	// tests shorten them.
	NodeLease, DownGrace time.Duration
	// NoSyscallAudit leaves out the layer that records seccomp refusals
	// (a sys_exit program: every system call on the machine pays for it,
	// docs/design/enforcement.md). The refusals themselves stay; the
	// layer is reported as off, so the choice is never silent.
	NoSyscallAudit bool
	// KernelProbe replaces the kernel's BPF probe (nil: kernel.Probe):
	// tests simulate a kernel without cgroup BPF, a true external
	// boundary, to check the node degrades loudly.
	KernelProbe func() kernel.Capabilities

	// started, when set, is called with the node before it runs (tests).
	started func(*node)
}

// Run runs the node until ctx is done, then shuts down cleanly.
func Run(ctx context.Context, o Options) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	l := Layout{Dir: o.DataDir}
	cfg, err := loadConfig(l)
	switch {
	case err == nil:
		if o.Token != "" {
			o.Log.Info("node already joined; ignoring --join and --token", "node", cfg.Name)
		}
	case errors.Is(err, fs.ErrNotExist):
		if o.Token == "" || o.JoinAddr == "" {
			return fmt.Errorf("%s holds no node: run `unum init`, or pass --join HOST:PORT --token TOKEN", o.DataDir)
		}
		ports, perr := o.Ports.withDefaults()
		if perr != nil {
			return perr
		}
		if cfg, err = join(ctx, o, ports); err != nil {
			return err
		}
	default:
		return err
	}
	if err := l.CheckKeyFiles(); err != nil {
		return err
	}
	n, err := newNode(o, l, cfg)
	if err != nil {
		return err
	}
	return n.run(ctx)
}

type node struct {
	o      Options
	l      Layout
	log    *slog.Logger
	td     spiffeid.TrustDomain
	id     spiffeid.ID
	creds  *rpc.Credentials
	cfgMu  sync.Mutex
	cfg    *Config
	agent  *agent.Agent
	synced atomic.Bool
	// revocations is checked by this node's API server; control nodes
	// feed it from etcd, other nodes from the control plane's stream.
	revocations *revocation.View
	// policy is the revision this node's API decides with; control nodes
	// feed it from etcd, other nodes from the control plane's stream.
	// decisionLog records every decision in audit (and keeps what a
	// shadow would change, for shadow reports); engines the compiled
	// recent revisions.
	policy      *policy.View
	decider     *policy.Decider
	decisionLog *decisionLog
	engines     *policy.EngineCache
	userRoles   streamedRoles

	// renewNow asks rotateLoop to renew the node SVID at once: a control
	// node refused it as issued between a backup and its restore.
	renewNow chan struct{}
	// conns are the node's connections to the control plane, closed after
	// such a renewal: they still present the refused SVID.
	conns rpc.ConnTracker

	obs nodeMetrics

	// Control nodes only: the intermediate this node signs with, replaced
	// by CA rotation. svidMu serializes re-issuing the node's own SVID.
	authority atomic.Pointer[ca.Authority]
	svidMu    sync.Mutex
	// svidReplaced wakes the rotation loop when the SVID was re-issued
	// outside it.
	svidReplaced chan struct{}

	// audit is the node's audit log (node/audit.go), open for as long as
	// run runs; auditPub its checkpoint key's public half. auditKick wakes
	// the submission loop when the log signed a checkpoint, retentionKick
	// the retention loop when the settings changed; auditSettings are the
	// cluster's, from heartbeat answers (nil: not heard yet).
	audit         *audit.Log
	auditPub      []byte
	auditKick     chan struct{}
	retentionKick chan struct{}
	auditSettings atomic.Pointer[audit.Settings]
	// auditKeys are the published audit keys as the submission loop last
	// fetched them (nil before).
	auditKeys atomic.Pointer[audit.Keys]

	// credVerifier verifies the delegated credentials presented to this
	// node's API (node/credentials.go); credKeySets are the key sets it
	// was last given. credIssuer (control nodes) signs them.
	credVerifier *delegation.Verifier
	credKeysMu   sync.Mutex
	credKeySets  map[string][]byte
	credIssuer   atomic.Pointer[delegation.Issuer]
	// ctl is the control server of a control node, once started.
	ctl atomic.Pointer[control.Server]
	// compute is the executor of a compute node (nil elsewhere, or when
	// the host cannot run tasks).
	compute *compute
	// computeErr is why a compute node runs no executor.
	computeErr string
	// execUsed are the exec credentials this node ran (node/tasks.go).
	execUsed usedCredentials
}

func (n *node) nodeSVIDTTL() time.Duration {
	if n.o.NodeSVIDTTL > 0 {
		return n.o.NodeSVIDTTL
	}
	return NodeSVIDTTL
}

func newNode(o Options, l Layout, cfg *Config) (*node, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.NodeConfig(), err)
	}
	id, err := identity.NodeID(td, cfg.Name)
	if err != nil {
		return nil, err
	}
	svid, roots, err := l.loadSVID()
	if err != nil {
		return nil, err
	}
	if svid.ID != id {
		return nil, fmt.Errorf("%s is an SVID for %s, but this node is %s", l.NodeCert(), svid.ID, id)
	}
	chain := svid.Certificates
	// A control node renews a lapsed SVID from its own intermediate; a
	// compute node cannot: its renewal is authenticated by the SVID itself.
	if exp := chain[0].NotAfter; !cfg.HasRole("control") && time.Now().After(exp) {
		return nil, fmt.Errorf("node SVID of %s expired at %s: a compute node that was down longer than its SVID lifetime must join again (remove %s and join with a new token)", cfg.Name, exp.Format(time.RFC3339), l.Dir)
	}
	creds, err := rpc.NewCredentials(svid, roots)
	if err != nil {
		return nil, err
	}
	pv := policy.NewView(o.PolicyBound)
	n := &node{o: o, l: l, log: o.Log.With("node", cfg.Name), td: td, id: id, creds: creds, cfg: cfg,
		revocations: revocation.NewView(o.RevocationBound, time.Now), renewNow: make(chan struct{}, 1), svidReplaced: make(chan struct{}, 1),
		policy: pv, engines: policy.NewEngineCache(8)}
	n.decisionLog = &decisionLog{n: n, shadows: policy.NewRing(shadowChangesKept)}
	if n.credVerifier, err = delegation.NewVerifier(delegation.VerifierConfig{TrustDomain: td, Revocations: n.revocations}); err != nil {
		return nil, err
	}
	n.decider = policy.NewDecider(policy.DeciderConfig{Node: cfg.Name, View: pv, Log: n.decisionLog})
	if o.started != nil {
		o.started(n)
	}
	return n, nil
}

// selfIssued reports whether the node's SVID comes from its own
// intermediate: the chain shape clients require of a control node.
func (n *node) selfIssued() bool {
	svid, _ := n.creds.GetX509SVID()
	return rpc.IsControlChain(n.id, svid.Certificates)
}

func (n *node) svidExpiry() time.Time {
	svid, _ := n.creds.GetX509SVID()
	return svid.Certificates[0].NotAfter
}

func (n *node) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 32) // more than the goroutines started below
	goFn := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	// The audit log opens before anything can act and closes last.
	if err := n.openAudit(); err != nil {
		return err
	}
	// Shutdown order: stop accepting and drain the listeners first, then
	// the control services and etcd behind them, then the rest.
	var servers, cleanups []func()
	// refusals (set below) is flushed once more after every goroutine
	// that could report a refusal has returned, so that none arriving
	// during shutdown goes unsummarized.
	var refusals *audit.Limiter
	defer func() {
		cancel()
		for _, stop := range servers {
			stop()
		}
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		wg.Wait()
		if refusals != nil {
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := refusals.Flush(fctx); err != nil {
				n.log.Warn("audit: record refusal summary", "err", err)
			}
			cancel()
		}
		if n.compute != nil {
			// After a clean stop nothing is left to enforce; otherwise
			// the pinned programs keep enforcing.
			n.compute.enforce.close(n.compute.stopped.Load())
		}
		n.closeAudit()
	}()

	// Decisions let through unrecorded (allow-and-alert) are counted to
	// the end and saved for the next run to record.
	cleanups = append(cleanups, n.saveUnrecorded)
	if err := n.recordSavedUnrecorded(ctx); err != nil {
		n.log.Error("record the previous run's unrecorded decisions", "err", err)
	}
	goFn("audit inbox", func(ctx context.Context) error { n.inboxLoop(ctx); return nil })
	refusals = newRefusalLimiter(n.audit, func() { n.obs.m.AuthnSuppressed(1) })
	goFn("audit refusal summaries", func(ctx context.Context) error {
		refusals.Run(ctx, refusalSummaryEvery, func(err error) { n.log.Warn("audit: record refusal summary", "err", err) })
		return nil
	})

	apiLis, err := net.Listen("tcp", n.cfg.APIListen)
	if err != nil {
		return fmt.Errorf("api listener: %w", err)
	}
	n.obs.m = n.newMetrics()
	// Nodes without user records learn users' roles from the policy
	// stream; control nodes read their own.
	var roles rpc.RoleSource = &n.userRoles
	var ctl *control.Server
	if n.cfg.HasRole("control") {
		var stop func()
		ctl, stop, err = n.startControl(ctx, goFn, refusals)
		if stop != nil {
			cleanups = append(cleanups, stop)
		}
		if err != nil {
			apiLis.Close()
			return err
		}
		roles = ctl
		n.ctl.Store(ctl)
	}
	if n.cfg.HasRole("compute") {
		c, err := n.startCompute()
		if err != nil {
			n.computeErr = err.Error()
			n.log.Error("this compute node cannot run tasks", "err", err)
		} else {
			n.compute = c
		}
	}
	authz := &rpc.PolicyAuthorizer{Decider: n.decider, Roles: roles}
	if ctl != nil {
		authz.Entries = ctl
	}
	api := rpc.NewServer(n.creds, rpc.ServerConfig{Authorizer: authz, Revocations: n.revocations, Log: n.log, Audit: n.audit, Refusals: refusals,
		Credentials: n.credVerifier, Audience: []spiffeid.ID{identity.APIID(n.td), n.id}})
	unumv1.RegisterPolicyServer(api, &control.PolicyService{
		Local: control.LocalDecisions{Node: n.cfg.Name, Decisions: n.audit, Shadows: n.decisionLog.shadows, Engines: n.engines, View: n.policy},
		S:     ctl,
	})
	// Verify checks the node's checkpoints with the keys the submission
	// loop last fetched from the control plane (the copies beside the log
	// until it has).
	auditSvc := &auditService{ReadService: &audit.ReadService{Log: n.audit,
		PublishedKeys: func(context.Context) (*audit.Keys, error) { return n.auditKeys.Load(), nil }}}
	if ctl != nil {
		auditSvc.Witness = ctl.AuditWitness()
	}
	unumv1.RegisterAuditServer(api, auditSvc)
	unumv1.RegisterTasksServer(api, &tasksService{n: n})
	servers = append(servers, func() { stopGRPC(api) })

	if ctl != nil {
		unumv1.RegisterIdentityServer(api, ctl)
		unumv1.RegisterClusterServer(api, ctl)
		unumv1.RegisterUsersServer(api, ctl)
		unumv1.RegisterBackupServer(api, ctl)
		unumv1.RegisterCAServer(api, control.CAService{S: ctl})
		credSvc := &control.CredentialService{S: ctl, Issuer: n.credIssuer.Load, Verifier: n.credVerifier, Log: n.audit}
		unumv1.RegisterCredentialsServer(api, credSvc)
		unumv1.RegisterSchedulerServer(api, &control.SchedulerService{Server: ctl, Creds: credSvc, Dial: n.dialNode})
		unumv1.RegisterEnforcementServer(api, control.EnforcementService{Server: ctl})
		enrollLis, err := net.Listen("tcp", n.cfg.EnrollListen)
		if err != nil {
			apiLis.Close()
			return fmt.Errorf("enrolment listener: %w", err)
		}
		enroll := rpc.NewEnrollmentServer(n.creds, n.log, rpc.OnRateLimited(n.enrollRateLimited), rpc.AuditRefusals(refusals))
		unumv1.RegisterEnrollmentServer(enroll, ctl)
		servers = append(servers, func() { stopGRPC(enroll) })
		goFn("enrolment listener", func(context.Context) error { return enroll.Serve(enrollLis) })
	} else {
		unumv1.RegisterIdentityServer(api, whoAmIServer{})
	}
	goFn("api listener", func(context.Context) error { return api.Serve(apiLis) })
	stopMetrics, err := n.startMetrics(goFn)
	if err != nil {
		return err
	}
	servers = append(servers, stopMetrics)

	// Every node talks to the control plane like any client: over mutual
	// TLS with its node SVID. A control node prefers itself.
	addrs := n.controlAddresses()
	cc, err := rpc.DialChecked(n.creds, n.revocations, addrs, n.conns.DialOption())
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { cc.Close() })
	idc := unumv1.NewIdentityClient(cc)
	if n.cfg.HasRole("compute") {
		// Workloads run on compute nodes only: only they serve the
		// Workload API.
		n.agent = agent.New(agent.Config{TrustDomain: n.td, Upstream: rpcUpstream{idc}, Clock: time.Now, Logger: n.log.With("component", "agent"),
			TaskCgroupRoot: n.compute.taskRoot(), Refused: func(ctx context.Context, r agent.Refusal) { recordWorkloadRefusal(ctx, refusals, n.log, r) }})
		n.agent.SetBundles(n.creds.Roots(), nil)
		goFn("agent", n.agent.Run)
		goFn("workload api", func(ctx context.Context) error { return n.agent.Serve(ctx, n.l.Socket()) })
		if n.compute != nil {
			goFn("executor", func(ctx context.Context) error {
				err := n.compute.exec.Run(ctx)
				// Every task is stopped: the reaper may go; it removes the
				// task roots as it leaves.
				rerr := n.compute.stopReaper()
				// Clean only when the reaper removed every task and root.
				n.compute.stopped.Store(err == nil && rerr == nil)
				return err
			})
			goFn("fencing", func(ctx context.Context) error { n.fenceLoop(ctx); return nil })
			goFn("enforcement events", func(ctx context.Context) error { return n.compute.enforce.readEvents(ctx) })
			goFn("enforcement audit", func(ctx context.Context) error { n.compute.enforce.recordLoop(ctx); return nil })
			goFn("reaper keepalive", func(ctx context.Context) error { n.keepaliveLoop(ctx); return nil })
		}
	}
	goFn("agent sync", func(ctx context.Context) error { n.syncLoop(ctx, idc); return nil })
	if ctl == nil {
		goFn("revocation feed", func(ctx context.Context) error { n.revocationLoop(ctx, idc); return nil })
		goFn("policy feed", func(ctx context.Context) error { n.policyLoop(ctx, unumv1.NewPolicyClient(cc)); return nil })
	}
	goFn("heartbeat", func(ctx context.Context) error { return n.heartbeatLoop(ctx, unumv1.NewClusterClient(cc)) })
	// A control node's checkpoints go to another control node when there
	// is one: a witness countersigning its own log proves nothing.
	witnesses := &witnessClients{n: n, fallback: unumv1.NewAuditClient(cc)}
	cleanups = append(cleanups, witnesses.close)
	goFn("audit submission", func(ctx context.Context) error { n.auditSubmitLoop(ctx, witnesses.client); return nil })
	goFn("audit retention", func(ctx context.Context) error { n.auditRetentionLoop(ctx); return nil })
	goFn("node svid rotation", func(ctx context.Context) error { n.rotateLoop(ctx, idc); return nil })

	n.log.Info("node running", "spiffe_id", n.id.String(), "roles", n.cfg.Roles, "api", n.cfg.APIListen, "enrollment", n.cfg.EnrollListen, "socket", n.l.Socket(), "metrics", n.obs.url)
	select {
	case <-ctx.Done():
		n.log.Info("shutting down")
		// After the listeners drained (cleanups run after servers stop),
		// before the log closes.
		cleanups = append(cleanups, n.recordNodeLeave)
		return nil
	case err := <-errc:
		return err
	}
}

func (n *node) controlAddresses() []string {
	n.cfgMu.Lock()
	defer n.cfgMu.Unlock()
	var addrs []string
	if n.cfg.HasRole("control") {
		addrs = append(addrs, n.cfg.APIListen)
	}
	for _, a := range n.cfg.ControlAddresses {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// witnessAddresses are the other control nodes' addresses of a control
// node (none for other nodes, which never witness themselves, and for the
// only control node, which has no one else to ask).
func (n *node) witnessAddresses() []string {
	if !n.cfg.HasRole("control") {
		return nil
	}
	n.cfgMu.Lock()
	defer n.cfgMu.Unlock()
	var addrs []string
	for _, a := range n.cfg.ControlAddresses {
		if a != n.cfg.APIListen && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

func stopGRPC(s *grpc.Server) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		s.Stop() // streams (Workload API, agent sync) do not end by themselves
	}
}

// startControl starts etcd and the control services.
func (n *node) startControl(ctx context.Context, goFn func(string, func(context.Context) error), refusals audit.Recorder) (*control.Server, func(), error) {
	kek, err := loadKEK(n.o.DataDir, n.o.KEKFile)
	if err != nil {
		return nil, nil, err
	}
	if err := n.l.recoverCAFiles(); err != nil {
		return nil, nil, err
	}
	authority, err := n.l.openAuthority(n.td, kek)
	if err != nil {
		return nil, nil, err
	}
	n.authority.Store(authority)
	jwtKey, err := seal.ReadSealedKey(kek, n.l.JWTKey(), labelJWT)
	if err != nil {
		return nil, nil, err
	}
	ecKey, ok := jwtKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s: jwt key is not ECDSA", n.l.JWTKey())
	}
	jwtSigner, err := ca.NewJWTSigner(n.td, ecKey, time.Now)
	if err != nil {
		return nil, nil, err
	}
	root, err := n.optionalSigner(kek, n.l.RootCert(), n.l.RootKey(), labelRoot)
	if err != nil {
		return nil, nil, err
	}
	etcdCA, err := n.optionalSigner(kek, n.l.EtcdCACert(), n.l.EtcdCAKey(), labelEtcdCA)
	if err != nil {
		return nil, nil, err
	}
	// A control node serves with an SVID from its own intermediate: that is
	// how clients tell it from a compute node (rpc.AuthorizeControlNode). A
	// freshly joined control node holds one from the node that admitted it,
	// and a node whose SVID lapsed while it was down needs a new one.
	if !n.selfIssued() || time.Until(n.svidExpiry()) < n.nodeSVIDTTL()/4 {
		if err := n.renewLocally(); err != nil {
			return nil, nil, err
		}
	}

	ecfg := etcdConfig(n.l, n.cfg, n.o.EtcdHeartbeat, n.o.EtcdElection, n.log)
	ecfg.Refused = func(r meta.Refusal) { recordEtcdRefusal(refusals, n.log, r) }
	etcd, err := meta.Start(ctx, ecfg)
	if err != nil {
		return nil, nil, fmt.Errorf("start etcd: %w", err)
	}
	n.obs.etcd = etcd
	// The control services use the local member. A member that is still a
	// learner serves no requests, so until its promotion it uses the voters.
	cli := etcd.Client()
	var voters *clientv3.Client
	if !n.cfg.Etcd.Promoted {
		if len(n.cfg.Etcd.VoterClientURLs) == 0 {
			etcd.Close()
			return nil, nil, fmt.Errorf("%s: etcd member is not promoted and no voter client URLs are known", n.l.NodeConfig())
		}
		voters, err = meta.NewClient(ctx, n.cfg.Etcd.VoterClientURLs, etcdConfig(n.l, n.cfg, 0, 0, n.log).TLS)
		if err != nil {
			etcd.Close()
			return nil, nil, fmt.Errorf("reach etcd voters: %w", err)
		}
		cli = voters
	}
	witness, err := audit.LoadOrCreateSigner(n.cfg.Name, n.l.WitnessKey())
	if err != nil {
		etcd.Close()
		if voters != nil {
			voters.Close()
		}
		return nil, nil, fmt.Errorf("audit witness key: %w", err)
	}
	ctl, err := control.New(control.Config{
		NodeLease:     n.o.NodeLease,
		DownGrace:     n.o.DownGrace,
		TrustDomain:   n.td,
		NodeName:      n.cfg.Name,
		Authority:     authority,
		JWT:           jwtSigner,
		Root:          root,
		EtcdCA:        etcdCA,
		Roots:         n.creds.Roots(),
		Etcd:          cli,
		SVIDTTL:       n.o.SVIDTTL,
		NodeSVIDTTL:   n.nodeSVIDTTL(),
		Revocations:   n.revocations,
		Policy:        n.policy,
		Engines:       n.engines,
		OnShadow:      n.decider.SetShadow,
		CurrentShadow: n.decider.CurrentShadow,
		Metrics:       n.obs.m,
		Log:           n.log.With("component", "control"),
		Backup:        backupSource{l: n.l, kek: kek, node: backupNode(n.cfg)},
		CA:            &caHost{n: n, kek: kek},
		LeafRetention: n.o.LeafRetention,
		Audit:         n.audit,
		AuditRefusals: refusals,
		Witness:       witness,
	})
	stop := func() {
		if ctl != nil {
			ctl.Close()
		}
		if voters != nil {
			voters.Close()
		}
		etcd.Close()
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	keyring, err := n.loadCredKeyring(kek, time.Now())
	if err != nil {
		stop()
		return nil, nil, err
	}
	goFn("credential keyring", func(ctx context.Context) error { n.credKeyringLoop(ctx, kek, keyring, cli, ctl); return nil })
	goFn("credential keys", func(ctx context.Context) error { n.followCredKeys(ctx, ctl); return nil })
	if voters != nil {
		goFn("etcd promotion", func(ctx context.Context) error {
			if err := meta.PromoteWhenReady(ctx, voters, n.cfg.Etcd.MemberID); err != nil {
				return err
			}
			// From now on the voters client also reaches the local member.
			voters.SetEndpoints(append([]string{n.cfg.Etcd.ClientURL}, n.cfg.Etcd.VoterClientURLs...)...)
			n.cfgMu.Lock()
			n.cfg.Etcd.Promoted = true
			err := saveConfig(n.l, n.cfg)
			n.cfgMu.Unlock()
			n.log.Info("etcd member promoted to voter")
			return err
		})
	}
	pub, err := x509.MarshalPKIXPublicKey(jwtSigner.PublicKey())
	if err != nil {
		stop()
		return nil, nil, err
	}
	rec := control.JWTKeyRecord{KeyID: jwtSigner.KeyID(), Node: n.cfg.Name, PublicKey: pub}
	goFn("publish jwt key", func(ctx context.Context) error {
		for ctx.Err() == nil {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := control.PublishJWTKey(pctx, cli, rec)
			cancel()
			if err == nil {
				return nil
			}
			sleepCtx(ctx, time.Second)
		}
		return nil
	})
	return ctl, stop, nil
}

func (n *node) optionalSigner(kek *seal.KEK, certPath, keyPath, label string) (*control.Signer, error) {
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, err
	}
	key, err := seal.ReadSealedKey(kek, keyPath, label)
	if err != nil {
		return nil, err
	}
	return &control.Signer{Cert: certs[0], Key: key}, nil
}

// syncLoop keeps the agent's entries and bundles in step with the control
// plane. When the control plane is unreachable the agent keeps serving what
// it has until it expires.
func (n *node) syncLoop(ctx context.Context, idc unumv1.IdentityClient) {
	followStream(ctx, time.Second,
		func(ctx context.Context) (grpc.ServerStreamingClient[unumv1.SyncAgentResponse], error) {
			return idc.SyncAgent(ctx, &unumv1.SyncAgentRequest{})
		},
		n.applySync,
		func(err error) {
			n.checkMustRenew(err)
			n.log.Debug("agent sync stream ended", "err", err)
		})
}

// revocationLoop follows the control plane's revocation stream into
// n.revocations (nodes without etcd). A full update replaces the set; every
// message, heartbeats included, dates the view back by the sender's own
// age, so a node fed by a stale control node is itself stale.
func (n *node) revocationLoop(ctx context.Context, idc unumv1.IdentityClient) {
	followStream(ctx, 200*time.Millisecond,
		func(ctx context.Context) (grpc.ServerStreamingClient[unumv1.RevocationUpdate], error) {
			return idc.WatchRevocations(ctx, &unumv1.WatchRevocationsRequest{})
		},
		func(msg *unumv1.RevocationUpdate) {
			// A negative age would date the view into the future.
			freshAt := time.Now().Add(-time.Duration(max(msg.GetViewAgeMs(), 0)) * time.Millisecond)
			if msg.GetFull() {
				n.revocations.Update(control.SetFromUpdate(msg), freshAt)
			} else {
				n.revocations.Touch(freshAt)
			}
		},
		func(err error) { n.log.Debug("revocation stream ended", "err", err) })
}

// policyLoop follows the control plane's policy stream into n.policy
// (nodes without etcd): each new revision is compiled and served, the
// shadow candidate installed, and every message, progress reports
// included, confirms the served revision as of the sender's own age.
func (n *node) policyLoop(ctx context.Context, pc unumv1.PolicyClient) {
	var shadowID string
	followStream(ctx, 200*time.Millisecond,
		func(ctx context.Context) (grpc.ServerStreamingClient[unumv1.PolicyUpdate], error) {
			req := &unumv1.WatchPolicyRequest{HaveShadowId: shadowID}
			if e := n.policy.Engine(); e != nil {
				req.HaveRevision, req.HaveSha256 = e.Revision(), e.Digest()
			}
			return pc.Watch(ctx, req)
		},
		func(msg *unumv1.PolicyUpdate) {
			// Observe first: Set then confirms the new engine at once.
			freshAt := time.Now().Add(-time.Duration(max(msg.GetSenderAgeMs(), 0)) * time.Millisecond)
			n.policy.Observe(msg.GetLatestRevision(), freshAt)
			if r := msg.GetRevision(); r != nil {
				b := &policy.Bundle{Files: r.GetBundle().GetFiles()}
				e, err := policy.NewEngine(ctx, b, r.GetRevision())
				if err != nil {
					n.log.Error("policy revision does not compile: still serving the previous one", "revision", r.GetRevision(), "err", err)
				} else {
					n.engines.Put(e)
					n.policy.Set(e)
					n.log.Info("policy revision loaded", "revision", r.GetRevision(), "sha256", e.Digest())
				}
			}
			n.applyShadowUpdate(ctx, msg, &shadowID)
			if msg.GetRolesSet() {
				n.userRoles.set(msg.GetUserRoles())
			}
		},
		func(err error) { n.log.Debug("policy stream ended", "err", err) })
}

func (n *node) applyShadowUpdate(ctx context.Context, msg *unumv1.PolicyUpdate, current *string) {
	switch id := msg.GetShadowId(); {
	case id == "":
		if *current != "" {
			n.decider.SetShadow(nil)
			*current = ""
		}
	case msg.GetShadowBundle() != nil:
		e, err := policy.NewEngine(ctx, &policy.Bundle{Files: msg.GetShadowBundle().GetFiles()}, 0)
		if err != nil {
			n.log.Error("policy shadow does not compile: ignored", "shadow_id", id, "err", err)
			return
		}
		n.decider.SetShadow(&policy.Shadow{ID: id, Engine: e, Until: time.Unix(0, msg.GetShadowUntilUnixNano())})
		*current = id
	}
}

// followStream opens a server stream with open and hands every message to
// apply until ctx ends, opening it again retry after it failed; ended sees
// the error that ended each stream (not the one of ctx ending).
func followStream[T any](ctx context.Context, retry time.Duration, open func(context.Context) (grpc.ServerStreamingClient[T], error), apply func(*T), ended func(error)) {
	for ctx.Err() == nil {
		if stream, err := open(ctx); err == nil {
			for {
				msg, err := stream.Recv()
				if err != nil {
					if ctx.Err() == nil {
						ended(err)
					}
					break
				}
				apply(msg)
			}
		}
		sleepCtx(ctx, retry)
	}
}

func (n *node) applySync(resp *unumv1.SyncAgentResponse) {
	roots, err := parseDERs(resp.GetRoots())
	if err != nil || len(roots) == 0 {
		roots = n.creds.Roots()
	} else if !sameCerts(roots, n.creds.Roots()) {
		n.creds.SetRoots(roots)
		if err := seal.WriteFileAtomic(n.l.Bundle(), ca.EncodeCertsPEM(roots), 0o644); err != nil {
			n.log.Warn("save trust bundle", "err", err)
		}
	}
	jwtKeys := map[string]crypto.PublicKey{}
	for _, k := range resp.GetJwtKeys() {
		pub, err := x509.ParsePKIXPublicKey(k.GetPublicKey())
		if err == nil {
			jwtKeys[k.GetKid()] = pub
		}
	}
	if !n.cfg.HasRole("control") {
		// Control nodes read the keys from their own state cache.
		n.setCredKeys(control.KeySetsFromProto(resp.GetCredKeys()))
	}
	if n.agent != nil {
		n.agent.SetBundles(roots, jwtKeys)
		entries := n.agentEntries(resp.GetEntries())
		if n.compute != nil {
			entries = append(entries, n.allocEntries(resp.GetAllocations())...)
		}
		n.agent.SetEntries(entries)
		n.applyAllocations(resp)
	}
	if addrs := resp.GetControlAddresses(); len(addrs) > 0 {
		n.cfgMu.Lock()
		if !slices.Equal(addrs, n.cfg.ControlAddresses) {
			n.cfg.ControlAddresses = addrs
			if err := saveConfig(n.l, n.cfg); err != nil {
				n.log.Warn("save control addresses", "err", err)
			}
		}
		n.cfgMu.Unlock()
	}
	n.synced.Store(true)
}

// agentEntries converts the synced entries for the agent. The agent itself
// refuses invalid selector sets and foreign IDs; entries that do not even
// parse are skipped here, with a log line.
func (n *node) agentEntries(in []*unumv1.Entry) []agent.Entry {
	entries := make([]agent.Entry, 0, len(in))
	for _, e := range in {
		id, err := spiffeid.FromString(e.GetSpiffeId())
		if err != nil {
			n.log.Warn("skipping entry with bad spiffe id", "entry", e.GetId(), "err", err)
			continue
		}
		sels := make([]selector.Selector, 0, len(e.GetSelectors()))
		for _, raw := range e.GetSelectors() {
			s, err := selector.Parse(raw)
			if err != nil {
				n.log.Warn("skipping entry with bad selector", "entry", e.GetId(), "err", err)
				sels = nil
				break
			}
			sels = append(sels, s)
		}
		if sels == nil {
			continue
		}
		entries = append(entries, agent.Entry{ID: e.GetId(), SPIFFEID: id, Selectors: sels, Revision: e.GetRevision()})
	}
	return entries
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

// heartbeatLoop reports liveness until ctx ends. It returns an error (and
// the node stops) only when the control plane says this node's identity
// was revoked: it was removed with `unum node rm`, and must not go on
// serving workloads.
func (n *node) heartbeatLoop(ctx context.Context, cc unumv1.ClusterClient) error {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	failures := 0
	for {
		policyChanged := n.policy.Changed()
		hctx, cancel := context.WithTimeout(ctx, heartbeatEvery)
		revAge := int64(-1)
		if age, ok := n.revocations.Age(); ok {
			revAge = age.Milliseconds()
		}
		req := &unumv1.HeartbeatRequest{
			SvidExpiresAtUnix:  n.svidExpiry().Unix(),
			Enforcement:        n.compute.enforcementMode(),
			AgentReady:         n.synced.Load(),
			RevocationAgeMs:    revAge,
			BundleFingerprints: bundleFingerprints(n.creds.Roots()),
			AuditError:         n.auditError(),
		}
		ps := n.policy.Status(time.Now())
		req.PolicyRevision, req.PolicyAgeMs = ps.Revision, ps.Age.Milliseconds()
		if ps.Age < 0 {
			req.PolicyAgeMs = -1
		}
		if a := n.authority.Load(); a != nil {
			req.IntermediateFingerprint = ca.Fingerprint(a.Certificate())
			req.IntermediateExpiresAtUnix = a.Certificate().NotAfter.Unix()
		}
		n.compute.executorReport(req)
		n.compute.enforcementReport(req)
		if n.computeErr != "" {
			req.Limits = []string{"no executor: " + n.computeErr}
		}
		sent := time.Now()
		resp, err := cc.Heartbeat(hctx, req)
		cancel()
		if err == nil {
			n.applyAuditSettings(resp.GetAudit())
			n.heartbeatAnswered(sent, resp)
		}
		if err != nil && ctx.Err() == nil && isRevoked(err) {
			return fmt.Errorf("this node was removed from the cluster: %s", status.Convert(err).Message())
		}
		n.checkMustRenew(err)
		if err != nil && ctx.Err() == nil {
			failures++
			if failures == 3 {
				n.log.Warn("heartbeats failing", "err", err)
			}
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-policyChanged:
			// Report a new policy revision at once: `policy status`
			// shows convergence from heartbeats.
		case <-n.compute.kicked():
			// A task changed state: report it now.
		}
	}
}

// isRevoked reports whether err is the control plane refusing this node's
// certificate as revoked (not merely issued after a restored backup).
func isRevoked(err error) bool {
	st := status.Convert(err)
	return st.Code() == codes.Unauthenticated && strings.Contains(st.Message(), revocation.ErrRevoked.Error())
}

// checkMustRenew asks for a renewal at once when err says the control
// plane refused the node SVID until it is renewed (a restore from backup).
func (n *node) checkMustRenew(err error) {
	if rpc.IsMustRenew(err) {
		select {
		case n.renewNow <- struct{}{}:
		default:
		}
	}
}

// rotateLoop renews the node SVID at half its lifetime, or at once when
// the control plane says it must (checkMustRenew).
func (n *node) rotateLoop(ctx context.Context, idc unumv1.IdentityClient) {
	for ctx.Err() == nil {
		svid, _ := n.creds.GetX509SVID()
		leaf := svid.Certificates[0]
		// NotBefore is backdated by ca.ClockSkew: count from the issue time,
		// or short SVIDs would be renewed over and over.
		issued := leaf.NotBefore.Add(ca.ClockSkew)
		if issued.After(leaf.NotAfter) {
			issued = leaf.NotBefore
		}
		half := issued.Add(leaf.NotAfter.Sub(issued) / 2)
		t := time.NewTimer(time.Until(half))
		forced := false
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-n.svidReplaced:
			// Re-issued elsewhere (CA rotation): start over from the new one.
			t.Stop()
			continue
		case <-t.C:
		case <-n.renewNow:
			t.Stop()
			forced = true
			n.log.Info("control plane asks for a renewed node svid (restored from backup)")
		}
		var err error
		if n.authority.Load() != nil {
			err = n.renewLocally()
		} else {
			err = n.renewRemotely(ctx, idc)
		}
		if err != nil {
			n.log.Warn("node svid renewal failed; retrying", "err", err, "expires", leaf.NotAfter)
			sleepCtx(ctx, 5*time.Second)
			continue
		}
		n.log.Info("node svid renewed", "expires", n.svidExpiry())
		if forced {
			n.conns.CloseAll()
		}
	}
}

func (n *node) renewLocally() error {
	n.svidMu.Lock()
	defer n.svidMu.Unlock()
	key, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	chain, err := n.authority.Load().SignX509SVIDForKey(key.Public(), n.id, n.nodeSVIDTTL())
	if err != nil {
		return err
	}
	if err := n.installSVID(key, chain); err != nil {
		return err
	}
	n.recordEvent(audit.Event{Kind: audit.KindSVID, Action: audit.ActionSVIDRotate, Subject: n.id.String(), Outcome: audit.Allow,
		Reasons: []string{"renewed from this control node's own intermediate"}}.
		WithDetails(control.SVIDDetails{Type: "x509", SPIFFEID: n.id.String(), Serial: chain[0].SerialNumber.String(), NotAfter: chain[0].NotAfter.UTC()}))
	return nil
}

func (n *node) renewRemotely(ctx context.Context, idc unumv1.IdentityClient) error {
	key, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	csr, err := ca.CreateCSR(key, n.id)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := idc.RenewNodeSVID(rctx, &unumv1.RenewNodeSVIDRequest{Csr: csr})
	if err != nil {
		return err
	}
	chain, err := parseDERs(resp.GetChain())
	if err != nil || len(chain) == 0 {
		return fmt.Errorf("renewed svid: %v", err)
	}
	if err := verifyChain(chain, n.creds.Roots(), n.id); err != nil {
		return err
	}
	return n.installSVID(key, chain)
}

func (n *node) installSVID(key crypto.Signer, chain []*x509.Certificate) error {
	if err := seal.WritePrivateKey(n.l.NodeKey(), key); err != nil {
		return err
	}
	if err := seal.WriteFileAtomic(n.l.NodeCert(), ca.EncodeCertsPEM(chain), 0o644); err != nil {
		return err
	}
	return n.creds.SetSVID(&x509svid.SVID{ID: n.id, Certificates: chain, PrivateKey: key})
}

// rpcUpstream is the agent's path to the CA: the control plane's Identity
// service over mutual TLS with the node SVID.
type rpcUpstream struct{ c unumv1.IdentityClient }

func (u rpcUpstream) MintX509SVID(ctx context.Context, entryID string, id spiffeid.ID, csr []byte) ([]*x509.Certificate, error) {
	resp, err := u.c.MintX509SVID(ctx, &unumv1.MintX509SVIDRequest{EntryId: entryID, SpiffeId: id.String(), Csr: csr})
	if err != nil {
		return nil, err
	}
	return parseDERs(resp.GetChain())
}

func (u rpcUpstream) MintJWTSVID(ctx context.Context, entryID string, id spiffeid.ID, audience []string) (string, error) {
	resp, err := u.c.MintJWTSVID(ctx, &unumv1.MintJWTSVIDRequest{EntryId: entryID, SpiffeId: id.String(), Audience: audience})
	if err != nil {
		return "", err
	}
	return resp.GetToken(), nil
}

// whoAmIServer is the Identity service of a compute-only node: it only
// answers who the caller is.
type whoAmIServer struct {
	unumv1.UnimplementedIdentityServer
}

func (whoAmIServer) WhoAmI(ctx context.Context, _ *unumv1.WhoAmIRequest) (*unumv1.WhoAmIResponse, error) {
	return control.WhoAmI(ctx)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// streamedRoles is the users' roles as the control plane last streamed
// them (nodes without etcd). Safe for concurrent use.
type streamedRoles struct {
	m atomic.Pointer[map[string]string]
}

func (r *streamedRoles) set(roles map[string]string) { r.m.Store(&roles) }

// UserRole implements rpc.RoleSource.
func (r *streamedRoles) UserRole(name string) (string, bool) {
	m := r.m.Load()
	if m == nil {
		return "", false
	}
	role, ok := (*m)[name]
	return role, ok
}
