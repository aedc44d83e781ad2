// Package schedbench is the placement benchmark's workload: synthetic
// clusters and task sets for scheduler.Place, and the packing figures a
// plan is judged by. scheduler's `go test -bench` benchmarks and `unum
// bench sched` both build on it, so the two measure the same thing.
//
// Invariants:
//   - Everything is deterministic: the same sizes and seed give the same
//     snapshot and tasks (a PCG generator seeded by the caller; no clock).
//   - The uniform workload's task size divides its node capacity in both
//     dimensions, so the lower bound ceil(total demand / node capacity) is
//     attainable and the 1.05x packing target is meaningful.
//
// Imported by scheduler's tests and internal/bench only.
package schedbench

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/unumos/unum/scheduler"
)

// Issue-sized workload: the scheduler issue's targets are for 10,000 nodes
// and 100,000 tasks.
const (
	DefaultNodes = 10_000
	DefaultTasks = 100_000
)

// The uniform workload's sizes: 16 tasks fill a node exactly in both CPU
// and memory.
const (
	UniformNodeCPU = 16_000
	UniformNodeMiB = 65_536
	UniformTaskCPU = 1_000
	UniformTaskMiB = 4_096
)

// Uniform is nodes identical, ready, unlabelled nodes and tasks identical
// tasks (jobs of 10, prod, priority 500, no constraints).
func Uniform(nodes, tasks int) (scheduler.Snapshot, []scheduler.Task) {
	snap := scheduler.Snapshot{Nodes: make([]scheduler.Node, nodes)}
	for i := range snap.Nodes {
		snap.Nodes[i] = scheduler.Node{Name: nodeName(i), Capacity: scheduler.Resources{CPU: UniformNodeCPU, MemoryMiB: UniformNodeMiB}, Ready: true, Schedulable: true}
	}
	ts := make([]scheduler.Task, tasks)
	for i := range ts {
		ts[i] = scheduler.Task{
			Key:       scheduler.TaskKey{Job: scheduler.JobRef{Namespace: "bench", Name: fmt.Sprintf("uniform-%05d", i/10)}, Index: i % 10},
			Resources: scheduler.Resources{CPU: UniformTaskCPU, MemoryMiB: UniformTaskMiB}, Priority: 500, Class: scheduler.Prod,
		}
	}
	return snap, ts
}

