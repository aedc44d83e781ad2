package control

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/selector"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
	"github.com/unumos/unum/storage/meta"
)

// Signer pairs a CA certificate with its key.
type Signer struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Config configures a control node's services. It is not modified after New.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// NodeName is this control node's name.
	NodeName string
	// Authority is this node's intermediate CA.
	Authority *ca.Authority
	// JWT signs JWT-SVIDs.
	JWT *ca.JWTSigner
	// Root and EtcdCA are held only by the node where `unum init` ran (until
	// exported); without them this node refuses control-role joins.
	Root   *Signer
	EtcdCA *Signer
	// Roots is the trust bundle; Roots[0] is the CA pinned by join tokens.
	Roots []*x509.Certificate
	// Etcd is a client of the local etcd member.
	Etcd *clientv3.Client
	// SVIDTTL is the lifetime of workload X509-SVIDs (default 1h);
	// NodeSVIDTTL of node SVIDs (default 1h); JWTTTL of JWT-SVIDs (5m).
	SVIDTTL, NodeSVIDTTL, JWTTTL time.Duration
	// IntermediateTTL is the lifetime of intermediates signed for joining
	// control nodes (default 1 year, capped at the root's expiry).
	IntermediateTTL time.Duration
	// CA stores CA keys for rotation, export and import; nil disables them.
	// RootTTL is the lifetime of a new root (default ca.DefaultRootTTL).
	// LeafRetention is how long a leaf this node signed may stay valid: a
	// retired root stays in the bundle that long after the last control
	// node switched (default: the longest of SVIDTTL, NodeSVIDTTL and
	// MaxUserCertTTL, plus ca.ClockSkew). CAPoll is how often the CA loop
	// looks at the rotation state (default 500ms).
	CA                     CAHost
	RootTTL, LeafRetention time.Duration
	CAPoll                 time.Duration
	// Revocations is the view this server feeds from etcd and checks
	// callers against (the node's rpc interceptor shares it). New makes
	// one with the default bound when nil.
	Revocations *revocation.View
	// Metrics counts issued and refused SVIDs and enrolment attempts
	// (metrics.go); nil counts nothing.
	Metrics Metrics
	Clock   func() time.Time
	Log     *slog.Logger

	// Backup supplies the node's CA material and KEK to Backup.Create;
	// nil refuses backups.
	Backup BackupSource

	// Policy is the view this server feeds from etcd (the node's
	// authorizer decides with it); Engines caches compiled revisions
	// (explain reuses them). OnShadow installs or (nil) removes the shadow
	// candidate in the node's decider; CurrentShadow reads it back. New
	// makes a view and cache when nil.
	Policy        *policy.View
	Engines       *policy.EngineCache
	OnShadow      func(*policy.Shadow)
	CurrentShadow func() *policy.Shadow

	// Audit records this server's events (tokens, entries, users,
	// revocations, CA, policy, nodes, witness alerts) in the node's audit
	// log. nil records nothing (unit tests of unrelated parts only).
	Audit AuditLog
	// Witness countersigns nodes' audit checkpoints as this control node
	// (its DIR/keys/witness.key); nil: this node does not witness.
	// WitnessRound is how often it stores what it countersigned
	// (DefaultWitnessRound when zero).
	Witness      *audit.Signer
	WitnessRound time.Duration
	// AuditRefusals records what unauthenticated callers cause (refused
	// enrolment tokens); it should be rate-limited (audit.Limiter). nil:
	// Audit.
	AuditRefusals audit.Recorder

	// Scheduling (sched_leader.go). NodeLease is how long a node may go
	// without a heartbeat before it is down (DefaultNodeLease), DownGrace
	// how long a down node keeps its tasks before they are re-placed
	// (DefaultDownGrace), SchedInterval how often the leader runs a round
	// without a change to wake it (DefaultSchedInterval). Nodes are told
	// to fence themselves after fenceAfter(NodeLease, DownGrace).
	NodeLease, DownGrace, SchedInterval time.Duration
}

