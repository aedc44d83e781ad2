# unum's shipped policy: the answer to "what is a privileged process here?"
#
# A process is privileged only when this policy grants its SPIFFE identity
# an action that crosses a trust boundary (DESIGN.md §2). Everything that is
# not granted below is denied.
#
# The one entrypoint is data.unum.authz.decision. Its input (policy/doc.go):
#   input.subject    {id, kind, namespace, name, attributes}
#   input.action     "<noun>.<verb>", the CLI command: "id.register", ...
#   input.resource   {kind, namespace, name}; namespace "-" is cluster-wide
#   input.delegation the verified delegation chain (empty until delegation)
#   input.context    {node, time, request_id}
#
# To extend it, add rules to `grants` (something may happen, with the reason
# why) or to `denies` (it may not, whatever grants it). A deny always wins.
package unum.authz

import rego.v1

decision := {
	"allow": allow,
	"privileged": privileged,
	"reasons": reasons,
}

default allow := false

allow if {
	count(grants) > 0
	count(denies) == 0
}

reasons := sort([r | some r in denies]) if {
	count(denies) > 0
} else := sort([r | some r in grants]) if {
	count(grants) > 0
} else := [concat("", ["no rule allows ", input.subject.id, " to ", input.action, " ", resource_name])]

# An ID of no known shape (not node, user, workload or system) gets nothing,
# whatever a binding or a later rule grants it.
denies contains concat("", [input.subject.id, " is not a node, user, workload or system identity"]) if {
	input.subject.kind == "unknown"
}

resource_name := concat("/", [input.resource.kind, input.resource.namespace, input.resource.name])

# Rules below start with equality tests on input (the subject's kind, the
# action) where they can: OPA indexes those, so a request evaluates only
# the rules that could apply to it.

# --- Privilege ---------------------------------------------------------------
#
# privileged marks the actions that cross a trust boundary: they run only
# on a fresh view of revocations and policy, and (audit issue) only after
# their audit record is durable. unum adds a minimum set fixed in code
# (policy.MinimumPrivileged) whatever this says, so no bundle can make a
# policy change, an identity change or a CA operation unprivileged.
privileged if privileged_actions[input.action]

privileged if startswith(input.action, "cred.") # delegation

privileged if startswith(input.action, "exec.") # running commands on nodes

privileged_actions := {
	"policy.apply", "policy.rollback", "policy.shadow", # what everyone may do
	"id.register", "id.delete", "svid.mint", # who anyone is
	"node.join-token", "node.rm", "node.renew", # who is in the cluster
	"user.add", "user.rm", "user.revoke", "user.renew",
	"ca.rotate", "ca.export-root", "ca.import-root", "ca.sign-intermediate",
	"backup.create", # a backup holds the sealed CA keys
	"cred.delegate", "node.exec", "audit.configure",
	"job.run", "job.stop", # a job gets an identity and runs on nodes
	"node.drain", "node.label", # where work may run
	"enforcement.configure", # what the kernel enforces
}

default privileged := false

# --- People ------------------------------------------------------------------
#
# The user made by `unum init` (and re-minted by `unum admin recover`) may do
# everything: the break-glass principal cannot be locked out by policy.
grants contains "user/admin may do everything" if {
	input.subject.kind == "user"
	input.subject.name == "admin"
}

# Every other user has a role, from `unum user add --role` or from a binding
# in the bundle's data (data.bindings: SPIFFE ID -> role), which may also give
# roles to workloads and services.
role := data.bindings[input.subject.id]

role := input.subject.attributes.role if {
	input.subject.kind == "user"
	not data.bindings[input.subject.id]
}

# Readers see the cluster; they change nothing. The audit log's published
# keys are public by design (anyone checking a proof needs them); the log
# itself says who did what, so reading it is an operator's right.
viewer_actions := {
	"id.show", "id.list", "node.ls", "cluster.status", "user.ls",
	"ca.status", "policy.get", "policy.history", "policy.status",
	"policy.check", "policy.explain", "audit.keys",
	"job.ls", "job.status", "task.ls", "enforcement.status",
}

# Operators also manage workload registrations and read, verify and see
# the settings of the audit log (changing them, audit.configure, is an
# admin's).
operator_actions := {
	"id.register", "id.delete", "audit.read", "audit.verify", "audit.config",
	"cred.inspect", "cred.list", "cred.revoke",
	"job.run", "job.stop", "job.logs", "node.drain", "node.label",
}

grants contains concat("", ["role viewer may ", input.action]) if {
	role in {"viewer", "operator"}
	viewer_actions[input.action]
}

grants contains concat("", ["role operator may ", input.action]) if {
	role == "operator"
	operator_actions[input.action]
}

# Admins do everything.
grants contains concat("", ["role admin (", input.subject.id, ") may do everything"]) if role == "admin"

# A user renews only their own certificate.
grants contains "users may renew their own certificate" if {
	input.subject.kind == "user"
	input.action == "user.renew"
	input.resource.kind == "user"
	input.resource.namespace == "-"
	input.resource.name == input.subject.name
}

