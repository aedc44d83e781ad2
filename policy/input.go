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
	Context    Context  `json:"context"`
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

// Actor is one link of a verified delegation chain (the delegation issue
// fills it).
type Actor struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
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
		))
	}
	return ast.NewObject(
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
	)
}

// Context is where and when the decision is made. Time is injected by the
// caller (the engine never reads the clock) and is also what Rego's
// time.now_ns() returns.
type Context struct {
	Node      string    `json:"node"`
	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id"`
}
