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

# --- Network ----------------------------------------------------------------
#
# net.connect (may the subject connect to the workload net/NS/NAME) is
# decided by the network policy alone, package unum.network (network.rego):
# the grants unum also compiles into every node's kernel, so a job's egress
# check and the kernel cannot disagree. It is allowed exactly when a grant
# of the subject is {"id": the target's SPIFFE ID} or {"namespace": NS}, and
# the subject's grants are well-formed; otherwise it is denied, whatever a
# role grants (an admin binding does not open the network). Declaring
# egress grants nothing by itself.
#
# The grants are the source's: evaluated, as unum evaluates them for the
# kernel, with the source itself as the resource.
net_source := {"kind": "net", "namespace": input.subject.namespace, "name": input.subject.name}

# net_egress_as_given is the source's grants as package unum.network
# gives them, evaluated once per decision (a complete rule's value is
# cached): net_egress and the "is a set" check below both read it.
# Undefined without package unum.network. It is evaluated for net.connect
# decisions only.
net_egress_as_given := x if {
	x := data.unum.network.egress with input.resource as net_source
}

# Without package unum.network (or with no grants) nothing is granted.
default net_egress := []

# Read through JSON so that its type is unknown to the type checker: a
# bundle's own network package may give egress a narrow type (a set of
# strings, of objects with other keys), against which the matching below
# would not type-check and would refuse the whole bundle.
net_egress := json.unmarshal(json.marshal(net_egress_as_given))

# net_invalid lists what is wrong with the subject's grants. unum
# validates the grants in Go when it compiles them for the kernel
# (policy.NetworkGrants) and refuses them all when one is wrong; this
# mirrors that check so that net.connect is denied exactly then too
# (policy's TestNetworkValidationAgrees holds the two to the same verdict).
# It lives here, beside the decision, so that a bundle replacing
# network.rego keeps it.
net_max_grants := 1024

net_max_ports := 64

net_grant_kinds := {"id", "namespace", "cidr"}

net_grant_keys := net_grant_kinds | {"ports", "protocol"}

net_invalid contains "egress is not a set" if {
	# Bound first: without package unum.network there is nothing to
	# check, and "not is_set" of an undefined value would be true.
	x := net_egress_as_given
	not is_set(x)
}

net_invalid contains sprintf("egress has %d grants, at most %d", [count(net_egress), net_max_grants]) if count(net_egress) > net_max_grants

net_invalid contains sprintf("grant %s: %s", [json.marshal(g), msg]) if {
	some g in net_egress
	some msg in net_grant_problems(g)
}

net_grant_problems(g) := {"not an object"} if not is_object(g)

net_grant_problems(g) := {msg |
	some k, _ in g
	not net_grant_keys[k]
	msg := sprintf("unknown key %q", [k])
} | {msg |
	n := count({k | some k in net_grant_kinds; k in object.keys(g)})
	n != 1
	msg := sprintf("has %d of id, namespace, cidr, want exactly one", [n])
} | {msg |
	not "cidr" in object.keys(g)
	some k in {"ports", "protocol"}
	k in object.keys(g)
	msg := "ports and protocol qualify a cidr grant only"
} | {msg |
	"id" in object.keys(g)
	not net_valid_id(g.id)
	msg := "id is not a job's SPIFFE ID"
} | {msg |
	"namespace" in object.keys(g)
	not net_valid_namespace(g.namespace)
	msg := "namespace is not a DNS label"
} | {msg |
	"cidr" in object.keys(g)
	not net_valid_cidr(g.cidr)
	msg := "cidr is not ADDRESS/BITS"
} | {msg |
	"protocol" in object.keys(g)
	not g.protocol in {"tcp", "udp", "any"}
	msg := "protocol is not tcp, udp or any"
} | {msg |
	"ports" in object.keys(g)
	not net_valid_ports(g.ports)
	msg := sprintf("ports is not a list of 1 to %d port numbers (1-65535)", [net_max_ports])
} if is_object(g)

net_valid_id(s) if {
	is_string(s)
	regex.match(`^spiffe://[a-z0-9._-]+/ns/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/job/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`, s)
}

net_valid_namespace(s) if {
	is_string(s)
	regex.match(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`, s)
}

# The prefix length without a leading zero: net.cidr_is_valid would read
# "/08", Go's netip does not.
net_valid_cidr(s) if {
	is_string(s)
	regex.match(`^[0-9a-fA-F:.]+/(0|[1-9][0-9]{0,2})$`, s)
	net.cidr_is_valid(s)
}

net_valid_ports(ps) if {
	is_array(ps)
	count(ps) > 0
	count(ps) <= net_max_ports
	every p in ps {
		is_number(p)
		floor(p) == p
		p >= 1
		p <= 65535
	}
}

# The target's SPIFFE ID: a job's egress targets are in the cluster's
# trust domain (jobspec.ValidateFor), which is read from the subject's ID.
# A target that is not a workload (namespace -) is never granted: no valid
# grant names namespace - or an ID with it.
net_target := concat("", ["spiffe://", split(input.subject.id, "/")[2], "/ns/", input.resource.namespace, "/", input.resource.name])

net_granted := g if {
	input.resource.kind == "net"
	count(net_invalid) == 0
	some g in net_egress
	is_object(g)
	object.keys(g) == {"id"}
	object.get(g, "id", null) == net_target
} else := g if {
	input.resource.kind == "net"
	count(net_invalid) == 0
	some g in net_egress
	is_object(g)
	object.keys(g) == {"namespace"}
	object.get(g, "namespace", null) == input.resource.namespace
}

grants contains concat("", ["network grant ", json.marshal(net_granted), " lets ", input.subject.id, " connect to ", resource_name]) if {
	input.action == "net.connect"
	net_granted
}

denies contains concat("", ["no network grant (package unum.network) lets ", input.subject.id, " connect to ", resource_name]) if {
	input.action == "net.connect"
	count(net_invalid) == 0
	not net_granted
}

denies contains concat("", ["the network grants of ", input.subject.id, " are malformed: ", msg]) if {
	input.action == "net.connect"
	some msg in net_invalid
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