# --- Namespaces ------------------------------------------------------------------
#
# Running jobs is decided per namespace: data.namespace_bindings maps a
# SPIFFE ID to the namespaces where it may run, stop and inspect jobs
# (a team's deploy pipeline, a developer). Operators and admins run jobs
# anywhere (their roles above).
namespace_job_actions := {"job.run", "job.stop", "job.status", "job.ls", "job.logs"}

grants contains concat("", [input.subject.id, " may ", input.action, " in namespace ", input.resource.namespace]) if {
	input.resource.kind == "job"
	namespace_job_actions[input.action]
	some ns in data.namespace_bindings[input.subject.id]
	ns == input.resource.namespace
}

# --- Every principal ----------------------------------------------------------
grants contains "every principal may ask who it is" if {
	input.action == "id.show"
	input.subject.kind != "unknown"
}

# Anyone may read the keys that verify delegated credentials: they are
# public, and services that verify credentials themselves need them.
grants contains "every principal may read the credential verification keys" if {
	input.action == "cred.keys"
	input.subject.kind != "unknown"
}

# --- Delegation ----------------------------------------------------------------
#
# What a delegated credential can do is bounded at every use by the rights
# of everyone in its chain and by its scopes (unum intersects them), so
# delegating never grants anything its delegator lacks. Users, workloads
# and system services may therefore delegate their own authority, and a
# chain may pass on, narrowed, what was delegated to it (the presented
# credential's scopes must also allow cred.delegate on the next holder).
# Minting on someone else's behalf (cred.impersonate) is an admin's.
# Limits (chain depth, longest lifetime) are set in package
# unum.delegation (see docs/policy.md).
delegators := {"user", "workload", "system"}

grants contains "principals may delegate their own authority" if {
	input.action == "cred.delegate"
	delegators[input.subject.kind]
	input.credential.subject == input.subject.id
}

grants contains "a delegated chain may pass on what it holds" if {
	input.action == "cred.delegate"
	count(input.delegation) > 0
	input.credential.subject == input.delegation[0].id
	some p in input.delegation
	p.id == input.subject.id
}

# --- Nodes -------------------------------------------------------------------
#
# A node may act only as a node, on itself. What it mints for workloads is
# checked again by the handler against the registrations assigned to it; a
# control node alone gets an intermediate (the handler checks the role).
node_actions := {
	"node.heartbeat", "node.renew", "node.sync",
	"revocation.watch", "policy.watch", "ca.sign-intermediate",
	"audit.submit", # its own log's checkpoints, to the witness
}

grants contains "nodes may perform node operations on themselves" if {
	input.subject.kind == "node"
	input.resource.kind == "node"
	input.resource.namespace == "-"
	node_actions[input.action]
	input.resource.name == input.subject.name
}

# A node's audit submission loop reads the published audit keys (to check
# the witness's countersignature) and the witnessed checkpoints (to find
# where the witness stands): public data, read-only.
node_audit_reads := {"audit.keys": "keys", "audit.verify": "witnessed"}

grants contains "nodes may read the audit keys and witnessed checkpoints" if {
	input.subject.kind == "node"
	input.resource.kind == "audit"
	input.resource.namespace == "-"
	input.resource.name == node_audit_reads[input.action]
}

# A control node relays `unum exec` to the nodes it runs on (the caller was
# decided exec.run there; the node checks the caller's delegated
# credential and that the relaying node is a control node).
grants contains "nodes may relay exec tasks" if {
	input.subject.kind == "node"
	input.action == "exec.node"
	input.resource.kind == "node"
	input.resource.name == "exec"
}

grants contains "nodes may mint SVIDs for the workloads assigned to them" if {
	input.subject.kind == "node"
	input.action == "svid.mint"
	input.resource.kind == "svid"
	input.resource.namespace != "-"
}

# --- Workloads ---------------------------------------------------------------
#
# A workload reads and writes its own namespace's data, nothing else.
workload_nouns := {"kv", "queue", "blob"}

grants contains "workloads may use their own namespace's data" if {
	input.subject.kind == "workload"
	input.resource.namespace == input.subject.namespace
	workload_nouns[split(input.action, ".")[0]]
}

# A workload may connect to workloads of its own namespace. A job's declared
# egress is checked against this (net.connect on net/NS/NAME of the
# target); declaring egress grants nothing by itself. Cross-namespace
# egress needs a rule here.
grants contains "workloads may connect to workloads of their own namespace" if {
	input.subject.kind == "workload"
	input.action == "net.connect"
	input.resource.kind == "net"
	input.resource.namespace == input.subject.namespace
}

# --- System services ---------------------------------------------------------
#
# Control-plane services (spiffe://TD/system/NAME) get exactly what they
# need, listed here by service. The control plane runs inside the nodes
# today, so no service needs anything yet.
system_actions := {}

grants contains concat("", ["system service ", input.subject.name, " may ", input.action]) if {
	input.subject.kind == "system"
	system_actions[input.subject.name][input.action]
}