// Mixed is a heterogeneous cluster and workload: 70% of nodes with 16
// cores and 64 GiB, 30% with 32 cores and 128 GiB, labelled with one of 4
// zones and a disk type (ssd or hdd), 1% down and 1% draining; tasks in
// jobs of 1 to 50 of varied sizes (0.1 to 4 cores, 128 MiB to 8 GiB), all
// three classes and priorities 0..1000, where 15% of jobs ask for a zone,
// 10% for ssd, 10% spread across zones, 5% have anti-affinity per node and
// 20% ask for one or two ports. Total demand is about 60% of the cluster's
// CPU, so nearly every task is placed.
func Mixed(nodes, tasks int, seed uint64) (scheduler.Snapshot, []scheduler.Task) {
	r := rand.New(rand.NewPCG(seed, 0x5c4ed))
	zones := []string{"z0", "z1", "z2", "z3"}
	disks := []string{"ssd", "hdd"}
	snap := scheduler.Snapshot{Nodes: make([]scheduler.Node, nodes)}
	for i := range snap.Nodes {
		capacity := scheduler.Resources{CPU: 16_000, MemoryMiB: 65_536}
		if r.IntN(10) < 3 {
			capacity = scheduler.Resources{CPU: 32_000, MemoryMiB: 131_072}
		}
		n := scheduler.Node{
			Name:     nodeName(i),
			Labels:   map[string]string{"zone": zones[i%len(zones)], "disk": disks[r.IntN(len(disks))]},
			Capacity: capacity, Ready: true, Schedulable: true,
		}
		switch r.IntN(100) {
		case 0:
			n.Ready = false
		case 1:
			n.Schedulable = false
		}
		snap.Nodes[i] = n
	}
	cpus := []int64{100, 250, 500, 1000, 2000, 4000}
	mems := []int64{128, 256, 512, 1024, 2048, 4096, 8192}
	classes := []scheduler.Class{scheduler.Prod, scheduler.Prod, scheduler.Prod, scheduler.Batch, scheduler.Batch, scheduler.Batch, scheduler.Batch, scheduler.Batch, scheduler.BestEffort, scheduler.BestEffort}
	ts := make([]scheduler.Task, 0, tasks)
	for job := 0; len(ts) < tasks; job++ {
		proto := scheduler.Task{
			Key:       scheduler.TaskKey{Job: scheduler.JobRef{Namespace: fmt.Sprintf("ns%d", job%7), Name: fmt.Sprintf("job-%05d", job)}},
			Resources: scheduler.Resources{CPU: cpus[r.IntN(len(cpus))], MemoryMiB: mems[r.IntN(len(mems))]},
			Priority:  r.IntN(scheduler.MaxPriority + 1),
			Class:     classes[r.IntN(len(classes))],
		}
		switch k := r.IntN(100); {
		case k < 15:
			proto.Constraints = []scheduler.Constraint{{Label: "zone", Op: scheduler.OpEqual, Values: []string{zones[r.IntN(len(zones))]}}}
		case k < 25:
			proto.Constraints = []scheduler.Constraint{{Label: "disk", Op: scheduler.OpIn, Values: []string{"ssd"}}}
		case k < 35:
			proto.Spread = "zone"
		case k < 40:
			proto.AntiAffinity = scheduler.NodeLabel
		}
		switch k := r.IntN(10); {
		case k == 0:
			proto.Ports = []string{"http", "admin"}
		case k == 1:
			proto.Ports = []string{"http"}
		}
		count := 1 + r.IntN(50)
		for i := 0; i < count && len(ts) < tasks; i++ {
			t := proto
			t.Key.Index = i
			ts = append(ts, t)
		}
	}
	return snap, ts
}

func nodeName(i int) string { return fmt.Sprintf("node-%05d", i) }

// NodesUsed counts the distinct nodes a plan places tasks on.
func NodesUsed(p scheduler.Plan) int {
	used := map[string]bool{}
	for _, pl := range p.Placements {
		used[pl.Node] = true
	}
	return len(used)
}

// LowerBound is the fewest usable nodes of snap whose capacities could
// hold the placed tasks' total demand in both CPU and memory, ignoring
// fragmentation: for identical nodes, ceil(total demand / node capacity)
// in the tighter dimension. The biggest nodes are counted first.
func LowerBound(snap scheduler.Snapshot, tasks []scheduler.Task, p scheduler.Plan) int {
	placed := make(map[scheduler.TaskKey]bool, len(p.Placements))
	for _, pl := range p.Placements {
		placed[pl.Task] = true
	}
	var need scheduler.Resources
	for _, t := range tasks {
		if placed[t.Key] {
			need.CPU += t.Resources.CPU
			need.MemoryMiB += t.Resources.MemoryMiB
		}
	}
	var caps []scheduler.Resources
	for _, n := range snap.Nodes {
		if n.Ready && n.Schedulable {
			caps = append(caps, n.Capacity)
		}
	}
	// Largest first by the share of the demand a node covers in the tighter
	// dimension; for identical nodes the order does not matter.
	slices.SortFunc(caps, func(a, b scheduler.Resources) int {
		return -cmpShare(a, b, need)
	})
	var have scheduler.Resources
	for i, c := range caps {
		if have.CPU >= need.CPU && have.MemoryMiB >= need.MemoryMiB {
			return i
		}
		have.CPU += c.CPU
		have.MemoryMiB += c.MemoryMiB
	}
	return len(caps)
}

func cmpShare(a, b, need scheduler.Resources) int {
	share := func(r scheduler.Resources) float64 {
		s := 1.0
		if need.CPU > 0 {
			s = min(s, float64(r.CPU)/float64(need.CPU))
		}
		if need.MemoryMiB > 0 {
			s = min(s, float64(r.MemoryMiB)/float64(need.MemoryMiB))
		}
		return s
	}
	sa, sb := share(a), share(b)
	switch {
	case sa < sb:
		return -1
	case sa > sb:
		return 1
	}
	return 0
}
