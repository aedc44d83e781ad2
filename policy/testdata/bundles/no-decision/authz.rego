package unum.authz

import rego.v1

# allow without the decision document unum queries.
default allow := false

allow if input.subject.name == "admin"
