package scheduler_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/scheduler"
)

// TestDataDriven runs the scenarios in testdata/*.txt (regenerate the
// expected output with -rewrite, and read the diff before committing it).
// Commands:
//
//	node name=N cpu=MILLI mem=MIB [labels=k=v,k=v] [ports=LO-HI] [draining] [down]
//	    adds node N, or replaces it.
//	alloc id=ID task=NS/NAME[I] node=N cpu=MILLI mem=MIB [prio=P] [class=C] [ports=name=port,...]
//	    adds an alloc (defaults: priority 500, class prod).
//	task job=NS/NAME [index=I | count=N] cpu=MILLI mem=MIB [prio=P] [class=C]
//	    [where=(zone=a, disk!=hdd, zone in a|b, gpu exists)] [spread=L] [anti=L] [ports=(http, grpc)]
//	    adds pending tasks (count=N: indices 0..N-1).
//	place [dry-run]
//	    prints the plan of the pending tasks, checks it against the
//	    brute-force checker and for determinism under shuffling, then
//	    (unless dry-run) applies it: placements become allocs whose ID is
//	    the task key, victims are removed, and nothing stays pending.
//	nodes
//	    prints each node's use and allocs.
//	reset
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		h := &harness{}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return h.run(t, d)
		})
	})
}

type harness struct {
	snap    scheduler.Snapshot
	pending []scheduler.Task
}

func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "node":
		n := scheduler.Node{Name: str(t, d, "name", ""), Ready: !d.HasArg("down"), Schedulable: !d.HasArg("draining")}
		n.Capacity = resources(t, d)
		if l := str(t, d, "labels", ""); l != "" {
			n.Labels = map[string]string{}
			for _, kv := range strings.Split(l, ",") {
				k, v, _ := strings.Cut(kv, "=")
				n.Labels[k] = v
			}
		}
		if p := str(t, d, "ports", ""); p != "" {
			lo, hi, _ := strings.Cut(p, "-")
			n.Ports = scheduler.PortRange{Lo: atoi(t, lo), Hi: atoi(t, hi)}
		}
		h.snap.Nodes = slices.DeleteFunc(h.snap.Nodes, func(x scheduler.Node) bool { return x.Name == n.Name })
		h.snap.Nodes = append(h.snap.Nodes, n)
		return ""
	case "alloc":
		a := scheduler.Alloc{
			ID: str(t, d, "id", ""), Task: taskKey(t, str(t, d, "task", "")), Node: str(t, d, "node", ""),
			Resources: resources(t, d), Priority: atoi(t, str(t, d, "prio", "500")), Class: class(t, str(t, d, "class", "prod")),
		}
		if p := str(t, d, "ports", ""); p != "" {
			a.Ports = map[string]int{}
			for _, kv := range strings.Split(p, ",") {
				k, v, _ := strings.Cut(kv, "=")
				a.Ports[k] = atoi(t, v)
			}
		}
		h.snap.Allocs = append(h.snap.Allocs, a)
		return ""
	case "task":
		ns, name, _ := strings.Cut(str(t, d, "job", ""), "/")
		proto := scheduler.Task{
			Key:       scheduler.TaskKey{Job: scheduler.JobRef{Namespace: ns, Name: name}},
			Resources: resources(t, d), Priority: atoi(t, str(t, d, "prio", "500")), Class: class(t, str(t, d, "class", "prod")),
			Spread: str(t, d, "spread", ""), AntiAffinity: str(t, d, "anti", ""),
		}
		if arg, ok := d.Arg("where"); ok {
			for _, c := range arg.Vals {
				proto.Constraints = append(proto.Constraints, constraint(t, c))
			}
		}
		if arg, ok := d.Arg("ports"); ok {
			proto.Ports = arg.Vals
		}
		first, count := atoi(t, str(t, d, "index", "0")), atoi(t, str(t, d, "count", "1"))
		for i := first; i < first+count; i++ {
			task := proto
			task.Key.Index = i
			h.pending = append(h.pending, task)
		}
		return ""
	case "place":
		plan := scheduler.Place(h.snap, h.pending)
		require.NoError(t, checkPlan(h.snap, h.pending, plan), d.Pos)
		for seed := range uint64(3) {
			s2, t2 := shuffled(rand.New(rand.NewPCG(seed, seed)), h.snap, h.pending)
			require.Equal(t, plan, scheduler.Place(s2, t2), "%s: the plan depends on input order", d.Pos)
		}
		out := formatPlan(plan)
		if !d.HasArg("dry-run") {
			h.apply(plan)
		}
		return out
	case "nodes":
		return h.formatNodes()
	case "reset":
		*h = harness{}
		return ""
	}
	t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	return ""
}

