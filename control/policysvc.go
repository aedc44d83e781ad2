package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/policy"
)

// DecisionFinder finds a decision's authz event in a node's audit log
// (*audit.Log): its index and the event as stored, or an error wrapping
// audit.ErrNotFound or audit.ErrPruned. Safe for concurrent use.
type DecisionFinder interface {
	FindDecision(id string) (uint64, []byte, error)
}

// LocalDecisions is what every node keeps of the decisions it made: all of
// them in its audit log, and in memory those a shadow would have changed.
type LocalDecisions struct {
	Node      string
	Decisions DecisionFinder
	Shadows   *policy.Ring
	Engines   *policy.EngineCache
	View      *policy.View
}

// PolicyService serves the Policy API on every node: Explain and
// ShadowReport from the node's own decisions, everything else from the
// control server S (nil on nodes without the control role, which refuse
// those methods and name where to go).
type PolicyService struct {
	unumv1.UnimplementedPolicyServer
	Local LocalDecisions
	S     *Server
}

var _ unumv1.PolicyServer = (*PolicyService)(nil)

func (p *PolicyService) control() (*Server, error) {
	if p.S == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is not a control node: ask a control node", p.Local.Node)
	}
	return p.S, nil
}

// Apply implements unumv1.PolicyServer.
func (p *PolicyService) Apply(ctx context.Context, req *unumv1.ApplyPolicyRequest) (*unumv1.ApplyPolicyResponse, error) {
	s, err := p.control()
	if err != nil {
		return nil, err
	}
	return s.Apply(ctx, req)
}

// Get implements unumv1.PolicyServer.
func (p *PolicyService) Get(ctx context.Context, req *unumv1.GetPolicyRequest) (*unumv1.PolicyRevision, error) {
	s, err := p.control()
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, req)
}

// History implements unumv1.PolicyServer.
func (p *PolicyService) History(ctx context.Context, req *unumv1.PolicyHistoryRequest) (*unumv1.PolicyHistoryResponse, error) {
	s, err := p.control()
	if err != nil {
		return nil, err
	}
	return s.History(ctx, req)
}

// Rollback implements unumv1.PolicyServer.
func (p *PolicyService) Rollback(ctx context.Context, req *unumv1.RollbackPolicyRequest) (*unumv1.ApplyPolicyResponse, error) {
	s, err := p.control()
	if err != nil {
		return nil, err
	}
	return s.Rollback(ctx, req)
}

// Status implements unumv1.PolicyServer.
func (p *PolicyService) Status(ctx context.Context, _ *unumv1.PolicyStatusRequest) (*unumv1.PolicyStatusResponse, error) {
	s, err := p.control()
	if err != nil {
		return nil, err
	}
	return s.policyStatus(ctx)
}

// Check implements unumv1.PolicyServer.
func (p *PolicyService) Check(ctx context.Context, req *unumv1.CheckPolicyRequest) (*unumv1.CheckPolicyResponse, error) {
	s, err := p.control()
	if err != nil {
		return nil, err
	}
	return s.check(ctx, req)
}

// Watch implements unumv1.PolicyServer.
func (p *PolicyService) Watch(req *unumv1.WatchPolicyRequest, stream unumv1.Policy_WatchServer) error {
	s, err := p.control()
	if err != nil {
		return err
	}
	return s.Watch(req, stream)
}

// StartShadow implements unumv1.PolicyServer.
func (p *PolicyService) StartShadow(ctx context.Context, req *unumv1.StartShadowRequest) (*unumv1.StartShadowResponse, error) {
	s, err := p.control()
	if err != nil {
		return nil, err
	}
	return s.StartShadow(ctx, req)
}

// StopShadow implements unumv1.PolicyServer.
func (p *PolicyService) StopShadow(ctx context.Context, req *unumv1.StopShadowRequest) (*unumv1.StopShadowResponse, error) {
	s, err := p.control()
	if err != nil {
		return nil, err
	}
	return s.StopShadow(ctx, req)
}

