// Package scheduler is unum's placement core: a pure function from a
// cluster snapshot (nodes, allocs) and pending tasks to a plan (placements
// with their ports, preemptions, and the tasks that cannot be placed, each
// with its reason). It does no I/O, reads no clock and draws no random
// number: Place called with the same snapshot and tasks, in any order,
// returns the same plan. The control loop around it (leader election,
// committing plans to etcd, node leases) lives elsewhere.
//
// # Feasibility
//
// A node may take a task when it is Ready and Schedulable (and has a valid
// capacity and a name no other node has); every constraint holds on its
// labels ("=" and "in" fail on a missing label, "!=" passes, "exists" holds
// when the label is present); its free CPU and memory (capacity minus its
// allocs and the tasks this plan has already put there) hold the task; it
// has a free port in its range for each of the task's ports; and
// anti-affinity holds: no other live task of the job (alloc or placement
// of this plan) has the node's value of the label, and the node has the
// label (NodeLabel, "node", is the node's name).
//
// # Order
//
// Pending tasks are placed one at a time, by class (prod, batch,
// best-effort), then priority, highest first, then job namespace, name and
// index. So prod is placed first and batch and best-effort fill what is
// left, and a plan never preempts a task it placed.
//
// # Scoring
//
// Best fit: among the feasible nodes, the one with the least free capacity
// left. A node's fit key is
//
//	floor(2^20 * freeCPU / maxCPU) + floor(2^20 * freeMemory / maxMemory)
//
// where maxCPU and maxMemory are the largest capacities among the usable
// nodes: free CPU and free memory each as a share of the largest node's,
// added, in fixed point. The smallest key wins, then the node name. Since
// every node is charged the same demand, ranking by free capacity before
// placement is ranking by what is left after it. Absolute shares, rather
// than shares of each node's own capacity, make a small task prefer a small
// node and keep big nodes whole for big tasks.
//
// Spread (soft): the node's value of the Spread label with the fewest live
// tasks of the job comes first (nodes without the label last), then best
// fit. Spread on NodeLabel prefers nodes without a task of the job, then
// the node with the fewest.
//
// Ports: each of a task's port names, in order, gets the lowest free port
// of the node's range.
//
// # Preemption
//
// A task that fits on no feasible node may evict allocs of a lower class,
// or of its class with a strictly lower priority. Per node, the victims are
// the shortest prefix of its eligible allocs in victim order (lowest class,
// lowest priority, smallest fit key of their resources, ID) that makes
// room, less any earlier one no longer needed once the later ones are in
// (tried from the most expensive down). Across nodes, the cheapest set
// wins: lowest most expensive victim as a (class, priority) pair, then
// fewest victims, then lowest sum of priorities, then node name. Victims
// free their resources and ports in the same plan, are never chosen twice,
// and are not re-placed: the caller resubmits them. Only allocs are
// victims, so a task placed by this plan never is.
//
// # Reasons
//
// An unplaced task's reason counts every node under the first filter it
// fails (down, unschedulable, each constraint, anti-affinity) and, for the
// nodes that pass, each short dimension: "no node satisfies constraint
// zone=eu (3 nodes checked)", "insufficient memory on 4 feasible nodes (6
// nodes checked: 2 down)". Invalid tasks (priority outside 0..MaxPriority,
// negative or huge resources, a bad constraint, a repeated port name) and
// task keys pending twice are unplaced with what is wrong.
//
// # Index
//
// Scanning every node per task would cost 10,000 node checks per
// placement. Instead, usable nodes are grouped, for each set of labels that
// tasks refer to (constraints, spread, anti-affinity), into classes of
// nodes with the same values of those labels (a partition per label set,
// built on the first task that needs it). A task looks only at the classes
// of its own label set, and constraints and label anti-affinity are
// decided once per class. Within a class, nodes sit in 64 rows by free
// CPU, each row a treap ordered by (fit key, node id) whose nodes carry
// their subtree's largest free CPU, memory and ports; a search walks rows
// upward from the task's, returns each row's first fit and stops when a
// row cannot beat the best so far (see fitIndex). Treap priorities hash the
// node id, so the trees' shapes are a function of the input. A placement
// moves one node in each partition: O(P log n) for P partitions. The result
// is exact best fit, the same as a scan of every node (tested against one).
//
// Limits: a task looks at every class of its partition, so a constraint on
// a label with a distinct value per node (a hostname) costs that task about
// one treap probe per node; other tasks are not slowed. Anti-affinity on
// NodeLabel skips the job's own nodes one by one, so a job of k such tasks
// costs up to O(k^2) skips. Preemption scans every node of the admitted
// classes and each node's eligible allocs: it is for the rare task that
// fits nowhere. A failed task's reason scans every node once, and tasks of
// the same job with the same needs that follow it reuse the reason while
// nothing has been preempted.
//
// # Use
//
// Place does not check that a pending task is not also an alloc; the
// caller submits each task once. Imported by the scheduler's control loop
// and the CLI's plan display; scheduler/schedbench holds the benchmark's
// workloads. It imports only the standard library.
package scheduler
