package unum.authz

import rego.v1

# A change freeze that also freezes the admin out of changing policy again.
denies contains "policy is frozen" if input.action == "policy.apply"
