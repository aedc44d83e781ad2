package control

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
)

// Policy in etcd. Each revision is two keys written in one transaction:
// its metadata (small, listed by history) and its bundle (up to
// policy.MaxBundleBytes). keyPolicyLatest names the revision every node
// serves; revisions grow (a rollback stores an old bundle again as a new
// revision) except across a restore from backup, so nodes compare theirs
// with it for equality (policy.View).
const (
	prefixPolicyMeta    = "/unum/policy/meta/"
	prefixPolicyBundles = "/unum/policy/bundles/"
	// The feed watches only watchPolicy, the two small keys that drive it,
	// not the bundles (up to 1 MiB each, read once when a revision loads).
	keyPolicyLatest = "/unum/policy/live/latest"
	keyPolicyShadow = "/unum/policy/live/shadow"
	watchPolicy     = "/unum/policy/live/"
	// maxShadow bounds how long a candidate may shadow the live policy.
	maxShadow     = 24 * time.Hour
	defaultShadow = 5 * time.Minute
	// neverConfirmedMs is the sender age of a server that has never
	// confirmed its policy as the latest: older than any bound.
	neverConfirmedMs = int64(365 * 24 * time.Hour / time.Millisecond)
)

// PolicyMeta describes one stored revision.
type PolicyMeta struct {
	Revision int64     `json:"revision"`
	Author   string    `json:"author"`
	Created  time.Time `json:"created"`
	SHA256   string    `json:"sha256"`
	Message  string    `json:"message,omitempty"`
	Size     int       `json:"size"`
	// Restores is the revision a rollback stored again.
	Restores int64 `json:"restores,omitempty"`
	// Forced lists the lockout-guard findings overridden with --force.
	Forced []string `json:"forced,omitempty"`
}

// shadowRecord is the running shadow candidate.
type shadowRecord struct {
	ID        string    `json:"id"`
	Until     time.Time `json:"until"`
	StartedBy string    `json:"started_by"`
	// Bundle is encodeBundle's bytes (base64 in JSON).
	Bundle []byte `json:"bundle"`
}

func policyMetaKey(rev int64) string   { return fmt.Sprintf("%s%020d", prefixPolicyMeta, rev) }
func policyBundleKey(rev int64) string { return fmt.Sprintf("%s%020d", prefixPolicyBundles, rev) }

// BootstrapPolicyOps are the etcd writes that store the shipped policy as
// revision 1 (part of Bootstrap, and of the first control node start of a
// cluster made before policy existed).
func bootstrapPolicyOps(now time.Time) []clientv3.Op {
	b := policy.Builtin()
	meta := PolicyMeta{Revision: 1, Author: "unum init", Created: now.UTC(), SHA256: b.Digest(), Message: "the shipped policy", Size: b.Size()}
	return []clientv3.Op{
		clientv3.OpPut(policyMetaKey(1), mustJSON(meta)),
		clientv3.OpPut(policyBundleKey(1), string(encodeBundle(b))),
		clientv3.OpPut(keyPolicyLatest, "1"),
	}
}

// ensurePolicy stores the shipped policy as revision 1 when the cluster has
// none (made before policy existed).
func (s *Server) ensurePolicy(ctx context.Context) error {
	_, err := s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(keyPolicyLatest), "=", 0)).
		Then(bootstrapPolicyOps(s.cfg.Clock())...).
		Commit()
	return err
}

// bundleFromProto reads a bundle sent by a client.
func bundleFromProto(pb *unumv1.PolicyBundle) (*policy.Bundle, error) {
	if pb == nil || len(pb.GetFiles()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "policy bundle is empty: want .rego files and data.json")
	}
	b := &policy.Bundle{Files: pb.GetFiles()}
	if err := b.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return b, nil
}

func bundleToProto(b *policy.Bundle) *unumv1.PolicyBundle {
	return &unumv1.PolicyBundle{Files: b.Files}
}

