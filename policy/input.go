package policy

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Input is what a decision is made on: data.unum.authz.decision reads it as
// `input`. Its JSON form (snake_case) is the schema documented in doc.go and
// docs/policy.md; Value builds the same document for OPA without a JSON
// round trip.
type Input struct {
	Subject    Subject  `json:"subject"`
	Action     string   `json:"action"`
	Resource   Resource `json:"resource"`
	Delegation []Actor  `json:"delegation"`
	// Credential is what a cred.delegate or cred.impersonate decision is
	// asked to mint; nil (absent from the document) for every other action.
	Credential *CredentialRequest `json:"credential,omitempty"`
	Context    Context            `json:"context"`
}

// CredentialRequest describes a delegated credential to be minted: who
// will hold it, what it allows, for whom, how long. Slices are never nil
// (the document has arrays).
type CredentialRequest struct {
	// Subject is on whose behalf: the caller, the person impersonated
	// (cred.impersonate), or in an exchange the presented credential's.
	Subject string `json:"subject"`
	// Holder is the SPIFFE ID that will hold (present) it.
	Holder string `json:"holder"`
	// Scopes are ACTION:RESOURCE patterns; Audience the services' SPIFFE
	// IDs.
	Scopes   []string `json:"scopes"`
	Audience []string `json:"audience"`
	// TTLSeconds is the lifetime asked for (0: the default).
	TTLSeconds int64 `json:"ttl_seconds"`
}

// Subject is the verified principal asking.
type Subject struct {
	// ID is the SPIFFE ID, e.g. spiffe://unum.local/user/alice.
	ID string `json:"id"`
	// Kind is node, workload, user, system or unknown.
	Kind string `json:"kind"`
	// Namespace is set for workloads.
	Namespace string `json:"namespace"`
	// Name is the node, service or user name, or the workload's path below
	// its namespace (job/NAME).
	Name string `json:"name"`
	// Attributes are facts the cluster holds about the subject: a user's
	// role (`role`). String values only.
	Attributes map[string]string `json:"attributes"`
}

// Actor is one principal of a verified delegation chain. A delegated call
// lists its whole chain in input.delegation: the original subject first,
// then every actor, ending with the caller that presented the credential.
// The call is decided once per principal (each as input.subject, with the
// same delegation list) and allowed only when every one is: the effective
// right is the intersection.
type Actor struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Resource is what the action is on, written KIND/NAMESPACE/NAME; the
// namespace of a cluster-scoped resource is "-".
type Resource struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// MaxResourceName bounds a resource's name: a request naming something
// longer is refused before the policy is asked (it bounds what a decision
// record and the decision cache hold).
const MaxResourceName = 512

// ClusterScope is the namespace of cluster-scoped resources.
const ClusterScope = "-"

func (r Resource) String() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

