package control

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
)

// CreateJoinToken implements unumv1.ClusterServer.
func (s *Server) CreateJoinToken(ctx context.Context, req *unumv1.CreateJoinTokenRequest) (*unumv1.CreateJoinTokenResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := jointoken.ValidateNodeName(req.GetName()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "--name: %v", err)
	}
	// Strict: one role per element, exactly as the policy's route reads
	// them (a "compute,control" element must not become a control token
	// that policy saw as a compute one).
	roles, err := jointoken.NormalizeRoles(req.GetRoles())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "--roles: %v", err)
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	switch {
	case ttl == 0:
		ttl = defaultJoinTTL
	case ttl < 0 || ttl > maxJoinTokenTTL:
		return nil, status.Errorf(codes.InvalidArgument, "--ttl must be between 1s and %s", maxJoinTokenTTL)
	}
	bundle := s.bundle()
	if len(bundle) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "no trust bundle")
	}
	// Roots[0] is the active root: during a root rotation the old one
	// until the new root is in every node's bundle, the new one after
	// (control/ca.go).
	tok, err := jointoken.New(jointoken.KindNode, ca.Fingerprint(bundle[0]), rand.Reader)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "new token: %v", err)
	}
	expires := s.cfg.Clock().Add(ttl).UTC()
	rec := tok.Record(req.GetName(), roles, c.ID.String(), expires)
	resp, err := s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(nodeKey(req.GetName())), "=", 0)).
		Then(clientv3.OpPut(joinTokenKey(tok.ID), mustJSON(rec))).
		Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store join token: %v", err)
	}
	if !resp.Succeeded {
		return nil, status.Errorf(codes.AlreadyExists, "a node named %q already exists", req.GetName())
	}
	kind := "node"
	if slices.Contains(roles, jointoken.RoleControl) {
		kind = "control-node"
	}
	s.record(ctx, audit.Event{Kind: audit.KindToken, Action: audit.ActionTokenMint, Outcome: audit.Allow, Resource: kind + "/-/" + req.GetName()}.
		WithDetails(TokenDetails{TokenID: tok.ID, TokenKind: "node", Name: req.GetName(), Roles: roles, ExpiresAt: expires}))
	s.cfg.Log.Info("join token minted", "token_id", tok.ID, "name", req.GetName(), "roles", roles, "expires", expires, "by", c.ID.String())
	return &unumv1.CreateJoinTokenResponse{Token: tok.String(), ExpiresAtUnix: expires.Unix()}, nil
}

// Heartbeat implements unumv1.ClusterServer.
func (s *Server) Heartbeat(ctx context.Context, req *unumv1.HeartbeatRequest) (*unumv1.HeartbeatResponse, error) {
	node, err := callerNode(ctx)
	if err != nil {
		return nil, err
	}
	st := NodeStatus{
		LastSeen:      s.cfg.Clock().UTC(),
		SVIDExpiresAt: time.Unix(req.GetSvidExpiresAtUnix(), 0).UTC(),
		Enforcement:   req.GetEnforcement(),
		AgentReady:    req.GetAgentReady(),
		// Reported so status can warn about stale views, CA rotation can
		// tell when every node holds a new root, and metrics can show it.
		RevocationAgeMs:           req.GetRevocationAgeMs(),
		BundleFingerprints:        req.GetBundleFingerprints(),
		IntermediateFingerprint:   req.GetIntermediateFingerprint(),
		IntermediateExpiresAtUnix: req.GetIntermediateExpiresAtUnix(),
		PolicyRevision:            req.GetPolicyRevision(),
		PolicyAgeMs:               req.GetPolicyAgeMs(),
		AuditError:                truncate(req.GetAuditError(), maxAuditErrorLen),
		EnforcementStatus:         enforcementReport(req.GetEnforcementStatus()),
	}
	// Only members may report; a removed node's heartbeat is refused.
	resp, err := s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(nodeKey(node)), ">", 0)).
		Then(clientv3.OpPut(nodeStatusKey(node), mustJSON(st))).
		Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store heartbeat: %v", err)
	}
	if !resp.Succeeded {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not a member of the cluster", node)
	}
	if err := s.storeExecutorReport(ctx, node, req); err != nil {
		// Not answered: the node must not count this heartbeat towards its
		// lease while its tasks' states could not be stored.
		return nil, err
	}
	// The audit settings ride on the answer: every node follows the
	// cluster's within a heartbeat of a change; so does the fencing
	// deadline that matches this cluster's lease and grace period.
	return &unumv1.HeartbeatResponse{
		Audit:        settingsToProto(s.cache.auditSettings()),
		FenceAfterMs: fenceAfter(s.nodeLease(), s.downGrace()).Milliseconds(),
		Revision:     resp.Header.Revision,
	}, nil
}

// maxAuditErrorLen bounds the audit error a node reports (stored in etcd
// with every heartbeat).
const maxAuditErrorLen = 512

