// Package pidsteer starts a process with a chosen pid, for the tests that
// prove a recycled pid is not trusted (T-095, T-118): the pid of a process
// that exited is handed to a new one on purpose, through the pid
// namespace's ns_last_pid, rather than waited for.
//
// # Invariants
//
//   - Steering is serialised across processes with an exclusive flock on
//     LockPath: two test binaries of `go test ./...` (the attest package
//     and the attack suite) would otherwise take each other's pid. Other
//     processes on the machine may still take it first; Start retries.
//   - Every process it starts is killed and reaped: the misses at once,
//     the one returned when the test ends.
//
// Only tests import it: it takes a testing.TB, needs root, and fails the
// test when the pid cannot be steered. TestNotLinkedIntoUnum checks that
// the unum binary does not link it.
package pidsteer
