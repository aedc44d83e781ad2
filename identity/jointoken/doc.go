// Package jointoken owns the single-use tokens an admin hands to a machine so
// it can join the cluster, or to a person so they can enrol (`unum login`).
//
// # Format
//
// A token is one line of printable ASCII with five fields separated by dots:
//
//	unum1.<kind>.<id>.<secret>.<cafp>
//
//	unum1   format version; anything else is refused
//	kind    what the token enrols: "node" (Join) or "user" (Login)
//	id      16 random bytes, 32 lowercase hex digits; the token's etcd key
//	secret  32 random bytes, base64url without padding (43 characters)
//	cafp    the SHA-256 of the cluster's root CA certificate, 64 lowercase hex
//
// The alphabet is [a-z0-9A-Z_-] plus the separating dots: nothing a shell
// quotes, no padding '=', no whitespace, so a token survives copy and paste
// through terminals, chat and YAML. There is exactly one encoding of a given
// token (lowercase hex only, canonical base64), so Parse(s).String() == s for
// every accepted s.
//
// The CA fingerprint lets the joining node authenticate the enrolment server
// before it sends anything (like kubeadm's discovery hash): a server whose
// chain does not end at that root never sees the secret.
//
// # Invariants
//
//   - The control plane stores a Record: the SHA-256 of the secret, never the
//     secret. Record.Check compares hashes in constant time, and only after
//     the secret matched does it say whether the token is used or expired, so
//     knowing a token's id reveals nothing about its state.
//   - Errors from Parse quote nothing of the input, and errors from Check
//     never contain the secret, so both are safe to log and return to
//     clients.
//   - Token carries a []byte secret, so tokens cannot be compared with ==;
//     its slog LogValue omits the secret.
//   - Everything here is deterministic: randomness and time are parameters.
//
// ParseRoles, ValidateNodeName and ValidateUserName are the single
// definition of valid node roles, node names and user names, shared by the
// CLI (early, friendly errors) and the server (the check that counts).
//
// Any package may import jointoken; it imports only the standard library.
package jointoken
