package rpc

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/policy"
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
	// (e.g. the namespace of an entry).
	Message any
	// RequestID is the client's x-request-id, if it sent one.
	RequestID string
	// Credential is the delegated credential the caller presented, already
	// verified as held by it; nil for a direct call. A delegated call is
	// decided for the credential's subject and every actor (intersection),
	// within the credential's scopes.
	Credential *delegation.Credential
}

// Decision is an Authorizer's answer.
type Decision struct {
	Allow bool
	// Reasons are the policy's reasons, for the caller and the log.
	Reasons []string
	// Privileged marks an action that crosses a trust boundary: the server
	// refuses it while its revocation view is stale.
	Privileged bool
	// ID names the decision (`unum policy explain ID`); Revision is the
	// policy revision that made it.
	ID       string
	Revision int64
	Action   string
	Resource string
	// Limits are the deciding revision's bounds on delegated credentials.
	Limits policy.DelegationLimits
}

// Reason is the reasons joined for one line of text.
func (d Decision) Reason() string { return strings.Join(d.Reasons, "; ") }

// ErrNotReady wraps an authorizer error that means "cannot decide soundly
// now" (no policy yet, a stale policy view): the call fails Unavailable,
// and the client may retry elsewhere or later.
var ErrNotReady = errors.New("authorizer not ready")

// Authorizer decides whether a verified caller may invoke a method.
// Implementations must be safe for concurrent use and fail closed: an error
// denies the call.
type Authorizer interface {
	Authorize(ctx context.Context, req Request) (Decision, error)
}

// Roles of people, least to most powerful. The shipped policy
// (policy/builtin) says what each may do.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// ValidRole reports whether r is a role name.
func ValidRole(r string) bool { return r == RoleViewer || r == RoleOperator || r == RoleAdmin }

// RoleSource answers a user's role; ok is false for an unknown user.
// Implementations must be safe for concurrent use.
type RoleSource interface {
	UserRole(name string) (role string, ok bool)
}

// PolicyAuthorizer decides every call with the cluster's Rego policy: it
// maps the method and its request to an action and a resource (routes),
// the caller to a subject, and asks the Decider. A method without a route
// is denied to everyone, so a new RPC cannot ship unmediated.
type PolicyAuthorizer struct {
	Decider *policy.Decider
	// Roles answers users' roles (subject.attributes.role).
	Roles RoleSource
	// Entries names what a registration entry registers, so deleting it
	// is decided on its namespace; nil where no entries are held.
	Entries EntrySource
}

// EntrySource answers the SPIFFE ID a registration entry registers; ok is
// false for an unknown entry. Implementations must be safe for concurrent
// use.
type EntrySource interface {
	EntrySPIFFEID(id string) (spiffeID string, ok bool)
}

var _ Authorizer = (*PolicyAuthorizer)(nil)

