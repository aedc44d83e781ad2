package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/unumos/unum/enforcement"
)

// NetworkQuery is where a bundle says what a workload may connect to:
//
//	package unum.network
//	egress contains {"namespace": input.subject.namespace} if input.subject.kind == "workload"
//
// It is evaluated once per source identity with the standard input
// (NetworkInput: action net.connect on the source itself, net/NS/NAME), and
// its value is a set of grants, each exactly one of
//
//	{"id": "spiffe://TD/ns/NS/job/NAME"}        that workload's listeners
//	{"namespace": "NS"}                           every workload's listeners in NS
//	{"cidr": "10.0.0.0/8", "ports": [53], "protocol": "udp"}
//	                                              an external destination; ports
//	                                              optional (any), protocol tcp,
//	                                              udp or any (the default)
//
// An undefined value (no package unum.network) grants nothing. Anything
// else malformed is an error that names the grant, and the identity then
// gets no rules at all (T-116): a policy that cannot be read never opens
// the network. The shipped policy's authz rule for net.connect reads the
// same grants, so an egress check and the kernel's rules agree.
const NetworkQuery = "data.unum.network.egress"

// NetworkAction is the action of the network query's input, and of the
// decision asked for each egress target a job declares.
const NetworkAction = "net.connect"

// Bounds on one identity's grants. They bound the rules the kernel holds
// per identity: 1024 CIDR grants of 64 ports are 65,536 rules at most.
const (
	MaxNetGrants  = 1024
	MaxGrantPorts = 64
)

// Grant protocols: the words enforcement.ParseProto reads, which
// validates them.
const (
	ProtocolAny = "any"
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// networkEvalQuery binds the grants and whether they are a set: Go sees a
// set and an array alike ([]any), and only a set is a well-formed answer.
const networkEvalQuery = "x = " + NetworkQuery + "; s = is_set(x)"

// NetGrant is one validated grant of the network query: exactly one of ID,
// Namespace and CIDR is set. Ports (sorted, without duplicates; nil: every
// port) and Protocol ("tcp", "udp" or "any") qualify a CIDR grant only and
// are zero otherwise. CIDR is masked, and an IPv4-mapped IPv6 prefix is
// written as the IPv4 prefix it covers.
type NetGrant struct {
	ID        string       `json:"id,omitempty"`
	Namespace string       `json:"namespace,omitempty"`
	CIDR      netip.Prefix `json:"cidr,omitzero"`
	Ports     []uint16     `json:"ports,omitempty"`
	Protocol  string       `json:"protocol,omitempty"`
}

func (g NetGrant) String() string {
	switch {
	case g.ID != "":
		return "id " + g.ID
	case g.Namespace != "":
		return "namespace " + g.Namespace
	}
	s := "cidr " + g.CIDR.String() + " " + g.Protocol
	if len(g.Ports) > 0 {
		ps := make([]string, len(g.Ports))
		for i, p := range g.Ports {
			ps[i] = strconv.Itoa(int(p))
		}
		s += " ports " + strings.Join(ps, ",")
	}
	return s
}

func compareNetGrants(a, b NetGrant) int {
	if c := strings.Compare(a.ID, b.ID); c != 0 {
		return c
	}
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	if c := a.CIDR.Addr().Compare(b.CIDR.Addr()); c != 0 {
		return c
	}
	if c := a.CIDR.Bits() - b.CIDR.Bits(); c != 0 {
		return c
	}
	if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
		return c
	}
	return slices.Compare(a.Ports, b.Ports)
}

// ErrBadNetGrant is wrapped by every error about a malformed network
// answer. The identity it was asked for gets no rules.
var ErrBadNetGrant = errors.New("malformed network grant")

