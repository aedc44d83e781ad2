package control

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/scheduler"
	"github.com/unumos/unum/scheduler/jobspec"
)

// A scheduling round is a pure function of what the leader read from etcd
// at one revision (schedState) and the time: it decides which allocations
// go (their node is lost, their job stopped or changed, a higher task
// preempts them), which are finished for good, and where pending tasks go
// (scheduler.Place). The leader then commits it with optimistic
// concurrency (sched_leader.go). Keeping the decision free of I/O lets it
// be tested without a cluster.

// nodeLease is what the control plane knows of a node's liveness.
type nodeLease int

const (
	// leaseUnknown: the node never reported (no status record).
	leaseUnknown nodeLease = iota
	// leaseReady: heartbeats arrive within the lease.
	leaseReady
	// leaseDown: it missed its lease; it gets no new tasks, its tasks stay
	// where they are for the grace period (it may be only slow, and it
	// fences itself before the grace period ends).
	leaseDown
	// leaseLost: down longer than the lease plus the grace period: its
	// tasks are re-placed elsewhere (the node killed them by now).
	leaseLost
)

func (l nodeLease) String() string {
	switch l {
	case leaseReady:
		return "ready"
	case leaseDown:
		return "down"
	case leaseLost:
		return "lost"
	}
	return "unknown"
}

// leaseOf classifies a node by its last heartbeat.
func leaseOf(st NodeStatus, ok bool, now time.Time, lease, grace time.Duration) nodeLease {
	if !ok || st.LastSeen.IsZero() {
		return leaseUnknown
	}
	age := now.Sub(st.LastSeen)
	switch {
	case age < lease:
		return leaseReady
	case age < lease+grace:
		return leaseDown
	}
	return leaseLost
}

// fenceAfter is how long a node may go without an answered heartbeat
// before it must kill its tasks. It is measured by the node from when it
// sent its last answered heartbeat, which is before the control node
// stamped LastSeen, so the node's deadline comes first; the rest of the
// grace period is margin for clock rate differences and for the kill.
func fenceAfter(lease, grace time.Duration) time.Duration { return lease + grace/2 }

// schedState is what one round reads, at one etcd revision.
type schedState struct {
	rev    int64
	nodes  map[string]NodeRecord
	status map[string]NodeStatus
	sched  map[string]NodeSched
	jobs   []jobEntry   // sorted by namespace/name
	allocs []allocEntry // sorted by id
	tasks  map[string]TaskStatusRecord
	// settings are the cluster's scheduling requirements.
	settings EnforcementSettings
}

// job is the index of job ns/name in st.jobs, -1 when there is none.
func (st schedState) job(ns, name string) int {
	return slices.IndexFunc(st.jobs, func(e jobEntry) bool { return e.rec.Namespace == ns && e.rec.Name == name })
}

type jobEntry struct {
	rec    JobRecord
	modRev int64
	spec   *jobspec.Job // nil when the stored spec does not parse (err)
	err    error
}

type allocEntry struct {
	rec    AllocRecord
	modRev int64
}

// allocRemoval is an allocation a round deletes, and why.
type allocRemoval struct {
	alloc  allocEntry
	reason string
}

// round is what one scheduling round decided.
type round struct {
	remove   []allocRemoval
	finished []allocEntry // to mark Done
	place    []AllocRecord
	plan     scheduler.Plan
	// tasks are the task keys the plan was asked to place, for reporting.
	pending []scheduler.Task
	lease   map[string]nodeLease
}

func (r round) empty() bool { return len(r.remove) == 0 && len(r.finished) == 0 && len(r.place) == 0 }

// terminalTaskState reports whether a node's report means the task will
// not run again: complete (a batch task that exited 0) or failed (restarts
// used up).
func terminalTaskState(state string) bool { return state == "complete" || state == "failed" }

