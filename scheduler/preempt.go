package scheduler

import (
	"cmp"
	"slices"
)

// victimCost ranks a node's victim set; lower is cheaper. Fields compare
// in order, then the node id (its rank by name). The most expensive victim
// is the highest (class, priority) pair: maxPrio is the highest priority
// among the victims of class maxClass, so a set whose only batch victim has
// priority 100 is cheaper than one whose batch victim has 900, whatever
// best-effort victims either also holds.
type victimCost struct {
	maxClass Class
	maxPrio  int
	count    int
	sumPrio  int
}

func (a victimCost) compare(b victimCost) int {
	return cmp.Or(cmp.Compare(a.maxClass, b.maxClass), cmp.Compare(a.maxPrio, b.maxPrio),
		cmp.Compare(a.count, b.count), cmp.Compare(a.sumPrio, b.sumPrio))
}

// compareVictims is victim order: lowest class, then lowest priority, then
// smallest resources, then ID (and, for a snapshot with a repeated ID, the
// rest of the alloc's identity).
func (s *state) compareVictims(x, y int32) int {
	a, b := &s.allocs[x], &s.allocs[y]
	return cmp.Or(cmp.Compare(a.a.Class, b.a.Class), cmp.Compare(a.a.Priority, b.a.Priority),
		cmp.Compare(a.size, b.size), cmp.Compare(x, y))
}

// eligible reports whether alloc ai may be evicted for t: a lower class, or
// the same class and a strictly lower priority.
func (s *state) eligible(ai int32, t *Task) bool {
	a := s.allocs[ai].a
	return a.Class < t.Class || (a.Class == t.Class && a.Priority < t.Priority)
}

// preempt tries to place t by evicting allocs, and reports whether it did.
// It considers every usable node of an admitted class (constraints and
// anti-affinity hold) whose capacity could hold the task, picks per node
// the cheapest victim set that makes room, and takes the node with the
// cheapest set. Placements of this plan are never victims (they are not
// allocs), and an evicted alloc is gone, so it is not chosen twice.
func (s *state) preempt(p *partition, t *Task, js *jobState) bool {
	best, bestVictims := none, []int32(nil)
	var bestCost victimCost
	var scratch []int32
	for ci := range p.classes {
		if !p.admits[ci] {
			continue
		}
		for _, id := range p.classes[ci].members {
			if t.AntiAffinity == NodeLabel && js.onNode[id] > 0 {
				continue
			}
			victims, cost, ok := s.victimsOn(id, t, scratch[:0])
			scratch = victims
			if !ok {
				continue
			}
			if best == none || cost.compare(bestCost) < 0 { // members ascend by id: ties keep the lower name
				best, bestCost = id, cost
				bestVictims = append(bestVictims[:0], victims...)
			}
		}
	}
	if best == none {
		return false
	}
	s.gen++
	s.assign(t, best, bestVictims)
	return true
}

// victimsOn returns the victims to evict on node id so that t fits, in
// victim order, with their cost; ok is false when evicting every eligible
// alloc would not make room. The set is the shortest prefix of the node's
// eligible allocs in victim order that makes room (which minimises the
// most expensive victim), less any earlier victim that turns out not to
// be needed once the later ones are in, tried from the most expensive
// down (which lowers count and the sum of priorities). It is not a
// guaranteed minimum count: that is a knapsack problem.
func (s *state) victimsOn(id int32, t *Task, buf []int32) ([]int32, victimCost, bool) {
	ns := &s.nodes[id]
	need := t.Resources
	needPorts := int32(len(t.Ports))
	portRoom := int32(0)
	if ns.portsOK {
		portRoom = int32(ns.ports.Hi - ns.ports.Lo + 1)
	}
	if ns.n.Capacity.CPU < need.CPU || ns.n.Capacity.MemoryMiB < need.MemoryMiB || portRoom < needPorts {
		return buf, victimCost{}, false
	}
	if len(ns.allocs) == 0 || !s.eligible(ns.allocs[0], t) && ns.victimsSorted {
		return buf, victimCost{}, false
	}
	if !ns.victimsSorted {
		slices.SortFunc(ns.allocs, s.compareVictims)
		ns.victimsSorted = true
	}
	free, freePorts := ns.free, ns.freePorts
	fits := func() bool { return free.CPU >= need.CPU && free.MemoryMiB >= need.MemoryMiB && freePorts >= needPorts }
	for _, ai := range ns.allocs {
		if fits() {
			break
		}
		if !s.eligible(ai, t) {
			break // victim order puts every eligible alloc first
		}
		as := &s.allocs[ai]
		free.CPU += as.res.CPU
		free.MemoryMiB += as.res.MemoryMiB
		freePorts += int32(len(as.owned))
		buf = append(buf, ai)
	}
	if !fits() || len(buf) == 0 {
		// Either no room even with every eligible victim gone, or the task
		// fits without any (then bestFit would have found the node: only
		// anti-affinity or spread skipped it, and they still apply).
		return buf, victimCost{}, false
	}
	// The last victim is needed (without it the task did not fit); try
	// dropping each earlier one, most expensive first.
	for i := len(buf) - 2; i >= 0; i-- {
		as := &s.allocs[buf[i]]
		if free.CPU-as.res.CPU >= need.CPU && free.MemoryMiB-as.res.MemoryMiB >= need.MemoryMiB && freePorts-int32(len(as.owned)) >= needPorts {
			free.CPU -= as.res.CPU
			free.MemoryMiB -= as.res.MemoryMiB
			freePorts -= int32(len(as.owned))
			buf = slices.Delete(buf, i, i+1)
		}
	}
	var c victimCost
	for _, ai := range buf {
		a := s.allocs[ai].a
		if c.count == 0 || a.Class > c.maxClass || (a.Class == c.maxClass && a.Priority > c.maxPrio) {
			c.maxClass, c.maxPrio = a.Class, a.Priority
		}
		c.count++
		c.sumPrio += a.Priority
	}
	return buf, c, true
}
