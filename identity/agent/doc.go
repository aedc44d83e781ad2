// Package agent is the node agent's identity half: it holds the registration
// entries the control plane assigned to this node, gets an X509-SVID minted
// for each through an Upstream, keeps them fresh, and serves them to local
// processes over the standard SPIFFE Workload API on a unix socket, so any
// unmodified SPIFFE client works with SPIFFE_ENDPOINT_SOCKET.
//
// # Keys and minting
//
// The agent generates every workload key itself (ECDSA P-256) and sends only
// a CSR upstream; a private key leaves the agent only over the Workload API
// connection of a process that matches its entry. A minted chain is checked
// before it is cached: the leaf must hold the agent's key, name exactly the
// entry's SPIFFE ID and, once a trust bundle is known, verify against it.
//
// # Rotation
//
// Run re-mints each SVID at half of its remaining lifetime, measured from the
// moment the agent received it (so a CA that backdates NotBefore for clock
// skew cannot push rotation past expiry). On upstream failure the cached SVID
// keeps being served until it expires, and minting is retried with
// exponential backoff. Every change (entries, bundle, a new or expired SVID)
// wakes every open Workload API stream.
//
// # Tasks
//
// With Config.TaskCgroupRoot set, processes are attested with the scheduled
// task whose cgroup they run in (attest.WithTaskCgroups), and entries with a
// unum:task:TASKID selector are served only to processes in that task's
// group, re-read on every call. The executor calls WaitSVID before it execs a
// task, so the task's first fetch is answered from the cache; the upstream
// (the CA) decides whether the node may have the task's identity at all.
//
// # Workload API invariants
//
//   - every call needs the metadata header workload.spiffe.io: true, else
//     InvalidArgument;
//   - the caller is attested (attest.Peer.Attest) on every call and again
//     before every streamed update; a caller that fails attestation, or
//     matches no entry, gets PermissionDenied and a stream ends with it. This
//     holds for every method, bundle and validation calls included: there is
//     no unauthenticated access (deny by default, DESIGN.md §2);
//   - a caller only ever receives SVIDs, keys and JWTs of entries whose
//     selectors it matches at that moment;
//   - FetchJWTSVID with a spiffe_id returns only an ID the caller matches;
//   - logs name a caller by pid, uid and executable path; keys, tokens and
//     SVIDs are never logged.
//
// Only the node daemon (cmd/unum) should import this package; others reach
// identities through the Workload API like any workload.
package agent
