package unum.authz_test

import rego.v1

import data.unum.authz

td := "spiffe://unum.test"

user(name, r) := {"id": sprintf("%s/user/%s", [td, name]), "kind": "user", "namespace": "", "name": name, "attributes": {"role": r}}

node(name) := {"id": sprintf("%s/node/%s", [td, name]), "kind": "node", "namespace": "", "name": name, "attributes": {}}

workload(ns, job) := {"id": sprintf("%s/ns/%s/job/%s", [td, ns, job]), "kind": "workload", "namespace": ns, "name": sprintf("job/%s", [job]), "attributes": {}}

system(svc) := {"id": sprintf("%s/system/%s", [td, svc]), "kind": "system", "namespace": "", "name": svc, "attributes": {}}

req(subject, action, kind, ns, name) := {
	"subject": subject,
	"action": action,
	"resource": {"kind": kind, "namespace": ns, "name": name},
	"delegation": [],
	"context": {"node": "node-1", "time": "2026-11-26T00:00:00Z", "request_id": "r"},
}

allowed(q) if authz.decision.allow with input as q

# --- deny by default ---------------------------------------------------------

test_unknown_kind_denied if {
	q := req({"id": "spiffe://unum.test/x", "kind": "unknown", "namespace": "", "name": "", "attributes": {}}, "id.show", "id", "-", "self")
	not allowed(q)
	d := authz.decision with input as q
	d.reasons == ["spiffe://unum.test/x is not a node, user, workload or system identity"]
}

test_user_without_role_denied if {
	q := req(user("eve", ""), "node.ls", "node", "-", "*")
	not allowed(q)
	d := authz.decision with input as q
	d.reasons == ["no rule allows spiffe://unum.test/user/eve to node.ls node/-/*"]
}

test_unknown_action_denied if not allowed(req(user("olga", "operator"), "ca.rotate", "ca", "-", "root"))

# --- admin --------------------------------------------------------------------

test_admin_everything if {
	allowed(req(user("admin", ""), "policy.apply", "policy", "-", "bundle"))
	allowed(req(user("admin", ""), "ca.rotate", "ca", "-", "intermediates"))
	allowed(req(user("admin", ""), "made.up", "thing", "-", "x"))
}

test_admin_role_everything if allowed(req(user("alice", "admin"), "node.rm", "node", "-", "n2"))

# --- roles ----------------------------------------------------------------------

test_viewer_reads_only if {
	allowed(req(user("vic", "viewer"), "node.ls", "node", "-", "*"))
	allowed(req(user("vic", "viewer"), "policy.explain", "decision", "-", "n1.ab"))
	not allowed(req(user("vic", "viewer"), "id.register", "id", "web", "job/api"))
	not allowed(req(user("vic", "viewer"), "policy.apply", "policy", "-", "bundle"))
}

test_operator_registers if {
	allowed(req(user("olga", "operator"), "id.register", "id", "web", "job/api"))
	allowed(req(user("olga", "operator"), "id.delete", "id", "web", "job/api"))
	not allowed(req(user("olga", "operator"), "user.add", "user", "-", "bob"))
	not allowed(req(user("olga", "operator"), "policy.apply", "policy", "-", "bundle"))
}

test_audit_by_role if {
	# Viewers see the published keys only.
	allowed(req(user("vic", "viewer"), "audit.keys", "audit", "-", "keys"))
	not allowed(req(user("vic", "viewer"), "audit.read", "audit", "-", "events"))
	not allowed(req(user("vic", "viewer"), "audit.verify", "audit", "-", "log"))
	not allowed(req(user("vic", "viewer"), "audit.config", "audit", "-", "config"))

	# Operators read, verify and see the settings; they do not change them.
	allowed(req(user("olga", "operator"), "audit.read", "audit", "-", "events"))
	allowed(req(user("olga", "operator"), "audit.verify", "audit", "-", "log"))
	allowed(req(user("olga", "operator"), "audit.verify", "audit", "-", "witnessed"))
	allowed(req(user("olga", "operator"), "audit.config", "audit", "-", "config"))
	allowed(req(user("olga", "operator"), "audit.keys", "audit", "-", "keys"))
	not allowed(req(user("olga", "operator"), "audit.configure", "audit", "-", "config"))
	not allowed(req(user("olga", "operator"), "audit.submit", "node", "-", "n1"))

	# Admins change them, and that is privileged.
	d := authz.decision with input as req(user("alice", "admin"), "audit.configure", "audit", "-", "config")
	d.allow
	d.privileged
	allowed(req(user("alice", "admin"), "audit.read", "audit", "-", "events"))
}

test_binding_overrides_role_attribute if {
	q := req(user("olga", "viewer"), "id.register", "id", "web", "job/api")
	allowed(q) with data.bindings as {"spiffe://unum.test/user/olga": "operator"}
	not allowed(q)
}

test_binding_gives_workload_a_role if {
	q := req(workload("ops", "deployer"), "id.register", "id", "web", "job/api")
	allowed(q) with data.bindings as {"spiffe://unum.test/ns/ops/job/deployer": "operator"}
	not allowed(q)
}