// Server implements the Identity, Enrollment, Cluster, Users and Backup
// services directly; the CA service goes through CAService, because its
// Status would collide with Cluster's.
type Server struct {
	unumv1.UnimplementedIdentityServer
	unumv1.UnimplementedEnrollmentServer
	unumv1.UnimplementedClusterServer
	unumv1.UnimplementedBackupServer
	unumv1.UnimplementedUsersServer
	unumv1.UnimplementedSchedulerServer

	cfg    Config
	reader *meta.BatchReader
	cache  *stateCache
	// grants are the network grants of each workload identity under the
	// served policy revision (the sync streams compile them into rules).
	grants      netGrants
	revocations *revocation.View

	// controlJoins serializes control-role joins (see Join).
	controlJoins sync.Mutex
	// ca is the CA material that rotation, export and import change.
	ca caState
	// witness is the audit witness (audit.go).
	witness *AuditWitness
	// reports is what this server last stored of each node's executor
	// report (sched_report.go).
	reports struct {
		mu sync.Mutex
		m  map[string]*reported
	}

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

var (
	_ unumv1.IdentityServer   = (*Server)(nil)
	_ unumv1.EnrollmentServer = (*Server)(nil)
	_ unumv1.ClusterServer    = (*Server)(nil)
	_ unumv1.BackupServer     = (*Server)(nil)
)

// New starts a control server's background work (the state cache and the
// batched reader). Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.Authority == nil || cfg.JWT == nil || cfg.Etcd == nil {
		return nil, errors.New("control: authority, jwt signer and etcd client are required")
	}
	if cfg.SVIDTTL <= 0 {
		cfg.SVIDTTL = time.Hour
	}
	if cfg.NodeSVIDTTL <= 0 {
		cfg.NodeSVIDTTL = time.Hour
	}
	if cfg.JWTTTL <= 0 {
		cfg.JWTTTL = 5 * time.Minute
	}
	if cfg.IntermediateTTL <= 0 {
		cfg.IntermediateTTL = 365 * 24 * time.Hour
	}
	if cfg.RootTTL <= 0 {
		cfg.RootTTL = ca.DefaultRootTTL
	}
	if cfg.LeafRetention <= 0 {
		cfg.LeafRetention = max(cfg.SVIDTTL, cfg.NodeSVIDTTL, MaxUserCertTTL) + ca.ClockSkew
	}
	if cfg.CAPoll <= 0 {
		cfg.CAPoll = 500 * time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Revocations == nil {
		cfg.Revocations = revocation.NewView(0, cfg.Clock)
	}
	if cfg.Policy == nil {
		cfg.Policy = policy.NewView(0)
	}
	if cfg.Engines == nil {
		cfg.Engines = policy.NewEngineCache(8)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:         cfg,
		reader:      meta.NewBatchReader(cfg.Etcd),
		cache:       newStateCache(cfg.Etcd, cfg.Log),
		revocations: cfg.Revocations,
		cancel:      cancel,
	}
	s.reports.m = map[string]*reported{}
	s.ca.authority.Store(cfg.Authority)
	s.ca.root.Store(cfg.Root)
	s.ca.kick = make(chan struct{}, 1)
	s.witness = newAuditWitness(s, cfg.Witness, cfg.WitnessRound)
	s.wg.Add(7)
	go func() {
		defer s.wg.Done()
		s.runScheduler(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.witness.run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.feedPolicy(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.caLoop(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.feedRevocations(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.cache.run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.janitor(ctx)
	}()
	return s, nil
}

// UserRole implements rpc.RoleSource from the watched state: a removed
// user's role disappears within the watch latency, and their certificates
// are refused by revocation anyway.
func (s *Server) UserRole(name string) (string, bool) {
	u, ok := s.cache.user(name)
	return u.Role, ok
}

var _ rpc.RoleSource = (*Server)(nil)

// EntrySPIFFEID implements rpc.EntrySource from the watched state, so a
// deletion is decided on the namespace of what it deletes.
func (s *Server) EntrySPIFFEID(id string) (string, bool) { return s.cache.entrySPIFFEID(id) }

var _ rpc.EntrySource = (*Server)(nil)

// Close stops the server's background work.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
	s.reader.Close()
}

func callerOf(ctx context.Context) (rpc.Caller, error) {
	c, ok := rpc.CallerFromContext(ctx)
	if !ok {
		return rpc.Caller{}, status.Error(codes.Unauthenticated, "no verified caller")
	}
	return c, nil
}

func callerNode(ctx context.Context) (string, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return "", err
	}
	if c.Kind != identity.KindNode {
		return "", status.Errorf(codes.PermissionDenied, "%s is not a node", c.ID)
	}
	return c.Name, nil
}

// WhoAmI implements unumv1.IdentityServer.
func (s *Server) WhoAmI(ctx context.Context, _ *unumv1.WhoAmIRequest) (*unumv1.WhoAmIResponse, error) {
	return WhoAmI(ctx)
}

// WhoAmI answers who the verified caller of ctx is; every node serves it.
func WhoAmI(ctx context.Context) (*unumv1.WhoAmIResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	resp := &unumv1.WhoAmIResponse{SpiffeId: c.ID.String(), Kind: string(c.Kind)}
	if c.Certificate != nil {
		resp.ExpiresAtUnix = c.Certificate.NotAfter.Unix()
	}
	return resp, nil
}

// confirmEntry does the linearizable read that gates every workload SVID:
// the entry exists, names id, applies to node, and node is still a member.
func (s *Server) confirmEntry(ctx context.Context, node, entryID string, id spiffeid.ID) error {
	if entryID == "" {
		return status.Error(codes.InvalidArgument, "entry_id is required")
	}
	if allocID, ok := strings.CutPrefix(entryID, allocEntryPrefix); ok {
		return s.confirmAlloc(ctx, node, allocID, id)
	}
	// Bound the read: the batched reader serves a batch until the latest
	// deadline among its callers, and a caller without one must not hold up
	// everybody behind it when etcd has lost quorum.
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	kvs, err := s.reader.Get(ctx, entryKey(entryID), nodeKey(node))
	if err != nil {
		// No quorum, or etcd unreachable: refuse rather than trust a cache.
		return status.Errorf(codes.Unavailable, "cannot confirm registration entry (no etcd quorum?): %v", err)
	}
	if _, ok := kvs[nodeKey(node)]; !ok {
		return status.Errorf(codes.PermissionDenied, "node %s is not a member of the cluster", node)
	}
	kv, ok := kvs[entryKey(entryID)]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "no registration entry %s", entryID)
	}
	e, err := decode[EntryRecord](kv.Value)
	if err != nil {
		return status.Errorf(codes.Internal, "entry %s: %v", entryID, err)
	}
	if e.SPIFFEID != id.String() {
		return status.Errorf(codes.PermissionDenied, "registration entry %s is for %s, not %s", entryID, e.SPIFFEID, id)
	}
	if !e.AppliesTo(node) {
		return status.Errorf(codes.PermissionDenied, "registration entry %s does not apply to node %s", entryID, node)
	}
	return nil
}

