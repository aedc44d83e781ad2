package control

import (
	"context"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/scheduler/jobspec"
)

// EnforcementService implements unumv1.EnforcementServer: the cluster's
// kernel enforcement settings and every node's enforcement state.
type EnforcementService struct {
	*Server
	unumv1.UnimplementedEnforcementServer
}

var _ unumv1.EnforcementServer = EnforcementService{}

// decodeEnforcementSettings reads stored settings; unreadable ones fail
// closed (required, and every node unschedulable until fixed).
func decodeEnforcementSettings(b []byte) EnforcementSettings {
	v, err := decode[EnforcementSettings](b)
	if err != nil {
		return EnforcementSettings{Required: true, unreadable: true}
	}
	return v
}

// readEnforcementSettings is a linearizable read of the settings and the
// revision they were stored at (0: absent, the defaults).
func (s *Server) readEnforcementSettings(ctx context.Context) (EnforcementSettings, int64, error) {
	resp, err := s.cfg.Etcd.Get(ctx, keyEnforcementSettings)
	if err != nil {
		return EnforcementSettings{}, 0, status.Errorf(codes.Unavailable, "read enforcement settings: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return defaultEnforcementSettings(), 0, nil
	}
	return decodeEnforcementSettings(resp.Kvs[0].Value), resp.Kvs[0].ModRevision, nil
}

func settingsProto(e EnforcementSettings) *unumv1.EnforcementSettings {
	return &unumv1.EnforcementSettings{Required: e.Required, AuditOnly: e.AuditOnly, AuditOnlyNamespaces: slices.Clone(e.AuditOnlyNamespaces)}
}

// EnforcementDetails are an enforcement.configure event's details.
type EnforcementDetails struct {
	Before EnforcementSettings `json:"before"`
	After  EnforcementSettings `json:"after"`
}

// Configure implements unumv1.EnforcementServer.
func (e EnforcementService) Configure(ctx context.Context, req *unumv1.ConfigureEnforcementRequest) (*unumv1.EnforcementSettings, error) {
	s := e.Server
	switch req.GetMode() {
	case "", string(enforcement.ModeEnforce), string(enforcement.ModeAuditOnly):
	default:
		return nil, status.Errorf(codes.InvalidArgument, "mode %q: want %s or %s", req.GetMode(), enforcement.ModeEnforce, enforcement.ModeAuditOnly)
	}
	ns := req.GetNamespace()
	if ns != "" {
		if req.GetMode() == "" {
			return nil, status.Error(codes.InvalidArgument, "a namespace needs a mode")
		}
		if err := jobspec.ValidateNamespace(ns); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "namespace: %v", err)
		}
	}
	if req.Required == nil && req.GetMode() == "" {
		return nil, status.Error(codes.InvalidArgument, "nothing to change: give required or a mode")
	}
	cur, rev, err := s.readEnforcementSettings(ctx)
	if err != nil {
		return nil, err
	}
	if ns != "" && !auditOnlyMode(req) && cur.AuditOnly {
		// It would change nothing: the whole cluster is audit-only.
		return nil, status.Errorf(codes.FailedPrecondition, "the whole cluster is audit-only: namespace %s cannot enforce alone; set the cluster to enforce first", ns)
	}
	next := cur
	next.unreadable = false
	next.AuditOnlyNamespaces = slices.Clone(cur.AuditOnlyNamespaces)
	if req.Required != nil {
		next.Required = req.GetRequired()
	}
	auditOnly := auditOnlyMode(req)
	switch {
	case req.GetMode() == "":
	case ns == "":
		next.AuditOnly = auditOnly
	case auditOnly && !slices.Contains(next.AuditOnlyNamespaces, ns):
		next.AuditOnlyNamespaces = append(next.AuditOnlyNamespaces, ns)
		slices.Sort(next.AuditOnlyNamespaces)
	case !auditOnly:
		next.AuditOnlyNamespaces = slices.DeleteFunc(next.AuditOnlyNamespaces, func(x string) bool { return x == ns })
	}
	if len(next.AuditOnlyNamespaces) == 0 {
		next.AuditOnlyNamespaces = nil
	}
	resp, err := s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(keyEnforcementSettings), "=", rev)).
		Then(clientv3.OpPut(keyEnforcementSettings, mustJSON(next))).
		Commit()
	if err == nil && !resp.Succeeded {
		err = status.Error(codes.Aborted, "the enforcement settings changed meanwhile: try again")
	}
	outcome, reasons := outcomeOf(err)
	s.record(ctx, audit.Event{Kind: audit.KindKernel, Action: audit.ActionEnforcementSet, Outcome: outcome, Reasons: reasons,
		Resource: "cluster/-/enforcement"}.WithDetails(EnforcementDetails{Before: cur, After: next}))
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "store enforcement settings: %v", err)
	}
	s.cfg.Log.Info("enforcement settings changed", "required", next.Required, "audit_only", next.AuditOnly, "audit_only_namespaces", strings.Join(next.AuditOnlyNamespaces, ","))
	return settingsProto(next), nil
}

