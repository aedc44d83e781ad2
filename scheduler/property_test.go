package scheduler_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/scheduler"
)

// genOptions shape a random case.
type genOptions struct {
	// preemptible lets allocs be of any class and priority; otherwise they
	// are all prod at the highest priority, so that nothing can be
	// preempted and the reference placer applies.
	preemptible bool
}

// source hands out small numbers: from a PCG for the property tests, from
// the fuzzer's bytes (zero once they run out) for FuzzPlace.
type source interface{ IntN(n int) int }

type byteSource struct{ b []byte }

func (s *byteSource) IntN(n int) int {
	if len(s.b) == 0 || n <= 1 {
		return 0
	}
	v := int(s.b[0])
	s.b = s.b[1:]
	return v % n
}

// genCase builds a small cluster and pending tasks: few labels and values,
// tiny port ranges (so ports run out), capacities that make resources
// scarce, and every kind of constraint, spread and anti-affinity.
func genCase(r source, o genOptions) (scheduler.Snapshot, []scheduler.Task) {
	zones := []string{"a", "b", "c"}
	disks := []string{"ssd", "hdd"}
	var snap scheduler.Snapshot
	nn := 1 + r.IntN(12)
	for i := range nn {
		n := scheduler.Node{
			Name:        fmt.Sprintf("n%02d", i),
			Labels:      map[string]string{},
			Capacity:    scheduler.Resources{CPU: int64(1000 * (1 + r.IntN(8))), MemoryMiB: int64(1024 * (1 + r.IntN(8)))},
			Ready:       r.IntN(8) != 0,
			Schedulable: r.IntN(8) != 0,
		}
		if r.IntN(4) != 0 {
			n.Labels["zone"] = zones[r.IntN(len(zones))]
		}
		if r.IntN(3) != 0 {
			n.Labels["disk"] = disks[r.IntN(len(disks))]
		}
		if r.IntN(2) == 0 {
			lo := 30000 + 10*i
			n.Ports = scheduler.PortRange{Lo: lo, Hi: lo + r.IntN(4)}
		}
		snap.Nodes = append(snap.Nodes, n)
	}
	classes := []scheduler.Class{scheduler.BestEffort, scheduler.Batch, scheduler.Prod}
	jobs := []scheduler.JobRef{{Namespace: "a", Name: "x"}, {Namespace: "a", Name: "y"}, {Namespace: "b", Name: "x"}, {Namespace: "b", Name: "z"}}
	for i := range r.IntN(20) {
		n := &snap.Nodes[r.IntN(nn)]
		a := scheduler.Alloc{
			ID:        fmt.Sprintf("a%02d", i),
			Task:      scheduler.TaskKey{Job: jobs[r.IntN(len(jobs))], Index: 100 + i},
			Node:      n.Name,
			Resources: scheduler.Resources{CPU: int64(250 * r.IntN(6)), MemoryMiB: int64(256 * r.IntN(6))},
			Class:     scheduler.Prod, Priority: scheduler.MaxPriority,
		}
		if o.preemptible {
			a.Class, a.Priority = classes[r.IntN(3)], 100*r.IntN(11)
		}
		if r.IntN(3) == 0 {
			pr := portRange(n)
			a.Ports = map[string]int{"p": pr.Lo + r.IntN(pr.Hi-pr.Lo+1)}
		}
		// Only allocs that fit: the snapshot is a real cluster's.
		var used scheduler.Resources
		ports := map[int]bool{}
		for _, b := range snap.Allocs {
			if b.Node == a.Node {
				used.CPU += b.Resources.CPU
				used.MemoryMiB += b.Resources.MemoryMiB
				for _, p := range b.Ports {
					ports[p] = true
				}
			}
		}
		if used.CPU+a.Resources.CPU > n.Capacity.CPU || used.MemoryMiB+a.Resources.MemoryMiB > n.Capacity.MemoryMiB || ports[a.Ports["p"]] {
			continue
		}
		snap.Allocs = append(snap.Allocs, a)
	}
	var tasks []scheduler.Task
	for ji, job := range jobs {
		proto := scheduler.Task{
			Key:       scheduler.TaskKey{Job: job},
			Resources: scheduler.Resources{CPU: int64(250 * r.IntN(9)), MemoryMiB: int64(512 * r.IntN(9))},
			Priority:  100 * r.IntN(11),
			Class:     classes[r.IntN(3)],
		}
		switch r.IntN(6) {
		case 0:
			proto.Constraints = append(proto.Constraints, scheduler.Constraint{Label: "zone", Op: "=", Values: []string{zones[r.IntN(3)]}})
		case 1:
			proto.Constraints = append(proto.Constraints, scheduler.Constraint{Label: "zone", Op: "!=", Values: []string{zones[r.IntN(3)]}})
		case 2:
			proto.Constraints = append(proto.Constraints, scheduler.Constraint{Label: "zone", Op: "in", Values: []string{zones[r.IntN(3)], zones[r.IntN(3)]}})
		case 3:
			proto.Constraints = append(proto.Constraints, scheduler.Constraint{Label: "disk", Op: "exists"})
		}
		switch r.IntN(6) {
		case 0:
			proto.Spread = "zone"
		case 1:
			proto.Spread = scheduler.NodeLabel
		case 2:
			proto.AntiAffinity = "zone"
		case 3:
			proto.AntiAffinity = scheduler.NodeLabel
		}
		proto.Ports = []string{"http", "admin"}[:r.IntN(3)]
		for i := range r.IntN(6) {
			t := proto
			t.Key.Index = i
			if ji == 0 && i == 2 {
				t.Priority = 100 * r.IntN(11) // the same job at two priorities
			}
			tasks = append(tasks, t)
		}
	}
	return snap, tasks
}

