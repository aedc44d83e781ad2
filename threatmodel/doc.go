// Package threatmodel is the cluster's threat register as code: every threat
// the design answers, its STRIDE class, the asset and trust boundary it
// crosses, who the attacker is, how it is mitigated, and the tests that prove
// the mitigation.
//
// # Invariants
//
//   - Register returns a fresh, ID-sorted slice each call; there is no
//     package-level mutable state, so callers may modify what they get.
//   - Validate holds for Register(): IDs are unique and well formed (T-NNN),
//     every field a reader needs is filled, a mitigated threat names at least
//     one test, an accepted threat says why it is accepted, every threat has
//     an attacker Capability and crosses named TrustBoundaries, and a
//     KernelDependency's tests and fallback tests are distinct tests of its
//     threat.
//   - Every test a threat names exists: register_test.go parses the named
//     package's _test.go files and fails, naming each missing test, when one
//     does not. A mitigation without a test is a claim, not a mitigation.
//
// Test references are "pkgpath.TestName" with pkgpath relative to the module
// root ("identity/ca.TestVerifyCSRRefuses"), optionally with a subtest
// ("identity/ca.TestVerifyCSRRefuses/extra_uri"); see ParseTestRef.
//
// Markdown renders the register for docs. New fields go on Threat with a
// Validate rule for them; the register stays one literal list in register.go.
//
// Any package may import threatmodel; it imports only the standard library
// and nothing of unum.
package threatmodel