func (h *harness) apply(plan scheduler.Plan) {
	gone := map[string]bool{}
	for _, p := range plan.Preemptions {
		gone[p.Alloc] = true
	}
	h.snap.Allocs = slices.DeleteFunc(h.snap.Allocs, func(a scheduler.Alloc) bool { return gone[a.ID] })
	tasks := map[scheduler.TaskKey]scheduler.Task{}
	for _, task := range h.pending {
		tasks[task.Key] = task
	}
	for _, p := range plan.Placements {
		task := tasks[p.Task]
		h.snap.Allocs = append(h.snap.Allocs, scheduler.Alloc{
			ID: p.Task.String(), Task: p.Task, Node: p.Node, Resources: task.Resources,
			Priority: task.Priority, Class: task.Class, Ports: p.Ports,
		})
	}
	h.pending = nil
}

func formatPlan(p scheduler.Plan) string {
	var b strings.Builder
	for _, pl := range p.Placements {
		fmt.Fprintf(&b, "%s -> %s%s\n", pl.Task, pl.Node, formatPorts(pl.Ports))
	}
	for _, pr := range p.Preemptions {
		fmt.Fprintf(&b, "preempt %s (%s) on %s for %s\n", pr.Alloc, pr.Task, pr.Node, pr.For)
	}
	for _, u := range p.Unplaced {
		fmt.Fprintf(&b, "unplaced %s: %s\n", u.Task, u.Reason)
	}
	if b.Len() == 0 {
		return "empty plan"
	}
	return b.String()
}

func formatPorts(ports map[string]int) string {
	if len(ports) == 0 {
		return ""
	}
	names := make([]string, 0, len(ports))
	for n := range ports {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, ports[n])
	}
	return " ports " + strings.Join(parts, ",")
}

func (h *harness) formatNodes() string {
	nodes := slices.Clone(h.snap.Nodes)
	slices.SortFunc(nodes, func(a, b scheduler.Node) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	for _, n := range nodes {
		var used scheduler.Resources
		var ids []string
		for _, a := range h.snap.Allocs {
			if a.Node == n.Name {
				used.CPU += a.Resources.CPU
				used.MemoryMiB += a.Resources.MemoryMiB
				ids = append(ids, fmt.Sprintf("%s(%s/%d)", a.ID, a.Class, a.Priority))
			}
		}
		slices.Sort(ids)
		state := ""
		if !n.Ready {
			state += " down"
		}
		if !n.Schedulable {
			state += " draining"
		}
		fmt.Fprintf(&b, "%s%s: cpu %d/%d mem %d/%d", n.Name, state, used.CPU, n.Capacity.CPU, used.MemoryMiB, n.Capacity.MemoryMiB)
		if len(ids) > 0 {
			fmt.Fprintf(&b, " allocs %s", strings.Join(ids, " "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func str(t *testing.T, d *datadriven.TestData, key, def string) string {
	t.Helper()
	arg, ok := d.Arg(key)
	if !ok {
		return def
	}
	return arg.SingleVal(t)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	v, err := strconv.Atoi(s)
	require.NoError(t, err)
	return v
}

func resources(t *testing.T, d *datadriven.TestData) scheduler.Resources {
	t.Helper()
	return scheduler.Resources{CPU: int64(atoi(t, str(t, d, "cpu", "0"))), MemoryMiB: int64(atoi(t, str(t, d, "mem", "0")))}
}

func class(t *testing.T, s string) scheduler.Class {
	t.Helper()
	c, err := scheduler.ParseClass(s)
	require.NoError(t, err)
	return c
}

// taskKey parses "ns/name[index]".
func taskKey(t *testing.T, s string) scheduler.TaskKey {
	t.Helper()
	job, idx, ok := strings.Cut(strings.TrimSuffix(s, "]"), "[")
	require.True(t, ok, "task key %q is not ns/name[index]", s)
	ns, name, _ := strings.Cut(job, "/")
	return scheduler.TaskKey{Job: scheduler.JobRef{Namespace: ns, Name: name}, Index: atoi(t, idx)}
}

// constraint parses "zone=a", "zone!=a", "zone in a|b" and "gpu exists".
func constraint(t *testing.T, s string) scheduler.Constraint {
	t.Helper()
	if l, v, ok := strings.Cut(s, " in "); ok {
		return scheduler.Constraint{Label: l, Op: scheduler.OpIn, Values: strings.Split(v, "|")}
	}
	if l, ok := strings.CutSuffix(s, " exists"); ok {
		return scheduler.Constraint{Label: l, Op: scheduler.OpExists}
	}
	if l, v, ok := strings.Cut(s, "!="); ok {
		return scheduler.Constraint{Label: l, Op: scheduler.OpNotEqual, Values: []string{v}}
	}
	if l, v, ok := strings.Cut(s, "="); ok {
		return scheduler.Constraint{Label: l, Op: scheduler.OpEqual, Values: []string{v}}
	}
	t.Fatalf("cannot parse constraint %q", s)
	return scheduler.Constraint{}
}
