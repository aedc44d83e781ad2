package unum.authz

import rego.v1

decision := {"allow": allow, "privileged": false, "reasons": []}

default allow := false

# && is not Rego: the expressions of a body are joined by newlines or ;.
allow if input.subject.kind == "user" && input.subject.name == "admin"
