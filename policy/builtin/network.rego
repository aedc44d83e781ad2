# unum's shipped network policy: what a workload may connect to.
#
# data.unum.network.egress is evaluated once per source workload (the
# input's subject; action net.connect, resource net/NS/NAME of the source
# itself) and is a set of grants, each exactly one of
#
#   {"id": "spiffe://TD/ns/NS/job/NAME"}   that job's listeners
#   {"namespace": "NS"}                      the listeners of every job in NS
#   {"cidr": "10.0.0.0/8", "ports": [53, 443], "protocol": "udp"}
#                                            an external destination (ports
#                                            optional: any; protocol tcp, udp
#                                            or any, the default)
#
# unum compiles the grants into the kernel's allow rules on every node; a
# job reaches another job only when it declared it in its spec's egress AND
# a grant covers it. The net.connect decision (package unum.authz) reads the
# same grants, so an egress check and the kernel never disagree. A grant
# set with one malformed grant gives the workload no rules at all, and no
# net.connect (authz.rego checks the shape).
package unum.network

import rego.v1

# A workload may connect to the workloads of its own namespace.
egress contains {"namespace": input.subject.namespace} if input.subject.kind == "workload"

# The operator's grants, without Rego: data.network_egress maps a job's
# SPIFFE ID, a namespace (every job in it) or "*" (every job) to a list of
# grants. unum checks its shape when the bundle is applied.
egress contains g if {
	input.subject.kind == "workload"
	some key in [input.subject.id, input.subject.namespace, "*"]
	some g in data.network_egress[key]
}
