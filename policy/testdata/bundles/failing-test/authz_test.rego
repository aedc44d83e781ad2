package unum.authz_test

import rego.v1

import data.unum.authz

test_admin_allowed if authz.allow with input as {"subject": {"name": "admin"}}

# Fails: the policy grants nothing to operators.
test_operator_allowed if authz.allow with input as {"subject": {"name": "olga"}}
