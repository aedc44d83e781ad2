package control

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
	"github.com/unumos/unum/scheduler"
	"github.com/unumos/unum/scheduler/jobspec"
)

// The Scheduler service's job handlers. Submitting stores a job record;
// the leader places it (sched_leader.go). The plan a submission prints is
// the leader's own algorithm run on the same linearizable state, so it is
// what the leader will do unless the cluster changes in between.

var _ unumv1.SchedulerServer = (*Server)(nil)

// EgressAction is the policy action an egress declaration is checked
// against: may the job's identity connect to the target identity. The
// enforcement issue compiles the same answer into the kernel.
const EgressAction = "net.connect"

// JobDetails are the details of job.submit and job.stop events.
type JobDetails struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Version   int64          `json:"version,omitempty"`
	Changed   bool           `json:"changed,omitempty"`
	DryRun    bool           `json:"dry_run,omitempty"`
	Egress    []EgressRecord `json:"egress,omitempty"`
	Allocs    int            `json:"allocations,omitempty"`
}

// SubmitJob implements unumv1.SchedulerServer.
func (s *Server) SubmitJob(ctx context.Context, req *unumv1.SubmitJobRequest) (*unumv1.SubmitJobResponse, error) {
	resp, err := s.submitJob(ctx, req)
	outcome, reasons := outcomeOf(err)
	d := JobDetails{Namespace: clip(req.GetNamespace()), Name: clip(req.GetName()), DryRun: req.GetDryRun()}
	if resp != nil {
		d.Version, d.Changed = resp.GetJob().GetVersion(), resp.GetSubmitted()
		for _, e := range resp.GetJob().GetEgress() {
			d.Egress = append(d.Egress, EgressRecord{Target: e.GetTarget(), Allowed: e.GetAllowed()})
		}
	}
	if !req.GetDryRun() || err != nil {
		s.record(ctx, audit.Event{Kind: audit.KindJob, Action: audit.ActionJobSubmit, Outcome: outcome, Reasons: reasons,
			Resource: "job/" + clip(req.GetNamespace()) + "/" + clip(req.GetName())}.WithDetails(d))
	}
	return resp, err
}

func (s *Server) submitJob(ctx context.Context, req *unumv1.SubmitJobRequest) (*unumv1.SubmitJobResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	j, err := jobspec.Parse(req.GetSpec())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "job spec: %v", err)
	}
	if j.Namespace != req.GetNamespace() || j.Name != req.GetName() {
		// The policy decided on the request's names: the spec must be the
		// job that was decided on.
		return nil, status.Errorf(codes.InvalidArgument, "the spec is job %s/%s but the request names %s/%s", j.Namespace, j.Name, req.GetNamespace(), req.GetName())
	}
	if err := j.ValidateFor(s.cfg.TrustDomain); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "job spec: %v", err)
	}
	canon, err := j.Canonical()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "canonical spec: %v", err)
	}
	id := j.SPIFFEID(s.cfg.TrustDomain)
	egress, err := s.egressDecisions(ctx, id.String(), j.Egress)
	if err != nil {
		return nil, err
	}
	st, err := s.readSchedState(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	now := s.cfg.Clock()
	rec := JobRecord{
		Namespace: j.Namespace, Name: j.Name, SPIFFEID: id.String(), Spec: string(canon),
		Version: 1, SubmittedBy: c.ID.String(), SubmittedAt: now.UTC(), Egress: egress,
	}
	if d, ok := rpc.DecisionFromContext(ctx); ok {
		rec.DecisionID = d.ID
	}
	if cred, ok := rpc.CredentialFromContext(ctx); ok {
		rec.SubmittedBy = cred.Subject.String()
	}
	var prevRev int64
	changed := true
	idx := st.job(j.Namespace, j.Name)
	if idx >= 0 {
		prev := st.jobs[idx]
		prevRev = prev.modRev
		rec.Version = prev.rec.Version
		rec.NetID = prev.rec.NetID
		if prev.rec.Stopped || prev.rec.Spec != string(canon) {
			rec.Version++
		} else {
			// Unchanged, unless it predates identity numbers.
			changed = prev.rec.NetID == 0
			rec = prev.rec
		}
	}
	// The preview: the leader's round on the same state with this job in it.
	preview := st
	preview.jobs = slices.Clone(st.jobs)
	entry := jobEntry{rec: rec, spec: j}
	if idx >= 0 {
		preview.jobs[idx] = entry
	} else {
		preview.jobs = append(preview.jobs, entry)
		slices.SortFunc(preview.jobs, func(a, b jobEntry) int {
			return strings.Compare(a.rec.Namespace+"/"+a.rec.Name, b.rec.Namespace+"/"+b.rec.Name)
		})
	}
	n := 0
	r := planRound(preview, now, time.Time{}, s.nodeLease(), s.downGrace(), func() string { n++; return fmt.Sprintf("new-%d", n) })
	out := &unumv1.SubmitJobResponse{Plan: jobPlan(r, scheduler.JobRef{Namespace: j.Namespace, Name: j.Name}, st)}
	out.Job = s.jobProto(rec, j, nil, nil)
	if req.GetDryRun() || !changed {
		return out, nil
	}
	if err := s.storeJob(ctx, rec, prevRev); err != nil {
		return nil, err
	}
	out.Submitted = true
	return out, nil
}