// RequestDigest is sha256:HEX of msg's deterministic protobuf encoding, ""
// when msg is not a protobuf message (streams): what the audit log records
// of a request, so it can be matched later without the log holding it.
func RequestDigest(msg any) string {
	m, ok := msg.(proto.Message)
	if !ok || m == nil {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Authorize implements Authorizer.
func (a *PolicyAuthorizer) Authorize(ctx context.Context, req Request) (Decision, error) {
	digest := RequestDigest(req.Message)
	cred := req.Credential
	var creds []string
	in := policy.Input{Subject: a.subject(req.Caller.Principal), Context: policy.Context{RequestID: req.RequestID}}
	if cred != nil {
		creds = cred.JTIs()
		in.Subject = a.subject(identity.Classify(cred.Subject))
		in.Delegation = a.chain(cred)
	}
	rt, ok := routes[req.Method]
	if !ok {
		in.Action, in.Resource = "rpc.unrouted", policy.Resource{Kind: "method", Namespace: policy.ClusterScope, Name: req.Method}
		return a.refuse(ctx, in, digest, "no action is defined for "+req.Method+": denied to everyone", creds), nil
	}
	in.Action = rt.action
	in.Resource = rt.resource(req.Caller.Principal, req.Message)
	if facts, ok := requestFacts[req.Method]; ok {
		facts(req.Caller.Principal, req.Message, cred, &in)
	}
	if refine, ok := storedResources[req.Method]; ok && a.Entries != nil {
		in.Resource = refine(a.Entries, req.Message, in.Resource)
	}
	if err := in.Resource.Validate(); err != nil {
		// What the request names cannot be described to the policy (e.g.
		// a name past policy.MaxResourceName): refused without asking it.
		in.Resource = policy.Resource{Kind: in.Resource.Kind, Namespace: policy.ClusterScope, Name: "-"}
		return a.refuse(ctx, in, digest, "the request names an invalid resource: "+err.Error(), creds), nil
	}
	var d policy.Decision
	var err error
	if cred == nil {
		d, err = a.Decider.Decide(ctx, in, digest)
	} else {
		if withoutDelegation[req.Method] {
			return a.refuse(ctx, in, digest, "a delegated credential cannot be used for "+shortMethod(req.Method)+": the caller makes it only as itself", creds), nil
		}
		if lim := a.Decider.Limits(); len(cred.Chain) > lim.MaxDepth {
			return a.refuse(ctx, in, digest, fmt.Sprintf("the delegated credential's chain has %d actors; the policy allows %d", len(cred.Chain), lim.MaxDepth), creds), nil
		}
		r := in.Resource
		if !cred.Allows(in.Action, r.Kind, r.Namespace, r.Name) {
			// The credential does not reach this far: the caller's own
			// rights are never used instead (no confused deputy).
			return a.refuse(ctx, in, digest, fmt.Sprintf("the delegated credential %s does not allow %s on %s (its scopes: %s)",
				cred.ID, in.Action, r, delegation.FormatScopes(cred.Scopes)), creds), nil
		}
		principals := make([]policy.Subject, len(in.Delegation))
		for i, p := range cred.Principals() {
			principals[i] = a.subject(identity.Classify(p))
		}
		d, err = a.Decider.DecideChain(ctx, in, principals, digest, creds)
	}
	out := Decision{Allow: d.Allow, Reasons: d.Reasons, Privileged: d.Privileged, ID: d.ID, Revision: d.Revision, Action: in.Action, Resource: in.Resource.String(), Limits: d.Limits}
	if err != nil {
		out.Allow = false
		// The call may succeed elsewhere or later: a fresh view, a loaded
		// policy, an audit log that records again.
		if errors.Is(err, policy.ErrStale) || errors.Is(err, policy.ErrNoPolicy) || errors.Is(err, policy.ErrUnrecorded) {
			return out, fmt.Errorf("%w: %w", ErrNotReady, err)
		}
		return out, err
	}
	return out, nil
}

// chain is a credential's principals as input.delegation lists them:
// the subject first, the presenting holder last.
func (a *PolicyAuthorizer) chain(c *delegation.Credential) []policy.Actor {
	ps := c.Principals()
	out := make([]policy.Actor, len(ps))
	for i, id := range ps {
		p := identity.Classify(id)
		out[i] = policy.Actor{ID: id.String(), Kind: string(p.Kind), Namespace: p.Namespace, Name: p.Name}
	}
	return out
}

// refuse records a denial made without asking the policy.
func (a *PolicyAuthorizer) refuse(ctx context.Context, in policy.Input, digest, reason string, creds []string) Decision {
	d := a.Decider.Refuse(ctx, in, digest, reason, creds...)
	return Decision{ID: d.ID, Reasons: d.Reasons, Action: in.Action, Resource: in.Resource.String(), Limits: d.Limits}
}

// SubjectOf is the policy subject for principal p (exported for `policy
// check`, which builds the same subject for a what-if).
func SubjectOf(p identity.Principal, roles RoleSource) policy.Subject {
	s := policy.Subject{ID: p.ID.String(), Kind: string(p.Kind), Namespace: p.Namespace, Name: p.Name, Attributes: map[string]string{}}
	if p.Kind == identity.KindUser && roles != nil {
		if r, ok := roles.UserRole(p.Name); ok {
			s.Attributes["role"] = r
		}
	}
	return s
}

func (a *PolicyAuthorizer) subject(p identity.Principal) policy.Subject { return SubjectOf(p, a.Roles) }

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

func shortMethod(m string) string {
	m = strings.TrimPrefix(m, "/unum.v1.")
	return strings.Replace(m, "/", ".", 1)
}
