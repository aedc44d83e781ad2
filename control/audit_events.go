package control

import (
	"context"

	"github.com/unumos/unum/audit"
)

// record appends e to the node's audit log. An event recorded after its
// action ran cannot undo it: the action's decision record was made durable
// before it ran (fail closed), so a failure here is logged and shows in
// the node's audit health, not returned to the caller.
func (s *Server) record(ctx context.Context, e audit.Event) {
	if s.cfg.Audit == nil {
		return
	}
	if err := s.cfg.Audit.Record(ctx, &e); err != nil {
		s.cfg.Log.Error("audit record failed", "action", e.Action, "err", err)
	}
}