// shuffled returns the case with its nodes, allocs and tasks in another
// order (and fresh slices, so Place cannot depend on their identity).
func shuffled(r *rand.Rand, snap scheduler.Snapshot, tasks []scheduler.Task) (scheduler.Snapshot, []scheduler.Task) {
	out := scheduler.Snapshot{
		Nodes:  append([]scheduler.Node(nil), snap.Nodes...),
		Allocs: append([]scheduler.Alloc(nil), snap.Allocs...),
	}
	ts := append([]scheduler.Task(nil), tasks...)
	r.Shuffle(len(out.Nodes), func(i, j int) { out.Nodes[i], out.Nodes[j] = out.Nodes[j], out.Nodes[i] })
	r.Shuffle(len(out.Allocs), func(i, j int) { out.Allocs[i], out.Allocs[j] = out.Allocs[j], out.Allocs[i] })
	r.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	return out, ts
}

// TestPlaceInvariants checks random cases, preemption included, against
// the brute-force checker: no overcommit, unique ports, constraints and
// anti-affinity hold, preemptions are eligible and used.
func TestPlaceInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	preemptions := 0
	for i := range 3000 {
		snap, tasks := genCase(r, genOptions{preemptible: true})
		plan := scheduler.Place(snap, tasks)
		require.NoError(t, checkPlan(snap, tasks, plan), "case %d: %+v\n%+v\n%+v", i, snap, tasks, plan)
		preemptions += len(plan.Preemptions)
	}
	// The generator must actually exercise preemption, or the check above
	// says little about it.
	require.Greater(t, preemptions, 100)
}

// TestPlaceMatchesReference compares Place with the naive scan of every
// node, on random cases where nothing can be preempted: same placements,
// same nodes, same ports, same unplaced tasks.
func TestPlaceMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 3))
	placed := 0
	for i := range 3000 {
		snap, tasks := genCase(r, genOptions{})
		got := scheduler.Place(snap, tasks)
		want := referencePlace(snap, tasks)
		require.Equal(t, want.Placements, got.Placements, "case %d: %+v\n%+v", i, snap, tasks)
		require.Empty(t, got.Preemptions)
		require.Len(t, got.Unplaced, len(want.Unplaced))
		for j := range want.Unplaced {
			require.Equal(t, want.Unplaced[j].Task, got.Unplaced[j].Task)
		}
		placed += len(got.Placements)
	}
	require.Greater(t, placed, 1000)
}

