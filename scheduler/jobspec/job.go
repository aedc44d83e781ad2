package jobspec

import (
	"time"
)

// Job types.
const (
	TypeService = "service"
	TypeBatch   = "batch"
)

// Job classes: prod work may preempt batch and best-effort work.
const (
	ClassProd       = "prod"
	ClassBatch      = "batch"
	ClassBestEffort = "best-effort"
)

// Restart policies.
const (
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"
	RestartNever     = "never"
)

// Constraint operators.
const (
	OpEqual    = "="
	OpNotEqual = "!="
	OpIn       = "in"
	OpExists   = "exists"
)

// NodeLabel is the pseudo label key naming the node itself: wherever a label
// key is taken (constraints, spread, anti_affinity) "node" means the node's
// name, so anti_affinity: node puts at most one task on each node. A real
// node label called "node" is shadowed by it.
const NodeLabel = "node"

// Defaults applied by Parse (and SetDefaults, except DefaultPriority: 0 is a
// valid priority, so only Parse can tell an absent priority from a zero one).
const (
	DefaultNamespace     = "default"
	DefaultPriority      = 500
	DefaultCount         = 1
	DefaultBatchAttempts = 3
	DefaultRestartDelay  = time.Second
	DefaultRestartMax    = time.Minute
)

// Bounds. They keep one job from costing the control plane (etcd values,
// placement) or a node (argv, environment) more than a sane job needs.
const (
	MaxSpecBytes        = 64 << 10 // YAML given to Parse
	MaxTaskBytes        = 64 << 10 // command + args + env, the execve payload
	MaxPriority         = 1000
	MaxCount            = 10000
	MaxCPU              = 1_000_000 // millicores: 1000 cores
	MaxMemoryMiB        = 16 << 20  // 16 TiB
	MaxArgs             = 256
	MaxEnv              = 256
	MaxConstraints      = 64
	MaxConstraintValues = 64
	MaxPorts            = 32
	MaxEgress           = 256
	MaxAttempts         = 1000
	MinRestartDelay     = 100 * time.Millisecond
	MaxRestartDelay     = time.Hour
	MaxCommandBytes     = 4096 // PATH_MAX
	MaxWorkDirBytes     = 4096
)

// Job is a parsed, defaulted job specification. A *Job returned by Parse or
// ParseCanonical is valid; one built in code must be given SetDefaults (and a
// Priority) and pass Validate before it is used.
type Job struct {
	// Name and Namespace are DNS labels; together they name the job's
	// identity spiffe://TD/ns/NAMESPACE/job/NAME.
	Name, Namespace string
	// Type is TypeService (runs until stopped) or TypeBatch (runs to
	// completion).
	Type string
	// Priority orders jobs for preemption: 0..MaxPriority, higher wins.
	Priority int
	// Class is ClassProd, ClassBatch or ClassBestEffort.
	Class string
	// Count is the number of tasks, 1..MaxCount.
	Count int
	Task  Task
	// Resources are per task.
	Resources   Resources
	Constraints []Constraint
	// Spread is a label key the scheduler spreads tasks across (soft).
	Spread string
	// AntiAffinity is a label key (or NodeLabel): at most one task of the
	// job per value of that label (hard).
	AntiAffinity string
	Restart      Restart
	// Ports are names; the scheduler allocates a port per name and task and
	// the executor passes it as PortEnv(name).
	Ports []string
	// Egress are the SPIFFE IDs the job intends to call. Declaring one grants
	// nothing: the effective access is this list intersected with policy.
	Egress []string
}

// Task is what each task of a job runs.
type Task struct {
	// Command is an absolute clean path or a bare name looked up in PATH.
	Command string
	// Args are passed to the command as they are: no shell, no expansion of
	// ${VAR} or globs by unum.
	Args []string
	// Env is added to the environment the executor sets; names under
	// ReservedEnvPrefix and ReservedEnv are the executor's.
	Env map[string]string
	// WorkDir is relative to the task's own directory; "" is that directory.
	WorkDir string
}

// Resources a task is given (and limited to).
type Resources struct {
	CPU       int64 // millicores, 1..MaxCPU
	MemoryMiB int64 // MiB, 1..MaxMemoryMiB
}

// Constraint restricts the nodes a job's tasks may run on. Values holds one
// value for OpEqual and OpNotEqual, one or more for OpIn and none for
// OpExists.
type Constraint struct {
	Label  string
	Op     string
	Values []string
}

// Restart says what the executor does when a task exits. The delay before the
// n-th restart is min(Delay * 2^(n-1), MaxDelay).
type Restart struct {
	Policy string
	// Attempts bounds restarts after the first run; 0 means unlimited
	// (services only; a batch job that restarts must be bounded).
	Attempts int
	Delay    time.Duration
	MaxDelay time.Duration
}

// SetDefaults fills the zero fields that have a default: namespace, class
// (from the type), count, restart policy, delays and, for batch jobs that
// restart on failure, attempts. It leaves Priority alone (0 is valid) and
// turns empty slices and maps into nil so that equal jobs compare equal.
func (j *Job) SetDefaults() {
	if j.Namespace == "" {
		j.Namespace = DefaultNamespace
	}
	if j.Class == "" {
		switch j.Type {
		case TypeService:
			j.Class = ClassProd
		case TypeBatch:
			j.Class = ClassBatch
		}
	}
	if j.Count == 0 {
		j.Count = DefaultCount
	}
	if j.Restart.Policy == "" {
		j.Restart.Policy = RestartOnFailure
	}
	if j.Type == TypeBatch && j.Restart.Policy == RestartOnFailure && j.Restart.Attempts == 0 {
		j.Restart.Attempts = DefaultBatchAttempts
	}
	if j.Restart.Delay == 0 {
		j.Restart.Delay = DefaultRestartDelay
	}
	if j.Restart.MaxDelay == 0 {
		j.Restart.MaxDelay = max(DefaultRestartMax, j.Restart.Delay)
	}
	if len(j.Task.Args) == 0 {
		j.Task.Args = nil
	}
	if len(j.Task.Env) == 0 {
		j.Task.Env = nil
	}
	if len(j.Constraints) == 0 {
		j.Constraints = nil
	}
	for i := range j.Constraints {
		if len(j.Constraints[i].Values) == 0 {
			j.Constraints[i].Values = nil
		}
	}
	if len(j.Ports) == 0 {
		j.Ports = nil
	}
	if len(j.Egress) == 0 {
		j.Egress = nil
	}
}
