package threatmodel

// TrustBoundary is a line across which trust changes: what is on one side
// may not simply be believed on the other. Every threat crosses at least
// one (Threat.Crosses holds their names).
type TrustBoundary struct {
	Name        string `json:"name"` // short, stable: "workload-api"
	Title       string `json:"title"`
	Description string `json:"description"` // who is on each side and what checks the crossing
}

// TrustBoundaries lists the cluster's trust boundaries, in the order the
// register renders them. Names are stable: threats refer to them.
func TrustBoundaries() []TrustBoundary {
	return []TrustBoundary{
		{"enrolment", "Enrolment listener",
			"An unenrolled machine (anyone who can reach the port) presents a join token and a CSR; the control plane checks the token's hash and builds the node's certificate from its own template."},
		{"control-api", "Control-plane API",
			"Nodes, users, workloads and services call control nodes over mutual TLS; every call is decided by the policy on the caller's verified SPIFFE ID (and delegation chain) and privileged ones are audited before they act."},
		{"node-api", "Node API",
			"Control nodes and CLIs call a node's own services (Tasks, Audit, Enforcement status) over mutual TLS; the node checks the caller's identity and the policy."},
		{"metrics", "Metrics endpoint",
			"Anyone who can reach a node's metrics address scrapes it; plain HTTP is served only on loopback, any other address only over mutual TLS with an unrevoked SVID of the trust domain, and labels are bounded sets."},
		{"workload-api", "Workload API socket",
			"A local process asks its node's agent for SVIDs and JWTs over a unix socket; the agent attests the peer through a pidfd (uid, gids, cgroup, executable) and serves only the entries its selectors match."},
		{"delegation", "Delegated credentials",
			"A service presents a credential another principal delegated to it; the verifier every service links checks signature, holder binding, audience, scope narrowing, expiry and revocation."},
		{"policy", "Policy bundle",
			"Operator-written Rego and data enter the engine every node runs; the apply guard refuses bundles that would lock out the break-glass admin or make the fixed privileged set unprivileged."},
		{"task-sandbox", "Task sandbox",
			"A task's processes against their node's kernel, the host and other tasks: a distinct uid, no_new_privs, seccomp, Landlock, its cgroup, a private tmp, and the BPF LSM layer where the kernel loads it."},
		{"task-network", "Task network",
			"A task's sockets against the network: cgroup BPF programs on the node's task root allow only the egress the policy grants the task's identity; ingress to a task's ports is not filtered (T-115, accepted)."},
		{"control-quorum", "Control-plane quorum (etcd)",
			"Control nodes agree through etcd's raft; a minority cannot decide, and etcd's client and peer ports take only certificates of control nodes."},
		{"node-disk", "A node's disk",
			"Keys, the audit log and the store on a node's disk against a local user, a thief or a later reader: modes checked, CA keys sealed with a KEK kept elsewhere, the audit log hash-chained and checkpointed."},
		{"node-agent", "Node agent",
			"The unum process on a node against the control plane: what a compromised or crashed agent can obtain or leave behind (SVIDs only for its own entries and tasks, fencing on death)."},
		{"offline", "Outside the cluster",
			"Backups, audit exports and proof bundles read and checked away from the cluster; clocks and out-of-band hand-overs (join tokens) are here too."},
	}
}
