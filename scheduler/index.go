package scheduler

import "math/bits"

// fitIndex holds the usable nodes of every node class. A class's nodes are
// split into fitRows rows by free CPU (row r holds the nodes whose CPU part
// of the fit key is in [r, r+1) 64ths of the largest node's CPU), and each
// row is a treap ordered by (fit key, node id): an in-order walk visits a
// row's nodes from the least free capacity to the most. Every treap node
// carries the largest free CPU, memory and port count of its subtree, so a
// search skips whole subtrees that cannot fit the task.
//
// Why rows: in one tree ordered by the summed key, nodes with much free
// memory but little free CPU sit among nodes that fit, the subtree maxima
// stop pruning, and a search degenerates towards a scan. Within one row the
// CPU part varies by at most a 64th, so a node of the row fits in CPU when
// the row is above the task's and its key order is nearly its memory
// order: a search starts at the smallest key that could fit in memory and
// only the nodes within a 64th above that need to be looked at one by one.
// Rows are visited from the task's own upwards; the first fit of each row
// is a candidate, and rows stop once their smallest possible key exceeds
// the best candidate's.
//
// A node sits in at most one treap, so the per-node fields live in flat
// slices indexed by node id (the node's rank by name) rather than in
// separately allocated tree nodes. Treap priorities are a hash of the node
// id, so the shape of every tree, and every search, is a function of the
// input alone.
type fitIndex struct {
	left, right []int32
	prio        []uint64
	key         []int64 // the fit key the node was inserted with
	cpu, mem    []int64 // free resources
	ports       []int32 // free ports
	maxCPU      []int64 // subtree maxima
	maxMem      []int64
	maxPorts    []int32
	row         []int8 // the row the node is in
}

// fitRows is the number of free-CPU rows per class (one bit each in
// classIndex.mask); rowShift turns the CPU part of a fit key into a row.
const (
	fitRows  = 64
	rowShift = fitShift - 6
)

// classIndex is one class's rows: the root of each row's treap, and which
// rows are not empty.
type classIndex struct {
	rows [fitRows]int32
	mask uint64
}

func newClassIndex() classIndex {
	var c classIndex
	for i := range c.rows {
		c.rows[i] = none
	}
	return c
}

const none int32 = -1

func newFitIndex(n int) *fitIndex {
	x := &fitIndex{
		left: make([]int32, n), right: make([]int32, n), prio: make([]uint64, n),
		key: make([]int64, n), cpu: make([]int64, n), mem: make([]int64, n), ports: make([]int32, n),
		maxCPU: make([]int64, n), maxMem: make([]int64, n), maxPorts: make([]int32, n), row: make([]int8, n),
	}
	for i := range n {
		x.prio[i] = splitmix64(uint64(i))
	}
	return x
}

// splitmix64 is a fixed bijective mixer (Steele, Lea and Flood), used as
// the deterministic stand-in for a random treap priority.
func splitmix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// less orders nodes by fit key, then id.
func (x *fitIndex) less(a int32, key int64, b int32) bool {
	ka := x.key[a]
	return ka < key || (ka == key && a < b)
}

func (x *fitIndex) pull(i int32) {
	c, m, p := x.cpu[i], x.mem[i], x.ports[i]
	if l := x.left[i]; l != none {
		c, m, p = max(c, x.maxCPU[l]), max(m, x.maxMem[l]), max(p, x.maxPorts[l])
	}
	if r := x.right[i]; r != none {
		c, m, p = max(c, x.maxCPU[r]), max(m, x.maxMem[r]), max(p, x.maxPorts[r])
	}
	x.maxCPU[i], x.maxMem[i], x.maxPorts[i] = c, m, p
}

// split divides tree t into the nodes ordered before (key, id) and the rest.
func (x *fitIndex) split(t int32, key int64, id int32) (int32, int32) {
	if t == none {
		return none, none
	}
	if x.less(t, key, id) {
		l, r := x.split(x.right[t], key, id)
		x.right[t] = l
		x.pull(t)
		return t, r
	}
	l, r := x.split(x.left[t], key, id)
	x.left[t] = r
	x.pull(t)
	return l, t
}

