package control

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/scheduler/jobspec"
)

// The scheduler leader. Every control node campaigns; the one elected runs
// rounds (sched_round.go) until it loses its etcd session. Its writes are
// fenced by its election key: every commit compares the key's create
// revision, so a leader whose session expired (paused, partitioned) cannot
// commit a plan after its successor was elected. Each commit also compares
// the mod revision of every allocation it removes and of the allocation
// prefix of every node it places onto, so a plan computed from a state that
// has since changed is never applied (optimistic concurrency): the next
// round reads again.

const (
	// DefaultNodeLease is how long a node may go without a heartbeat
	// before it is down (no new tasks).
	DefaultNodeLease = nodeReadyAfter
	// DefaultDownGrace is how long a down node keeps its tasks before the
	// leader re-places them.
	DefaultDownGrace = 20 * time.Second
	// DefaultSchedInterval is how often the leader runs a round without
	// a change to wake it (leases expire without an event).
	DefaultSchedInterval = time.Second
	// minSchedSessionTTL bounds the leader's etcd session lifetime from
	// below (seconds): shorter ones expire under a busy etcd.
	minSchedSessionTTL = 3
	// maxTxnOps stays below etcd's default --max-txn-ops (128).
	maxTxnOps = 100
	// maxPlanDetails bounds the lists one job.place event carries.
	maxPlanDetails = 64
)

func (s *Server) nodeLease() time.Duration { return cmp0(s.cfg.NodeLease, DefaultNodeLease) }
func (s *Server) downGrace() time.Duration { return cmp0(s.cfg.DownGrace, DefaultDownGrace) }

func cmp0(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// runScheduler campaigns for scheduler leadership until ctx ends.
func (s *Server) runScheduler(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.campaignAndLead(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("scheduler leadership ended", "err", err)
			sleep(ctx, time.Second)
		}
	}
}

func (s *Server) campaignAndLead(ctx context.Context) error {
	// The session lives as long as a node's lease: a dead leader is
	// replaced about as fast as a dead node is noticed.
	ttl := max(int(s.nodeLease().Seconds()), minSchedSessionTTL)
	sess, err := concurrency.NewSession(s.cfg.Etcd, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("scheduler session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, prefixSchedLeader)
	if err := el.Campaign(ctx, s.cfg.NodeName); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	s.cfg.Log.Info("scheduler leader elected", "node", s.cfg.NodeName)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer rcancel()
		_ = el.Resign(rctx)
	}()
	fence := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	changes := s.cfg.Etcd.Watch(clientv3.WithRequireLeader(lctx), "/unum/", clientv3.WithPrefix())
	tick := time.NewTicker(cmp0(s.cfg.SchedInterval, DefaultSchedInterval))
	defer tick.Stop()
	leases := map[string]nodeLease{}
	observing := s.cfg.Clock()
	for {
		if err := s.schedRound(lctx, fence, leases, observing); err != nil && lctx.Err() == nil {
			s.cfg.Log.Warn("scheduling round failed", "err", err)
			if errors.Is(err, errSchedRead) {
				// Cut off from etcd: heartbeats may have failed too.
				observing = s.cfg.Clock()
			}
		}
		select {
		case <-lctx.Done():
			return lctx.Err()
		case <-sess.Done():
			return fmt.Errorf("scheduler session expired")
		case <-tick.C:
		case wr, ok := <-changes:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("scheduler watch ended: %v", wr.Err())
			}
			if !schedRelevant(wr.Events) {
				continue
			}
		}
	}
}

// errSchedRead marks a round that could not read the state.
var errSchedRead = errors.New("scheduler cannot read etcd")

// schedRelevant reports whether a watch batch can change a round's answer
// (heartbeats alone cannot, until a lease expires: the tick sees that).
func schedRelevant(evs []*clientv3.Event) bool {
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		for _, p := range []string{prefixJobs, prefixAllocs, prefixTaskStatus, prefixNodeSched, prefixNodes, keyEnforcementSettings} {
			if strings.HasPrefix(k, p) {
				return true
			}
		}
	}
	return false
}