// encodeBundle is how a bundle is stored in etcd: the PolicyBundle
// protobuf, whose size is the files' plus a few bytes each (JSON would
// escape Rego's quotes, newlines and < > & and could push a bundle within
// policy.MaxBundleBytes past etcd's request limit).
func encodeBundle(b *policy.Bundle) []byte {
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(bundleToProto(b))
	if err != nil {
		panic("policy bundle does not encode: " + err.Error())
	}
	return out
}

func decodeBundle(data []byte) (*policy.Bundle, error) {
	var pb unumv1.PolicyBundle
	if err := proto.Unmarshal(data, &pb); err != nil {
		return nil, fmt.Errorf("stored policy bundle: %w", err)
	}
	return &policy.Bundle{Files: pb.GetFiles()}, nil
}

// vetBundle compiles b, runs its tests and the lockout guard. Findings of
// the guard are returned as forced when force is set, refused otherwise.
func (s *Server) vetBundle(ctx context.Context, b *policy.Bundle, force bool) (tests int, forced []string, err error) {
	eng, err := policy.NewEngine(ctx, b, 0)
	if err != nil {
		return 0, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rep, err := b.Test(ctx)
	if err != nil {
		return 0, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if rep.Failed > 0 {
		return 0, nil, status.Error(codes.FailedPrecondition, (&policy.BundleError{Stage: "test", Problems: rep.Failures}).Error())
	}
	// Probe as the real members too: a bundle keyed on node names (or on
	// the deciding node) must not lock any of them out.
	var members policy.Cluster
	nodes, err := s.listNodes(ctx)
	if err != nil {
		return 0, nil, status.Errorf(codes.Unavailable, "list nodes for the lockout guard: %v", err)
	}
	for _, n := range nodes {
		members.Nodes = append(members.Nodes, n.GetName())
		if slices.Contains(n.GetRoles(), "control") {
			members.Deciders = append(members.Deciders, n.GetName())
		}
	}
	problems := policy.Guard(ctx, eng, s.cfg.TrustDomain, s.cfg.Clock(), members)
	if len(problems) > 0 && !force {
		msg := (&policy.BundleError{Stage: "lockout guard", Problems: problems}).Error()
		return 0, nil, status.Error(codes.FailedPrecondition, msg+"\n(apply with --force to override, knowing what it locks out)")
	}
	for _, p := range problems {
		forced = append(forced, p.String())
	}
	return rep.Passed, forced, nil
}

// storeRevision stores b as the next revision unless it equals the latest.
func (s *Server) storeRevision(ctx context.Context, b *policy.Bundle, meta PolicyMeta) (rev int64, unchanged bool, err error) {
	for attempt := 0; attempt < 5; attempt++ {
		resp, err := s.cfg.Etcd.Get(ctx, keyPolicyLatest)
		if err != nil {
			return 0, false, status.Errorf(codes.Unavailable, "read latest policy revision: %v", err)
		}
		var latest int64
		cmp := clientv3.Compare(clientv3.CreateRevision(keyPolicyLatest), "=", 0)
		if len(resp.Kvs) == 1 {
			latest, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
			if err != nil {
				return 0, false, status.Errorf(codes.Internal, "latest policy revision %q: %v", resp.Kvs[0].Value, err)
			}
			cmp = clientv3.Compare(clientv3.ModRevision(keyPolicyLatest), "=", resp.Kvs[0].ModRevision)
			if m, err := s.policyMeta(ctx, latest); err == nil && m.SHA256 == meta.SHA256 && meta.Restores == 0 {
				return latest, true, nil
			}
		}
		meta.Revision = latest + 1
		txn, err := s.cfg.Etcd.Txn(ctx).If(cmp).Then(
			clientv3.OpPut(policyMetaKey(meta.Revision), mustJSON(meta)),
			clientv3.OpPut(policyBundleKey(meta.Revision), string(encodeBundle(b))),
			clientv3.OpPut(keyPolicyLatest, strconv.FormatInt(meta.Revision, 10)),
		).Commit()
		if err != nil {
			return 0, false, status.Errorf(codes.Unavailable, "store policy revision: %v", err)
		}
		if txn.Succeeded {
			return meta.Revision, false, nil
		}
	}
	return 0, false, status.Error(codes.Aborted, "policy changed concurrently; try again")
}

// Apply implements unumv1.PolicyServer.
func (s *Server) Apply(ctx context.Context, req *unumv1.ApplyPolicyRequest) (*unumv1.ApplyPolicyResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	b, err := bundleFromProto(req.GetBundle())
	if err != nil {
		s.recordBundleRefused(ctx, audit.ActionPolicyApply, PolicyDetails{Message: req.GetMessage()}, err)
		return nil, err
	}
	if err := checkPolicyMessage(req.GetMessage()); err != nil {
		s.recordBundleRefused(ctx, audit.ActionPolicyApply, PolicyDetails{SHA256: b.Digest(), Message: req.GetMessage()}, err)
		return nil, err
	}
	tests, forced, err := s.vetBundle(ctx, b, req.GetForce())
	if err != nil {
		s.recordBundleRefused(ctx, audit.ActionPolicyApply, PolicyDetails{SHA256: b.Digest(), Message: req.GetMessage()}, err)
		return nil, err
	}
	meta := PolicyMeta{Author: c.ID.String(), Created: s.cfg.Clock().UTC(), SHA256: b.Digest(), Message: req.GetMessage(), Size: b.Size(), Forced: forced}
	rev, unchanged, err := s.storeRevision(ctx, b, meta)
	if err != nil {
		return nil, err
	}
	if !unchanged {
		s.record(ctx, audit.Event{Kind: audit.KindPolicy, Action: audit.ActionPolicyApply, Outcome: audit.Allow, Resource: "policy/-/bundle"}.
			WithDetails(PolicyDetails{Revision: rev, SHA256: meta.SHA256, Message: meta.Message, Forced: forced}))
		s.cfg.Log.Info("policy applied", "revision", rev, "sha256", meta.SHA256, "by", meta.Author, "forced", len(forced) > 0)
	}
	return &unumv1.ApplyPolicyResponse{Revision: rev, Sha256: meta.SHA256, TestsPassed: int32(tests), Forced: forced, Unchanged: unchanged}, nil
}

// maxPolicyMessageBytes bounds a revision's message: it is stored with
// the revision and recorded whole in its event.
const maxPolicyMessageBytes = maxEventString

func checkPolicyMessage(m string) error {
	if len(m) > maxPolicyMessageBytes {
		return status.Errorf(codes.InvalidArgument, "message is longer than %d bytes", maxPolicyMessageBytes)
	}
	return nil
}

// recordBundleRefused records a bundle refused after the authz decision
// allowed the call: malformed (empty, invalid files, too large), with an
// overlong message, or refused by the vetting (it does not compile, its
// tests fail, or the lockout guard found what it would lock out, T-040,
// T-041). The decision that let the caller apply was allow, so without
// this event the refusal, the attempt to lock the cluster out, would leave
// no trace. The message is the caller's: clipped.
func (s *Server) recordBundleRefused(ctx context.Context, action string, d PolicyDetails, err error) {
	d.Message = clip(d.Message)
	outcome, reasons := outcomeOf(err)
	s.record(ctx, audit.Event{Kind: audit.KindPolicy, Action: action, Outcome: outcome, Reasons: reasons, Resource: "policy/-/bundle"}.WithDetails(d))
}

// Rollback implements unumv1.PolicyServer: revision N's bundle, vetted
// again by this binary, becomes the next revision.
func (s *Server) Rollback(ctx context.Context, req *unumv1.RollbackPolicyRequest) (*unumv1.ApplyPolicyResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkPolicyMessage(req.GetMessage()); err != nil {
		s.recordBundleRefused(ctx, audit.ActionPolicyRollback, PolicyDetails{Message: req.GetMessage(), Restores: req.GetRevision()}, err)
		return nil, err
	}
	b, m, err := s.policyRevision(ctx, req.GetRevision())
	if err != nil {
		return nil, err
	}
	tests, forced, err := s.vetBundle(ctx, b, req.GetForce())
	if err != nil {
		s.recordBundleRefused(ctx, audit.ActionPolicyRollback, PolicyDetails{SHA256: b.Digest(), Message: req.GetMessage(), Restores: m.Revision}, err)
		return nil, err
	}
	msg := req.GetMessage()
	if msg == "" {
		msg = fmt.Sprintf("rollback to revision %d", m.Revision)
	}
	meta := PolicyMeta{Author: c.ID.String(), Created: s.cfg.Clock().UTC(), SHA256: b.Digest(), Message: msg, Size: b.Size(), Restores: m.Revision, Forced: forced}
	rev, _, err := s.storeRevision(ctx, b, meta)
	if err != nil {
		return nil, err
	}
	s.record(ctx, audit.Event{Kind: audit.KindPolicy, Action: audit.ActionPolicyRollback, Outcome: audit.Allow, Resource: "policy/-/bundle"}.
		WithDetails(PolicyDetails{Revision: rev, SHA256: meta.SHA256, Message: meta.Message, Restores: m.Revision, Forced: forced}))
	s.cfg.Log.Info("policy rolled back", "revision", rev, "restores", m.Revision, "by", meta.Author)
	return &unumv1.ApplyPolicyResponse{Revision: rev, Sha256: meta.SHA256, TestsPassed: int32(tests), Forced: forced}, nil
}

func (s *Server) latestPolicyRevision(ctx context.Context) (int64, error) {
	resp, err := s.cfg.Etcd.Get(ctx, keyPolicyLatest)
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "read latest policy revision: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, status.Error(codes.NotFound, "the cluster has no policy yet")
	}
	return strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
}

func (s *Server) policyMeta(ctx context.Context, rev int64) (PolicyMeta, error) {
	resp, err := s.cfg.Etcd.Get(ctx, policyMetaKey(rev))
	if err != nil {
		return PolicyMeta{}, status.Errorf(codes.Unavailable, "read policy revision %d: %v", rev, err)
	}
	if len(resp.Kvs) == 0 {
		return PolicyMeta{}, status.Errorf(codes.NotFound, "policy revision %d does not exist", rev)
	}
	return decode[PolicyMeta](resp.Kvs[0].Value)
}

// policyRevision loads revision rev (0: the latest).
func (s *Server) policyRevision(ctx context.Context, rev int64) (*policy.Bundle, PolicyMeta, error) {
	if rev < 0 {
		return nil, PolicyMeta{}, status.Errorf(codes.InvalidArgument, "policy revision %d: revisions start at 1", rev)
	}
	latest, err := s.latestPolicyRevision(ctx)
	if err != nil {
		return nil, PolicyMeta{}, err
	}
	if rev == 0 {
		rev = latest
	}
	if rev > latest {
		return nil, PolicyMeta{}, status.Errorf(codes.NotFound, "policy revision %d does not exist (the latest is %d)", rev, latest)
	}
	resp, err := s.cfg.Etcd.Txn(ctx).Then(clientv3.OpGet(policyMetaKey(rev)), clientv3.OpGet(policyBundleKey(rev))).Commit()
	if err != nil {
		return nil, PolicyMeta{}, status.Errorf(codes.Unavailable, "read policy revision %d: %v", rev, err)
	}
	mk, bk := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	if len(mk) == 0 || len(bk) == 0 {
		return nil, PolicyMeta{}, status.Errorf(codes.NotFound, "policy revision %d does not exist (the latest is %d)", rev, latest)
	}
	m, err := decode[PolicyMeta](mk[0].Value)
	if err != nil {
		return nil, PolicyMeta{}, status.Errorf(codes.Internal, "policy revision %d: %v", rev, err)
	}
	b, err := decodeBundle(bk[0].Value)
	if err != nil {
		return nil, PolicyMeta{}, status.Errorf(codes.Internal, "policy revision %d bundle: %v", rev, err)
	}
	return b, m, nil
}

func metaToProto(m PolicyMeta) *unumv1.PolicyRevision {
	return &unumv1.PolicyRevision{
		Revision: m.Revision, Author: m.Author, CreatedUnix: m.Created.Unix(), Sha256: m.SHA256,
		Message: m.Message, RestoresRevision: m.Restores, Forced: len(m.Forced) > 0, SizeBytes: int64(m.Size),
	}
}

// Get implements unumv1.PolicyServer.
func (s *Server) Get(ctx context.Context, req *unumv1.GetPolicyRequest) (*unumv1.PolicyRevision, error) {
	b, m, err := s.policyRevision(ctx, req.GetRevision())
	if err != nil {
		return nil, err
	}
	out := metaToProto(m)
	out.Bundle = bundleToProto(b)
	return out, nil
}

// History implements unumv1.PolicyServer: newest first.
func (s *Server) History(ctx context.Context, req *unumv1.PolicyHistoryRequest) (*unumv1.PolicyHistoryResponse, error) {
	limit := int64(req.GetLimit())
	if limit <= 0 {
		limit = 100
	}
	resp, err := s.cfg.Etcd.Get(ctx, prefixPolicyMeta, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(limit))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read policy history: %v", err)
	}
	out := &unumv1.PolicyHistoryResponse{}
	for _, kv := range resp.Kvs {
		m, err := decode[PolicyMeta](kv.Value)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%s: %v", kv.Key, err)
		}
		out.Revisions = append(out.Revisions, metaToProto(m))
	}
	return out, nil
}

