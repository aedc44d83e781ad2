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
		noLabel     int // lack the anti-affinity label
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
			v, ok := ns.n.Label(c.Label)
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
			v, ok := ns.n.Label(t.AntiAffinity)
			if !ok {
				noLabel++
				continue
			}
			if s.jobCount(js, t.AntiAffinity, v) > 0 {
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
			filtered = append(filtered, fmt.Sprintf("%d failing constraint %s", n, t.Constraints[i]))
		}
	}
	if noLabel > 0 {
		filtered = append(filtered, fmt.Sprintf("%d without anti-affinity label %s", noLabel, t.AntiAffinity))
	}
	if anti > 0 {
		filtered = append(filtered, fmt.Sprintf("%d excluded by anti-affinity on %s", anti, t.AntiAffinity))
	}
	checked := len(s.nodes)

	if feasible == 0 {
		for i, n := range constraints {
			if n == checked {
				return fmt.Sprintf("no node satisfies constraint %s (%s checked)", t.Constraints[i], plural(checked, "node"))
			}
		}
		return fmt.Sprintf("no feasible node (%s checked: %s)", plural(checked, "node"), strings.Join(filtered, ", "))
	}

	// "insufficient cpu and memory on 3 feasible nodes" when every
	// feasible node lacks each named dimension, otherwise the count of each:
	// "insufficient cpu on 1 and memory on 3 of 3 feasible nodes".
	var names, counted []string
	all := true
	for i, name := range []string{"cpu", "memory", "ports"} {
		if lack[i] == 0 {
			continue
		}
		names = append(names, name)
		counted = append(counted, fmt.Sprintf("%s on %d", name, lack[i]))
		all = all && lack[i] == feasible
	}
	var b strings.Builder
	switch {
	case len(names) > 0 && all:
		fmt.Fprintf(&b, "insufficient %s on %s", joinAnd(names), plural(feasible, "feasible node"))
	case len(names) > 0:
		fmt.Fprintf(&b, "insufficient %s of %s", joinAnd(counted), plural(feasible, "feasible node"))
	default:
		// Unreachable: a feasible node lacking nothing would have been
		// chosen. Said plainly rather than hidden.
		fmt.Fprintf(&b, "no fit on %s", plural(feasible, "feasible node"))
	}
	if len(filtered) > 0 {
		fmt.Fprintf(&b, " (%s checked: %s)", plural(checked, "node"), strings.Join(filtered, ", "))
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

// plural is "1 node", "2 nodes".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