// readSchedState reads everything a round needs at one revision.
func (s *Server) readSchedState(ctx context.Context) (schedState, error) {
	resp, err := s.cfg.Etcd.Txn(ctx).Then(
		clientv3.OpGet(prefixNodes, clientv3.WithPrefix()),
		clientv3.OpGet(prefixNodeStatus, clientv3.WithPrefix()),
		clientv3.OpGet(prefixNodeSched, clientv3.WithPrefix()),
		clientv3.OpGet(prefixJobs, clientv3.WithPrefix()),
		clientv3.OpGet(prefixAllocs, clientv3.WithPrefix()),
		clientv3.OpGet(prefixTaskStatus, clientv3.WithPrefix()),
		clientv3.OpGet(keyEnforcementSettings),
	).Commit()
	if err != nil {
		return schedState{}, fmt.Errorf("read scheduling state: %w", err)
	}
	st := schedState{
		rev:    resp.Header.Revision,
		nodes:  map[string]NodeRecord{},
		status: map[string]NodeStatus{},
		sched:  map[string]NodeSched{},
		tasks:  map[string]TaskStatusRecord{},
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		n, err := decode[NodeRecord](kv.Value)
		if err != nil {
			s.cfg.Log.Warn("skipping unreadable node record", "key", string(kv.Key), "err", err)
			continue
		}
		st.nodes[n.Name] = n
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if v, err := decode[NodeStatus](kv.Value); err == nil {
			st.status[strings.TrimPrefix(string(kv.Key), prefixNodeStatus)] = v
		}
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		if v, err := decode[NodeSched](kv.Value); err == nil {
			st.sched[strings.TrimPrefix(string(kv.Key), prefixNodeSched)] = v
		}
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		rec, err := decode[JobRecord](kv.Value)
		if err != nil {
			s.cfg.Log.Warn("skipping unreadable job record", "key", string(kv.Key), "err", err)
			continue
		}
		je := jobEntry{rec: rec, modRev: kv.ModRevision}
		je.spec, je.err = jobspec.ParseCanonical([]byte(rec.Spec))
		st.jobs = append(st.jobs, je)
	}
	for _, kv := range resp.Responses[4].GetResponseRange().Kvs {
		rec, err := decode[AllocRecord](kv.Value)
		if err != nil {
			s.cfg.Log.Warn("skipping unreadable allocation", "key", string(kv.Key), "err", err)
			continue
		}
		st.allocs = append(st.allocs, allocEntry{rec: rec, modRev: kv.ModRevision})
	}
	for _, kv := range resp.Responses[5].GetResponseRange().Kvs {
		if v, err := decode[TaskStatusRecord](kv.Value); err == nil {
			k := strings.TrimPrefix(string(kv.Key), prefixTaskStatus)
			if _, id, ok := strings.Cut(k, "/"); ok {
				st.tasks[id] = v
			}
		}
	}
	st.settings = defaultEnforcementSettings()
	if kvs := resp.Responses[6].GetResponseRange().Kvs; len(kvs) > 0 {
		st.settings = decodeEnforcementSettings(kvs[0].Value)
	}
	// etcd returns keys sorted: jobs by NS/NAME; allocations by NODE/ID,
	// re-sorted by id so a round does not depend on node names.
	sortAllocs(st.allocs)
	return st, nil
}

func sortAllocs(a []allocEntry) {
	slices.SortFunc(a, func(x, y allocEntry) int { return cmp.Compare(x.rec.ID, y.rec.ID) })
}

// schedRound runs one round and commits what it decided.
func (s *Server) schedRound(ctx context.Context, fence clientv3.Cmp, leases map[string]nodeLease, observing time.Time) error {
	st, err := s.readSchedState(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errSchedRead, err)
	}
	now := s.cfg.Clock()
	r := planRound(st, now, observing, s.nodeLease(), s.downGrace(), newAllocID)
	s.noteLeases(ctx, st, r.lease, leases)
	if r.empty() {
		return nil
	}
	return s.commitRound(ctx, fence, st, r)
}