// storeJob writes rec if the job is still at prevRev (0: absent), giving
// it an identity number first if it has none. Submissions of other jobs
// race on the counter, not on the job: those conflicts are retried.
func (s *Server) storeJob(ctx context.Context, rec JobRecord, prevRev int64) error {
	key := jobKey(rec.Namespace, rec.Name)
	for range 8 {
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", prevRev)}
		var ops []clientv3.Op
		if rec.NetID == 0 {
			next, rev, err := s.nextNetID(ctx)
			if err != nil {
				return err
			}
			rec.NetID = next
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keyNetIDNext), "=", rev))
			ops = append(ops, clientv3.OpPut(keyNetIDNext, strconv.FormatUint(uint64(next)+1, 10)))
		}
		ops = append(ops, clientv3.OpPut(key, mustJSON(rec)))
		resp, err := s.cfg.Etcd.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return status.Errorf(codes.Unavailable, "store job: %v", err)
		}
		if resp.Succeeded {
			return nil
		}
		cur := int64(0)
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			cur = kvs[0].ModRevision
		}
		if cur != prevRev || rec.NetID != 0 && len(cmps) == 1 {
			break // the job itself changed
		}
		rec.NetID = 0 // the counter moved: take the next number
	}
	return status.Errorf(codes.Aborted, "job %s/%s changed while it was being submitted: submit again", rec.Namespace, rec.Name)
}

// nextNetID reads the next identity number and the counter's revision.
func (s *Server) nextNetID(ctx context.Context) (uint32, int64, error) {
	resp, err := s.cfg.Etcd.Get(ctx, keyNetIDNext)
	if err != nil {
		return 0, 0, status.Errorf(codes.Unavailable, "read identity numbers: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return 1, 0, nil
	}
	n, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 32)
	if err != nil || n == 0 || n == math.MaxUint32 {
		return 0, 0, status.Errorf(codes.Internal, "%s holds %q: not an identity number", keyNetIDNext, resp.Kvs[0].Value)
	}
	return uint32(n), resp.Kvs[0].ModRevision, nil
}

// egressDecisions asks the policy, for each declared egress target,
// whether the job's identity may connect to it. A declaration never grants
// anything: the effective egress is what the policy allows of it.
func (s *Server) egressDecisions(ctx context.Context, jobID string, targets []string) ([]EgressRecord, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	eng := s.cfg.Policy.Engine()
	if eng == nil {
		return nil, status.Error(codes.Unavailable, policy.ErrNoPolicy.Error())
	}
	sub, err := identity.ParseWorkloadID(s.cfg.TrustDomain, jobID)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "job identity: %v", err)
	}
	out := make([]EgressRecord, 0, len(targets))
	for _, t := range targets {
		in := policy.Input{
			Subject:    rpc.SubjectOf(identity.Classify(sub), s),
			Action:     EgressAction,
			Resource:   rpc.WorkloadResource("net", t),
			Delegation: []policy.Actor{},
			Context:    policy.Context{Node: s.cfg.NodeName, Time: s.cfg.Clock(), RequestID: "egress-check"},
		}
		res, err := eng.Eval(ctx, &in)
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "policy revision %d cannot decide egress to %s: %v", eng.Revision(), t, err)
		}
		out = append(out, EgressRecord{Target: t, Allowed: res.Allow, Reasons: res.Reasons})
	}
	return out, nil
}

