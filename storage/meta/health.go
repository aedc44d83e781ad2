package meta

import (
	"context"
)

// Health is what the local member says about itself.
type Health struct {
	// HasLeader: the member knows a raft leader.
	HasLeader bool
	// Linearizable: a linearizable read (raft ReadIndex) completed before
	// ctx ended, so the member is in contact with a quorum.
	Linearizable bool
	// DBSizeBytes is the size of the member's backend database file.
	DBSizeBytes int64
}

// Health probes the local member: its view of the leader, a linearizable
// read bounded by ctx (a learner never completes one), and its database
// size. It reads the embedded server directly: no client round trip and
// nothing written.
func (s *Server) Health(ctx context.Context) Health {
	es := s.etcd.Server
	h := Health{HasLeader: es.Leader() != 0}
	if be := es.Backend(); be != nil {
		h.DBSizeBytes = be.Size()
	}
	if h.HasLeader && !es.IsLearner() {
		h.Linearizable = es.LinearizableReadNotify(ctx) == nil
	}
	return h
}