// truncate cuts s to at most n bytes on a rune boundary (proto strings
// must stay valid UTF-8).
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (s *Server) listNodes(ctx context.Context) ([]*unumv1.Node, error) {
	// The scheduler's own read: node ls shows what the leader decides on.
	st, err := s.readSchedState(ctx)
	if err != nil {
		return nil, err
	}
	type use struct {
		cpu, mem int64
		n        int32
	}
	allocated := map[string]use{}
	for _, a := range st.allocs {
		if !a.rec.Done {
			u := allocated[a.rec.Node]
			u.cpu, u.mem, u.n = u.cpu+a.rec.CPUMillis, u.mem+a.rec.MemoryMiB, u.n+1
			allocated[a.rec.Node] = u
		}
	}
	now := s.cfg.Clock()
	var out []*unumv1.Node
	for _, n := range st.nodes {
		pn := &unumv1.Node{
			Name:              n.Name,
			SpiffeId:          n.SPIFFEID,
			Roles:             n.Roles,
			ApiAddress:        n.APIAddress,
			EnrollmentAddress: n.EnrollmentAddress,
			Enforcement:       "unknown",
		}
		ns, ok := st.status[n.Name]
		if ok {
			pn.LastSeenUnix = ns.LastSeen.Unix()
			pn.SvidExpiresAtUnix = ns.SVIDExpiresAt.Unix()
			pn.Enforcement = ns.Enforcement
			pn.AgentReady = ns.AgentReady
			pn.RevocationAgeMs = ns.RevocationAgeMs
			pn.BundleFingerprints = ns.BundleFingerprints
			pn.IntermediateFingerprint = ns.IntermediateFingerprint
			pn.IntermediateExpiresAtUnix = ns.IntermediateExpiresAtUnix
			pn.PolicyRevision = ns.PolicyRevision
			pn.PolicyAgeMs = ns.PolicyAgeMs
			pn.AuditError = ns.AuditError
			if d := ns.EnforcementStatus; d != nil {
				pn.EnforcementLayers = d.GetLayers()
			}
			pn.Ready = ns.AgentReady && now.Sub(ns.LastSeen) < nodeReadyAfter && now.Before(ns.SVIDExpiresAt)
		}
		pn.Lease = leaseOf(ns, ok, now, s.nodeLease(), s.downGrace()).String()
		if sch, ok := st.sched[n.Name]; ok {
			pn.Labels, pn.Draining, pn.Limits = sch.Labels, sch.Draining, sch.Limits
			if sch.Compute {
				pn.Capacity = &unumv1.Resources{CpuMillis: sch.CPUMillis, MemoryMib: sch.MemoryMiB}
				pn.Unschedulable = unschedulable(sch, ns, st.settings)
			}
		}
		if a, ok := allocated[n.Name]; ok {
			pn.Allocated, pn.Allocations = &unumv1.Resources{CpuMillis: a.cpu, MemoryMib: a.mem}, a.n
		}
		out = append(out, pn)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ListNodes implements unumv1.ClusterServer.
func (s *Server) ListNodes(ctx context.Context, _ *unumv1.ListNodesRequest) (*unumv1.ListNodesResponse, error) {
	nodes, err := s.listNodes(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list nodes: %v", err)
	}
	return &unumv1.ListNodesResponse{Nodes: nodes}, nil
}

// Status implements unumv1.ClusterServer. It answers even without quorum
// (quorum=false) so that an operator can see what is wrong.
func (s *Server) Status(ctx context.Context, _ *unumv1.StatusRequest) (*unumv1.StatusResponse, error) {
	out := &unumv1.StatusResponse{
		TrustDomain:     s.cfg.TrustDomain.Name(),
		CaExpiresAtUnix: s.Authority().Certificate().NotAfter.Unix(),
		ServedBy:        s.cfg.NodeName,
	}
	if b := s.bundle(); len(b) > 0 {
		out.RootExpiresAtUnix = b[0].NotAfter.Unix()
	}
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	nodes, err := s.listNodes(qctx)
	if err == nil {
		out.Quorum = true
		out.Nodes = nodes
	}
	mctx, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	members, merr := s.cfg.Etcd.MemberList(mctx)
	var leader uint64
	for _, ep := range s.cfg.Etcd.Endpoints() {
		if st, err := s.cfg.Etcd.Status(mctx, ep); err == nil {
			leader = st.Leader
			break
		}
	}
	if merr == nil {
		for _, m := range members.Members {
			em := &unumv1.EtcdMember{
				Name:       m.Name,
				Id:         strconv.FormatUint(m.ID, 16),
				ClientUrls: m.ClientURLs,
				PeerUrls:   m.PeerURLs,
				Learner:    m.IsLearner,
				Leader:     m.ID == leader && leader != 0,
			}
			if em.Leader {
				out.EtcdLeader = m.Name
			}
			out.EtcdMembers = append(out.EtcdMembers, em)
		}
	}
	s.statusWarnings(ctx, out)
	return out, nil
}

var errNoRoot = errors.New("this node does not hold the root CA key: join control nodes through the enrolment address of the node where `unum init` ran")