// Status implements unumv1.PolicyServer: the latest revision and the one
// each node last reported serving.
func (s *Server) policyStatus(ctx context.Context) (*unumv1.PolicyStatusResponse, error) {
	latest, err := s.latestPolicyRevision(ctx)
	if err != nil {
		return nil, err
	}
	nodes, err := s.listNodes(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list nodes: %v", err)
	}
	out := &unumv1.PolicyStatusResponse{LatestRevision: latest}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, &unumv1.NodePolicyStatus{Name: n.GetName(), Revision: n.GetPolicyRevision(), AgeMs: n.GetPolicyAgeMs(), LastSeenUnix: n.GetLastSeenUnix()})
	}
	if sh, ok, err := s.shadow(ctx); err != nil {
		return nil, err
	} else if ok && s.cfg.Clock().Before(sh.Until) {
		out.ShadowId, out.ShadowUntilUnix = sh.ID, sh.Until.Unix()
	}
	return out, nil
}

func (s *Server) shadow(ctx context.Context) (shadowRecord, bool, error) {
	resp, err := s.cfg.Etcd.Get(ctx, keyPolicyShadow)
	if err != nil {
		return shadowRecord{}, false, status.Errorf(codes.Unavailable, "read policy shadow: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return shadowRecord{}, false, nil
	}
	sh, err := decode[shadowRecord](resp.Kvs[0].Value)
	if err != nil {
		return shadowRecord{}, false, status.Errorf(codes.Internal, "policy shadow: %v", err)
	}
	return sh, true, nil
}

// Check implements unumv1.PolicyServer: the live revision's answer for a
// made-up request; nothing runs and nothing is recorded.
func (s *Server) check(ctx context.Context, req *unumv1.CheckPolicyRequest) (*unumv1.CheckPolicyResponse, error) {
	in, err := CheckInput(s.cfg.TrustDomain, req, s)
	if err != nil {
		return nil, err
	}
	eng := s.cfg.Policy.Engine()
	if eng == nil {
		return nil, status.Error(codes.Unavailable, policy.ErrNoPolicy.Error())
	}
	in.Context = policy.Context{Node: s.cfg.NodeName, Time: s.cfg.Clock(), RequestID: "policy-check"}
	r, err := eng.Eval(ctx, &in)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "policy revision %d cannot decide: %v", eng.Revision(), err)
	}
	return &unumv1.CheckPolicyResponse{Allow: r.Allow, Privileged: r.Privileged, Reasons: r.Reasons, Revision: eng.Revision(), InputJson: mustJSON(in)}, nil
}

