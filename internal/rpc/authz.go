package rpc

import (
	"context"
	"crypto/x509"
	"strings"

	"github.com/unumos/unum/identity"
)

// Caller is the verified principal behind a call.
type Caller struct {
	identity.Principal
	// Certificate is the caller's leaf certificate as verified in the
	// handshake; nil for callers without one (the enrolment listener).
	Certificate *x509.Certificate
}

// Request is what the Authorizer decides on.
type Request struct {
	Caller Caller
	// Method is the full gRPC method, e.g. "/unum.v1.Identity/CreateEntry".
	Method string
	// Message is the decoded request of a unary call (nil for streams), so
	// an authorizer can decide on what is asked for, not only on who asks
	// (e.g. the roles of a join token, the namespace of an entry).
	Message any
}

// Decision is an Authorizer's answer.
type Decision struct {
	Allow  bool
	Reason string
	// Privileged marks an action that crosses a trust boundary (minting,
	// changing state, reading secrets): the server refuses it while its
	// revocation view is stale.
	Privileged bool
}

// Authorizer decides whether a verified caller may invoke a method.
// Implementations must be safe for concurrent use and fail closed: an error
// denies the call. The policy issue replaces BuiltinAuthorizer with the Rego
// engine behind this same interface; handlers do not change.
type Authorizer interface {
	Authorize(ctx context.Context, req Request) (Decision, error)
}

// Roles of people, least to most powerful.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// ValidRole reports whether r is a role name.
func ValidRole(r string) bool { return roleRank[r] > 0 }

var roleRank = map[string]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// RoleSource answers a user's role; ok is false for an unknown user.
// Implementations must be safe for concurrent use.
type RoleSource interface {
	UserRole(name string) (role string, ok bool)
}

// methodRule is who may call a method: every authenticated principal,
// nodes, or users of at least a role.
type methodRule struct {
	anyone     bool
	node       bool
	minRole    string
	privileged bool
}

// methodRules is the built-in table. A method missing here is denied to
// everyone but the admin user.
var methodRules = map[string]methodRule{
	"/unum.v1.Identity/WhoAmI":           {anyone: true},
	"/unum.v1.Identity/MintX509SVID":     {node: true, privileged: true},
	"/unum.v1.Identity/MintJWTSVID":      {node: true, privileged: true},
	"/unum.v1.Identity/RenewNodeSVID":    {node: true, privileged: true},
	"/unum.v1.Identity/SyncAgent":        {node: true},
	"/unum.v1.Identity/WatchRevocations": {node: true},
	"/unum.v1.Identity/CreateEntry":      {minRole: RoleOperator, privileged: true},
	"/unum.v1.Identity/DeleteEntry":      {minRole: RoleOperator, privileged: true},
	"/unum.v1.Identity/ListEntries":      {minRole: RoleViewer},
	"/unum.v1.Cluster/Heartbeat":         {node: true},
	"/unum.v1.Cluster/ListNodes":         {minRole: RoleViewer},
	"/unum.v1.Cluster/Status":            {minRole: RoleViewer},
	"/unum.v1.Cluster/CreateJoinToken":   {minRole: RoleAdmin, privileged: true},
	"/unum.v1.Cluster/RemoveNode":        {minRole: RoleAdmin, privileged: true},
	"/unum.v1.Users/AddUser":             {minRole: RoleAdmin, privileged: true},
	"/unum.v1.Users/RemoveUser":          {minRole: RoleAdmin, privileged: true},
	"/unum.v1.Users/RevokeUser":          {minRole: RoleAdmin, privileged: true},
	"/unum.v1.Users/ListUsers":           {minRole: RoleViewer},
	"/unum.v1.Users/RenewUser":           {minRole: RoleViewer, privileged: true},
	"/unum.v1.CA/Status":                 {minRole: RoleViewer},
	"/unum.v1.CA/Rotate":                 {minRole: RoleAdmin, privileged: true},
	"/unum.v1.CA/ExportRoot":             {minRole: RoleAdmin, privileged: true},
	"/unum.v1.CA/ConfirmExportRoot":      {minRole: RoleAdmin, privileged: true},
	"/unum.v1.CA/ImportRoot":             {minRole: RoleAdmin, privileged: true},
	"/unum.v1.CA/SignIntermediate":       {node: true, privileged: true},
	"/unum.v1.Backup/Create":             {minRole: RoleAdmin, privileged: true},
}

// usableUnloaded may be called before the server's revocation view has
// first loaded: asking who one is, reading cluster health (to diagnose why
// the view does not load), and reporting liveness.
var usableUnloaded = map[string]bool{
	"/unum.v1.Identity/WhoAmI":   true,
	"/unum.v1.Cluster/Status":    true,
	"/unum.v1.Cluster/Heartbeat": true,
}

// renewalMethods may be called with a certificate issued between a backup
// and its restore (revocation.ErrMustRenew): they re-check the holder
// against the restored state before signing anew.
var renewalMethods = map[string]bool{
	"/unum.v1.Identity/RenewNodeSVID": true,
	"/unum.v1.Users/RenewUser":        true,
}

// BuiltinAuthorizer is the fixed table used until the Rego policy engine
// exists. Users have roles: viewers read (listings, status), operators also
// manage registration entries, admins do everything; the user named
// identity.AdminUser (made by `unum init`, re-minted by `unum admin
// recover`) is always an admin. Nodes may perform node operations; every
// authenticated principal may ask who it is; nobody else may do anything.
type BuiltinAuthorizer struct {
	// Roles answers users' roles; nil knows only the admin user.
	Roles RoleSource
}

var _ Authorizer = BuiltinAuthorizer{}

// Authorize implements Authorizer.
func (a BuiltinAuthorizer) Authorize(_ context.Context, req Request) (Decision, error) {
	p := req.Caller.Principal
	rule, known := methodRules[req.Method]
	deny := Decision{Allow: false, Reason: string(p.Kind) + " " + p.ID.String() + " may not call " + shortMethod(req.Method)}
	if p.Kind == identity.KindUnknown {
		return deny, nil
	}
	privileged := !known || rule.privileged
	switch {
	case known && rule.anyone:
		return Decision{Allow: true, Privileged: privileged, Reason: "every authenticated principal may call " + shortMethod(req.Method)}, nil
	case p.Kind == identity.KindNode:
		if known && rule.node {
			return Decision{Allow: true, Privileged: privileged, Reason: "nodes may perform node operations"}, nil
		}
	case p.Kind == identity.KindUser:
		role, ok := a.role(p.Name)
		if !ok {
			deny.Reason = "user " + p.Name + " is unknown to this cluster and may not call " + shortMethod(req.Method)
			return deny, nil
		}
		if role == RoleAdmin {
			return Decision{Allow: true, Privileged: privileged, Reason: "admins may do everything"}, nil
		}
		if known && rule.minRole != "" && roleRank[role] >= roleRank[rule.minRole] {
			return Decision{Allow: true, Privileged: privileged, Reason: "role " + role + " may call " + shortMethod(req.Method)}, nil
		}
		deny.Reason = "user " + p.Name + " (role " + role + ") may not call " + shortMethod(req.Method)
	}
	return deny, nil
}

func (a BuiltinAuthorizer) role(name string) (string, bool) {
	if name == identity.AdminUser {
		return RoleAdmin, true
	}
	if a.Roles == nil {
		return "", false
	}
	return a.Roles.UserRole(name)
}

func shortMethod(m string) string {
	m = strings.TrimPrefix(m, "/unum.v1.")
	return strings.Replace(m, "/", ".", 1)
}
