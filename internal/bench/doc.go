// Package bench owns `unum bench <component>`: benchmarks that start what
// they measure (a real node in a temporary folder, real sockets, real etcd;
// for authz, the policy engine in this process; for sched, the placement
// core in this process) or, with --cluster,
// measure the running cluster named by UNUM_CONFIG.
//
// Every component has a runner, `func(ctx, Options) (Report, error)`,
// listed by Runners. A report names the filesystem under the measured data
// (statfs type and mount; none for authz) and the settings (concurrency,
// windows, GOMAXPROCS, Go version, kernel), and holds one Result per
// measurement with ops/s and, where latency is meaningful, p50/p90/p99/max
// in microseconds, the target and whether it was met; Comparisons relate
// two results of the same run (authz: unum's path over plain OPA).
//
// Invariants:
//   - A runner returns an error only when it could not measure (setup
//     failed, or a measurement had no successful operation). A missed
//     target is a result, not an error: `unum bench` exits 0 whenever it ran.
//   - The default run of a component takes under 20 s including setup, on
//     two cores.
//   - Everything a runner starts (nodes, temporary folders, registration
//     entries on a cluster) is stopped or removed before it returns.
//   - Progress goes to Options.Progress (stderr in the CLI), never to the
//     report's writer.
//
// Imported by internal/cli only. It drives node, the unum API, identity/ca,
// the go-spiffe Workload API client, for authz, policy through
// policy/policybench, and for sched, scheduler through
// scheduler/schedbench (both in process, no node); none of them imports it.
package bench