// jobPlan is the part of a round about one job.
func jobPlan(r round, ref scheduler.JobRef, st schedState) *unumv1.JobPlan {
	p := &unumv1.JobPlan{}
	for _, pl := range r.plan.Placements {
		if pl.Task.Job == ref {
			p.Placements = append(p.Placements, &unumv1.PlanPlacement{Task: pl.Task.String(), Node: pl.Node, Ports: ports32(pl.Ports)})
		}
	}
	for _, pr := range r.plan.Preemptions {
		if pr.For.Job == ref {
			p.Preemptions = append(p.Preemptions, &unumv1.PlanPreemption{Alloc: pr.Alloc, Task: pr.Task.String(), Node: pr.Node, ForTask: pr.For.String()})
		}
	}
	for _, u := range r.plan.Unplaced {
		if u.Task.Job == ref {
			p.Unplaced = append(p.Unplaced, &unumv1.PlanUnplaced{Task: u.Task.String(), Reason: u.Reason})
		}
	}
	removed := map[string]bool{}
	for _, rm := range r.remove {
		a := rm.alloc.rec
		if a.Namespace == ref.Namespace && a.Job == ref.Name {
			removed[a.ID] = true
			p.Replaces = append(p.Replaces, a.ID)
		}
	}
	for _, a := range st.allocs {
		if a.rec.Namespace == ref.Namespace && a.rec.Job == ref.Name && !removed[a.rec.ID] {
			p.Kept = append(p.Kept, a.rec.ID)
		}
	}
	return p
}

func ports32(in map[string]int) map[string]int32 {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]int32, len(in))
	for k, v := range in {
		out[k] = int32(v)
	}
	return out
}

// jobProto describes a job; allocs and tasks (may be nil) give its state.
func (s *Server) jobProto(rec JobRecord, spec *jobspec.Job, allocs []AllocRecord, tasks map[string]TaskStatusRecord) *unumv1.Job {
	out := &unumv1.Job{
		Namespace: rec.Namespace, Name: rec.Name, SpiffeId: rec.SPIFFEID, SpecJson: redactedSpec(rec.Spec),
		Version: rec.Version, SubmittedBy: rec.SubmittedBy, SubmittedAtUnix: rec.SubmittedAt.Unix(),
		Stopped: rec.Stopped, DecisionId: rec.DecisionID,
	}
	for _, e := range rec.Egress {
		out.Egress = append(out.Egress, &unumv1.EgressDecision{Target: e.Target, Allowed: e.Allowed, Reasons: e.Reasons})
	}
	if spec != nil {
		out.Type, out.Count = spec.Type, int32(spec.Count)
	}
	out.State, out.Running = jobState(rec, spec, allocs, tasks)
	return out
}

// jobState summarises a job: stopped, complete (a batch job whose every
// task completed), failed (a task failed for good), running (every task
// running) or pending.
func jobState(rec JobRecord, spec *jobspec.Job, allocs []AllocRecord, tasks map[string]TaskStatusRecord) (string, int32) {
	var running, complete, failed int32
	for _, a := range allocs {
		if a.JobVersion != rec.Version {
			continue
		}
		switch tasks[a.ID].State {
		case "running":
			running++
		case "complete":
			complete++
		case "failed":
			failed++
		}
	}
	switch {
	case rec.Stopped:
		return "stopped", running
	case spec == nil:
		return "invalid", running
	case failed > 0 && running+complete+failed == int32(spec.Count):
		return "failed", running
	case spec.Type == "batch" && complete == int32(spec.Count):
		return "complete", running
	case running == int32(spec.Count):
		return "running", running
	}
	return "pending", running
}

