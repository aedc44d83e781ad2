package scheduler

import (
	"slices"
	"strings"
)

// partition groups the usable nodes into classes by their values of a set
// of labels: the labels one or more tasks refer to (constraints, spread and
// anti-affinity on a label). A task is placed through the partition of its
// own labels, so it looks at as many classes as there are combinations of
// the values of the labels it cares about, whatever other tasks refer to:
// a task with no constraint sees one class holding every usable node, and
// one job constrained on a per-node label does not make every other task
// look at one class per node. Every partition indexes every usable node,
// so a placement updates each partition (a few, in practice).
type partition struct {
	keys     []string
	keyIndex map[string]int
	classes  []nodeClass
	classOf  []int32 // by node id; none for a node that is not usable
	idx      *fitIndex
	admits   []bool // scratch: which classes the current task may use
}

// nodeClass is the usable nodes of a partition with the same values of its
// labels.
type nodeClass struct {
	values  []string // per partition key
	present []bool
	index   classIndex
	members []int32 // node ids, ascending
}

// partitionFor returns the partition of t's labels, making it on first use
// from the nodes' current free resources.
func (s *state) partitionFor(t *Task) *partition {
	if lp := &s.lastPart; lp.task != nil && sameShape(lp.task, t) {
		return lp.p // the job's previous task had the same labels
	}
	var keys []string
	for _, c := range t.Constraints {
		keys = append(keys, c.Label)
	}
	for _, l := range []string{t.Spread, t.AntiAffinity} {
		if l != "" && l != NodeLabel {
			keys = append(keys, l)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	sig := strings.Join(keys, "\x00")
	p := s.partitions[sig]
	if p == nil {
		p = s.newPartition(keys)
		s.partitions[sig] = p
		s.partList = append(s.partList, p)
	}
	s.lastPart.task, s.lastPart.p = t, p
	return p
}

func (s *state) newPartition(keys []string) *partition {
	p := &partition{keys: keys, keyIndex: make(map[string]int, len(keys)), classOf: make([]int32, len(s.nodes)), idx: newFitIndex(len(s.nodes))}
	for i, k := range keys {
		p.keyIndex[k] = i
	}
	bySig := map[string]int32{}
	var sig strings.Builder
	for id := range s.nodes {
		ns := &s.nodes[id]
		p.classOf[id] = none
		if !ns.usable {
			continue
		}
		sig.Reset()
		for _, k := range keys {
			if v, ok := ns.n.Label(k); ok {
				sig.WriteByte('+')
				sig.WriteString(v)
			} else {
				sig.WriteByte('-')
			}
			sig.WriteByte(0)
		}
		ci, ok := bySig[sig.String()]
		if !ok {
			ci = int32(len(p.classes))
			bySig[sig.String()] = ci
			c := nodeClass{index: newClassIndex(), values: make([]string, len(keys)), present: make([]bool, len(keys))}
			for gi, k := range keys {
				c.values[gi], c.present[gi] = ns.n.Label(k)
			}
			p.classes = append(p.classes, c)
		}
		p.classOf[id] = ci
		p.classes[ci].members = append(p.classes[ci].members, int32(id))
		p.index(s, int32(id))
	}
	p.admits = make([]bool, len(p.classes))
	return p
}

// index puts usable node id into the partition's fit index with its
// current free resources.
func (p *partition) index(s *state, id int32) {
	ns := &s.nodes[id]
	kc, km := s.fitParts(ns.free.CPU, ns.free.MemoryMiB)
	p.idx.add(&p.classes[p.classOf[id]].index, id, kc, km, ns.free.CPU, ns.free.MemoryMiB, ns.freePorts)
}

// classAdmits reports whether the task may go on the nodes of class ci:
// its constraints hold and label anti-affinity leaves the class's value
// free. It sets p.admits[ci] for preempt.
func (p *partition) classAdmits(s *state, ci int, t *Task, js *jobState) bool {
	c := &p.classes[ci]
	ok := true
	for _, k := range t.Constraints {
		gi := p.keyIndex[k.Label]
		if !k.holds(c.values[gi], c.present[gi]) {
			ok = false
			break
		}
	}
	if ok && t.AntiAffinity != "" && t.AntiAffinity != NodeLabel {
		gi := p.keyIndex[t.AntiAffinity]
		ok = c.present[gi] && s.jobCount(js, t.AntiAffinity, c.values[gi]) == 0
	}
	p.admits[ci] = ok
	return ok
}
