// Package faultcluster runs a cluster of real `unum node` processes, each in
// its own network namespace on a private bridge, so that tests can break the
// network and the processes the way production breaks them: partition
// (iptables DROP inside the namespaces, both directions), heal, slow a link
// (tbf on the node's veth), SIGKILL, SIGSTOP/SIGCONT and restart a node. The
// fault tests of issue 9 (faults_test.go) use it; see docs/design/faults.md.
//
// # What it owns
//
// Everything it creates carries the run's prefix "uf<PID>" (PID: the test
// process): the bridge, one namespace and veth pair per node, the node names
// (and so the nodes' cgroups unum-<node> and BPF pins
// /sys/fs/bpf/unum/<node>), the data folder. Start registers a t.Cleanup
// that kills the nodes and their tasks and removes all of it, whether the
// test passed or not; Start also sweeps what an earlier run left behind when
// that run's process is gone (a crashed or killed test binary), so one bad
// run never breaks the next. Runs of live processes are never touched, so
// two test binaries may run at once.
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
// Only tests import it: it takes a testing.TB and fails the test on setup
// errors.
package faultcluster