// TestPlaceDeterministic: the same case with its nodes, allocs and tasks
// shuffled gives the identical plan, preemptions and reasons included.
func TestPlaceDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	for i := range 1000 {
		snap, tasks := genCase(r, genOptions{preemptible: true})
		want := scheduler.Place(snap, tasks)
		for range 3 {
			s2, t2 := shuffled(r, snap, tasks)
			require.Equal(t, want, scheduler.Place(s2, t2), "case %d", i)
		}
	}
}

// TestPlaceDeterministicLarge does the same on a cluster large enough to
// use the fit index's rows and many classes.
func TestPlaceDeterministicLarge(t *testing.T) {
	snap, tasks := largeCase(2000, 8000)
	want := scheduler.Place(snap, tasks)
	require.NoError(t, checkPlan(snap, tasks, want))
	require.NotEmpty(t, want.Placements)
	s2, t2 := shuffled(rand.New(rand.NewPCG(1, 2)), snap, tasks)
	require.Equal(t, want, scheduler.Place(s2, t2))
	require.Equal(t, want.Placements, referencePlace(snap, tasks).Placements)
}

func largeCase(nodes, tasks int) (scheduler.Snapshot, []scheduler.Task) {
	r := rand.New(rand.NewPCG(42, 42))
	var snap scheduler.Snapshot
	for i := range nodes {
		snap.Nodes = append(snap.Nodes, scheduler.Node{
			Name:     fmt.Sprintf("n%05d", i),
			Labels:   map[string]string{"zone": fmt.Sprint("z", i%5), "rack": fmt.Sprint("r", i%37)},
			Capacity: scheduler.Resources{CPU: int64(4000 * (1 + r.IntN(4))), MemoryMiB: int64(8192 * (1 + r.IntN(4)))},
			Ready:    i%50 != 0, Schedulable: i%70 != 0,
		})
	}
	var ts []scheduler.Task
	for j := 0; len(ts) < tasks; j++ {
		proto := scheduler.Task{
			Key:       scheduler.TaskKey{Job: scheduler.JobRef{Namespace: "ns", Name: fmt.Sprintf("j%04d", j)}},
			Resources: scheduler.Resources{CPU: int64(100 * (1 + r.IntN(40))), MemoryMiB: int64(128 * (1 + r.IntN(64)))},
			Priority:  r.IntN(1001), Class: scheduler.Class(r.IntN(3)),
		}
		switch r.IntN(8) {
		case 0:
			proto.Constraints = []scheduler.Constraint{{Label: "zone", Op: "in", Values: []string{"z1", "z2"}}}
		case 1:
			proto.Spread = "zone"
		case 2:
			proto.AntiAffinity = "rack"
		case 3:
			proto.AntiAffinity = scheduler.NodeLabel
		case 4:
			proto.Ports = []string{"http"}
		}
		for i := range 1 + r.IntN(20) {
			t := proto
			t.Key.Index = i
			ts = append(ts, t)
		}
	}
	return snap, ts
}

// FuzzPlace decodes bytes into a small snapshot and tasks and checks the
// invariants and determinism.
func FuzzPlace(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x05\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	r := rand.New(rand.NewPCG(9, 9))
	for range 8 {
		b := make([]byte, 200)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, tasks := genCase(&byteSource{b: data}, genOptions{preemptible: len(data) > 0 && data[0]&1 == 1})
		plan := scheduler.Place(snap, tasks)
		if err := checkPlan(snap, tasks, plan); err != nil {
			t.Fatal(err)
		}
		s2, t2 := shuffled(rand.New(rand.NewPCG(uint64(len(data)), 1)), snap, tasks)
		require.Equal(t, plan, scheduler.Place(s2, t2))
	})
}