// CheckInput builds the input of a what-if check: the subject as the live
// system would see it (users with their role from roles, nil for none).
func CheckInput(td spiffeid.TrustDomain, req *unumv1.CheckPolicyRequest, roles rpc.RoleSource) (policy.Input, error) {
	id, err := spiffeid.FromString(req.GetSpiffeId())
	if err != nil {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "--as %q: %v", req.GetSpiffeId(), err)
	}
	if id.TrustDomain() != td {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "--as %q is not in trust domain %s", req.GetSpiffeId(), td.Name())
	}
	if !policy.ValidAction(req.GetAction()) {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "--action %q: want noun.verb, e.g. id.register", req.GetAction())
	}
	res, err := policy.ParseResource(req.GetResource())
	if err != nil {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "--resource: %v", err)
	}
	return policy.Input{
		Subject:    rpc.SubjectOf(identity.Classify(id), roles),
		Action:     req.GetAction(),
		Resource:   res,
		Delegation: []policy.Actor{},
	}, nil
}

// StartShadow implements unumv1.PolicyServer: the candidate, vetted like an
// apply (compile and tests; the guard does not apply, it changes nothing),
// is evaluated beside the live policy on every node until it expires.
func (s *Server) StartShadow(ctx context.Context, req *unumv1.StartShadowRequest) (*unumv1.StartShadowResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	b, err := bundleFromProto(req.GetBundle())
	if err != nil {
		return nil, err
	}
	if _, err := policy.NewEngine(ctx, b, 0); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	d := time.Duration(req.GetDurationSeconds()) * time.Second
	switch {
	case d == 0:
		d = defaultShadow
	case d < 0 || d > maxShadow:
		return nil, status.Errorf(codes.InvalidArgument, "shadow duration %s: want up to %s", d, maxShadow)
	}
	live, err := s.latestPolicyRevision(ctx)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Clock()
	rec := shadowRecord{ID: "shadow-" + strings.TrimPrefix(policy.NewDecisionID("x"), "x."), Until: now.Add(d).UTC(), StartedBy: c.ID.String(), Bundle: encodeBundle(b)}
	// One shadow at a time: a running one is not replaced (its operator is
	// waiting for its report); an expired or unreadable one is.
	resp, err := s.cfg.Etcd.Get(ctx, keyPolicyShadow)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read policy shadow: %v", err)
	}
	cmp := clientv3.Compare(clientv3.CreateRevision(keyPolicyShadow), "=", 0)
	if len(resp.Kvs) == 1 {
		if cur, err := decode[shadowRecord](resp.Kvs[0].Value); err == nil && now.Before(cur.Until) {
			return nil, status.Errorf(codes.AlreadyExists, "shadow %s (started by %s) runs until %s: wait for it or stop it first", cur.ID, cur.StartedBy, cur.Until.Format(time.RFC3339))
		}
		cmp = clientv3.Compare(clientv3.ModRevision(keyPolicyShadow), "=", resp.Kvs[0].ModRevision)
	}
	txn, err := s.cfg.Etcd.Txn(ctx).If(cmp).Then(clientv3.OpPut(keyPolicyShadow, mustJSON(rec))).Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store policy shadow: %v", err)
	}
	if !txn.Succeeded {
		return nil, status.Error(codes.Aborted, "another shadow started concurrently; try again")
	}
	s.record(ctx, audit.Event{Kind: audit.KindPolicy, Action: audit.ActionPolicyShadow, Outcome: audit.Allow, Resource: "policy/-/shadow"}.
		WithDetails(PolicyDetails{ShadowID: rec.ID, SHA256: b.Digest(), Until: rec.Until, Revision: live}))
	s.cfg.Log.Info("policy shadow started", "shadow_id", rec.ID, "until", rec.Until, "by", rec.StartedBy)
	return &unumv1.StartShadowResponse{ShadowId: rec.ID, UntilUnix: rec.Until.Unix(), LiveRevision: live}, nil
}

