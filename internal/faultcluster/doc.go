// Package faultcluster runs a cluster of real `unum node` processes, each in
// its own network namespace on a private bridge, so that tests can break the
// network and the processes the way production breaks them: partition
// (iptables DROP inside the namespaces, both directions), heal, slow a link
// (tbf on the node's veth), SIGKILL, SIGSTOP/SIGCONT and restart a node. The
// fault tests of issue 9 (faults_test.go) use it; see docs/design/faults.md.
//
// # What it owns
//
// Everything a run creates carries its prefix, "unf" and five random
// characters: the bridge, one namespace and veth pair per node (the links
// also carry the alias "unum-faultcluster:<prefix>"), the node names (and so
// the nodes' cgroups unum-<node>-* and BPF pins /sys/fs/bpf/unum/<node>-*),
// the data folder. A run holds a flock on /run/unum-faultcluster/<prefix>.lock
// for its whole life; the lock file is linked into place only once locked,
// so two runs, or two Start calls in one binary, never share a prefix.
// Start registers a t.Cleanup that kills the nodes, their task reapers and
// their tasks and removes all of it, whether the test passed or not; a guard
// does the same 30 s before the test's deadline, since go test's timeout
// panics without running cleanups. Start also sweeps what dead runs left:
// a prefix whose lock file it can lock (the run's process is gone, however
// it ended), removing only the namespaces named after it, the links marked
// with it, its nodes' reapers, cgroups and pins and its folder, then the
// lock file; and unum-fault-bin-* folders no test binary holds a flock on.
// Nothing without a lock file is ever touched, so a live run is never
// swept, and unrelated objects that merely look alike neither.
//
// # Invariants
//
//   - Traffic stays inside the bridge's /24, a subnet of 10.0.0.0/8 that no
//     route or address of the host already covers; the root namespace holds
//     .254 on the bridge so the test process reaches every node, and faults
//     never cut the root namespace off (a test can always ask any node).
//   - Node processes are started with nsenter --net (not `ip netns exec`,
//     which remounts /sys and hides the cgroup and BPF file systems the node
//     needs), as direct children with PR_SET_PDEATHSIG from one locked OS
//     thread: they die with the test process.
//   - The harness uses no BPF itself and needs root, ip, iptables, tc and
//     nsenter; Start skips the test, saying which is missing, otherwise.
//
// Only tests import it. Methods that may fail take the testing.TB they
// fail (a subtest's, not the one that started the cluster); what goroutines
// and require.Eventually conditions call (Run, Status, WaitReady, Kill)
// returns errors instead.
package faultcluster