// confirmAlloc does the linearizable read that gates a task's SVID: the
// allocation exists under this very node's prefix, is not finished, is for
// id, and the node is still a member. Whatever the node claims, an
// allocation placed on another node is not under its prefix.
func (s *Server) confirmAlloc(ctx context.Context, node, allocID string, id spiffeid.ID) error {
	if selector.CheckTaskID(allocID) != nil {
		return status.Errorf(codes.InvalidArgument, "%q is not an allocation id", allocID)
	}
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	kvs, err := s.reader.Get(ctx, allocKey(node, allocID), nodeKey(node))
	if err != nil {
		return status.Errorf(codes.Unavailable, "cannot confirm allocation (no etcd quorum?): %v", err)
	}
	if _, ok := kvs[nodeKey(node)]; !ok {
		return status.Errorf(codes.PermissionDenied, "node %s is not a member of the cluster", node)
	}
	kv, ok := kvs[allocKey(node, allocID)]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "allocation %s is not assigned to node %s", allocID, node)
	}
	a, err := decode[AllocRecord](kv.Value)
	if err != nil {
		return status.Errorf(codes.Internal, "allocation %s: %v", allocID, err)
	}
	if a.SPIFFEID != id.String() {
		return status.Errorf(codes.PermissionDenied, "allocation %s is for %s, not %s", allocID, a.SPIFFEID, id)
	}
	if a.Done {
		return status.Errorf(codes.PermissionDenied, "allocation %s has finished", allocID)
	}
	return nil
}