var (
	actionRe = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*$`)
	kindRe   = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	nsRe     = regexp.MustCompile(`^(-|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$`)
)

// ParseResource parses KIND/NAMESPACE/NAME. NAME may itself contain
// slashes (id/web/job/api names the workload job/api in namespace web).
func ParseResource(s string) (Resource, error) {
	parts := strings.SplitN(s, "/", 3)
	if len(parts) != 3 {
		return Resource{}, fmt.Errorf("resource %q: want KIND/NAMESPACE/NAME (namespace - for cluster-scoped)", s)
	}
	r := Resource{Kind: parts[0], Namespace: parts[1], Name: parts[2]}
	if err := r.Validate(); err != nil {
		return Resource{}, err
	}
	return r, nil
}

// Validate checks the resource's shape.
func (r Resource) Validate() error {
	switch {
	case !kindRe.MatchString(r.Kind):
		return fmt.Errorf("resource %q: kind %q must be lowercase letters, digits and dashes", r, r.Kind)
	case !nsRe.MatchString(r.Namespace):
		return fmt.Errorf("resource %q: namespace %q must be a DNS label or - for cluster-scoped", r, r.Namespace)
	case r.Name == "":
		return fmt.Errorf("resource %q: empty name", r)
	case len(r.Name) > MaxResourceName:
		return fmt.Errorf("resource %s/%s/...: name longer than %d bytes", r.Kind, r.Namespace, MaxResourceName)
	}
	return nil
}

// ValidAction reports whether a is of the form noun.verb.
func ValidAction(a string) bool { return actionRe.MatchString(a) }

// Validate checks what the engine relies on: a known subject kind, an
// action of the form noun.verb and a well-formed resource.
func (in *Input) Validate() error {
	switch in.Subject.Kind {
	case "node", "workload", "user", "system", "unknown":
	default:
		return fmt.Errorf("input: subject kind %q is not node, workload, user, system or unknown", in.Subject.Kind)
	}
	if !ValidAction(in.Action) {
		return fmt.Errorf("input: action %q is not of the form noun.verb", in.Action)
	}
	return in.Resource.Validate()
}

// Value is the input as an OPA value, built directly (the request path
// avoids encoding/json). Keys are the JSON names above.
func (in *Input) Value() ast.Value {
	attrs := make([][2]*ast.Term, 0, len(in.Subject.Attributes))
	keys := make([]string, 0, len(in.Subject.Attributes))
	for k := range in.Subject.Attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		attrs = append(attrs, ast.Item(ast.StringTerm(k), ast.StringTerm(in.Subject.Attributes[k])))
	}
	chain := make([]*ast.Term, 0, len(in.Delegation))
	for _, a := range in.Delegation {
		chain = append(chain, ast.ObjectTerm(
			ast.Item(ast.StringTerm("id"), ast.StringTerm(a.ID)),
			ast.Item(ast.StringTerm("kind"), ast.StringTerm(a.Kind)),
			ast.Item(ast.StringTerm("namespace"), ast.StringTerm(a.Namespace)),
			ast.Item(ast.StringTerm("name"), ast.StringTerm(a.Name)),
		))
	}
	items := [][2]*ast.Term{
		ast.Item(ast.StringTerm("subject"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("id"), ast.StringTerm(in.Subject.ID)),
			ast.Item(ast.StringTerm("kind"), ast.StringTerm(in.Subject.Kind)),
			ast.Item(ast.StringTerm("namespace"), ast.StringTerm(in.Subject.Namespace)),
			ast.Item(ast.StringTerm("name"), ast.StringTerm(in.Subject.Name)),
			ast.Item(ast.StringTerm("attributes"), ast.ObjectTerm(attrs...)),
		)),
		ast.Item(ast.StringTerm("action"), ast.StringTerm(in.Action)),
		ast.Item(ast.StringTerm("resource"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("kind"), ast.StringTerm(in.Resource.Kind)),
			ast.Item(ast.StringTerm("namespace"), ast.StringTerm(in.Resource.Namespace)),
			ast.Item(ast.StringTerm("name"), ast.StringTerm(in.Resource.Name)),
		)),
		ast.Item(ast.StringTerm("delegation"), ast.ArrayTerm(chain...)),
		ast.Item(ast.StringTerm("context"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("node"), ast.StringTerm(in.Context.Node)),
			ast.Item(ast.StringTerm("time"), ast.StringTerm(in.Context.Time.UTC().Format(time.RFC3339Nano))),
			ast.Item(ast.StringTerm("request_id"), ast.StringTerm(in.Context.RequestID)),
		)),
	}
	if c := in.Credential; c != nil {
		items = append(items, ast.Item(ast.StringTerm("credential"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("subject"), ast.StringTerm(c.Subject)),
			ast.Item(ast.StringTerm("holder"), ast.StringTerm(c.Holder)),
			ast.Item(ast.StringTerm("scopes"), stringArray(c.Scopes)),
			ast.Item(ast.StringTerm("audience"), stringArray(c.Audience)),
			ast.Item(ast.StringTerm("ttl_seconds"), ast.IntNumberTerm(int(c.TTLSeconds))),
		)))
	}
	return ast.NewObject(items...)
}

func stringArray(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}

// Context is where and when the decision is made. Time is injected by the
// caller (the engine never reads the clock) and is also what Rego's
// time.now_ns() returns.
type Context struct {
	Node      string    `json:"node"`
	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id"`
}
