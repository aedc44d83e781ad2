package scheduler

import (
	"fmt"
	"strconv"
	"strings"
)

// Resources are an amount of CPU and memory.
type Resources struct {
	CPU       int64 // millicores
	MemoryMiB int64
}

// Class is a task's scheduling class. Classes are ordered: a higher class is
// placed first and may preempt a lower one.
type Class int

// The classes, lowest first.
const (
	BestEffort Class = iota
	Batch
	Prod
)

var classNames = [...]string{BestEffort: "best-effort", Batch: "batch", Prod: "prod"}

// ParseClass parses "best-effort", "batch" or "prod".
func ParseClass(s string) (Class, error) {
	for c, name := range classNames {
		if s == name {
			return Class(c), nil
		}
	}
	return 0, fmt.Errorf("unknown class %q (want best-effort, batch or prod)", s)
}

func (c Class) String() string {
	if c.valid() {
		return classNames[c]
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

func (c Class) valid() bool { return c >= BestEffort && c <= Prod }

// MaxPriority is the highest task priority; priorities run from 0 to it.
const MaxPriority = 1000

// MaxResource bounds every CPU and memory figure Place accepts: a node with
// a larger capacity, or a task with a larger demand, is refused. It keeps
// the fixed-point fit arithmetic (see doc.go) far from int64 overflow.
const MaxResource = 1 << 40

// JobRef names a job.
type JobRef struct{ Namespace, Name string }

func (j JobRef) String() string { return j.Namespace + "/" + j.Name }

// TaskKey names one task of a job.
type TaskKey struct {
	Job   JobRef
	Index int
}

func (k TaskKey) String() string { return k.Job.String() + "[" + strconv.Itoa(k.Index) + "]" }

// Constraint operators.
const (
	OpEqual    = "="
	OpNotEqual = "!="
	OpIn       = "in"
	OpExists   = "exists"
)

// Constraint is a condition on one node label. A missing label fails "="
// and "in" and passes "!="; "exists" holds when the label is present
// (whatever its value).
type Constraint struct {
	Label  string
	Op     string // OpEqual, OpNotEqual, OpIn or OpExists
	Values []string
}

// String is the constraint as reasons name it: "zone=eu", "zone!=eu",
// "zone in (a, b)", "gpu exists".
func (c Constraint) String() string {
	switch c.Op {
	case OpEqual, OpNotEqual:
		return c.Label + c.Op + strings.Join(c.Values, ",")
	case OpIn:
		return c.Label + " in (" + strings.Join(c.Values, ", ") + ")"
	default:
		return c.Label + " " + c.Op
	}
}

// check reports what is wrong with the constraint, or nil.
func (c Constraint) check() error {
	if c.Label == "" {
		return fmt.Errorf("constraint %q has no label", c)
	}
	switch c.Op {
	case OpEqual, OpNotEqual:
		if len(c.Values) != 1 {
			return fmt.Errorf("constraint %q: %s takes exactly one value, has %d", c, c.Op, len(c.Values))
		}
	case OpIn:
		if len(c.Values) == 0 {
			return fmt.Errorf("constraint %q: in takes at least one value", c)
		}
	case OpExists:
		if len(c.Values) != 0 {
			return fmt.Errorf("constraint %q: exists takes no value", c)
		}
	default:
		return fmt.Errorf("constraint on %q: unknown operator %q (want =, !=, in or exists)", c.Label, c.Op)
	}
	return nil
}

// holds reports whether the constraint holds for a label value that is
// present or not.
func (c Constraint) holds(value string, present bool) bool {
	switch c.Op {
	case OpEqual:
		return present && value == c.Values[0]
	case OpNotEqual:
		return !present || value != c.Values[0]
	case OpIn:
		if !present {
			return false
		}
		for _, v := range c.Values {
			if v == value {
				return true
			}
		}
		return false
	case OpExists:
		return present
	}
	return false // unreachable for a checked constraint
}

// NodeLabel is the pseudo-label naming a node itself: AntiAffinity "node"
// allows at most one task of the job per node, Spread "node" spreads the
// job's tasks across nodes.
const NodeLabel = "node"

// PortRange is a closed range of ports [Lo, Hi].
type PortRange struct{ Lo, Hi int }

// A node's range for allocated ports when its Ports field is the zero
// value.
const (
	DefaultPortLo = 20000
	DefaultPortHi = 32767
)

// Label is the value of label key on the node: its name for NodeLabel
// (which shadows a label of that name), else its label.
func (n *Node) Label(key string) (string, bool) {
	if key == NodeLabel {
		return n.Name, true
	}
	v, ok := n.Labels[key]
	return v, ok
}

// Holds reports whether the constraint holds on node n.
func (c Constraint) Holds(n *Node) bool {
	v, ok := n.Label(c.Label)
	return c.holds(v, ok)
}

func (r PortRange) valid() bool { return r.Lo >= 1 && r.Lo <= r.Hi && r.Hi <= 65535 }

// Node is one machine as the placement core sees it.
type Node struct {
	Name     string
	Labels   map[string]string
	Capacity Resources
	// Ready is true when the node heartbeats and is not marked down.
	Ready bool
	// Schedulable is false when the node is draining or fails a
	// requirement (such as required enforcement): it takes no new task.
	Schedulable bool
	// Ports is the node's range for allocated ports; the zero value means
	// DefaultPortLo..DefaultPortHi.
	Ports PortRange
}

// Alloc is a task already placed.
type Alloc struct {
	ID        string
	Task      TaskKey
	Node      string
	Resources Resources
	Priority  int
	Class     Class
	Ports     map[string]int
}

// Task is a task to place.
type Task struct {
	Key         TaskKey
	Resources   Resources
	Priority    int // 0..MaxPriority
	Class       Class
	Constraints []Constraint
	// Spread, when set, is a soft preference: the job's tasks spread evenly
	// across the values of this label (NodeLabel: across nodes).
	Spread string
	// AntiAffinity, when set, is hard: at most one task of the job per value
	// of this label (NodeLabel: per node). A node without the label cannot
	// take the task.
	AntiAffinity string
	// Ports are port names; each gets one free port from the node's range.
	Ports []string
}

// check reports what is wrong with the task, or nil.
func (t *Task) check() error {
	switch {
	case t.Key.Index < 0:
		return fmt.Errorf("negative task index %d", t.Key.Index)
	case t.Priority < 0 || t.Priority > MaxPriority:
		return fmt.Errorf("priority %d out of range 0..%d", t.Priority, MaxPriority)
	case !t.Class.valid():
		return fmt.Errorf("unknown class %d", int(t.Class))
	case !resourcesValid(t.Resources):
		return fmt.Errorf("resources cpu=%d memory=%d out of range 0..%d", t.Resources.CPU, t.Resources.MemoryMiB, int64(MaxResource))
	}
	for _, c := range t.Constraints {
		if err := c.check(); err != nil {
			return err
		}
	}
	seen := make(map[string]bool, len(t.Ports))
	for _, p := range t.Ports {
		if p == "" {
			return fmt.Errorf("empty port name")
		}
		if seen[p] {
			return fmt.Errorf("port %q named twice", p)
		}
		seen[p] = true
	}
	return nil
}

func resourcesValid(r Resources) bool {
	return r.CPU >= 0 && r.CPU <= MaxResource && r.MemoryMiB >= 0 && r.MemoryMiB <= MaxResource
}

// Snapshot is the cluster as Place sees it.
type Snapshot struct {
	Nodes  []Node
	Allocs []Alloc
}

// Placement assigns a task to a node, with its ports.
type Placement struct {
	Task  TaskKey
	Node  string
	Ports map[string]int // nil when the task has no ports
}

// Preemption evicts one alloc so that task For can be placed.
type Preemption struct {
	Alloc string  // Alloc.ID
	Task  TaskKey // the victim
	Node  string
	For   TaskKey
}

// Unplaced is a task that could not be placed, with the reason.
type Unplaced struct {
	Task   TaskKey
	Reason string
}

// Plan is what Place decided.
type Plan struct {
	// Placements are in the order tasks were placed.
	Placements []Placement
	// Preemptions are grouped by the task they make room for, in placement
	// order; each group is in victim order (cheapest first).
	Preemptions []Preemption
	// Unplaced are in the order tasks were considered.
	Unplaced []Unplaced
}
