package control

import (
	"context"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
)

// What a compute node's heartbeat reports about its executor: its capacity
// and limits (into its NodeSched record) and the state of each of its tasks
// (into /unum/taskstatus/). Both are written only when they changed since
// this control node last wrote them, so steady heartbeats cost no extra
// etcd writes; a node that switches control nodes rewrites once.

// maxReportedTasks bounds the task states one heartbeat may carry.
const maxReportedTasks = 4096

// reported is what this control node last stored for a node.
type reported struct {
	sched NodeSched
	tasks map[string]TaskStatusRecord
}

func (s *Server) storeExecutorReport(ctx context.Context, node string, req *unumv1.HeartbeatRequest) error {
	if !req.GetCompute() {
		return nil
	}
	if len(req.GetTasks()) > maxReportedTasks {
		return status.Errorf(codes.InvalidArgument, "heartbeat reports %d tasks, more than %d", len(req.GetTasks()), maxReportedTasks)
	}
	s.reports.mu.Lock()
	last, ok := s.reports.m[node]
	s.reports.mu.Unlock()
	if !ok {
		last = reported{tasks: map[string]TaskStatusRecord{}}
	}
	limits := make([]string, 0, len(req.GetLimits()))
	for _, l := range req.GetLimits() {
		limits = append(limits, truncate(l, 256))
	}
	cpu, mem := req.GetCapacity().GetCpuMillis(), req.GetCapacity().GetMemoryMib()
	lo, hi := int(req.GetPortLo()), int(req.GetPortHi())
	if lo != 0 || hi != 0 {
		if lo < 1024 || hi > 65535 || lo > hi {
			return status.Errorf(codes.InvalidArgument, "task port range %d-%d: want 1024 <= low <= high <= 65535", lo, hi)
		}
	}
	if !ok || !last.sched.Compute || last.sched.CPUMillis != cpu || last.sched.MemoryMiB != mem || !slices.Equal(last.sched.Limits, limits) ||
		last.sched.PortLo != lo || last.sched.PortHi != hi {
		ns, err := s.updateNodeSched(ctx, node, func(ns *NodeSched) error {
			ns.Compute, ns.CPUMillis, ns.MemoryMiB, ns.Limits, ns.PortLo, ns.PortHi = true, cpu, mem, limits, lo, hi
			return nil
		})
		if err != nil {
			return err
		}
		last.sched = ns
	}
	seen := map[string]bool{}
	for _, t := range req.GetTasks() {
		id := t.GetId()
		if !allocIDRE.MatchString(id) {
			return status.Errorf(codes.InvalidArgument, "task id %q is not an allocation id", truncate(id, 80))
		}
		seen[id] = true
		rec := TaskStatusRecord{
			State: t.GetState(), PID: int(t.GetPid()), UID: t.GetUid(), ExitCode: int(t.GetExitCode()),
			Signal: truncate(t.GetSignal(), 32), Restarts: int(t.GetRestarts()),
			StartedAt: unixTime(t.GetStartedAtUnix()), FinishedAt: unixTime(t.GetFinishedAtUnix()),
			Message: truncate(t.GetMessage(), 512),
		}
		if prev, ok := last.tasks[id]; ok && prev == rec {
			continue
		}
		// Only for an allocation of this very node that still exists: a
		// node cannot report on another node's tasks or resurrect a
		// removed allocation's status.
		resp, err := s.cfg.Etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(allocKey(node, id)), ">", 0)).
			Then(clientv3.OpPut(taskStatusKey(node, id), mustJSON(rec))).
			Commit()
		if err != nil {
			return status.Errorf(codes.Unavailable, "store task state: %v", err)
		}
		if resp.Succeeded {
			last.tasks[id] = rec
		}
	}
	for id := range last.tasks {
		if !seen[id] {
			delete(last.tasks, id)
		}
	}
	s.reports.mu.Lock()
	s.reports.m[node] = last
	s.reports.mu.Unlock()
	return nil
}

func unixTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}
