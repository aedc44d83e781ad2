// Package cli implements the `unum` command line: `unum <noun> <verb>`,
// flags that may follow positional arguments, `-o table|json|yaml` (JSON on
// stdout; logs and progress on stderr), UNUM_CONFIG / UNUM_ADDR, and the exit
// codes 0 ok, 1 error (unauthenticated, expired or revoked callers
// included), 2 usage, 3 denied by policy. Commands that print a secret or a
// token print only that on stdout.
//
// cmd/unum is a thin main around Main; the logic of each command lives in
// the packages it drives (node, control, identity, ...).
package cli