// planRound decides one round. newID names new allocations. observing is
// when this leader began to see heartbeats arrive (its election, or the end
// of its last failed read): no heartbeat counts as older than that, so a
// new leader, or one that was cut off from etcd, gives every node a whole
// lease and grace period before it re-places anything rather than taking
// its own blindness for their death.
func planRound(st schedState, now, observing time.Time, lease, grace time.Duration, newID func() string) round {
	r := round{lease: map[string]nodeLease{}}
	for name := range st.nodes {
		s, ok := st.status[name]
		if ok && s.LastSeen.Before(observing) {
			s.LastSeen = observing
		}
		r.lease[name] = leaseOf(s, ok, now, lease, grace)
	}
	jobs := map[scheduler.JobRef]*jobEntry{}
	for i := range st.jobs {
		j := &st.jobs[i]
		jobs[scheduler.JobRef{Namespace: j.rec.Namespace, Name: j.rec.Name}] = j
	}

	// What stays, what goes, what is finished.
	kept := map[scheduler.TaskKey]allocEntry{}
	var snapAllocs []scheduler.Alloc
	for _, a := range st.allocs {
		ref := scheduler.JobRef{Namespace: a.rec.Namespace, Name: a.rec.Job}
		key := scheduler.TaskKey{Job: ref, Index: a.rec.Index}
		j := jobs[ref]
		var reason string
		// aboutJob: the allocation goes because of its job (stopped,
		// replaced, reduced), not its node. Removing it frees its task to
		// be placed again, now or after a resubmission; while its node is
		// down (not yet lost) that node may still run it, so such an
		// allocation waits for the node to come back (it then stops the
		// task) or to be lost (it fenced itself by then).
		aboutJob := true
		switch _, member := st.nodes[a.rec.Node]; {
		case !member:
			reason, aboutJob = fmt.Sprintf("node %s was removed", a.rec.Node), false
		case r.lease[a.rec.Node] == leaseLost:
			reason, aboutJob = fmt.Sprintf("node %s lost its lease", a.rec.Node), false
		case !st.sched[a.rec.Node].Compute:
			reason, aboutJob = fmt.Sprintf("node %s cannot run tasks", a.rec.Node), false
		case j == nil:
			reason = "job deleted"
		case j.rec.Stopped:
			reason = "job stopped"
		case j.spec == nil:
			reason = fmt.Sprintf("job spec unreadable: %v", j.err)
		case a.rec.JobVersion != j.rec.Version:
			reason = fmt.Sprintf("replaced by job version %d", j.rec.Version)
		case a.rec.Index >= j.spec.Count:
			reason = fmt.Sprintf("job count reduced to %d", j.spec.Count)
		default:
			if _, dup := kept[key]; dup {
				reason = fmt.Sprintf("duplicate allocation of task %s", key)
			}
		}
		if reason != "" && aboutJob && r.lease[a.rec.Node] != leaseReady && !a.rec.Done {
			reason = ""
		}
		if reason != "" {
			r.remove = append(r.remove, allocRemoval{alloc: a, reason: reason})
			continue
		}
		kept[key] = a
		if a.rec.Done {
			continue
		}
		if ts, ok := st.tasks[a.rec.ID]; ok && terminalTaskState(ts.State) {
			r.finished = append(r.finished, a)
			continue
		}
		class, _ := scheduler.ParseClass(a.rec.Class)
		snapAllocs = append(snapAllocs, scheduler.Alloc{
			ID: a.rec.ID, Task: key, Node: a.rec.Node,
			Resources: scheduler.Resources{CPU: a.rec.CPUMillis, MemoryMiB: a.rec.MemoryMiB},
			Priority:  a.rec.Priority, Class: class, Ports: a.rec.Ports,
		})
	}

	// What is missing.
	for _, j := range st.jobs {
		if j.rec.Stopped || j.spec == nil {
			continue
		}
		ref := scheduler.JobRef{Namespace: j.rec.Namespace, Name: j.rec.Name}
		for i := 0; i < j.spec.Count; i++ {
			key := scheduler.TaskKey{Job: ref, Index: i}
			if _, ok := kept[key]; ok {
				continue
			}
			r.pending = append(r.pending, taskOf(key, j.spec))
		}
	}
	if len(r.pending) == 0 {
		return r
	}

	var snap scheduler.Snapshot
	names := make([]string, 0, len(st.nodes))
	for name := range st.nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ns, ok := st.sched[name]
		if !ok || !ns.Compute {
			continue
		}
		snap.Nodes = append(snap.Nodes, scheduler.Node{
			Name:        name,
			Labels:      ns.Labels,
			Capacity:    scheduler.Resources{CPU: ns.CPUMillis, MemoryMiB: ns.MemoryMiB},
			Ready:       r.lease[name] == leaseReady,
			Schedulable: unschedulable(ns, st.status[name], st.settings) == "",
			Ports:       scheduler.PortRange{Lo: ns.PortLo, Hi: ns.PortHi},
		})
	}
	snap.Allocs = snapAllocs
	r.plan = scheduler.Place(snap, r.pending)

	byAlloc := map[string]allocEntry{}
	for _, a := range st.allocs {
		byAlloc[a.rec.ID] = a
	}
	for _, p := range r.plan.Preemptions {
		if a, ok := byAlloc[p.Alloc]; ok {
			r.remove = append(r.remove, allocRemoval{alloc: a, reason: fmt.Sprintf("preempted by %s", p.For)})
		}
	}
	for _, p := range r.plan.Placements {
		j := jobs[p.Task.Job]
		r.place = append(r.place, allocOf(newID(), p, j, now))
	}
	slices.SortFunc(r.remove, func(a, b allocRemoval) int { return cmp.Compare(a.alloc.rec.ID, b.alloc.rec.ID) })
	return r
}

