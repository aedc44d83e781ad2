// Package spawn starts child processes that die with the process that
// started them: PR_SET_PDEATHSIG (SIGKILL), set from one OS thread that
// stays locked for the Spawner's life. The kernel sends the signal when the
// *thread* that forked the child exits, not the process, so forking from
// whatever thread the Go scheduler picks would kill children whenever that
// thread happens to exit.
//
// # Invariants
//
//   - Every child is started from the Spawner's locked thread, in its own
//     process group (Setpgid), with Pdeathsig SIGKILL.
//   - Each Proc has one goroutine that reaps it (cmd.Wait) and closes Done;
//     callers wait on Done, never call Wait themselves.
//   - Close stops the thread: call it only once every child is gone (the
//     thread's exit would signal the survivors). Start after Close fails.
//
// Harnesses that run unum nodes as children import it: internal/devcluster
// (`unum dev`) and internal/faultcluster.
package spawn
