package scheduler_test

import (
	"testing"

	"github.com/unumos/unum/scheduler"
	"github.com/unumos/unum/scheduler/schedbench"
)

// BenchmarkPlace places the issue-sized workloads: 100,000 tasks on 10,000
// nodes, mixed and uniform. placements/s is the figure (target
// >= 20,000/s on the 2-core machine); nodes/lower-bound its packing one
// (target <= 1.05 for uniform tasks).
func BenchmarkPlace(b *testing.B) {
	for _, w := range []struct {
		name  string
		build func() (scheduler.Snapshot, []scheduler.Task)
	}{
		{"mixed", func() (scheduler.Snapshot, []scheduler.Task) {
			return schedbench.Mixed(schedbench.DefaultNodes, schedbench.DefaultTasks, 1)
		}},
		{"uniform", func() (scheduler.Snapshot, []scheduler.Task) {
			return schedbench.Uniform(schedbench.DefaultNodes, schedbench.DefaultTasks)
		}},
	} {
		b.Run(w.name, func(b *testing.B) {
			snap, tasks := w.build()
			var plan scheduler.Plan
			placed := 0
			for b.Loop() {
				plan = scheduler.Place(snap, tasks)
				placed += len(plan.Placements)
			}
			b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "placements/s")
			b.ReportMetric(float64(len(plan.Unplaced)), "unplaced")
			b.ReportMetric(float64(schedbench.NodesUsed(plan))/float64(schedbench.LowerBound(snap, tasks, plan)), "nodes/lower-bound")
		})
	}
}