// taskOf is the scheduler's view of one task of a job.
func taskOf(key scheduler.TaskKey, j *jobspec.Job) scheduler.Task {
	class, _ := scheduler.ParseClass(j.Class)
	t := scheduler.Task{
		Key:          key,
		Resources:    scheduler.Resources{CPU: j.Resources.CPU, MemoryMiB: j.Resources.MemoryMiB},
		Priority:     j.Priority,
		Class:        class,
		Spread:       j.Spread,
		AntiAffinity: j.AntiAffinity,
		Ports:        j.Ports,
	}
	for _, c := range j.Constraints {
		t.Constraints = append(t.Constraints, scheduler.Constraint{Label: c.Label, Op: c.Op, Values: c.Values})
	}
	return t
}

// allocOf is the allocation record of a placement.
func allocOf(id string, p scheduler.Placement, j *jobEntry, now time.Time) AllocRecord {
	return AllocRecord{
		ID:         id,
		Namespace:  j.rec.Namespace,
		Job:        j.rec.Name,
		Index:      p.Task.Index,
		Node:       p.Node,
		JobVersion: j.rec.Version,
		SPIFFEID:   j.rec.SPIFFEID,
		Spec:       j.rec.Spec,
		CPUMillis:  j.spec.Resources.CPU,
		MemoryMiB:  j.spec.Resources.MemoryMiB,
		Priority:   j.spec.Priority,
		Class:      j.spec.Class,
		Ports:      p.Ports,
		CreatedAt:  now.UTC(),
	}
}

// unschedulable says why a node receives no new tasks ("" when it does):
// it is draining, its agent has not synced (it could not mint a task's
// SVID), or enforcement is required and the node does not enforce (it
// reports degraded, nothing, or something unknown: never assumed to enforce).
func unschedulable(ns NodeSched, st NodeStatus, req EnforcementSettings) string {
	switch {
	case ns.Draining:
		return "draining"
	case !st.AgentReady:
		return "its agent has not synced"
	case req.unreadable:
		return "the cluster's enforcement settings are unreadable"
	case req.Required && !enforces(st.Enforcement):
		if st.Enforcement == "" {
			return "enforcement is required and the node reports none"
		}
		return fmt.Sprintf("enforcement is required and the node is %s", st.Enforcement)
	}
	return ""
}

// enforces reports whether a node's reported mode has the BPF programs
// attached.
func enforces(mode string) bool {
	return mode == string(enforcement.ModeEnforce) || mode == string(enforcement.ModeAuditOnly)
}