// noteLeases records a node.down event when a node's lease state gets
// worse than it was last seen by this leader.
func (s *Server) noteLeases(ctx context.Context, st schedState, now, last map[string]nodeLease) {
	for name, l := range now {
		prev, seen := last[name]
		last[name] = l
		if (l != leaseDown && l != leaseLost) || (seen && prev >= l) {
			continue
		}
		if ns, ok := st.sched[name]; !ok || !ns.Compute {
			continue
		}
		s.record(ctx, audit.Event{Kind: audit.KindNode, Action: audit.ActionNodeDown, Outcome: audit.Allow,
			Subject: s.selfID(), Resource: "node/-/" + name}.WithDetails(NodeDownDetails{
			Node: name, State: l.String(), LastSeen: st.status[name].LastSeen,
			Lease: s.nodeLease().String(), Grace: s.downGrace().String(),
		}))
		s.cfg.Log.Warn("node missed its lease", "node", name, "state", l.String(), "last_seen", st.status[name].LastSeen)
	}
	for name := range last {
		if _, ok := now[name]; !ok {
			delete(last, name)
		}
	}
}

// NodeDownDetails are a node.down event's details.
type NodeDownDetails struct {
	Node string `json:"node"`
	// State is "down" (no new tasks) or "lost" (its tasks re-placed).
	State    string    `json:"state"`
	LastSeen time.Time `json:"last_seen"`
	Lease    string    `json:"lease"`
	Grace    string    `json:"grace"`
}

// PlanDetails are a job.place event's details (lists capped at
// maxPlanDetails; the counts are exact).
type PlanDetails struct {
	Placed      []PlacedTask  `json:"placed,omitempty"`
	Removed     []RemovedTask `json:"removed,omitempty"`
	Unplaced    []RemovedTask `json:"unplaced,omitempty"`
	PlacedN     int           `json:"placed_count"`
	RemovedN    int           `json:"removed_count"`
	UnplacedN   int           `json:"unplaced_count"`
	FinishedN   int           `json:"finished_count,omitempty"`
	Revision    int64         `json:"revision"`
	Incomplete  bool          `json:"incomplete,omitempty"`
	CommitError string        `json:"commit_error,omitempty"`
}

// PlacedTask is one placement of a plan.
type PlacedTask struct {
	Task  string `json:"task"`
	Alloc string `json:"alloc"`
	Node  string `json:"node"`
}

// RemovedTask is an allocation removed (or a task left unplaced), and why.
type RemovedTask struct {
	Task   string `json:"task"`
	Alloc  string `json:"alloc,omitempty"`
	Node   string `json:"node,omitempty"`
	Reason string `json:"reason"`
}

// txnUnit is what must commit together: its compares and its operations,
// and what the job.place event says of it once committed.
type txnUnit struct {
	cmps    []clientv3.Cmp
	ops     []clientv3.Op
	nodes   []string // nodes whose allocation prefix this unit writes
	placed  *PlacedTask
	removed *RemovedTask
	done    bool // marks an allocation finished
}

