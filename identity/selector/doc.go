// Package selector parses, validates and evaluates workload selectors: the
// facts about a connecting process that a registration entry requires before
// the node agent hands that process an identity.
//
// Selectors are written as on the CLI:
//
//	unix:uid:N          effective user id (decimal, uint32)
//	unix:gid:N          primary or supplementary group id (decimal, uint32)
//	unix:path:/abs/bin  resolved path of the process's executable
//	unix:sha256:HEX     SHA-256 of the executable (64 hex digits)
//	unum:task:TASKID    the process runs in the cgroup of scheduled task
//	                    TASKID ([a-z0-9][a-z0-9-]{0,63}) or a descendant
//
// The family prefix (unix:, unum:) is implied by the type: unix selectors are
// facts the kernel reports about any process, unum selectors are facts unum
// established itself (a task's cgroup is created, owned and populated by the
// node's executor, which runs as root).
//
// Invariants:
//   - Parse is strict and canonical: a parsed selector's String() parses back
//     to the same selector, and only canonical spellings are accepted (no
//     leading zeros, no unclean paths), except that hex digests are
//     normalised to lowercase.
//   - A set of selectors is an AND. ValidateSet refuses sets that could match
//     too much (empty; a binary selector without a uid, gid or task, because
//     a process may connect and then exec another binary) and sets that could
//     never match (two different uids, paths, digests or tasks). A task
//     selector may stand alone: no process can move itself into a task's
//     root-owned cgroup.
//   - Match evaluates cheap selectors before the digest so a binary is only
//     hashed when everything else already matched.
//
// The package is deterministic (no I/O of its own) and may be imported by
// any identity package; it is the language registration entries are written
// in.
package selector