test_role_attribute_ignored_for_non_users if not allowed(req(object.union(workload("a", "b"), {"attributes": {"role": "admin"}}), "node.ls", "node", "-", "*"))

test_user_renews_only_self if {
	allowed(req(user("vic", "viewer"), "user.renew", "user", "-", "vic"))
	not allowed(req(user("vic", "viewer"), "user.renew", "user", "-", "admin"))
}

# --- nodes ----------------------------------------------------------------------

test_node_acts_on_itself if {
	allowed(req(node("n1"), "node.heartbeat", "node", "-", "n1"))
	allowed(req(node("n1"), "node.renew", "node", "-", "n1"))
	allowed(req(node("n1"), "policy.watch", "node", "-", "n1"))
	not allowed(req(node("n1"), "node.renew", "node", "-", "n2"))
}

test_node_audit if {
	allowed(req(node("n1"), "audit.submit", "node", "-", "n1"))
	not allowed(req(node("n1"), "audit.submit", "node", "-", "n2"))
	allowed(req(node("n1"), "audit.keys", "audit", "-", "keys"))
	allowed(req(node("n1"), "audit.verify", "audit", "-", "witnessed"))
	not allowed(req(node("n1"), "audit.verify", "audit", "-", "log"))
	not allowed(req(node("n1"), "audit.read", "audit", "-", "events"))
	not allowed(req(node("n1"), "audit.configure", "audit", "-", "config"))
	not allowed(req(node("n1"), "audit.keys", "audit", "-", "witnessed"))
}

test_node_mints_for_workloads_only if {
	allowed(req(node("n1"), "svid.mint", "svid", "web", "job/api"))
	not allowed(req(node("n1"), "svid.mint", "svid", "-", "user/admin"))
}

test_node_is_not_a_user_or_workload if {
	not allowed(req(node("n1"), "node.ls", "node", "-", "*"))
	not allowed(req(node("n1"), "policy.apply", "policy", "-", "bundle"))
	not allowed(req(node("n1"), "id.register", "id", "web", "job/api"))
	not allowed(req(node("n1"), "kv.get", "kv", "web", "k"))
}

# --- workloads ------------------------------------------------------------------

test_workload_own_namespace if {
	allowed(req(workload("web", "api"), "kv.get", "kv", "web", "k"))
	allowed(req(workload("web", "api"), "queue.publish", "queue", "web", "t"))
	not allowed(req(workload("web", "api"), "kv.get", "kv", "db", "k"))
	not allowed(req(workload("web", "api"), "kv.get", "kv", "-", "k"))
}

test_workload_no_control_actions if {
	not allowed(req(workload("web", "api"), "policy.apply", "policy", "-", "bundle"))
	not allowed(req(workload("web", "api"), "id.register", "id", "web", "job/x"))
	not allowed(req(workload("web", "api"), "svid.mint", "svid", "web", "job/x"))
}

test_everyone_asks_who_they_are if {
	allowed(req(workload("web", "api"), "id.show", "id", "-", "self"))
	allowed(req(node("n1"), "id.show", "id", "-", "self"))
	allowed(req(system("scheduler"), "id.show", "id", "-", "self"))
}

test_system_gets_nothing_unlisted if not allowed(req(system("scheduler"), "node.ls", "node", "-", "*"))

# --- privilege ------------------------------------------------------------------

test_privileged_actions if {
	d := authz.decision with input as req(user("admin", ""), "policy.apply", "policy", "-", "bundle")
	d.privileged
	r := authz.decision with input as req(user("vic", "viewer"), "node.ls", "node", "-", "*")
	not r.privileged
}

test_denies_win if {
	q := req(user("admin", ""), "node.rm", "node", "-", "n1")
	not allowed(q) with authz.denies as {"frozen"}
	d := authz.decision with input as q with authz.denies as {"frozen"}
	d.reasons == ["frozen"]
}

test_delegation_and_exec_privileged if {
	d := authz.decision with input as req(user("admin", ""), "cred.issue", "cred", "web", "token")
	d.privileged
	e := authz.decision with input as req(user("admin", ""), "exec.run", "node", "-", "n1")
	e.privileged
}

test_system_service_gets_exactly_its_table if {
	q := req(system("scheduler"), "job.place", "job", "web", "api")
	allowed(q) with authz.system_actions as {"scheduler": {"job.place"}}
	not allowed(q) with authz.system_actions as {"scheduler": {"job.list"}}
	not allowed(q) with authz.system_actions as {"controller": {"job.place"}}
}

# --- audit: what a node may not do -----------------------------------------------

test_node_reads_no_audit_events_and_changes_no_settings if {
	not allowed(req(node("n1"), "audit.verify", "audit", "ns", "witnessed"))
	not allowed(req(node("n1"), "audit.verify", "node", "-", "witnessed"))
	not allowed(req(node("n1"), "audit.config", "audit", "-", "config"))
	not allowed(req(workload("web", "api"), "audit.keys", "audit", "-", "keys"))
	not allowed(req(workload("web", "api"), "audit.read", "audit", "-", "events"))
}

