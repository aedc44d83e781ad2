package unum.network_test

import rego.v1

import data.unum.network

td := "spiffe://unum.test"

workload(ns, job) := {"id": sprintf("%s/ns/%s/job/%s", [td, ns, job]), "kind": "workload", "namespace": ns, "name": sprintf("job/%s", [job]), "attributes": {}}

user(name) := {"id": sprintf("%s/user/%s", [td, name]), "kind": "user", "namespace": "", "name": name, "attributes": {"role": "admin"}}

# The network query's input: net.connect on the source itself.
src(subject) := {
	"subject": subject,
	"action": "net.connect",
	"resource": {"kind": "net", "namespace": subject.namespace, "name": subject.name},
	"delegation": [],
	"context": {"node": "node-1", "time": "2026-11-26T00:00:00Z", "request_id": "r"},
}

test_a_workload_reaches_its_own_namespace if {
	network.egress == {{"namespace": "shop"}} with input as src(workload("shop", "web")) with data.network_egress as {}
}

test_only_workloads_get_grants if {
	count(network.egress) == 0 with input as src(user("admin"))
	count(network.egress) == 0 with input as src(user("admin")) with data.network_egress as {"*": [{"namespace": "bank"}]}
}

operator_grants := {
	"spiffe://unum.test/ns/shop/job/web": [{"id": "spiffe://unum.test/ns/bank/job/pay"}],
	"shop": [{"cidr": "10.0.0.53/32", "ports": [53], "protocol": "udp"}],
	"*": [{"cidr": "192.0.2.0/24", "ports": [443], "protocol": "tcp"}],
	"bank": [{"namespace": "shop"}],
}

test_operator_data_grants_by_id_namespace_and_everyone if {
	network.egress == {
		{"namespace": "shop"},
		{"id": "spiffe://unum.test/ns/bank/job/pay"},
		{"cidr": "10.0.0.53/32", "ports": [53], "protocol": "udp"},
		{"cidr": "192.0.2.0/24", "ports": [443], "protocol": "tcp"},
	} with input as src(workload("shop", "web")) with data.network_egress as operator_grants

	# Another job of shop: the namespace's and everyone's, not web's.
	network.egress == {
		{"namespace": "shop"},
		{"cidr": "10.0.0.53/32", "ports": [53], "protocol": "udp"},
		{"cidr": "192.0.2.0/24", "ports": [443], "protocol": "tcp"},
	} with input as src(workload("shop", "db")) with data.network_egress as operator_grants
}