// StopShadow implements unumv1.PolicyServer.
// Stopping by id leaves another operator's later shadow alone.
func (s *Server) StopShadow(ctx context.Context, req *unumv1.StopShadowRequest) (*unumv1.StopShadowResponse, error) {
	resp, err := s.cfg.Etcd.Get(ctx, keyPolicyShadow)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read policy shadow: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return &unumv1.StopShadowResponse{}, nil
	}
	if id := req.GetShadowId(); id != "" {
		cur, err := decode[shadowRecord](resp.Kvs[0].Value)
		if err == nil && cur.ID != id {
			return nil, status.Errorf(codes.FailedPrecondition, "shadow %s is not running (%s is)", id, cur.ID)
		}
	}
	txn, err := s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(keyPolicyShadow), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpDelete(keyPolicyShadow)).Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "stop policy shadow: %v", err)
	}
	if !txn.Succeeded {
		return nil, status.Error(codes.Aborted, "the shadow changed while stopping it; look at `unum policy status` and try again")
	}
	stopped := PolicyDetails{Stopped: true}
	if cur, err := decode[shadowRecord](resp.Kvs[0].Value); err == nil {
		stopped.ShadowID, stopped.Until = cur.ID, cur.Until
	}
	s.record(ctx, audit.Event{Kind: audit.KindPolicy, Action: audit.ActionPolicyShadow, Outcome: audit.Allow, Resource: "policy/-/shadow"}.WithDetails(stopped))
	return &unumv1.StopShadowResponse{}, nil
}

