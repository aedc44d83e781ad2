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
//
// Invariants:
//   - Parse is strict and canonical: a parsed selector's String() parses back
//     to the same selector, and only canonical spellings are accepted (no
//     leading zeros, no unclean paths), except that hex digests are
//     normalised to lowercase.
//   - A set of selectors is an AND. ValidateSet refuses sets that could match
//     too much (empty; a binary selector without a uid or gid, because a
//     process may connect and then exec another binary) and sets that could
//     never match (two different uids, paths or digests).
//   - Match evaluates cheap selectors before the digest so a binary is only
//     hashed when everything else already matched.
//
// The package is deterministic (no I/O of its own) and may be imported by
// any identity package; it is the language registration entries are written
// in.
package selector
