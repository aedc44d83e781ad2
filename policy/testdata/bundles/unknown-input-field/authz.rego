package unum.authz

import rego.v1

decision := {"allow": allow, "privileged": false, "reasons": []}

default allow := false

# unum sends input.subject.attributes.role, never input.subject.roles: the
# type check against input.schema.json refuses the rule instead of letting
# it silently never match.
allow if "admin" in input.subject.roles
