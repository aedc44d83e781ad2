package control

import (
	"context"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/selector"
)

// What a node's heartbeat reports about its executor: whether it can run
// tasks, its capacity, port range and limits (into its NodeSched record)
// and the state of each of its tasks (into /unum/taskstatus/). Both are
// written only when they differ from what this control node last wrote,
// so steady heartbeats cost no extra etcd writes. The memory is per
// control node: a node that moves to another control node and back may
// find a stale memory there, which costs at most one skipped write until
// the task's state next changes (the leader reads etcd, not this).

// maxReportedTasks bounds the task states one heartbeat may carry.
const maxReportedTasks = 4096

// maxStatusOps bounds the task-state writes of one etcd transaction (each
// is a nested transaction comparing that its allocation exists).
const maxStatusOps = 64

// reported is what this control node last stored for a node. mu is held
// for a whole report: one node's heartbeats may overlap (a client that
// gave up and sent the next one), and must not race on tasks.
type reported struct {
	mu    sync.Mutex
	known bool
	sched NodeSched
	tasks map[string]TaskStatusRecord
}

func (s *Server) reportOf(node string) *reported {
	s.reports.mu.Lock()
	defer s.reports.mu.Unlock()
	r, ok := s.reports.m[node]
	if !ok {
		r = &reported{tasks: map[string]TaskStatusRecord{}}
		s.reports.m[node] = r
	}
	return r
}

func (s *Server) storeExecutorReport(ctx context.Context, node string, req *unumv1.HeartbeatRequest) error {
	if len(req.GetTasks()) > maxReportedTasks {
		return status.Errorf(codes.InvalidArgument, "heartbeat reports %d tasks, more than %d", len(req.GetTasks()), maxReportedTasks)
	}
	last := s.reportOf(node)
	last.mu.Lock()
	defer last.mu.Unlock()
	limits := make([]string, 0, len(req.GetLimits()))
	for _, l := range req.GetLimits() {
		limits = append(limits, truncate(l, 256))
	}
	compute := req.GetCompute()
	cpu, mem := req.GetCapacity().GetCpuMillis(), req.GetCapacity().GetMemoryMib()
	lo, hi := int(req.GetPortLo()), int(req.GetPortHi())
	if lo != 0 || hi != 0 {
		if lo < 1024 || hi > 65535 || lo > hi {
			return status.Errorf(codes.InvalidArgument, "task port range %d-%d: want 1024 <= low <= high <= 65535", lo, hi)
		}
	}
	if !compute {
		// A node that cannot run tasks (no executor, or not a compute
		// node) offers nothing: the leader re-places what it had.
		cpu, mem, lo, hi = 0, 0, 0, 0
	}
	was := last.sched
	if !last.known || was.Compute != compute || was.CPUMillis != cpu || was.MemoryMiB != mem || !slices.Equal(was.Limits, limits) ||
		was.PortLo != lo || was.PortHi != hi {
		if !compute && !last.known {
			// Read before writing: a node that never computed need not
			// get a record at all.
			if r, err := s.cfg.Etcd.Get(ctx, nodeSchedKey(node)); err == nil && len(r.Kvs) == 0 && len(limits) == 0 {
				last.known, last.sched = true, NodeSched{}
				return nil
			}
		}
		ns, err := s.updateNodeSched(ctx, node, func(ns *NodeSched) error {
			ns.Compute, ns.CPUMillis, ns.MemoryMiB, ns.Limits, ns.PortLo, ns.PortHi = compute, cpu, mem, limits, lo, hi
			return nil
		})
		if err != nil {
			return err
		}
		last.known, last.sched = true, ns
	}
	return s.storeTaskStates(ctx, node, req.GetTasks(), last)
}

// storeTaskStates writes the changed task states, in transactions of
// maxStatusOps, each write nested in a compare that its allocation exists
// under this very node: a node cannot report on another node's tasks or
// resurrect a removed allocation's state.
func (s *Server) storeTaskStates(ctx context.Context, node string, tasks []*unumv1.TaskStatus, last *reported) error {
	type change struct {
		id  string
		rec TaskStatusRecord
	}
	var changes []change
	seen := map[string]bool{}
	for _, t := range tasks {
		id := t.GetId()
		if selector.CheckTaskID(id) != nil {
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
		changes = append(changes, change{id, rec})
	}
	for len(changes) > 0 {
		n := min(len(changes), maxStatusOps)
		batch := changes[:n]
		changes = changes[n:]
		ops := make([]clientv3.Op, 0, n)
		for _, c := range batch {
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(allocKey(node, c.id)), ">", 0)},
				[]clientv3.Op{clientv3.OpPut(taskStatusKey(node, c.id), mustJSON(c.rec))}, nil))
		}
		resp, err := s.cfg.Etcd.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return status.Errorf(codes.Unavailable, "store task states: %v", err)
		}
		for i, c := range batch {
			if resp.Responses[i].GetResponseTxn().GetSucceeded() {
				last.tasks[c.id] = c.rec
			}
		}
	}
	for id := range last.tasks {
		if !seen[id] {
			delete(last.tasks, id)
		}
	}
	return nil
}

func unixTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}
