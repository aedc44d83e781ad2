package bench

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/unumos/unum/scheduler"
	"github.com/unumos/unum/scheduler/schedbench"
)

// Result names of the sched component.
const (
	ResultSchedMixed   = "sched_place_mixed"
	ResultSchedUniform = "sched_place_uniform"
	// ResultSchedPacking is the uniform workload's nodes used; its target
	// is against the lower bound ceil(total demand / node capacity).
	ResultSchedPacking = "sched_uniform_nodes_used"
)

const (
	schedComponent = "sched"
	// The scheduler issue's targets on the 2-core machine: at least 20,000
	// placements/s on the mixed workload, and for uniform tasks at most
	// 1.05 times the lower bound of nodes.
	schedRateTarget    = 20_000
	schedPackingTarget = 1.05
	schedSeed          = 1
)

// RunSched measures scheduler.Place in this process, no cluster needed:
// the synthetic cluster of schedbench.DefaultNodes nodes and
// schedbench.DefaultTasks pending tasks (o.SchedNodes and o.SchedTasks when
// set), once of mixed sizes (schedbench.Mixed) and once uniform
// (schedbench.Uniform). Each workload is placed whole, again and again,
// for half of o.Duration (at least once), after one warm-up placement; a
// placement per second is one task placed, and each call starts from the
// same snapshot, so it includes building the index. Place is
// single-threaded, so one goroutine runs it.
func RunSched(ctx context.Context, o Options) (Report, error) {
	progress := o.progressFunc(schedComponent)
	rep := Report{Component: schedComponent, Mode: "local", Settings: baseSettings(1)}
	if o.Cluster != nil {
		return rep, fmt.Errorf("sched is measured in this process; a cluster target does not apply")
	}
	nodes, tasks := schedbench.DefaultNodes, schedbench.DefaultTasks
	if o.SchedNodes > 0 {
		nodes = o.SchedNodes
	}
	if o.SchedTasks > 0 {
		tasks = o.SchedTasks
	}
	window := max(o.duration()/2, minWindow)
	x := rep.Settings.Extra
	x["nodes"] = fmt.Sprint(nodes)
	x["tasks"] = fmt.Sprint(tasks)
	x["mixed_seed"] = fmt.Sprint(schedSeed)
	rep.Settings.Windows[ResultSchedMixed] = window.String()
	rep.Settings.Windows[ResultSchedUniform] = window.String()

	progress("building the mixed workload: %d nodes, %d tasks", nodes, tasks)
	mixedSnap, mixedTasks := schedbench.Mixed(nodes, tasks, schedSeed)
	stop := startProfile(o, progress)
	mixed, mixedPlan, err := placeRounds(ctx, window, mixedSnap, mixedTasks, progress)
	stop()
	if err != nil {
		return rep, err
	}
	mixedRes := mixed.result(ResultSchedMixed, fmt.Sprintf(
		"scheduler.Place of %d tasks of mixed sizes (jobs of 1-50; 0.1-4 cores, 128 MiB-8 GiB; prod, batch and best-effort; some with a zone or disk constraint, spread across zones, anti-affinity per node or ports) on %d nodes (16 or 32 cores, 4 zones, 1%% down, 1%% draining), whole, %d times; ops are tasks placed (%d unplaced per call)",
		tasks, nodes, mixed.calls, len(mixedPlan.Unplaced)))
	mixedRes.setTarget(fmt.Sprintf(">= %d placements/s", schedRateTarget), mixedRes.OpsPerSec >= schedRateTarget)
	x["mixed_unplaced"] = fmt.Sprint(len(mixedPlan.Unplaced))
	x["mixed_nodes_used"] = fmt.Sprint(schedbench.NodesUsed(mixedPlan))
	x["mixed_lower_bound"] = fmt.Sprint(schedbench.LowerBound(mixedSnap, mixedTasks, mixedPlan))

	progress("building the uniform workload: %d nodes, %d tasks", nodes, tasks)
	uniSnap, uniTasks := schedbench.Uniform(nodes, tasks)
	uni, uniPlan, err := placeRounds(ctx, window, uniSnap, uniTasks, progress)
	if err != nil {
		return rep, err
	}
	uniRes := uni.result(ResultSchedUniform, fmt.Sprintf(
		"scheduler.Place of %d identical tasks (%dm CPU, %d MiB, prod) on %d identical nodes (%dm, %d MiB), whole, %d times; ops are tasks placed (%d unplaced per call)",
		tasks, schedbench.UniformTaskCPU, schedbench.UniformTaskMiB, nodes, schedbench.UniformNodeCPU, schedbench.UniformNodeMiB, uni.calls, len(uniPlan.Unplaced)))

	used, bound := schedbench.NodesUsed(uniPlan), schedbench.LowerBound(uniSnap, uniTasks, uniPlan)
	ratio := 0.0
	if bound > 0 {
		ratio = math.Round(float64(used)/float64(bound)*1000) / 1000
	}
	packing := Result{
		Name: ResultSchedPacking,
		Description: fmt.Sprintf("nodes the uniform plan uses (ops column): %d, against the lower bound ceil(total demand / node capacity) = %d: %.3fx",
			used, bound, ratio),
		Clients: 1,
		Ops:     int64(used),
	}
	packing.setTarget(fmt.Sprintf("<= %.2fx lower bound (%d)", schedPackingTarget, bound), bound > 0 && ratio <= schedPackingTarget)
	x["uniform_nodes_used"] = fmt.Sprint(used)
	x["uniform_lower_bound"] = fmt.Sprint(bound)
	x["uniform_ratio"] = fmt.Sprint(ratio)

	rep.Results = []Result{mixedRes, uniRes, packing}
	rep.Settings.LoadAverageEnd = loadAverage()
	return rep, nil
}