// Status implements unumv1.EnforcementServer: the scheduler's own read,
// so what it shows is what placement decides on.
func (e EnforcementService) Status(ctx context.Context, _ *unumv1.EnforcementStatusRequest) (*unumv1.EnforcementStatusResponse, error) {
	st, err := e.readSchedState(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	out := &unumv1.EnforcementStatusResponse{Settings: settingsProto(st.settings)}
	for _, n := range st.nodes {
		sch, ok := st.sched[n.Name]
		if !ok || !sch.Compute {
			continue
		}
		ns, seen := st.status[n.Name]
		ne := &unumv1.NodeEnforcement{Node: n.Name, Mode: "unknown"}
		if seen {
			if ns.Enforcement != "" {
				ne.Mode = ns.Enforcement
			}
			if d := ns.EnforcementStatus; d != nil {
				ne = proto.Clone(d).(*unumv1.NodeEnforcement)
				ne.Node = n.Name
			}
			ne.ReportedAtUnix = ns.LastSeen.Unix()
		}
		ne.Unschedulable = unschedulable(sch, ns, st.settings)
		out.Nodes = append(out.Nodes, ne)
	}
	return out, nil
}

// Bounds on what a node's enforcement report may store in etcd (it rides
// on every heartbeat).
const (
	maxEnforcementList = 32
	maxEnforcementText = 512
)

// enforcementReport is the part of a node's report that is stored: lists
// and strings clipped, so a node cannot bloat its status record.
func enforcementReport(r *unumv1.NodeEnforcement) *unumv1.NodeEnforcement {
	if r == nil {
		return nil
	}
	clipList := func(l []string) []string {
		l = l[:min(len(l), maxEnforcementList)]
		out := make([]string, len(l))
		for i, x := range l {
			out[i] = truncate(x, 64)
		}
		return out
	}
	out := &unumv1.NodeEnforcement{
		Mode: truncate(r.GetMode(), 32), Reason: truncate(r.GetReason(), maxEnforcementText),
		Layers: clipList(r.GetLayers()), Programs: clipList(r.GetPrograms()),
		SyncRevision: r.GetSyncRevision(), DenialsPerMinute: r.GetDenialsPerMinute(),
		EventsDropped: r.GetEventsDropped(), Error: truncate(r.GetError(), maxEnforcementText),
	}
	for k, v := range r.GetMaps() {
		if len(out.Maps) >= maxEnforcementList {
			break
		}
		if out.Maps == nil {
			out.Maps = map[string]int64{}
		}
		out.Maps[truncate(k, 64)] = v
	}
	return out
}

func auditOnlyMode(req *unumv1.ConfigureEnforcementRequest) bool {
	return req.GetMode() == string(enforcement.ModeAuditOnly)
}