// feedPolicy keeps this control node's policy view current from etcd: the
// latest revision compiled and served, the shadow candidate installed, and
// a progress report every second so the view knows it is current.
func (s *Server) feedPolicy(ctx context.Context) {
	s.feed(ctx, "policy feed", s.followPolicy)
}

func (s *Server) followPolicy(ctx context.Context) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	lctx, lcancel := context.WithTimeout(wctx, 5*time.Second)
	defer lcancel()
	if err := s.ensurePolicy(lctx); err != nil {
		return fmt.Errorf("ensure policy: %w", err)
	}
	resp, err := s.cfg.Etcd.Txn(lctx).Then(clientv3.OpGet(keyPolicyLatest), clientv3.OpGet(keyPolicyShadow)).Commit()
	if err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	// latest is the store's latest revision as last read: progress reports
	// confirm it, not what this node happens to serve (which may be older
	// when a revision failed to load).
	var latest int64
	load := func(ctx context.Context, value []byte) error {
		var err error
		latest, err = strconv.ParseInt(string(value), 10, 64)
		if err != nil {
			return fmt.Errorf("latest policy revision %q: %w", value, err)
		}
		// Observe first: Set then confirms the new engine at once (and
		// wakes the heartbeat that reports it).
		s.cfg.Policy.Observe(latest, s.cfg.Clock())
		if e := s.cfg.Policy.Engine(); e == nil || e.Revision() != latest {
			if err := s.loadPolicyRevision(ctx, latest); err != nil {
				return err
			}
		}
		return nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		if err := load(lctx, kvs[0].Value); err != nil {
			return err
		}
	}
	s.applyShadow(lctx, resp.Responses[1].GetResponseRange().Kvs)
	lcancel()

	return s.watchFrom(ctx, wctx, "policy", watchPolicy, resp.Header.Revision,
		func(wr clientv3.WatchResponse) error {
			for _, ev := range wr.Events {
				switch string(ev.Kv.Key) {
				case keyPolicyLatest:
					if ev.Type == clientv3.EventTypePut {
						if err := load(wctx, ev.Kv.Value); err != nil {
							return err
						}
					}
				case keyPolicyShadow:
					if ev.Type == clientv3.EventTypeDelete {
						s.applyShadow(wctx, nil)
					} else {
						s.applyShadow(wctx, []*mvccpb.KeyValue{ev.Kv})
					}
				}
			}
			return nil
		},
		func() {
			// Nothing changed up to the store's current revision: the
			// latest revision is still the one last read.
			if latest > 0 {
				s.cfg.Policy.Observe(latest, s.cfg.Clock())
			}
		})
}

