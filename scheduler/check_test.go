package scheduler_test

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/unumos/unum/scheduler"
)

// checkPlan checks a plan against the rules Place promises, by brute
// force over the snapshot: every pending task is placed or unplaced
// exactly once; placements go only to ready, schedulable nodes whose labels
// satisfy the task's constraints; no node that receives a task ends over
// its capacity; ports are in the node's range and unique on the node;
// anti-affinity holds; a task key pending twice is not placed; every preemption evicts an existing, eligible alloc
// of the node its task went to, and no alloc twice. Snapshots given to it
// have unique node names and alloc IDs.
func checkPlan(snap scheduler.Snapshot, pending []scheduler.Task, plan scheduler.Plan) error {
	nodes := map[string]*scheduler.Node{}
	for i := range snap.Nodes {
		nodes[snap.Nodes[i].Name] = &snap.Nodes[i]
	}
	allocs := map[string]*scheduler.Alloc{}
	for i := range snap.Allocs {
		allocs[snap.Allocs[i].ID] = &snap.Allocs[i]
	}
	tasks := map[scheduler.TaskKey]*scheduler.Task{}
	pendingCount := map[scheduler.TaskKey]int{}
	for i := range pending {
		tasks[pending[i].Key] = &pending[i]
		pendingCount[pending[i].Key]++
	}

	seen := map[scheduler.TaskKey]int{}
	placedOn := map[scheduler.TaskKey]string{}
	for _, p := range plan.Placements {
		seen[p.Task]++
		placedOn[p.Task] = p.Node
	}
	for _, u := range plan.Unplaced {
		seen[u.Task]++
		if u.Reason == "" {
			return fmt.Errorf("%s unplaced without a reason", u.Task)
		}
	}
	for k, n := range pendingCount {
		if seen[k] != n {
			return fmt.Errorf("%s appears %d times in the plan, pending %d times", k, seen[k], n)
		}
		if n > 1 && placedOn[k] != "" {
			return fmt.Errorf("%s is pending %d times and was placed", k, n)
		}
	}
	if len(seen) != len(tasks) {
		return fmt.Errorf("the plan names %d tasks, %d are pending", len(seen), len(tasks))
	}

	preempted := map[string]bool{}
	for _, pr := range plan.Preemptions {
		a, ok := allocs[pr.Alloc]
		switch {
		case !ok:
			return fmt.Errorf("preemption of unknown alloc %q", pr.Alloc)
		case preempted[pr.Alloc]:
			return fmt.Errorf("alloc %q preempted twice", pr.Alloc)
		case a.Node != pr.Node || a.Task != pr.Task:
			return fmt.Errorf("preemption %+v does not match alloc %+v", pr, *a)
		case placedOn[pr.For] != pr.Node:
			return fmt.Errorf("alloc %q preempted on %s for %s, which went to %q", pr.Alloc, pr.Node, pr.For, placedOn[pr.For])
		}
		t := tasks[pr.For]
		if !(a.Class < t.Class || a.Class == t.Class && a.Priority < t.Priority) {
			return fmt.Errorf("alloc %q (%s/%d) is not below %s (%s/%d)", a.ID, a.Class, a.Priority, t.Key, t.Class, t.Priority)
		}
		preempted[pr.Alloc] = true
	}

	// The final state of every node: live allocs and placements.
	type use struct {
		res   scheduler.Resources
		ports map[int]bool
		jobs  []scheduler.JobRef
		gets  bool // receives a placement
	}
	uses := map[string]*use{}
	useOf := func(n string) *use {
		if uses[n] == nil {
			uses[n] = &use{ports: map[int]bool{}}
		}
		return uses[n]
	}
	for _, a := range snap.Allocs {
		if preempted[a.ID] || nodes[a.Node] == nil {
			continue
		}
		u := useOf(a.Node)
		u.res.CPU += max(a.Resources.CPU, 0)
		u.res.MemoryMiB += max(a.Resources.MemoryMiB, 0)
		for _, p := range a.Ports {
			u.ports[p] = true
		}
		u.jobs = append(u.jobs, a.Task.Job)
	}
	for _, p := range plan.Placements {
		t := tasks[p.Task]
		n := nodes[p.Node]
		switch {
		case t == nil:
			return fmt.Errorf("placement of a task that is not pending: %s", p.Task)
		case n == nil:
			return fmt.Errorf("%s placed on unknown node %q", p.Task, p.Node)
		case !n.Ready || !n.Schedulable:
			return fmt.Errorf("%s placed on %s, which is not ready and schedulable", p.Task, p.Node)
		}
		for _, c := range t.Constraints {
			if !constraintHolds(c, n.Name, n.Labels) {
				return fmt.Errorf("%s placed on %s violates %s (labels %v)", p.Task, p.Node, c, n.Labels)
			}
		}
		u := useOf(p.Node)
		u.gets = true
		u.res.CPU += t.Resources.CPU
		u.res.MemoryMiB += t.Resources.MemoryMiB
		u.jobs = append(u.jobs, t.Key.Job)
		if len(p.Ports) != len(t.Ports) {
			return fmt.Errorf("%s got ports %v for names %v", p.Task, p.Ports, t.Ports)
		}
		r := portRange(n)
		for _, name := range t.Ports {
			port, ok := p.Ports[name]
			switch {
			case !ok:
				return fmt.Errorf("%s got no port %q", p.Task, name)
			case port < r.Lo || port > r.Hi:
				return fmt.Errorf("%s got port %d outside %s's range %v", p.Task, port, p.Node, r)
			case u.ports[port]:
				return fmt.Errorf("%s got port %d, already in use on %s", p.Task, port, p.Node)
			}
			u.ports[port] = true
		}
	}
	for name, u := range uses {
		n := nodes[name]
		if u.gets && (u.res.CPU > n.Capacity.CPU || u.res.MemoryMiB > n.Capacity.MemoryMiB) {
			return fmt.Errorf("node %s overcommitted: uses %+v of %+v", name, u.res, n.Capacity)
		}
	}

	// Anti-affinity: no other live task of the job shares the placed
	// task's value of the label.
	for _, p := range plan.Placements {
		t := tasks[p.Task]
		if t.AntiAffinity == "" {
			continue
		}
		value := func(node string) (string, bool) {
			if t.AntiAffinity == scheduler.NodeLabel {
				return node, true
			}
			v, ok := nodes[node].Labels[t.AntiAffinity]
			return v, ok
		}
		mine, ok := value(p.Node)
		if !ok {
			return fmt.Errorf("%s placed on %s, which lacks anti-affinity label %s", p.Task, p.Node, t.AntiAffinity)
		}
		count := 0
		for name, u := range uses {
			if v, ok := value(name); ok && v == mine {
				for _, j := range u.jobs {
					if j == t.Key.Job {
						count++
					}
				}
			}
		}
		if count != 1 {
			return fmt.Errorf("%s on %s: %d tasks of the job share %s=%s", p.Task, p.Node, count, t.AntiAffinity, mine)
		}
	}
	return nil
}

