package scheduler

import (
	"cmp"
	"math"
	"slices"
)

// fitShift is the fixed-point precision of fit keys: a node's free CPU and
// free memory each count in units of 2^-fitShift of the largest node's.
const fitShift = 20

// Place decides where pending tasks go on the cluster in snap: which node
// each one is placed on, with its ports, which allocs are preempted to make
// room, and why the rest cannot be placed. It is a pure function: the same
// snapshot and tasks, in any order, give the same plan. It does not modify
// its arguments. See doc.go for the rules.
func Place(snap Snapshot, pending []Task) Plan {
	s := newState(snap, pending)
	for _, i := range s.order {
		s.placeOne(&pending[i])
	}
	return s.plan
}

// state is one Place call's working copy of the cluster.
type state struct {
	nodes  []nodeState // by id: a node's id is its rank by name
	byName map[string]int32
	allocs []allocState // sorted by ID (then node and task), so input order does not matter

	// partitions group the usable nodes into classes by the labels a task
	// refers to, one partition per set of labels, made when the first task
	// with that set comes; every partition indexes every usable node.
	partitions map[string]*partition
	partList   []*partition // in order of creation
	refCPU     int64        // the largest usable capacity, the unit of fit keys
	refMem     int64

	jobs  map[JobRef]*jobState // only for jobs with spread or anti-affinity
	dups  map[TaskKey]bool     // task keys pending more than once
	order []int                // pending tasks in placement order

	// minVictim is the lowest (class, priority) of any alloc: a task that
	// is not above it has no victim anywhere. Evictions only raise the
	// true minimum, so it stays a safe lower bound.
	minVictimClass Class
	minVictimPrio  int
	haveAllocs     bool

	// gen counts successful preemptions: they free capacity, so a failure
	// remembered from before one no longer holds.
	gen      int
	lastFail struct {
		task   *Task
		gen    int
		reason string
	}

	lastPart struct { // the previous task's partition, for its job's next task
		task *Task
		p    *partition
	}

	plan Plan
}

type nodeState struct {
	n      *Node
	usable bool   // ready, schedulable, valid and uniquely named
	why    string // why not usable
	free   Resources
	// ports is the node's range (empty when invalid); portSet is made on
	// first use, freePorts counts the free ports in the range.
	ports     PortRange
	portsOK   bool
	portSet   *portSet
	freePorts int32
	// allocs are the live allocs on the node; victimsSorted says whether
	// they are in victim order yet (sorted on the first preemption
	// attempt that looks at the node).
	allocs        []int32
	victimsSorted bool
}

type allocState struct {
	a       *Alloc
	node    int32     // none when the node is not in the snapshot
	res     Resources // clamped to [0, MaxResource]
	owned   []int     // ports in the node's range this alloc holds
	size    int64     // fit key of res: "smallest resources" in victim order
	evicted bool
}

// jobState counts a job's live tasks (allocs not evicted, plus placements
// of this plan) per node and, for the labels asked about, per label value.
type jobState struct {
	onNode  map[int32]int
	byLabel map[string]map[string]int
}

func newState(snap Snapshot, pending []Task) *state {
	s := &state{byName: make(map[string]int32, len(snap.Nodes)), partitions: map[string]*partition{}}

	// Nodes by name; duplicated names are refused rather than resolved by
	// input order.
	order := make([]int, len(snap.Nodes))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(snap.Nodes[a].Name, snap.Nodes[b].Name) })
	s.nodes = make([]nodeState, len(order))
	for id, i := range order {
		n := &snap.Nodes[i]
		ns := &s.nodes[id]
		ns.n = n
		ns.free = n.Capacity
		ns.ports = n.Ports
		if ns.ports == (PortRange{}) {
			ns.ports = PortRange{Lo: DefaultPortLo, Hi: DefaultPortHi}
		}
		ns.portsOK = ns.ports.valid()
		if ns.portsOK {
			ns.freePorts = int32(ns.ports.Hi - ns.ports.Lo + 1)
		}
		dup := (id > 0 && snap.Nodes[order[id-1]].Name == n.Name) || (id+1 < len(order) && snap.Nodes[order[id+1]].Name == n.Name)
		switch {
		case dup:
			ns.why = "duplicate name"
		case !n.Ready:
			ns.why = "down"
		case !n.Schedulable:
			ns.why = "unschedulable"
		case !resourcesValid(n.Capacity):
			ns.why = "invalid capacity"
		default:
			ns.usable = true
		}
		if !dup {
			s.byName[n.Name] = int32(id)
		}
	}

	for i := range s.nodes {
		if ns := &s.nodes[i]; ns.usable {
			s.refCPU = max(s.refCPU, ns.n.Capacity.CPU)
			s.refMem = max(s.refMem, ns.n.Capacity.MemoryMiB)
		}
	}
	s.refCPU, s.refMem = max(s.refCPU, 1), max(s.refMem, 1)

	s.addAllocs(snap.Allocs)
	s.orderTasks(pending)
	return s
}