// merge joins a and b, every node of a ordered before every node of b.
func (x *fitIndex) merge(a, b int32) int32 {
	switch {
	case a == none:
		return b
	case b == none:
		return a
	case x.prio[a] > x.prio[b]:
		x.right[a] = x.merge(x.right[a], b)
		x.pull(a)
		return a
	default:
		x.left[b] = x.merge(a, x.left[b])
		x.pull(b)
		return b
	}
}

// insert adds node i, with its free resources and fit key, to tree t and
// returns the new root.
func (x *fitIndex) insert(t, i int32, key int64, cpu, mem int64, ports int32) int32 {
	x.key[i], x.cpu[i], x.mem[i], x.ports[i] = key, cpu, mem, ports
	x.left[i], x.right[i] = none, none
	x.pull(i)
	l, r := x.split(t, key, i)
	return x.merge(x.merge(l, i), r)
}

// remove takes node i out of tree t and returns the new root. i must be in t.
func (x *fitIndex) remove(t, i int32) int32 {
	if t == i {
		return x.merge(x.left[i], x.right[i])
	}
	if x.less(i, x.key[t], t) {
		x.left[t] = x.remove(x.left[t], i)
	} else {
		x.right[t] = x.remove(x.right[t], i)
	}
	x.pull(t)
	return t
}

// add puts node i, with its free resources and the CPU and memory parts of
// its fit key, into class c.
func (x *fitIndex) add(c *classIndex, i int32, kcpu, kmem, cpu, mem int64, ports int32) {
	r := min(kcpu>>rowShift, fitRows-1)
	x.row[i] = int8(r)
	c.rows[r] = x.insert(c.rows[r], i, kcpu+kmem, cpu, mem, ports)
	c.mask |= 1 << r
}

// del takes node i out of class c.
func (x *fitIndex) del(c *classIndex, i int32) {
	r := x.row[i]
	c.rows[r] = x.remove(c.rows[r], i)
	if c.rows[r] == none {
		c.mask &^= 1 << r
	}
}

// fitQuery is one search: the demand, the CPU and memory parts of the
// demand's fit key (no node that fits has smaller ones), and the nodes to
// pass over (anti-affinity on NodeLabel). minKey is set per row.
type fitQuery struct {
	cpu, mem   int64
	ports      int32
	kcpu, kmem int64
	minKey     int64
	skip       func(id int32) bool // nil: none
}

// best returns class c's best fit for q, the node with the smallest (fit
// key, id) that fits, or none.
func (x *fitIndex) best(c *classIndex, q *fitQuery) int32 {
	first := min(q.kcpu>>rowShift, fitRows-1)
	mask := c.mask &^ (1<<first - 1)
	best := none
	for mask != 0 {
		r := int64(bits.TrailingZeros64(mask))
		mask &= mask - 1
		// A node in row r that fits has a CPU part of at least r 64ths and
		// a memory part of at least the demand's.
		q.minKey = max(r<<rowShift, q.kcpu) + q.kmem
		if best != none && q.minKey > x.key[best] {
			break // this row and every later one hold only worse fits
		}
		if n := x.find(c.rows[r], q); n != none && (best == none || x.less(n, x.key[best], best)) {
			best = n
		}
	}
	return best
}

// find returns the first node of tree t in (fit key, id) order that fits q,
// or none. A subtree is skipped when its maxima show that no node in it
// fits, or when its keys are all below q.minKey.
func (x *fitIndex) find(t int32, q *fitQuery) int32 {
	for t != none {
		if x.maxCPU[t] < q.cpu || x.maxMem[t] < q.mem || x.maxPorts[t] < q.ports {
			return none
		}
		if x.key[t] >= q.minKey {
			if r := x.find(x.left[t], q); r != none {
				return r
			}
		}
		if x.cpu[t] >= q.cpu && x.mem[t] >= q.mem && x.ports[t] >= q.ports && (q.skip == nil || !q.skip(t)) {
			return t
		}
		t = x.right[t]
	}
	return none
}
