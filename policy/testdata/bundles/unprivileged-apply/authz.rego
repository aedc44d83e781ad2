package unum.authz

import rego.v1

# Allows everything, and calls every action privileged except policy.apply:
# an attempt to let policy be changed on a stale view and without a durable
# audit record.
decision := {
	"allow": true,
	"privileged": input.action != "policy.apply",
	"reasons": ["everything goes"],
}