func (s *state) addAllocs(allocs []Alloc) {
	order := make([]int, len(allocs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		x, y := &allocs[a], &allocs[b]
		return cmp.Or(cmp.Compare(x.ID, y.ID), cmp.Compare(x.Node, y.Node), compareTaskKeys(x.Task, y.Task),
			cmp.Compare(x.Class, y.Class), cmp.Compare(x.Priority, y.Priority),
			cmp.Compare(x.Resources.CPU, y.Resources.CPU), cmp.Compare(x.Resources.MemoryMiB, y.Resources.MemoryMiB))
	})
	s.allocs = make([]allocState, len(allocs))
	for ai, i := range order {
		a := &allocs[i]
		as := &s.allocs[ai]
		as.a = a
		as.res = Resources{CPU: clampResource(a.Resources.CPU), MemoryMiB: clampResource(a.Resources.MemoryMiB)}
		as.size = s.fitKey(as.res.CPU, as.res.MemoryMiB)
		id, ok := s.byName[a.Node]
		if !ok {
			as.node = none // its node is gone: it holds nothing
			continue
		}
		as.node = id
		if !s.haveAllocs || a.Class < s.minVictimClass || (a.Class == s.minVictimClass && a.Priority < s.minVictimPrio) {
			s.minVictimClass, s.minVictimPrio = a.Class, a.Priority
		}
		s.haveAllocs = true
		ns := &s.nodes[id]
		ns.free.CPU -= as.res.CPU
		ns.free.MemoryMiB -= as.res.MemoryMiB
		ns.allocs = append(ns.allocs, int32(ai))
		if len(a.Ports) > 0 && ns.portsOK {
			ps := s.portSetOf(id)
			for _, p := range a.Ports {
				// A port outside the range does not use up the range; a
				// port two allocs claim is owned by the first in ID order,
				// so that freeing either one frees it once.
				if ps.take(p) {
					as.owned = append(as.owned, p)
				}
			}
			slices.Sort(as.owned)
			ns.freePorts = int32(ps.size() - ps.n)
		}
	}
}

func clampResource(v int64) int64 { return min(max(v, 0), MaxResource) }

func (s *state) portSetOf(id int32) *portSet {
	ns := &s.nodes[id]
	if ns.portSet == nil {
		ns.portSet = newPortSet(ns.ports)
	}
	return ns.portSet
}

func compareTaskKeys(a, b TaskKey) int {
	return cmp.Or(cmp.Compare(a.Job.Namespace, b.Job.Namespace), cmp.Compare(a.Job.Name, b.Job.Name), cmp.Compare(a.Index, b.Index))
}

// orderTasks sets the placement order: class, then priority, highest
// first, then job and index. It also finds task keys pending twice and the
// jobs that need counts for spread or anti-affinity.
func (s *state) orderTasks(pending []Task) {
	s.order = make([]int, len(pending))
	seen := make(map[TaskKey]bool, len(pending))
	s.jobs = map[JobRef]*jobState{}
	for i := range pending {
		t := &pending[i]
		s.order[i] = i
		if seen[t.Key] {
			if s.dups == nil {
				s.dups = map[TaskKey]bool{}
			}
			s.dups[t.Key] = true
		}
		seen[t.Key] = true
		if (t.Spread != "" || t.AntiAffinity != "") && s.jobs[t.Key.Job] == nil {
			s.jobs[t.Key.Job] = &jobState{onNode: map[int32]int{}}
		}
	}
	slices.SortFunc(s.order, func(a, b int) int {
		x, y := &pending[a], &pending[b]
		return cmp.Or(cmp.Compare(y.Class, x.Class), cmp.Compare(y.Priority, x.Priority), compareTaskKeys(x.Key, y.Key))
	})
	for i := range s.allocs {
		as := &s.allocs[i]
		if js := s.jobs[as.a.Task.Job]; js != nil && as.node != none {
			js.onNode[as.node]++
		}
	}
}