func (s *Server) parseWorkloadID(raw string) (spiffeid.ID, error) {
	id, err := identity.ParseWorkloadID(s.cfg.TrustDomain, raw)
	if err != nil {
		return spiffeid.ID{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return id, nil
}

func (s *Server) mintX509SVID(ctx context.Context, req *unumv1.MintX509SVIDRequest) (*unumv1.MintX509SVIDResponse, error) {
	node, err := callerNode(ctx)
	if err != nil {
		return nil, err
	}
	id, err := s.parseWorkloadID(req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	// Verify the CSR once, before the etcd read, and sign the verified
	// request: a bad CSR costs no round trip and a good one no second check.
	csr, err := ca.VerifyCSR(req.GetCsr(), id)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := s.confirmEntry(ctx, node, req.GetEntryId(), id); err != nil {
		return nil, err
	}
	if err := s.waitSignable(ctx, id); err != nil {
		return nil, err
	}
	chain, err := s.Authority().SignVerifiedCSR(csr, id, s.cfg.SVIDTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "sign svid: %v", err)
	}
	return &unumv1.MintX509SVIDResponse{Chain: derChain(chain)}, nil
}

func (s *Server) mintJWTSVID(ctx context.Context, req *unumv1.MintJWTSVIDRequest) (*unumv1.MintJWTSVIDResponse, error) {
	node, err := callerNode(ctx)
	if err != nil {
		return nil, err
	}
	id, err := s.parseWorkloadID(req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	if len(req.GetAudience()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience is required")
	}
	if err := s.confirmEntry(ctx, node, req.GetEntryId(), id); err != nil {
		return nil, err
	}
	tok, err := s.cfg.JWT.SignJWTSVID(id, req.GetAudience(), s.cfg.JWTTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "sign jwt-svid: %v", err)
	}
	return &unumv1.MintJWTSVIDResponse{Token: tok}, nil
}

func (s *Server) renewNodeSVID(ctx context.Context, req *unumv1.RenewNodeSVIDRequest) (*unumv1.RenewNodeSVIDResponse, error) {
	node, err := callerNode(ctx)
	if err != nil {
		return nil, err
	}
	id, err := identity.NodeID(s.cfg.TrustDomain, node)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	kvs, err := s.reader.Get(rctx, nodeKey(node))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot confirm node membership (no etcd quorum?): %v", err)
	}
	if _, ok := kvs[nodeKey(node)]; !ok {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not a member of the cluster", node)
	}
	if err := s.waitSignable(ctx, id); err != nil {
		return nil, err
	}
	chain, err := s.Authority().SignX509SVID(req.GetCsr(), id, s.cfg.NodeSVIDTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	return &unumv1.RenewNodeSVIDResponse{Chain: derChain(chain)}, nil
}

// SyncAgent implements unumv1.IdentityServer: it streams the calling node's
// entries, the trust bundles and the control addresses, resending on change.
func (s *Server) SyncAgent(_ *unumv1.SyncAgentRequest, stream unumv1.Identity_SyncAgentServer) error {
	ctx := stream.Context()
	node, err := callerNode(ctx)
	if err != nil {
		return err
	}
	heartbeat := time.NewTicker(15 * time.Second)
	defer heartbeat.Stop()
	var last *unumv1.SyncAgentResponse
	for {
		policyChanged := s.cfg.Policy.Changed()
		snap := s.cache.snapshot()
		if snap.loaded {
			resp := syncResponse(snap, node)
			for _, a := range s.cache.allocsOf(node) {
				resp.Allocations = append(resp.Allocations, allocToProto(a))
			}
			resp.AllocationsLoaded = true
			resp.Revision = snap.rev
			nst := s.cache.networkState()
			resp.Network, resp.NetworkLoaded = s.networkOf(ctx, nst, node)
			resp.AuditOnly = nst.settings.AuditOnly
			if last == nil || !proto.Equal(last, resp) {
				if err := stream.Send(resp); err != nil {
					return err
				}
				last = resp
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-snap.changed:
		case <-policyChanged:
			// A new policy revision: recompile the network.
		case <-heartbeat.C:
			// Resend so that a silent stream is distinguishable from a dead one.
			last = nil
		}
	}
}

func syncResponse(snap snapshot, node string) *unumv1.SyncAgentResponse {
	resp := &unumv1.SyncAgentResponse{}
	for _, e := range snap.entries {
		if e.AppliesTo(node) {
			resp.Entries = append(resp.Entries, entryToProto(e, 0))
		}
	}
	for _, r := range snap.roots {
		resp.Roots = append(resp.Roots, r.Raw)
	}
	for _, k := range snap.jwtKeys {
		resp.JwtKeys = append(resp.JwtKeys, &unumv1.JWTKey{Kid: k.KeyID, PublicKey: k.PublicKey})
	}
	resp.CredKeys = credKeySetsToProto(snap.credKeys)
	resp.ControlAddresses = controlAddresses(snap.nodes)
	return resp
}

func controlAddresses(nodes []NodeRecord) []string {
	var out []string
	for _, n := range nodes {
		if n.HasRole("control") && n.APIAddress != "" {
			out = append(out, n.APIAddress)
		}
	}
	return out
}

func entryToProto(e EntryRecord, rev int64) *unumv1.Entry {
	return &unumv1.Entry{
		Id:            e.ID,
		SpiffeId:      e.SPIFFEID,
		Node:          e.Node,
		AllNodes:      e.AllNodes,
		Selectors:     append([]string(nil), e.Selectors...),
		Revision:      rev,
		CreatedAtUnix: e.CreatedAt.Unix(),
		CreatedBy:     e.CreatedBy,
	}
}

func derChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, 0, len(chain))
	for _, c := range chain {
		out = append(out, c.Raw)
	}
	return out
}

// allocToProto is an allocation as its node receives it.
func allocToProto(a AllocRecord) *unumv1.Allocation {
	return &unumv1.Allocation{
		Id: a.ID, Namespace: a.Namespace, Job: a.Job, Index: int32(a.Index), Node: a.Node,
		SpiffeId: a.SPIFFEID, Ports: ports32(a.Ports),
		Resources: &unumv1.Resources{CpuMillis: a.CPUMillis, MemoryMib: a.MemoryMiB},
		Priority:  int32(a.Priority), Class: a.Class, CreatedAtUnix: a.CreatedAt.Unix(), JobVersion: a.JobVersion,
		SpecJson: a.Spec,
	}
}