// loadPolicyRevision compiles revision rev and serves it. A revision this
// binary cannot compile is logged and skipped: the view keeps the older
// revision and goes stale, so privileged actions are refused until an
// operator fixes it (fail closed), while the rest keeps working.
func (s *Server) loadPolicyRevision(ctx context.Context, rev int64) error {
	b, m, err := s.policyRevision(ctx, rev)
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			return err
		}
		s.cfg.Log.Error("policy revision unreadable: still serving the previous one", "revision", rev, "err", err)
		return nil
	}
	// A cached engine of the same number is reused only if it is the same
	// bundle: after a restore from backup, numbers are reused.
	if e, ok := s.cfg.Engines.Get(rev); ok && e.Digest() == m.SHA256 {
		s.cfg.Policy.Set(e)
		return nil
	}
	e, err := policy.NewEngine(ctx, b, rev)
	if err != nil {
		s.cfg.Log.Error("policy revision does not compile: still serving the previous one", "revision", rev, "err", err)
		return nil
	}
	s.cfg.Engines.Put(e)
	s.cfg.Policy.Set(e)
	s.cfg.Log.Info("policy revision loaded", "revision", rev, "sha256", e.Digest())
	return nil
}

// applyShadow installs the shadow candidate in kvs (none: stop shadowing).
func (s *Server) applyShadow(ctx context.Context, kvs []*mvccpb.KeyValue) {
	if s.cfg.OnShadow == nil {
		return
	}
	if len(kvs) == 0 {
		s.cfg.OnShadow(nil)
		return
	}
	rec, err := decode[shadowRecord](kvs[0].Value)
	var b *policy.Bundle
	if err == nil {
		b, err = decodeBundle(rec.Bundle)
	}
	if err != nil {
		s.cfg.Log.Error("undecodable policy shadow: ignored", "err", err)
		s.cfg.OnShadow(nil)
		return
	}
	e, err := policy.NewEngine(ctx, b, 0)
	if err != nil {
		s.cfg.Log.Error("policy shadow does not compile: ignored", "shadow_id", rec.ID, "err", err)
		s.cfg.OnShadow(nil)
		return
	}
	s.cfg.OnShadow(&policy.Shadow{ID: rec.ID, Engine: e, Until: rec.Until})
}