// commitRound commits a round in transactions of at most maxTxnOps
// operations, each fenced by the leader key. A failed compare stops the
// commit: the next round starts from a fresh read.
func (s *Server) commitRound(ctx context.Context, fence clientv3.Cmp, st schedState, r round) error {
	var units []txnUnit
	for _, rm := range r.remove {
		a := rm.alloc
		units = append(units, txnUnit{
			cmps: []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(allocKey(a.rec.Node, a.rec.ID)), "=", a.modRev)},
			ops:  []clientv3.Op{clientv3.OpDelete(allocKey(a.rec.Node, a.rec.ID)), clientv3.OpDelete(taskStatusKey(a.rec.Node, a.rec.ID))},
			removed: &RemovedTask{Task: taskName(a.rec.Namespace, a.rec.Job, a.rec.Index), Alloc: a.rec.ID, Node: a.rec.Node,
				Reason: clip(rm.reason)},
		})
	}
	for _, a := range r.finished {
		done := a.rec
		done.Done = true
		units = append(units, txnUnit{
			cmps:  []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(allocKey(a.rec.Node, a.rec.ID)), "=", a.modRev)},
			ops:   []clientv3.Op{clientv3.OpPut(allocKey(a.rec.Node, a.rec.ID), mustJSON(done))},
			nodes: []string{a.rec.Node},
			done:  true,
		})
	}
	jobRev := map[string]int64{}
	for _, j := range st.jobs {
		jobRev[jobKey(j.rec.Namespace, j.rec.Name)] = j.modRev
	}
	for _, a := range r.place {
		jk := jobKey(a.Namespace, a.Job)
		units = append(units, txnUnit{
			cmps: []clientv3.Cmp{
				// The job is still the version this plan placed.
				clientv3.Compare(clientv3.ModRevision(jk), "=", jobRev[jk]),
				clientv3.Compare(clientv3.CreateRevision(allocKey(a.Node, a.ID)), "=", 0),
			},
			ops:    []clientv3.Op{clientv3.OpPut(allocKey(a.Node, a.ID), mustJSON(a))},
			nodes:  []string{a.Node},
			placed: &PlacedTask{Task: taskName(a.Namespace, a.Job, a.Index), Alloc: a.ID, Node: a.Node},
		})
	}
	// base[node] is the revision after which no one but this commit may
	// have written the node's allocation prefix.
	base := map[string]int64{}
	nodeCmps := func(nodes map[string]bool) []clientv3.Cmp {
		var out []clientv3.Cmp
		for n := range nodes {
			b, ok := base[n]
			if !ok {
				b = st.rev
			}
			out = append(out, clientv3.Compare(clientv3.ModRevision(allocPrefix(n)), "<", b+1).WithPrefix())
		}
		return out
	}
	// The event says what committed; what could not be placed is the
	// round's.
	details := PlanDetails{UnplacedN: len(r.plan.Unplaced)}
	for _, u := range r.plan.Unplaced {
		if len(details.Unplaced) == maxPlanDetails {
			break
		}
		details.Unplaced = append(details.Unplaced, RemovedTask{Task: u.Task.String(), Reason: clip(u.Reason)})
	}
	committed := 0
	for i := 0; i < len(units); {
		cmps := []clientv3.Cmp{fence}
		var ops []clientv3.Op
		touched := map[string]bool{}
		j := i
		for ; j < len(units) && len(ops)+len(units[j].ops) <= maxTxnOps && len(cmps)+len(touched)+len(units[j].cmps)+len(units[j].nodes) < maxTxnOps; j++ {
			cmps = append(cmps, units[j].cmps...)
			ops = append(ops, units[j].ops...)
			for _, n := range units[j].nodes {
				touched[n] = true
			}
		}
		cmps = append(cmps, nodeCmps(touched)...)
		resp, err := s.cfg.Etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil || !resp.Succeeded {
			if err == nil {
				err = fmt.Errorf("the state changed since it was read (optimistic concurrency): will re-plan")
			}
			details.Incomplete, details.CommitError = true, err.Error()
			break
		}
		for n := range touched {
			base[n] = resp.Header.Revision
		}
		for _, u := range units[i:j] {
			details.note(u)
		}
		committed += j - i
		details.Revision = resp.Header.Revision
		i = j
	}
	if committed > 0 {
		s.record(ctx, audit.Event{Kind: audit.KindJob, Action: audit.ActionJobPlace, Outcome: audit.Allow,
			Subject: s.selfID(), Resource: "job/-/*"}.WithDetails(details))
	}
	if details.Incomplete {
		return fmt.Errorf("commit plan: %s", details.CommitError)
	}
	return nil
}

// note adds a committed unit to the event.
func (d *PlanDetails) note(u txnUnit) {
	switch {
	case u.placed != nil:
		d.PlacedN++
		if len(d.Placed) < maxPlanDetails {
			d.Placed = append(d.Placed, *u.placed)
		}
	case u.removed != nil:
		d.RemovedN++
		if len(d.Removed) < maxPlanDetails {
			d.Removed = append(d.Removed, *u.removed)
		}
	case u.done:
		d.FinishedN++
	}
}

func taskName(ns, job string, index int) string { return fmt.Sprintf("%s/%s[%d]", ns, job, index) }

// newAllocID names an allocation: 16 random hex digits. Allocation ids are
// never reused, so a task's identity binding (its cgroup, its SVID's
// entry) cannot be inherited by a later allocation.
func newAllocID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("control: crypto/rand: %v", err)) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}