// fitKey is a node's rank for best fit: its free CPU and free memory, each
// in 2^-fitShift units of the largest usable node's capacity, summed.
// Lower is a tighter fit. Negative free counts as zero: such a node fits
// nothing, so its rank does not matter.
func (s *state) fitKey(cpu, mem int64) int64 {
	kc, km := s.fitParts(cpu, mem)
	return kc + km
}

// fitParts are the CPU and memory parts of a fit key.
func (s *state) fitParts(cpu, mem int64) (int64, int64) {
	return (max(cpu, 0) << fitShift) / s.refCPU, (max(mem, 0) << fitShift) / s.refMem
}

// indexNode puts usable node id into every partition's fit index with its
// current free resources; unindexNode takes it out, before they change.
func (s *state) indexNode(id int32) {
	for _, p := range s.partList {
		p.index(s, id)
	}
}

func (s *state) unindexNode(id int32) {
	for _, p := range s.partList {
		p.idx.del(&p.classes[p.classOf[id]].index, id)
	}
}

func (s *state) placeOne(t *Task) {
	if err := t.check(); err != nil {
		s.unplaced(t, "invalid task: "+err.Error())
		return
	}
	if s.dups[t.Key] {
		s.unplaced(t, "task "+t.Key.String()+" is pending more than once")
		return
	}
	if lf := &s.lastFail; lf.task != nil && lf.gen == s.gen && sameShape(lf.task, t) {
		// Nothing has freed capacity since an identical task of the same
		// job failed, so this one fails for the same reason; this keeps a
		// large unplaceable job from costing a full explanation per task.
		s.unplaced(t, lf.reason)
		return
	}
	js := s.jobs[t.Key.Job]
	p := s.partitionFor(t)
	if best := s.bestFit(p, t, js); best != none {
		s.assign(t, best, nil)
		return
	}
	preemptible := s.haveAllocs && (t.Class > s.minVictimClass || (t.Class == s.minVictimClass && t.Priority > s.minVictimPrio))
	if preemptible && s.preempt(p, t, js) {
		return
	}
	reason := s.explain(t, js, preemptible)
	s.lastFail.task, s.lastFail.gen, s.lastFail.reason = t, s.gen, reason
	s.unplaced(t, reason)
}

func (s *state) unplaced(t *Task, reason string) {
	s.plan.Unplaced = append(s.plan.Unplaced, Unplaced{Task: t.Key, Reason: reason})
}

// sameShape reports whether two tasks of the same job ask for the same
// thing, so that one's failure is the other's.
func sameShape(a, b *Task) bool {
	return a.Key.Job == b.Key.Job && a.Resources == b.Resources && a.Class == b.Class && a.Priority == b.Priority &&
		a.Spread == b.Spread && a.AntiAffinity == b.AntiAffinity && len(a.Ports) == len(b.Ports) &&
		slices.EqualFunc(a.Constraints, b.Constraints, func(x, y Constraint) bool {
			return x.Label == y.Label && x.Op == y.Op && slices.Equal(x.Values, y.Values)
		})
}

