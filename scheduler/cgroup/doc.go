// Package cgroup finds the node's cgroup hierarchies and manages one group
// per task in them.
//
// Linux hosts come in three shapes. A pure cgroup v2 host has every
// controller in one hierarchy. A hybrid host (this project's development
// machine) mounts v2 for grouping only, at /sys/fs/cgroup/unified, and keeps
// the cpu, memory and pids controllers in v1 hierarchies. A v1-only host has
// no v2 at all and is refused: the executor needs v2 for grouping,
// cgroup.kill and the BPF attach point.
//
// Detection is a deterministic core, [Detect], over the contents of
// /proc/self/mountinfo and /proc/self/cgroup; [DetectHost] reads the real
// files. A [Manager] owns the subtree unum-<node> below the node process's
// own cgroup in v2 and in each v1 hierarchy it uses (the node name is in the
// path because `unum dev` runs several nodes on one machine). Each task gets
// a [Group]: always a v2 group, and a group in each v1 hierarchy that holds
// a controller v2 lacks. Limits go to whichever hierarchy holds the
// controller, and [Manager.Report] says exactly which limits are enforced
// where; a limit nobody can enforce is reported as not enforced, never
// silently dropped.
//
// Invariants: a Manager writes only below its own unum-<node> directories,
// except on a pure v2 host, where it delegates the node's own group
// (subtree_control, and the node process moved into AgentLeaf); every task
// group it creates is removed by [Group.Remove] or, after a crash, by
// [Manager.Sweep] (and by the task reaper when the node dies). Imported by
// scheduler/executor, the node daemon (for the report) and
// enforcement/kernel (DetectHost).
package cgroup
