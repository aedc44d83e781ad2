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
}

// Authorizer decides whether a verified caller may invoke a method.
// Implementations must be safe for concurrent use and fail closed: an error
// denies the call. The policy issue replaces BuiltinAuthorizer with the Rego
// engine behind this same interface; handlers do not change.
type Authorizer interface {
	Authorize(ctx context.Context, req Request) (Decision, error)
}

// Method names of the node-facing operations: what a node may call.
var nodeMethods = map[string]bool{
	"/unum.v1.Identity/WhoAmI":        true,
	"/unum.v1.Identity/MintX509SVID":  true,
	"/unum.v1.Identity/MintJWTSVID":   true,
	"/unum.v1.Identity/RenewNodeSVID": true,
	"/unum.v1.Identity/SyncAgent":     true,
	"/unum.v1.Cluster/Heartbeat":      true,
}

// Methods every authenticated principal may call.
var anyoneMethods = map[string]bool{
	"/unum.v1.Identity/WhoAmI": true,
}

// BuiltinAuthorizer is the small fixed table used until the Rego policy
// engine exists: the admin user may do everything, nodes may do node
// operations, every authenticated principal may ask who it is, and nobody
// else may do anything.
type BuiltinAuthorizer struct{}

var _ Authorizer = BuiltinAuthorizer{}

// Authorize implements Authorizer.
func (BuiltinAuthorizer) Authorize(_ context.Context, req Request) (Decision, error) {
	p := req.Caller.Principal
	switch {
	case anyoneMethods[req.Method] && p.Kind != identity.KindUnknown:
		return Decision{Allow: true, Reason: "every authenticated principal may call " + shortMethod(req.Method)}, nil
	case p.Kind == identity.KindUser && p.Name == identity.AdminUser:
		return Decision{Allow: true, Reason: "the admin user may do everything"}, nil
	case p.Kind == identity.KindNode && nodeMethods[req.Method]:
		return Decision{Allow: true, Reason: "nodes may perform node operations"}, nil
	}
	return Decision{Allow: false, Reason: string(p.Kind) + " " + p.ID.String() + " may not call " + shortMethod(req.Method)}, nil
}

func shortMethod(m string) string {
	m = strings.TrimPrefix(m, "/unum.v1.")
	return strings.Replace(m, "/", ".", 1)
}