// Watch implements unumv1.PolicyServer for nodes without etcd: the latest
// revision's bundle whenever it differs from what the node has, the
// shadow, and a progress report every second carrying how old this
// server's own knowledge is, so the node's view ages with it.
func (s *Server) Watch(req *unumv1.WatchPolicyRequest, stream unumv1.Policy_WatchServer) error {
	ctx := stream.Context()
	tick := time.NewTicker(revocationHeartbeat)
	defer tick.Stop()
	have, haveDigest, haveShadow := req.GetHaveRevision(), req.GetHaveSha256(), req.GetHaveShadowId()
	var sentRoles map[string]string
	for {
		changed := s.cfg.Policy.Changed()
		st := s.cfg.Policy.Status(s.cfg.Clock())
		msg := &unumv1.PolicyUpdate{LatestRevision: max(st.Latest, st.Revision), SenderAgeMs: st.Age.Milliseconds()}
		if st.Age < 0 {
			// This server has never confirmed its revision as the latest:
			// it must not confirm the follower's either.
			msg.SenderAgeMs = neverConfirmedMs
		}
		// Compared by digest too: numbers are reused after a restore.
		if e := s.cfg.Policy.Engine(); e != nil && (e.Revision() != have || e.Digest() != haveDigest) {
			m := PolicyMeta{Revision: e.Revision(), SHA256: e.Digest(), Size: e.Bundle().Size()}
			msg.Revision = metaToProto(m)
			msg.Revision.Bundle = bundleToProto(e.Bundle())
			have, haveDigest = e.Revision(), e.Digest()
		}
		if roles := s.cache.userRoles(); sentRoles == nil || !maps.Equal(roles, sentRoles) {
			msg.UserRoles, msg.RolesSet = roles, true
			sentRoles = roles
		}
		if sh := s.currentShadow(); sh != nil {
			msg.ShadowId, msg.ShadowUntilUnixNano = sh.ID, sh.Until.UnixNano()
			if sh.ID != haveShadow {
				msg.ShadowBundle = bundleToProto(sh.Engine.Bundle())
				haveShadow = sh.ID
			}
		} else {
			haveShadow = ""
		}
		if st.Revision > 0 {
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

func (s *Server) currentShadow() *policy.Shadow {
	if s.cfg.CurrentShadow == nil {
		return nil
	}
	return s.cfg.CurrentShadow()
}