// The shapes a grant's names must have. The shipped policy's Rego mirrors
// them (network.rego, invalid), and TestNetworkValidationAgrees holds the
// two to the same verdict.
var (
	// A job's workload ID: spiffe://TD/ns/NS/job/NAME.
	grantIDRe = regexp.MustCompile(`^spiffe://[a-z0-9._-]+/ns/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/job/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// A namespace: a DNS label.
	grantNSRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// A CIDR's text: address characters, then a prefix length without a
	// leading zero (Rego's net.cidr_is_valid would read "/08").
	grantCIDRRe = regexp.MustCompile(`^[0-9a-fA-F:.]+/(0|[1-9][0-9]{0,2})$`)
)

// NetworkInput is the input the network query is evaluated on for source:
// action net.connect, resource net/NS/NAME of the source itself.
func NetworkInput(source Subject, c Context) *Input {
	return &Input{
		Subject:    source,
		Action:     NetworkAction,
		Resource:   Resource{Kind: "net", Namespace: source.Namespace, Name: source.Name},
		Delegation: []Actor{},
		Context:    c,
	}
}

// NetworkGrants evaluates the network query for the source identity in
// (built by NetworkInput) and returns its grants, validated, deduplicated
// and sorted. nil with no error: the bundle grants nothing. An error (the
// input is not a network input, evaluation failed, the answer is not a set
// of well-formed grants, or it has more than MaxNetGrants) means the
// identity gets no rules.
func (e *Engine) NetworkGrants(ctx context.Context, in *Input) ([]NetGrant, error) {
	if in.Action != NetworkAction || in.Resource != (Resource{Kind: "net", Namespace: in.Subject.Namespace, Name: in.Subject.Name}) {
		return nil, fmt.Errorf("policy revision %d: network grants are asked with action %s on the source itself (net/%s/%s), not %s on %s",
			e.revision, NetworkAction, in.Subject.Namespace, in.Subject.Name, in.Action, in.Resource)
	}
	rs, err := e.netq.Eval(ctx, rego.EvalParsedInput(in.Value()), rego.EvalTime(in.Context.Time))
	if err != nil {
		return nil, fmt.Errorf("policy revision %d: %s for %s: %w", e.revision, NetworkQuery, in.Subject.ID, err)
	}
	gs, err := netGrantsFrom(rs)
	if err != nil {
		return nil, fmt.Errorf("policy revision %d: %s for %s: %w", e.revision, NetworkQuery, in.Subject.ID, err)
	}
	return gs, nil
}

func netGrantsFrom(rs rego.ResultSet) ([]NetGrant, error) {
	if len(rs) == 0 {
		return nil, nil // undefined: no grants
	}
	if len(rs) != 1 {
		return nil, fmt.Errorf("%w: %d results", ErrBadNetGrant, len(rs))
	}
	if isSet, _ := rs[0].Bindings["s"].(bool); !isSet {
		return nil, fmt.Errorf("%w: the value is %s, not a set of grants", ErrBadNetGrant, clipJSON(rs[0].Bindings["x"]))
	}
	vs, _ := rs[0].Bindings["x"].([]any)
	return parseNetGrants(vs)
}

// parseNetGrants validates a list of grant documents (JSON values as OPA
// returns them: numbers as json.Number).
func parseNetGrants(vs []any) ([]NetGrant, error) {
	if len(vs) > MaxNetGrants {
		return nil, fmt.Errorf("%w: %d grants, at most %d", ErrBadNetGrant, len(vs), MaxNetGrants)
	}
	if len(vs) == 0 {
		return nil, nil
	}
	out := make([]NetGrant, 0, len(vs))
	for _, v := range vs {
		g, err := parseNetGrant(v)
		if err != nil {
			return nil, fmt.Errorf("%w: grant %s: %v", ErrBadNetGrant, clipJSON(v), err)
		}
		out = append(out, g)
	}
	slices.SortFunc(out, compareNetGrants)
	return slices.CompactFunc(out, func(a, b NetGrant) bool { return compareNetGrants(a, b) == 0 }), nil
}

// parseNetGrant validates one grant document.
func parseNetGrant(v any) (NetGrant, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return NetGrant{}, errors.New("not an object")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var kinds []string
	for _, k := range keys {
		switch k {
		case "id", "namespace", "cidr":
			kinds = append(kinds, k)
		case "ports", "protocol":
		default:
			return NetGrant{}, fmt.Errorf("unknown key %q (a grant has one of id, namespace, cidr; cidr may add ports and protocol)", k)
		}
	}
	if len(kinds) != 1 {
		return NetGrant{}, fmt.Errorf("has %d of id, namespace, cidr, want exactly one", len(kinds))
	}
	_, hasPorts := obj["ports"]
	_, hasProto := obj["protocol"]
	if kinds[0] != "cidr" && (hasPorts || hasProto) {
		return NetGrant{}, fmt.Errorf("ports and protocol qualify a cidr grant only, not %s", kinds[0])
	}
	str := func(k string) (string, error) {
		s, ok := obj[k].(string)
		if !ok {
			return "", fmt.Errorf("%s is %s, want a string", k, jsonType(obj[k]))
		}
		return s, nil
	}
	var g NetGrant
	switch kinds[0] {
	case "id":
		s, err := str("id")
		if err != nil {
			return g, err
		}
		if !grantIDRe.MatchString(s) {
			return g, fmt.Errorf("id %q is not a job's SPIFFE ID (spiffe://TD/ns/NS/job/NAME)", s)
		}
		g.ID = s
		return g, nil
	case "namespace":
		s, err := str("namespace")
		if err != nil {
			return g, err
		}
		if !grantNSRe.MatchString(s) {
			return g, fmt.Errorf("namespace %q is not a DNS label", s)
		}
		g.Namespace = s
		return g, nil
	}
	s, err := str("cidr")
	if err != nil {
		return g, err
	}
	if g.CIDR, err = ParseGrantCIDR(s); err != nil {
		return g, err
	}
	g.Protocol = ProtocolAny
	if hasProto {
		p, err := str("protocol")
		if err != nil {
			return g, err
		}
		// The compiler's own reader: a word it would not read never
		// gets past the policy.
		if _, err := enforcement.ParseProto(p); err != nil {
			return g, err
		}
		g.Protocol = p
	}
	if hasPorts {
		ps, ok := obj["ports"].([]any)
		if !ok {
			return g, fmt.Errorf("ports is %s, want a list of port numbers", jsonType(obj["ports"]))
		}
		if len(ps) == 0 || len(ps) > MaxGrantPorts {
			return g, fmt.Errorf("ports has %d entries, want 1 to %d (leave it out for every port)", len(ps), MaxGrantPorts)
		}
		for _, p := range ps {
			n, err := portNumber(p)
			if err != nil {
				return g, err
			}
			g.Ports = append(g.Ports, n)
		}
		slices.Sort(g.Ports)
		g.Ports = slices.Compact(g.Ports)
	}
	return g, nil
}

// ParseGrantCIDR reads a grant's cidr: an IPv4 or IPv6 prefix, host bits
// cleared, an IPv4-mapped IPv6 prefix of /96 or longer written as the IPv4
// prefix it covers (so it matches what the kernel compares).
func ParseGrantCIDR(s string) (netip.Prefix, error) {
	if !grantCIDRRe.MatchString(s) {
		return netip.Prefix{}, fmt.Errorf("cidr %q is not ADDRESS/BITS", s)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %q: %v", s, err)
	}
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

func portNumber(v any) (uint16, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("port %s is %s, want a number from 1 to 65535", clipJSON(v), jsonType(v))
	}
	// An integral number written as 53.0 is 53, as Rego compares numbers.
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f != math.Trunc(f) || f < 1 || f > 65535 {
		return 0, fmt.Errorf("port %s is not a number from 1 to 65535", n)
	}
	return uint16(f), nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// clipJSON is v as JSON for an error message, at most 200 bytes.
func clipJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// NetworkEgressData is the data document where an operator grants egress
// without writing Rego (the shipped network.rego reads it):
//
//	{"network_egress": {
//	  "spiffe://TD/ns/shop/job/web": [{"id": "spiffe://TD/ns/bank/job/pay"}],
//	  "shop": [{"cidr": "10.0.0.53/32", "ports": [53], "protocol": "udp"}],
//	  "*":    [{"cidr": "192.0.2.0/24", "ports": [443], "protocol": "tcp"}]
//	}}
//
// Keys are a workload's SPIFFE ID, a namespace (every workload in it) or
// "*" (every workload); values are lists of grants. It is checked when the
// bundle is compiled, so a malformed entry refuses the bundle at apply.
const NetworkEgressData = "network_egress"

// checkNetworkData validates data.network_egress, if the bundle has it.
func checkNetworkData(data map[string]any) []Problem {
	v, ok := data[NetworkEgressData]
	if !ok {
		return nil
	}
	where := "data." + NetworkEgressData
	obj, ok := v.(map[string]any)
	if !ok {
		return []Problem{{Msg: fmt.Sprintf("%s is %s, want an object of SPIFFE ID, namespace or \"*\" to a list of grants", where, jsonType(v))}}
	}
	var ps []Problem
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		at := fmt.Sprintf("%s[%q]", where, k)
		if k != "*" && !grantNSRe.MatchString(k) && !grantIDRe.MatchString(k) {
			ps = append(ps, Problem{Msg: at + ": the key is not a job's SPIFFE ID, a namespace or \"*\""})
			continue
		}
		list, ok := obj[k].([]any)
		if !ok {
			ps = append(ps, Problem{Msg: fmt.Sprintf("%s is %s, want a list of grants", at, jsonType(obj[k]))})
			continue
		}
		if _, err := parseNetGrants(list); err != nil {
			ps = append(ps, Problem{Msg: at + ": " + err.Error()})
		}
	}
	return ps
}

// prepareNetwork prepares the network query of a compiled bundle.
func prepareNetwork(ctx context.Context, c *compiled) (rego.PreparedEvalQuery, error) {
	if ps := checkNetworkData(c.data); len(ps) > 0 {
		return rego.PreparedEvalQuery{}, bundleErr("compile", ps...)
	}
	pq, err := rego.New(
		rego.ParsedQuery(ast.MustParseBody(networkEvalQuery)),
		rego.Compiler(c.compiler),
		rego.Store(inmem.NewFromObject(c.data)),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, bundleErr("compile", astProblems(err)...)
	}
	return pq, nil
}
