package control

import (
	"context"
	"time"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/internal/rpc"
)

// recordTimeout bounds how long an event recorded after its action waits
// for the log: the caller has its answer's effects already.
const recordTimeout = 10 * time.Second

// record appends e to the node's audit log. An event recorded after its
// action ran cannot undo it: the action's decision record was made durable
// before it ran (fail closed), so a failure here is logged and shows in
// the node's audit health, not returned to the caller.
//
// The subject defaults to the verified caller of ctx, and the decision id
// and policy revision to the decision that allowed the call, so the event
// links to its authz record. The event is recorded even when the caller
// hangs up: its action has happened.
func (s *Server) record(ctx context.Context, e audit.Event) {
	if s.cfg.Audit == nil {
		return
	}
	if c, ok := rpc.CallerFromContext(ctx); ok && e.Subject == "" {
		e.Subject = c.ID.String()
	}
	if d, ok := rpc.DecisionFromContext(ctx); ok && e.DecisionID == "" {
		e.DecisionID, e.PolicyRevision = d.ID, d.Revision
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := s.cfg.Audit.Record(ctx, &e); err != nil {
		s.cfg.Log.Error("audit record failed", "action", e.Action, "err", err)
	}
}
