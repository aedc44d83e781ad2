package unum.authz

import rego.v1

# allow is a string: unum denies rather than guess what "yes" means.
decision := {"allow": "yes", "privileged": true, "reasons": ["allow is a string"]}
