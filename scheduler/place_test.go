package scheduler_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/scheduler"
)

// TestPlaceOddSnapshots: input a healthy cluster does not produce is
// handled by failing closed, never by guessing.
func TestPlaceOddSnapshots(t *testing.T) {
	node := func(name string, cpu int64) scheduler.Node {
		return scheduler.Node{Name: name, Capacity: scheduler.Resources{CPU: cpu, MemoryMiB: 1024}, Ready: true, Schedulable: true}
	}
	task := func(name string, cpu int64, ports ...string) scheduler.Task {
		return scheduler.Task{Key: scheduler.TaskKey{Job: scheduler.JobRef{Namespace: "ns", Name: name}}, Resources: scheduler.Resources{CPU: cpu, MemoryMiB: 1}, Priority: 500, Class: scheduler.Prod, Ports: ports}
	}
	for _, tc := range []struct {
		name   string
		snap   scheduler.Snapshot
		tasks  []scheduler.Task
		placed map[string]string // task job name -> node
		reason map[string]string // task job name -> reason
	}{
		{
			name:   "a duplicated node name is used by neither",
			snap:   scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 1000), node("n1", 4000), node("n2", 100)}},
			tasks:  []scheduler.Task{task("a", 500)},
			reason: map[string]string{"a": "insufficient cpu on 1 feasible node (3 nodes checked: 2 duplicate name)"},
		},
		{
			name: "a negative alloc frees nothing",
			snap: scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 1000)}, Allocs: []scheduler.Alloc{
				{ID: "x", Node: "n1", Resources: scheduler.Resources{CPU: -5000}, Class: scheduler.Prod, Priority: scheduler.MaxPriority},
				{ID: "y", Node: "n1", Resources: scheduler.Resources{CPU: 800}, Class: scheduler.Prod, Priority: scheduler.MaxPriority},
			}},
			tasks:  []scheduler.Task{task("a", 500)},
			reason: map[string]string{"a": "insufficient cpu on 1 feasible node"},
		},
		{
			name:   "an alloc on a node not in the snapshot holds nothing",
			snap:   scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 1000)}, Allocs: []scheduler.Alloc{{ID: "x", Node: "gone", Resources: scheduler.Resources{CPU: 1000}}}},
			tasks:  []scheduler.Task{task("a", 1000)},
			placed: map[string]string{"a": "n1"},
		},
		{
			name:   "a capacity beyond MaxResource makes the node unusable",
			snap:   scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", scheduler.MaxResource+1)}},
			tasks:  []scheduler.Task{task("a", 1)},
			reason: map[string]string{"a": "no feasible node (1 node checked: 1 invalid capacity)"},
		},
		{
			name: "an invalid port range has no ports, and still takes tasks without",
			snap: scheduler.Snapshot{Nodes: []scheduler.Node{func() scheduler.Node {
				n := node("n1", 1000)
				n.Ports = scheduler.PortRange{Lo: 9, Hi: 3}
				return n
			}()}},
			tasks:  []scheduler.Task{task("a", 1, "http"), task("b", 1)},
			placed: map[string]string{"b": "n1"},
			reason: map[string]string{"a": "insufficient ports on 1 feasible node"},
		},
		{
			name: "an unknown constraint operator is refused",
			snap: scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 1000)}},
			tasks: []scheduler.Task{func() scheduler.Task {
				t := task("a", 1)
				t.Constraints = []scheduler.Constraint{{Label: "zone", Op: "~"}}
				return t
			}()},
			reason: map[string]string{"a": `invalid task: constraint on "zone": unknown operator "~" (want =, !=, in or exists)`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := scheduler.Place(tc.snap, tc.tasks)
			placed := map[string]string{}
			for _, p := range plan.Placements {
				placed[p.Task.Job.Name] = p.Node
			}
			reasons := map[string]string{}
			for _, u := range plan.Unplaced {
				reasons[u.Task.Job.Name] = u.Reason
			}
			if tc.placed == nil {
				tc.placed = map[string]string{}
			}
			if tc.reason == nil {
				tc.reason = map[string]string{}
			}
			require.Equal(t, tc.placed, placed)
			require.Equal(t, tc.reason, reasons)
		})
	}
}

func TestParseClass(t *testing.T) {
	for _, c := range []scheduler.Class{scheduler.BestEffort, scheduler.Batch, scheduler.Prod} {
		got, err := scheduler.ParseClass(c.String())
		require.NoError(t, err)
		require.Equal(t, c, got)
	}
	require.Equal(t, "best-effort", scheduler.BestEffort.String())
	require.Equal(t, "class(7)", scheduler.Class(7).String())
	_, err := scheduler.ParseClass("gold")
	require.ErrorContains(t, err, `unknown class "gold"`)
	require.True(t, scheduler.BestEffort < scheduler.Batch && scheduler.Batch < scheduler.Prod)
	require.Equal(t, "ns/web[3]", scheduler.TaskKey{Job: scheduler.JobRef{Namespace: "ns", Name: "web"}, Index: 3}.String())
}