// bestFit returns the node the task goes on without preemption, or none.
func (s *state) bestFit(p *partition, t *Task, js *jobState) int32 {
	q := fitQuery{cpu: t.Resources.CPU, mem: t.Resources.MemoryMiB, ports: int32(len(t.Ports))}
	q.kcpu, q.kmem = s.fitParts(q.cpu, q.mem)
	if t.AntiAffinity == NodeLabel || t.Spread == NodeLabel {
		// Nodes already running a task of the job: excluded by
		// anti-affinity, or left for the fallback below by spread.
		q.skip = func(id int32) bool { return js.onNode[id] > 0 }
	}
	best, bestSpread := none, 0
	for ci := range p.classes {
		if !p.classAdmits(s, ci, t, js) {
			continue
		}
		spread := 0
		if t.Spread != "" && t.Spread != NodeLabel {
			if gi := p.keyIndex[t.Spread]; p.classes[ci].present[gi] {
				spread = s.jobCount(js, t.Spread, p.classes[ci].values[gi])
			} else {
				spread = math.MaxInt // unlabelled nodes come last
			}
		}
		n := p.idx.best(&p.classes[ci].index, &q)
		if n == none {
			continue
		}
		if best == none || spread < bestSpread || (spread == bestSpread && p.idx.less(n, p.idx.key[best], best)) {
			best, bestSpread = n, spread
		}
	}
	if best == none && t.Spread == NodeLabel && t.AntiAffinity != NodeLabel {
		// Every node without a task of the job is full: take the one with
		// the fewest tasks of the job, then the best fit.
		bestCount := 0
		for id, count := range js.onNode {
			ns := &s.nodes[id]
			if !ns.usable || !p.admits[p.classOf[id]] || !s.fits(id, t) {
				continue
			}
			if best == none || count < bestCount || (count == bestCount && p.idx.less(id, p.idx.key[best], best)) {
				best, bestCount = id, count
			}
		}
	}
	return best
}

func (s *state) fits(id int32, t *Task) bool {
	ns := &s.nodes[id]
	return ns.free.CPU >= t.Resources.CPU && ns.free.MemoryMiB >= t.Resources.MemoryMiB && int(ns.freePorts) >= len(t.Ports)
}

// assign places the task on node id, after evicting victims (which free
// capacity on that node).
func (s *state) assign(t *Task, id int32, victims []int32) {
	ns := &s.nodes[id]
	s.unindexNode(id)
	for _, v := range victims {
		s.evict(v, t.Key)
	}
	if !s.fits(id, t) {
		panic("scheduler: assigning a task to a node it does not fit") // a broken invariant, never an input error
	}
	ns.free.CPU -= t.Resources.CPU
	ns.free.MemoryMiB -= t.Resources.MemoryMiB
	p := Placement{Task: t.Key, Node: ns.n.Name}
	if len(t.Ports) > 0 {
		ps := s.portSetOf(id)
		p.Ports = make(map[string]int, len(t.Ports))
		for _, name := range t.Ports {
			port := ps.lowestFree()
			if port == 0 {
				panic("scheduler: free port count out of step with the port set")
			}
			p.Ports[name] = port
		}
		ns.freePorts -= int32(len(t.Ports))
	}
	s.indexNode(id)
	s.plan.Placements = append(s.plan.Placements, p)
	if js := s.jobs[t.Key.Job]; js != nil {
		js.add(s, id, 1)
	}
}

// evict removes alloc ai from its node (which the caller has taken out of
// the fit index) and records the preemption.
func (s *state) evict(ai int32, forTask TaskKey) {
	as := &s.allocs[ai]
	ns := &s.nodes[as.node]
	as.evicted = true
	ns.free.CPU += as.res.CPU
	ns.free.MemoryMiB += as.res.MemoryMiB
	for _, p := range as.owned {
		ns.portSet.release(p)
	}
	ns.freePorts += int32(len(as.owned))
	ns.allocs = slices.DeleteFunc(ns.allocs, func(x int32) bool { return x == ai })
	if js := s.jobs[as.a.Task.Job]; js != nil {
		js.add(s, as.node, -1)
	}
	s.plan.Preemptions = append(s.plan.Preemptions, Preemption{Alloc: as.a.ID, Task: as.a.Task, Node: ns.n.Name, For: forTask})
}

// jobCount is how many live tasks of the job run where label has value.
func (s *state) jobCount(js *jobState, label, value string) int {
	m, ok := js.byLabel[label]
	if !ok {
		m = map[string]int{}
		for id, n := range js.onNode {
			if v, ok := s.nodes[id].n.Label(label); ok {
				m[v] += n
			}
		}
		if js.byLabel == nil {
			js.byLabel = map[string]map[string]int{}
		}
		js.byLabel[label] = m
	}
	return m[value]
}

// add counts delta more tasks of the job on node id.
func (js *jobState) add(s *state, id int32, delta int) {
	js.onNode[id] += delta
	if js.onNode[id] == 0 {
		delete(js.onNode, id)
	}
	for label, m := range js.byLabel {
		if v, ok := s.nodes[id].n.Label(label); ok {
			m[v] += delta
		}
	}
}
