package rpc

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity"
)

// TestCAMethodsPrivileged: only admins change the CA, every change is
// privileged (refused on a stale revocation view), nodes may only ask for
// an intermediate (the handler then requires a control node), viewers may
// only look.
func TestCAMethodsPrivileged(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	a := BuiltinAuthorizer{Roles: fixedRoles{"olga": RoleOperator, "vic": RoleViewer}}
	changes := []string{"Rotate", "ExportRoot", "ConfirmExportRoot", "ImportRoot"}
	for _, tc := range []struct {
		who, method string
		allow       bool
	}{
		{"/user/admin", "Rotate", true},
		{"/user/olga", "Rotate", false},
		{"/user/vic", "ExportRoot", false},
		{"/user/vic", "Status", true},
		{"/node/n1", "Rotate", false},
		{"/node/n1", "ExportRoot", false},
		{"/node/n1", "ImportRoot", false},
		{"/node/n1", "SignIntermediate", true},
		{"/user/olga", "SignIntermediate", false},
		{"/ns/a/job/b", "SignIntermediate", false},
		{"/ns/a/job/b", "Status", false},
	} {
		method := "/unum.v1.CA/" + tc.method
		d, err := a.Authorize(context.Background(), Request{Caller: Caller{Principal: identity.Classify(spiffeid.RequireFromPath(td, tc.who))}, Method: method})
		require.NoError(t, err)
		require.Equal(t, tc.allow, d.Allow, "%s %s: %s", tc.who, tc.method, d.Reason)
	}
	for _, m := range append(changes, "SignIntermediate") {
		rule, ok := methodRules["/unum.v1.CA/"+m]
		require.True(t, ok, m)
		require.True(t, rule.privileged, "%s must be privileged", m)
	}
}