// placeSample is what placeRounds measured.
type placeSample struct {
	calls      int
	placements int64
	elapsed    time.Duration
	cpu        time.Duration
}

// placeRounds places tasks on snap once to warm up, then again and again
// until window has passed (at least once), and returns the last plan.
func placeRounds(ctx context.Context, window time.Duration, snap scheduler.Snapshot, tasks []scheduler.Task, progress func(string, ...any)) (placeSample, scheduler.Plan, error) {
	t0 := time.Now()
	plan := scheduler.Place(snap, tasks)
	progress("warm-up: %d placed, %d preempted, %d unplaced in %s; measuring for %s", len(plan.Placements), len(plan.Preemptions), len(plan.Unplaced), time.Since(t0).Round(time.Millisecond), window)
	if len(plan.Placements) == 0 {
		return placeSample{}, plan, fmt.Errorf("no task placed: %d unplaced", len(plan.Unplaced))
	}
	runtime.GC() // each measurement starts from the same heap state
	var s placeSample
	cpu0 := processCPU()
	start := time.Now()
	for s.calls == 0 || time.Since(start) < window {
		if err := ctx.Err(); err != nil {
			return s, plan, err
		}
		plan = scheduler.Place(snap, tasks)
		s.calls++
		s.placements += int64(len(plan.Placements))
	}
	s.elapsed, s.cpu = time.Since(start), processCPU()-cpu0
	progress("%d calls, %d placements in %s", s.calls, s.placements, s.elapsed.Round(time.Millisecond))
	return s, plan, nil
}

func (s placeSample) result(name, description string) Result {
	r := Result{
		Name:        name,
		Description: description,
		Clients:     1,
		Seconds:     math.Round(s.elapsed.Seconds()*100) / 100,
		Ops:         s.placements,
	}
	r.OpsPerSec = math.Round(float64(s.placements)/s.elapsed.Seconds()*10) / 10
	r.ProcessCPUCores = math.Round(s.cpu.Seconds()/s.elapsed.Seconds()*100) / 100
	if s.placements > 0 {
		r.CPUusPerOp = micros(s.cpu / time.Duration(s.placements))
	}
	return r
}
