package unum.authz

import rego.v1

# Nodes could no longer have their audit logs witnessed: a compromised node
# could then rewrite its log undetected.
denies contains "no witnessing" if input.action == "audit.submit"