// Explain implements unumv1.PolicyServer: a decision this node made, read
// from its audit log, with the rules that fired, found by evaluating the
// recorded input again on the recorded revision.
func (p *PolicyService) Explain(ctx context.Context, req *unumv1.ExplainPolicyRequest) (*unumv1.ExplainPolicyResponse, error) {
	node, err := policy.DecisionNode(req.GetDecisionId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if node != p.Local.Node {
		return nil, status.Errorf(codes.FailedPrecondition, "decision %s was made on node %s, not %s: ask that node", req.GetDecisionId(), node, p.Local.Node)
	}
	rec, err := p.recordedDecision(req.GetDecisionId())
	if err != nil {
		return nil, err
	}
	in, _ := json.Marshal(rec.Input)
	out := &unumv1.ExplainPolicyResponse{
		DecisionId: rec.ID, TimeUnixNano: rec.Time.UnixNano(), Revision: rec.Revision, InputJson: string(in),
		Allow: rec.Result.Allow, Privileged: rec.Result.Privileged, Reasons: rec.Result.Reasons, Error: rec.Err, Node: node,
	}
	if rec.Revision == 0 {
		return out, nil
	}
	eng, err := p.engine(ctx, rec.Revision)
	if err == nil && rec.Digest != "" && eng.Digest() != rec.Digest {
		err = fmt.Errorf("revision %d held here is not the bundle that decided (the store was restored from a backup)", rec.Revision)
	}
	if err != nil {
		out.Error = joinErr(out.Error, "rules not traced: "+err.Error())
		return out, nil
	}
	if len(rec.Principals) > 0 {
		// A delegated call: each principal was evaluated as the subject.
		for i, pr := range rec.Principals {
			input := rec.Input
			input.Subject = policy.Subject{ID: pr.ID, Attributes: pr.Attributes}
			if i < len(rec.Input.Delegation) && rec.Input.Delegation[i].ID == pr.ID {
				a := rec.Input.Delegation[i]
				input.Subject.Kind, input.Subject.Namespace, input.Subject.Name = a.Kind, a.Namespace, a.Name
			}
			if input.Subject.Attributes == nil {
				input.Subject.Attributes = map[string]string{}
			}
			ep := &unumv1.ExplainedPrincipal{SpiffeId: pr.ID, Allow: pr.Allow, Privileged: pr.Privileged, Reasons: pr.Reasons}
			_, fired, err := eng.Explain(ctx, &input)
			if err != nil {
				out.Error = joinErr(out.Error, "rules not traced for "+pr.ID+": "+err.Error())
			}
			ep.Fired = firedToProto(fired)
			out.Principals = append(out.Principals, ep)
		}
		return out, nil
	}
	input := rec.Input
	_, fired, err := eng.Explain(ctx, &input)
	if err != nil {
		out.Error = joinErr(out.Error, "rules not traced: "+err.Error())
		return out, nil
	}
	out.Fired = firedToProto(fired)
	return out, nil
}

func firedToProto(fired []policy.FiredRule) []*unumv1.FiredRule {
	out := make([]*unumv1.FiredRule, 0, len(fired))
	for _, f := range fired {
		out = append(out, &unumv1.FiredRule{Rule: f.Rule, File: f.File, Line: int32(f.Line)})
	}
	return out
}

// recordedDecision reads decision id back from the audit log.
func (p *PolicyService) recordedDecision(id string) (*policy.Record, error) {
	_, raw, err := p.Local.Decisions.FindDecision(id)
	switch {
	case errors.Is(err, audit.ErrPruned):
		return nil, status.Errorf(codes.NotFound, "decision %s was pruned from node %s's audit log by retention", id, p.Local.Node)
	case errors.Is(err, audit.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "decision %s is not in node %s's audit log", id, p.Local.Node)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "read node %s's audit log: %v", p.Local.Node, err)
	}
	e, err := audit.DecodeEvent(raw)
	if err != nil {
		return nil, status.Errorf(codes.DataLoss, "decision %s in node %s's audit log: %v", id, p.Local.Node, err)
	}
	rec, err := DecisionFromEvent(e)
	if err != nil {
		return nil, status.Errorf(codes.DataLoss, "decision %s in node %s's audit log: %v", id, p.Local.Node, err)
	}
	return rec, nil
}

func joinErr(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// engine is revision rev's engine: cached, served, or (control nodes)
// compiled from the store.
func (p *PolicyService) engine(ctx context.Context, rev int64) (*policy.Engine, error) {
	if e, ok := p.Local.Engines.Get(rev); ok {
		return e, nil
	}
	if e := p.Local.View.Engine(); e != nil && e.Revision() == rev {
		return e, nil
	}
	if p.S == nil {
		return nil, status.Errorf(codes.NotFound, "revision %d is no longer held on node %s", rev, p.Local.Node)
	}
	b, _, err := p.S.policyRevision(ctx, rev)
	if err != nil {
		return nil, err
	}
	e, err := policy.NewEngine(ctx, b, rev)
	if err != nil {
		return nil, err
	}
	p.Local.Engines.Put(e)
	return e, nil
}

// ShadowReport implements unumv1.PolicyServer: every decision this node
// made (and still holds) that the shadow would have changed.
func (p *PolicyService) ShadowReport(_ context.Context, req *unumv1.ShadowReportRequest) (*unumv1.ShadowReportResponse, error) {
	if req.GetShadowId() == "" {
		return nil, status.Error(codes.InvalidArgument, "shadow id is required")
	}
	out := &unumv1.ShadowReportResponse{Node: p.Local.Node}
	for _, r := range p.Local.Shadows.ShadowChanges(req.GetShadowId()) {
		out.Changes = append(out.Changes, &unumv1.ShadowChange{
			DecisionId: r.ID, TimeUnixNano: r.Time.UnixNano(),
			Subject: r.Input.Subject.ID, Action: r.Input.Action, Resource: r.Input.Resource.String(),
			LiveRevision: r.Revision, LiveAllow: r.Shadow.Live.Allow, ShadowAllow: r.Shadow.Result.Allow,
			LivePrivileged: r.Shadow.Live.Privileged, ShadowPrivileged: r.Shadow.Result.Privileged,
			LiveReasons: r.Shadow.Live.Reasons, ShadowReasons: r.Shadow.Result.Reasons,
		})
	}
	return out, nil
}