func constraintHolds(c scheduler.Constraint, name string, labels map[string]string) bool {
	v, ok := labels[c.Label]
	if c.Label == scheduler.NodeLabel {
		v, ok = name, true
	}
	switch c.Op {
	case scheduler.OpEqual:
		return ok && v == c.Values[0]
	case scheduler.OpNotEqual:
		return !ok || v != c.Values[0]
	case scheduler.OpIn:
		return ok && slices.Contains(c.Values, v)
	case scheduler.OpExists:
		return ok
	}
	return false
}

func portRange(n *scheduler.Node) scheduler.PortRange {
	if n.Ports == (scheduler.PortRange{}) {
		return scheduler.PortRange{Lo: scheduler.DefaultPortLo, Hi: scheduler.DefaultPortHi}
	}
	return n.Ports
}

// referencePlace is a naive Place without preemption: for each task in
// placement order, every node is scanned and scored. It is what the
// indexed Place must agree with whenever no alloc is preemptible. It
// assumes valid input: unique node names and task keys, valid tasks and
// port ranges, allocs within their node's range.
func referencePlace(snap scheduler.Snapshot, pending []scheduler.Task) scheduler.Plan {
	type nodeUse struct {
		n     *scheduler.Node
		free  scheduler.Resources
		ports map[int]bool
	}
	var refCPU, refMem int64 = 1, 1
	usable := func(n *scheduler.Node) bool { return n.Ready && n.Schedulable }
	for i := range snap.Nodes {
		if n := &snap.Nodes[i]; usable(n) {
			refCPU, refMem = max(refCPU, n.Capacity.CPU), max(refMem, n.Capacity.MemoryMiB)
		}
	}
	key := func(r scheduler.Resources) int64 {
		return (max(r.CPU, 0)<<20)/refCPU + (max(r.MemoryMiB, 0)<<20)/refMem
	}
	nodes := map[string]*nodeUse{}
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		nodes[n.Name] = &nodeUse{n: n, free: n.Capacity, ports: map[int]bool{}}
	}
	jobOn := map[scheduler.JobRef]map[string]int{}
	on := func(j scheduler.JobRef) map[string]int {
		if jobOn[j] == nil {
			jobOn[j] = map[string]int{}
		}
		return jobOn[j]
	}
	for _, a := range snap.Allocs {
		u := nodes[a.Node]
		if u == nil {
			continue
		}
		u.free.CPU -= max(a.Resources.CPU, 0)
		u.free.MemoryMiB -= max(a.Resources.MemoryMiB, 0)
		for _, p := range a.Ports {
			u.ports[p] = true
		}
		on(a.Task.Job)[a.Node]++
	}
	count := func(j scheduler.JobRef, label, value string) int {
		c := 0
		for name, k := range on(j) {
			if label == scheduler.NodeLabel && name == value {
				c += k
			} else if v, ok := nodes[name].n.Labels[label]; label != scheduler.NodeLabel && ok && v == value {
				c += k
			}
		}
		return c
	}
	order := make([]*scheduler.Task, len(pending))
	for i := range pending {
		order[i] = &pending[i]
	}
	slices.SortFunc(order, func(a, b *scheduler.Task) int {
		return cmp.Or(cmp.Compare(b.Class, a.Class), cmp.Compare(b.Priority, a.Priority),
			cmp.Compare(a.Key.Job.Namespace, b.Key.Job.Namespace), cmp.Compare(a.Key.Job.Name, b.Key.Job.Name), cmp.Compare(a.Key.Index, b.Key.Index))
	})
	names := make([]string, 0, len(nodes))
	for name := range nodes {
		names = append(names, name)
	}
	slices.Sort(names)

	var plan scheduler.Plan
	for _, t := range order {
		var best *nodeUse
		var bestSpread int
		for _, name := range names {
			u := nodes[name]
			if !usable(u.n) || u.free.CPU < t.Resources.CPU || u.free.MemoryMiB < t.Resources.MemoryMiB {
				continue
			}
			r := portRange(u.n)
			freePorts := r.Hi - r.Lo + 1
			for p := range u.ports {
				if p >= r.Lo && p <= r.Hi {
					freePorts--
				}
			}
			if freePorts < len(t.Ports) {
				continue
			}
			ok := true
			for _, c := range t.Constraints {
				ok = ok && constraintHolds(c, u.n.Name, u.n.Labels)
			}
			if !ok {
				continue
			}
			if l := t.AntiAffinity; l != "" {
				v, has := name, true
				if l != scheduler.NodeLabel {
					v, has = u.n.Labels[l]
				}
				if !has || count(t.Key.Job, l, v) > 0 {
					continue
				}
			}
			spread := 0
			if l := t.Spread; l != "" {
				v, has := name, true
				if l != scheduler.NodeLabel {
					v, has = u.n.Labels[l]
				}
				spread = math.MaxInt
				if has {
					spread = count(t.Key.Job, l, v)
				}
			}
			if best == nil || spread < bestSpread || spread == bestSpread && key(u.free) < key(best.free) {
				best, bestSpread = u, spread
			}
		}
		if best == nil {
			plan.Unplaced = append(plan.Unplaced, scheduler.Unplaced{Task: t.Key})
			continue
		}
		p := scheduler.Placement{Task: t.Key, Node: best.n.Name}
		if len(t.Ports) > 0 {
			p.Ports = map[string]int{}
			r := portRange(best.n)
			port := r.Lo
			for _, name := range t.Ports {
				for best.ports[port] {
					port++
				}
				p.Ports[name] = port
				best.ports[port] = true
			}
		}
		best.free.CPU -= t.Resources.CPU
		best.free.MemoryMiB -= t.Resources.MemoryMiB
		on(t.Key.Job)[best.n.Name]++
		plan.Placements = append(plan.Placements, p)
	}
	return plan
}
