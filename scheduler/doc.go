// Package scheduler is unum's placement core: a pure function from a
// cluster snapshot (nodes, allocs) and pending tasks to a plan (placements
// with their ports, preemptions, and the tasks that cannot be placed, each
// with its reason). It does no I/O, reads no clock and draws no random
// number; Place called twice with the same snapshot and tasks, in any
// order, returns the same plan.
package scheduler
