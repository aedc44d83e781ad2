package unum.authz

import rego.v1

# Nodes could no longer renew their SVIDs: the cluster falls apart at expiry.
denies contains "no renewals" if input.action == "node.renew"
