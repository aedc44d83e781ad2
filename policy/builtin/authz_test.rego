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

# --- network: net.connect is the network policy's (package unum.network) ----------

test_egress_by_id_grant if {
	g := {"spiffe://unum.test/ns/shop/job/web": [{"id": "spiffe://unum.test/ns/bank/job/pay"}]}
	allowed(req(workload("shop", "web"), "net.connect", "net", "bank", "job/pay")) with data.network_egress as g
	not allowed(req(workload("shop", "web"), "net.connect", "net", "bank", "job/vault")) with data.network_egress as g
	not allowed(req(workload("shop", "db"), "net.connect", "net", "bank", "job/pay")) with data.network_egress as g
	d := authz.decision with input as req(workload("shop", "web"), "net.connect", "net", "bank", "job/pay") with data.network_egress as g
	d.reasons == [`network grant {"id":"spiffe://unum.test/ns/bank/job/pay"} lets spiffe://unum.test/ns/shop/job/web connect to net/bank/job/pay`]
}

test_egress_by_namespace_grant if {
	g := {"shop": [{"namespace": "bank"}]}
	allowed(req(workload("shop", "web"), "net.connect", "net", "bank", "job/vault")) with data.network_egress as g
	not allowed(req(workload("shop", "web"), "net.connect", "net", "hr", "job/x")) with data.network_egress as g
	d := authz.decision with input as req(workload("shop", "web"), "net.connect", "net", "hr", "job/x") with data.network_egress as g
	d.reasons == ["no network grant (package unum.network) lets spiffe://unum.test/ns/shop/job/web connect to net/hr/job/x"]
}

# A CIDR grant is about addresses, not identities: it lets no job be
# declared as egress.
test_cidr_grant_is_not_an_identity_grant if {
	g := {"*": [{"cidr": "0.0.0.0/0"}]}
	not allowed(req(workload("shop", "web"), "net.connect", "net", "bank", "job/vault")) with data.network_egress as g
	allowed(req(workload("shop", "web"), "net.connect", "net", "shop", "job/db")) with data.network_egress as g
}

# T-116: one malformed grant and the workload gets nothing, its own
# namespace included, as the kernel compiler gives it no rules.
test_malformed_grants_deny_all_egress if {
	g := {"shop": [{"cidr": "10.0.0.0/33"}]}
	not allowed(req(workload("shop", "web"), "net.connect", "net", "shop", "job/db")) with data.network_egress as g
	d := authz.decision with input as req(workload("shop", "web"), "net.connect", "net", "shop", "job/db") with data.network_egress as g
	d.reasons == [`the network grants of spiffe://unum.test/ns/shop/job/web are malformed: grant {"cidr":"10.0.0.0/33"}: cidr is not ADDRESS/BITS`]
	allowed(req(workload("bank", "pay"), "net.connect", "net", "bank", "job/db")) with data.network_egress as g
}

# No role opens the network: net.connect is decided by the grants alone.
test_no_role_opens_the_network if {
	w := workload("shop", "web")
	not allowed(req(w, "net.connect", "net", "bank", "job/vault")) with data.bindings as {w.id: "admin"}
	allowed(req(w, "node.ls", "node", "-", "*")) with data.bindings as {w.id: "admin"}
	not allowed(req(user("admin", ""), "net.connect", "net", "shop", "job/db"))
	not allowed(req(user("root", "admin"), "net.connect", "net", "shop", "job/db"))
}

# The grants are package unum.network's, whatever defines them (policy's
# TestNetConnectIsTheGrants checks they are evaluated on the source).
test_grants_come_from_the_network_package if {
	allowed(req(workload("shop", "web"), "net.connect", "net", "bank", "job/vault")) with data.unum.network.egress as {{"namespace": "bank"}}
	not allowed(req(workload("shop", "web"), "net.connect", "net", "shop", "job/db")) with data.unum.network.egress as set()
	not allowed(req(workload("shop", "web"), "net.connect", "net", "shop", "job/db")) with data.unum.network.egress as {{"namespace": "shop"}, "10.0.0.0/8"}
	not allowed(req(workload("shop", "web"), "net.connect", "net", "shop", "job/db")) with data.unum.network.egress as [{"namespace": "shop"}]
}

# Net.connect on anything but a workload (net/-/ID) is never granted.
test_net_connect_needs_a_workload_target if {
	not allowed(req(workload("shop", "web"), "net.connect", "net", "-", "spiffe://unum.test/user/admin"))
	not allowed(req(workload("shop", "web"), "net.connect", "kv", "shop", "job/db"))
}

# The shape check (net_invalid), on one grant of shop/web.
bad(g) if count(authz.net_invalid) > 0 with input as req(workload("shop", "web"), "net.connect", "net", "shop", "job/db") with data.network_egress as {"shop": [g]}

test_malformed_grants_are_invalid if {
	bad("10.0.0.0/8")
	bad({})
	bad({"cidr": "10.0.0.0/33"})
	bad({"cidr": "10.0.0.0/08"})
	bad({"cidr": "10.0.0.0"})
	bad({"cidr": "fe80::1%eth0/64"})
	bad({"cidr": 10})
	bad({"cidr": "10.0.0.0/8", "ports": []})
	bad({"cidr": "10.0.0.0/8", "ports": [0]})
	bad({"cidr": "10.0.0.0/8", "ports": [65536]})
	bad({"cidr": "10.0.0.0/8", "ports": [53.5]})
	bad({"cidr": "10.0.0.0/8", "ports": ["53"]})
	bad({"cidr": "10.0.0.0/8", "ports": 53})
	bad({"cidr": "10.0.0.0/8", "protocol": "icmp"})
	bad({"cidr": "10.0.0.0/8", "port": 53})
	bad({"cidr": "10.0.0.0/8", "id": "spiffe://unum.test/ns/bank/job/pay"})
	bad({"id": "spiffe://unum.test/ns/bank/job/pay", "ports": [443]})
	bad({"id": "spiffe://unum.test/user/admin"})
	bad({"id": "spiffe://unum.test/ns/-/job/x"})
	bad({"namespace": "-"})
	bad({"namespace": "Bank"})
	bad({"namespace": ["bank"]})
}

test_well_formed_grants_are_valid if {
	not bad({"cidr": "10.0.0.1/8"}) # host bits are cleared, not refused
	not bad({"cidr": "::ffff:10.0.0.0/104", "ports": [53, 53.0], "protocol": "any"})
	not bad({"cidr": "2001:db8::/32", "ports": [443]})
	not bad({"namespace": "bank"})
	not bad({"id": "spiffe://unum.test/ns/bank/job/pay"})
}

# At most net_max_grants (1024) grants, the shipped {"namespace": NS}
# included (tested with a bound of 3: a thousand grants make the tests
# slow, and they run at every apply).
test_too_many_grants if {
	three := [{"cidr": "10.0.0.1/32"}, {"cidr": "10.0.0.2/32"}, {"cidr": "10.0.0.3/32"}]
	q := req(workload("shop", "web"), "net.connect", "net", "shop", "job/db")
	not allowed(q) with data.network_egress as {"shop": three} with authz.net_max_grants as 3
	allowed(q) with data.network_egress as {"shop": array.slice(three, 0, 2)} with authz.net_max_grants as 3
}