// jobAllocs are the allocations and task states of one job, from st.
func jobAllocs(st schedState, ns, name string) []AllocRecord {
	var out []AllocRecord
	for _, a := range st.allocs {
		if a.rec.Namespace == ns && a.rec.Job == name {
			out = append(out, a.rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// ListJobs implements unumv1.SchedulerServer.
func (s *Server) ListJobs(ctx context.Context, req *unumv1.ListJobsRequest) (*unumv1.ListJobsResponse, error) {
	st, err := s.readSchedState(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	out := &unumv1.ListJobsResponse{}
	for _, j := range st.jobs {
		if req.GetNamespace() != "" && j.rec.Namespace != req.GetNamespace() {
			continue
		}
		out.Jobs = append(out.Jobs, s.jobProto(j.rec, j.spec, jobAllocs(st, j.rec.Namespace, j.rec.Name), st.tasks))
	}
	return out, nil
}

// JobStatus implements unumv1.SchedulerServer.
func (s *Server) JobStatus(ctx context.Context, req *unumv1.JobStatusRequest) (*unumv1.JobStatusResponse, error) {
	st, err := s.readSchedState(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	idx := st.job(req.GetNamespace(), req.GetName())
	if idx < 0 {
		return nil, status.Errorf(codes.NotFound, "no job %s/%s", req.GetNamespace(), req.GetName())
	}
	j := st.jobs[idx]
	allocs := jobAllocs(st, j.rec.Namespace, j.rec.Name)
	out := &unumv1.JobStatusResponse{Job: s.jobProto(j.rec, j.spec, allocs, st.tasks)}
	for _, a := range allocs {
		out.Allocations = append(out.Allocations, allocProto(a, st))
	}
	return out, nil
}

// allocProto describes an allocation with its node's address and status.
func allocProto(a AllocRecord, st schedState) *unumv1.Allocation {
	p := &unumv1.Allocation{
		Id: a.ID, Namespace: a.Namespace, Job: a.Job, Index: int32(a.Index), Node: a.Node,
		NodeAddress: st.nodes[a.Node].APIAddress, SpiffeId: a.SPIFFEID, Ports: ports32(a.Ports),
		Resources: &unumv1.Resources{CpuMillis: a.CPUMillis, MemoryMib: a.MemoryMiB},
		Priority:  int32(a.Priority), Class: a.Class, CreatedAtUnix: a.CreatedAt.Unix(), JobVersion: a.JobVersion,
		SpecJson: redactedSpec(a.Spec),
	}
	if ts, ok := st.tasks[a.ID]; ok {
		p.Status = taskStatusProto(a, ts)
	}
	return p
}

func taskStatusProto(a AllocRecord, ts TaskStatusRecord) *unumv1.TaskStatus {
	return &unumv1.TaskStatus{
		Id: a.ID, Namespace: a.Namespace, Job: a.Job, Index: int32(a.Index), SpiffeId: a.SPIFFEID, Node: a.Node,
		State: ts.State, Pid: int32(ts.PID), Uid: ts.UID, ExitCode: int32(ts.ExitCode), Signal: ts.Signal,
		Restarts: int32(ts.Restarts), StartedAtUnix: unixOrZero(ts.StartedAt), FinishedAtUnix: unixOrZero(ts.FinishedAt),
		Message: ts.Message,
	}
}

// StopJob implements unumv1.SchedulerServer.
func (s *Server) StopJob(ctx context.Context, req *unumv1.StopJobRequest) (*unumv1.StopJobResponse, error) {
	resp, err := s.stopJob(ctx, req)
	outcome, reasons := outcomeOf(err)
	d := JobDetails{Namespace: clip(req.GetNamespace()), Name: clip(req.GetName()), Allocs: int(resp.GetStoppedAllocations())}
	s.record(ctx, audit.Event{Kind: audit.KindJob, Action: audit.ActionJobStop, Outcome: outcome, Reasons: reasons,
		Resource: "job/" + clip(req.GetNamespace()) + "/" + clip(req.GetName())}.WithDetails(d))
	return resp, err
}

func (s *Server) stopJob(ctx context.Context, req *unumv1.StopJobRequest) (*unumv1.StopJobResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.readSchedState(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	idx := st.job(req.GetNamespace(), req.GetName())
	if idx < 0 {
		return nil, status.Errorf(codes.NotFound, "no job %s/%s", req.GetNamespace(), req.GetName())
	}
	j := st.jobs[idx]
	allocs := jobAllocs(st, j.rec.Namespace, j.rec.Name)
	if !j.rec.Stopped {
		j.rec.Stopped, j.rec.StoppedBy, j.rec.StoppedAt = true, c.ID.String(), s.cfg.Clock().UTC()
		resp, err := s.cfg.Etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(jobKey(j.rec.Namespace, j.rec.Name)), "=", j.modRev)).
			Then(clientv3.OpPut(jobKey(j.rec.Namespace, j.rec.Name), mustJSON(j.rec))).
			Commit()
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "store job: %v", err)
		}
		if !resp.Succeeded {
			return nil, status.Errorf(codes.Aborted, "job %s/%s changed while it was being stopped: stop again", j.rec.Namespace, j.rec.Name)
		}
	}
	return &unumv1.StopJobResponse{Job: s.jobProto(j.rec, j.spec, allocs, st.tasks), StoppedAllocations: int32(len(allocs))}, nil
}

// ListAllocations implements unumv1.SchedulerServer.
func (s *Server) ListAllocations(ctx context.Context, _ *unumv1.ListAllocationsRequest) (*unumv1.ListAllocationsResponse, error) {
	st, err := s.readSchedState(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	out := &unumv1.ListAllocationsResponse{}
	for _, a := range st.allocs {
		out.Allocations = append(out.Allocations, allocProto(a.rec, st))
	}
	return out, nil
}

// NodeScheduleDetails are a node.schedule event's details.
type NodeScheduleDetails struct {
	Node     string            `json:"node"`
	Draining bool              `json:"draining"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// DrainNode implements unumv1.SchedulerServer: a draining node gets no new
// tasks. Its running tasks stay (an operator stops or moves them).
func (s *Server) DrainNode(ctx context.Context, req *unumv1.DrainNodeRequest) (*unumv1.DrainNodeResponse, error) {
	ns, err := s.updateNodeSched(ctx, req.GetName(), func(ns *NodeSched) error {
		ns.Draining = req.GetDrain()
		return nil
	})
	return nodeSchedAnswer(s, ctx, req.GetName(), ns, err, func(n *unumv1.Node) *unumv1.DrainNodeResponse { return &unumv1.DrainNodeResponse{Node: n} })
}

// LabelNode implements unumv1.SchedulerServer.
func (s *Server) LabelNode(ctx context.Context, req *unumv1.LabelNodeRequest) (*unumv1.LabelNodeResponse, error) {
	changes, err := parseLabelChanges(req.GetLabels())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ns, err := s.updateNodeSched(ctx, req.GetName(), func(ns *NodeSched) error {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		for _, c := range changes {
			if c.remove {
				delete(ns.Labels, c.key)
			} else {
				ns.Labels[c.key] = c.value
			}
		}
		if len(ns.Labels) > maxNodeLabels {
			return fmt.Errorf("a node has at most %d labels", maxNodeLabels)
		}
		return nil
	})
	return nodeSchedAnswer(s, ctx, req.GetName(), ns, err, func(n *unumv1.Node) *unumv1.LabelNodeResponse { return &unumv1.LabelNodeResponse{Node: n} })
}

// nodeSchedAnswer records a drain or label change and answers with the
// node as it now is.
func nodeSchedAnswer[T any](s *Server, ctx context.Context, name string, ns NodeSched, err error, wrap func(*unumv1.Node) T) (T, error) {
	var zero T
	outcome, reasons := outcomeOf(err)
	s.record(ctx, audit.Event{Kind: audit.KindNode, Action: audit.ActionNodeSchedule, Outcome: outcome, Reasons: reasons,
		Resource: "node/-/" + clip(name)}.WithDetails(NodeScheduleDetails{Node: clip(name), Draining: ns.Draining, Labels: ns.Labels}))
	if err != nil {
		return zero, err
	}
	nodes, lerr := s.listNodes(ctx)
	if lerr != nil {
		return zero, status.Errorf(codes.Unavailable, "list nodes: %v", lerr)
	}
	for _, n := range nodes {
		if n.Name == name {
			return wrap(n), nil
		}
	}
	return zero, status.Errorf(codes.NotFound, "node %s", name)
}

const maxNodeLabels = 64

// labelKeyRE and labelValueRE follow Kubernetes label syntax (an optional
// DNS prefix is not supported: unum has no label owners to tell apart).
var (
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$`)
)

type labelChange struct {
	key, value string
	remove     bool
}

// parseLabelChanges parses KEY=VALUE (set) and KEY- (remove).
func parseLabelChanges(in []string) ([]labelChange, error) {
	if len(in) == 0 {
		return nil, errors.New("no labels given: want KEY=VALUE to set or KEY- to remove")
	}
	var out []labelChange
	for _, raw := range in {
		if k, ok := strings.CutSuffix(raw, "-"); ok && !strings.Contains(raw, "=") {
			if !labelKeyRE.MatchString(k) {
				return nil, fmt.Errorf("label %q: key %q is not a valid label key", raw, k)
			}
			out = append(out, labelChange{key: k, remove: true})
			continue
		}
		k, v, ok := strings.Cut(raw, "=")
		if !ok {
			return nil, fmt.Errorf("label %q: want KEY=VALUE or KEY-", raw)
		}
		if !labelKeyRE.MatchString(k) {
			return nil, fmt.Errorf("label %q: key %q is not a valid label key (letters, digits, '-', '_', '.', at most 63)", raw, k)
		}
		if k == "node" {
			return nil, fmt.Errorf("label %q: \"node\" is reserved (it means the node's name in anti-affinity)", raw)
		}
		if !labelValueRE.MatchString(v) {
			return nil, fmt.Errorf("label %q: value %q is not a valid label value", raw, v)
		}
		out = append(out, labelChange{key: k, value: v})
	}
	return out, nil
}

// updateNodeSched read-modify-writes a member node's scheduling record.
func (s *Server) updateNodeSched(ctx context.Context, name string, change func(*NodeSched) error) (NodeSched, error) {
	for attempt := 0; attempt < 5; attempt++ {
		resp, err := s.cfg.Etcd.Txn(ctx).Then(clientv3.OpGet(nodeKey(name)), clientv3.OpGet(nodeSchedKey(name))).Commit()
		if err != nil {
			return NodeSched{}, status.Errorf(codes.Unavailable, "read node %s: %v", name, err)
		}
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return NodeSched{}, status.Errorf(codes.NotFound, "no node %s", name)
		}
		var ns NodeSched
		var rev int64
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			if ns, err = decode[NodeSched](kvs[0].Value); err != nil {
				return NodeSched{}, status.Errorf(codes.Internal, "node %s: %v", name, err)
			}
			rev = kvs[0].ModRevision
		}
		if err := change(&ns); err != nil {
			return ns, status.Error(codes.InvalidArgument, err.Error())
		}
		put, err := s.cfg.Etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(nodeSchedKey(name)), "=", rev), clientv3.Compare(clientv3.CreateRevision(nodeKey(name)), ">", 0)).
			Then(clientv3.OpPut(nodeSchedKey(name), mustJSON(ns))).
			Commit()
		if err != nil {
			return NodeSched{}, status.Errorf(codes.Unavailable, "store node %s: %v", name, err)
		}
		if put.Succeeded {
			return ns, nil
		}
	}
	return NodeSched{}, status.Errorf(codes.Aborted, "node %s kept changing: try again", name)
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// redacted replaces every env value in specs shown to callers.
const redacted = "(redacted)"

// redactedSpec is a stored spec as callers see it: env values (where
// secrets go) replaced, because job.status, job.ls and task.ls are a
// viewer's. Only the node that runs the task gets them (its sync stream).
func redactedSpec(spec string) string {
	j, err := jobspec.ParseCanonical([]byte(spec))
	if err != nil {
		return ""
	}
	for k := range j.Task.Env {
		j.Task.Env[k] = redacted
	}
	out, err := j.Canonical()
	if err != nil {
		return ""
	}
	return string(out)
}
