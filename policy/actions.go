package policy

import (
	"sort"
	"strings"
)

// minimumPrivileged is the privileged set fixed in code: policy changes,
// identity and registration changes, CA and node operations, delegation,
// exec on nodes and audit configuration. A bundle may mark more actions
// privileged, never fewer: Engine.Eval ors this in, and the apply guard
// refuses a bundle that says otherwise. Later issues extend it.
var minimumPrivileged = map[string]bool{
	// Policy changes: what anyone may do.
	"policy.apply": true, "policy.rollback": true, "policy.shadow": true,
	// Identity and registration changes: who anyone is.
	"id.register": true, "id.delete": true, "svid.mint": true,
	"user.add": true, "user.rm": true, "user.revoke": true, "user.renew": true,
	// Node operations: who is in the cluster, and what runs on it.
	"node.join-token": true, "node.rm": true, "node.renew": true, "node.exec": true,
	// The CA: the root of all identity.
	"ca.rotate": true, "ca.export-root": true, "ca.import-root": true, "ca.sign-intermediate": true,
	// A backup holds the sealed CA keys and every secret hash.
	"backup.create": true,
	// Audit configuration: no bundle can switch fail-closed audit off.
	"audit.configure": true,
	// Kernel enforcement settings: what the kernel refuses, and whether a
	// node without BPF may run tasks.
	"enforcement.configure": true,
}

// minimumPrivilegedNouns: every action of these nouns is privileged.
var minimumPrivilegedNouns = map[string]bool{
	"cred": true, // delegated credentials
	"exec": true, // running commands on nodes
}

// MinimumPrivileged reports whether action is privileged whatever the
// bundle says.
func MinimumPrivileged(action string) bool {
	if minimumPrivileged[action] {
		return true
	}
	noun, _, _ := strings.Cut(action, ".")
	return minimumPrivilegedNouns[noun]
}

// MinimumPrivilegedActions lists the fixed set, sorted, nouns as "noun.*"
// (for docs and the threat model's list of privileged actions).
func MinimumPrivilegedActions() []string {
	out := make([]string, 0, len(minimumPrivileged)+len(minimumPrivilegedNouns))
	for a := range minimumPrivileged {
		out = append(out, a)
	}
	for n := range minimumPrivilegedNouns {
		out = append(out, n+".*")
	}
	sort.Strings(out)
	return out
}
