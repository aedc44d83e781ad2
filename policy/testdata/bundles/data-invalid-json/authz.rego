package unum.authz

import rego.v1

decision := {"allow": allow, "privileged": false, "reasons": []}

default allow := false

allow if input.subject.name == "admin"