# --- delegation ------------------------------------------------------------------

cred_req(subject, holder, on_behalf_of, delegation) := object.union(
	req(subject, "cred.delegate", "cred", "shop", "job/a"),
	{
		"delegation": delegation,
		"credential": {"subject": on_behalf_of, "holder": holder, "scopes": ["kv.read:kv/shop/*"], "audience": [sprintf("%s/system/api", [td])], "ttl_seconds": 0},
	},
)

test_users_and_workloads_delegate_their_own_authority if {
	alice := user("alice", "viewer")
	allowed(cred_req(alice, workload("shop", "a").id, alice.id, []))
	a := workload("shop", "a")
	allowed(cred_req(a, workload("shop", "b").id, a.id, []))
	n := node("n1")
	not allowed(cred_req(n, workload("shop", "b").id, n.id, []))
}

test_no_one_delegates_for_someone_else if {
	eve := user("eve", "operator")
	not allowed(cred_req(eve, workload("shop", "a").id, user("alice", "").id, []))
}

test_a_chain_passes_on_what_it_holds if {
	alice := user("alice", "viewer")
	a := workload("shop", "a")
	chain := [{"id": alice.id, "kind": "user", "namespace": "", "name": "alice"}, {"id": a.id, "kind": "workload", "namespace": "shop", "name": "job/a"}]
	allowed(cred_req(a, workload("shop", "b").id, alice.id, chain))
	allowed(cred_req(alice, workload("shop", "b").id, alice.id, chain))
	c := workload("shop", "c")
	not allowed(cred_req(c, workload("shop", "b").id, alice.id, chain))
}

test_impersonation_is_an_admins if {
	not allowed(req(user("olga", "operator"), "cred.impersonate", "cred", "shop", "job/a"))
	allowed(req(user("root", "admin"), "cred.impersonate", "cred", "shop", "job/a"))
}

test_operators_manage_credentials if {
	allowed(req(user("olga", "operator"), "cred.revoke", "cred", "-", "x"))
	allowed(req(user("olga", "operator"), "cred.list", "cred", "-", "*"))
	not allowed(req(user("vic", "viewer"), "cred.revoke", "cred", "-", "x"))
}

test_everyone_reads_credential_keys if {
	allowed(req(workload("shop", "a"), "cred.keys", "cred", "-", "keys"))
	d := authz.decision with input as req(workload("shop", "a"), "cred.keys", "cred", "-", "keys")
	d.privileged
}

# --- jobs and scheduling ----------------------------------------------------------

test_jobs_are_decided_per_namespace if {
	dev := {"id": sprintf("%s/user/dev", [td]), "kind": "user", "namespace": "", "name": "dev", "attributes": {}}
	allowed(req(dev, "job.run", "job", "shop", "web")) with data.namespace_bindings as {dev.id: ["shop"]}
	allowed(req(dev, "job.logs", "job", "shop", "web")) with data.namespace_bindings as {dev.id: ["shop"]}
	not allowed(req(dev, "job.run", "job", "bank", "web")) with data.namespace_bindings as {dev.id: ["shop"]}
	not allowed(req(dev, "job.run", "job", "shop", "web"))
	d := authz.decision with input as req(dev, "job.run", "job", "shop", "web") with data.namespace_bindings as {dev.id: ["shop"]}
	d.privileged
}

test_operators_run_jobs_viewers_look if {
	allowed(req(user("olga", "operator"), "job.run", "job", "any", "web"))
	allowed(req(user("olga", "operator"), "node.drain", "node", "-", "n1"))
	allowed(req(user("vic", "viewer"), "job.status", "job", "shop", "web"))
	allowed(req(user("vic", "viewer"), "task.ls", "task", "-", "*"))
	not allowed(req(user("vic", "viewer"), "job.run", "job", "shop", "web"))
	not allowed(req(user("vic", "viewer"), "job.logs", "job", "shop", "web"))
	not allowed(req(user("vic", "viewer"), "node.label", "node", "-", "n1"))
	not allowed(req(workload("shop", "web"), "job.run", "job", "shop", "web2"))
}

test_exec_is_an_admins_and_nodes_relay_it if {
	not allowed(req(user("olga", "operator"), "exec.run", "node", "-", "*"))
	allowed(req(user("root", "admin"), "exec.run", "node", "-", "*"))
	d := authz.decision with input as req(user("root", "admin"), "exec.run", "node", "-", "*")
	d.privileged
	allowed(req(node("c1"), "exec.node", "node", "-", "exec"))
	not allowed(req(node("c1"), "exec.node", "node", "-", "other"))
	not allowed(req(workload("shop", "web"), "exec.node", "node", "-", "exec"))
}

test_egress_stays_in_the_namespace if {
	allowed(req(workload("shop", "web"), "net.connect", "net", "shop", "job/db"))
	not allowed(req(workload("shop", "web"), "net.connect", "net", "bank", "job/vault"))
	not allowed(req(user("olga", "operator"), "net.connect", "net", "shop", "job/db"))
}
