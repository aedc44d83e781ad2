package scheduler

import (
	"fmt"
	"strings"
)

// explain says why t could not be placed. It walks every node once, so it
// runs only on failure (and once per run of identical failing tasks, see
// placeOne). Each node is counted under the first filter it fails, in the
// order: not usable (down, unschedulable, ...), each constraint in the
// task's order, anti-affinity; the nodes that pass every filter are the
// feasible ones, and each dimension they lack is counted.
func (s *state) explain(t *Task, js *jobState, preemptible bool) string {
	if len(s.nodes) == 0 {
		return "no nodes in the cluster"
	}
	var (
		unusable    = map[string]int{}
		constraints = make([]int, len(t.Constraints))
		anti        int
		feasible    int
		lack        [3]int // cpu, memory, ports
	)
nodes:
	for id := range s.nodes {
		ns := &s.nodes[id]
		if !ns.usable {
			unusable[ns.why]++
			continue
		}
		for i, c := range t.Constraints {
			v, ok := ns.n.Labels[c.Label]
			if !c.holds(v, ok) {
				constraints[i]++
				continue nodes
			}
		}
		switch t.AntiAffinity {
		case "":
		case NodeLabel:
			if js.onNode[int32(id)] > 0 {
				anti++
				continue
			}
		default:
			v, ok := ns.n.Labels[t.AntiAffinity]
			if !ok || s.jobCount(js, t.AntiAffinity, v) > 0 {
				anti++
				continue
			}
		}
		feasible++
		if ns.free.CPU < t.Resources.CPU {
			lack[0]++
		}
		if ns.free.MemoryMiB < t.Resources.MemoryMiB {
			lack[1]++
		}
		if int(ns.freePorts) < len(t.Ports) {
			lack[2]++
		}
	}

	var filtered []string
	for _, why := range []string{"duplicate name", "down", "unschedulable", "invalid capacity"} {
		if n := unusable[why]; n > 0 {
			filtered = append(filtered, fmt.Sprintf("%d %s", n, why))
		}
	}
	for i, n := range constraints {
		if n > 0 {
			filtered = append(filtered, fmt.Sprintf("%d fail constraint %s", n, t.Constraints[i]))
		}
	}
	if anti > 0 {
		filtered = append(filtered, fmt.Sprintf("%d excluded by anti-affinity on %s", anti, t.AntiAffinity))
	}
	checked := len(s.nodes)

	if feasible == 0 {
		for i, n := range constraints {
			if n == checked {
				return fmt.Sprintf("no node satisfies constraint %s (%d nodes checked)", t.Constraints[i], checked)
			}
		}
		return fmt.Sprintf("no feasible node (%d nodes checked: %s)", checked, strings.Join(filtered, ", "))
	}

	var dims []string
	single := ""
	for i, name := range []string{"cpu", "memory", "ports"} {
		if lack[i] == 0 {
			continue
		}
		dims = append(dims, fmt.Sprintf("%s on %d", name, lack[i]))
		if lack[i] == feasible {
			single = name
		}
	}
	var b strings.Builder
	switch {
	case len(dims) == 1 && single != "":
		fmt.Fprintf(&b, "insufficient %s on %d feasible nodes", single, feasible)
	case len(dims) > 0:
		fmt.Fprintf(&b, "insufficient %s of %d feasible nodes", joinAnd(dims), feasible)
	default:
		// Unreachable: a feasible node lacking nothing would have been
		// chosen. Said plainly rather than hidden.
		fmt.Fprintf(&b, "no fit on %d feasible nodes", feasible)
	}
	if len(filtered) > 0 {
		fmt.Fprintf(&b, " (%d nodes checked: %s)", checked, strings.Join(filtered, ", "))
	}
	if preemptible {
		b.WriteString("; preempting lower-priority allocs would not make room")
	}
	return b.String()
}

// joinAnd joins "a", "b", "c" as "a, b and c".
func joinAnd(parts []string) string {
	if len(parts) <= 1 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}
