package delegation

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// MaxScopes bounds how many scopes one credential carries, and
// MaxScopeLen how long one may be.
const (
	MaxScopes   = 32
	MaxScopeLen = 600
)

// Scope is one ACTION:RESOURCE pattern, in the policy's vocabulary:
//
//	ACTION    noun.verb, noun.* or *
//	RESOURCE  KIND/NAMESPACE/NAME; KIND and NAMESPACE are a name or *;
//	          NAME is a name, *, or a prefix ending in * (kv/shop/orders-*)
//
// For example kv.read:kv/shop/* or audit.read:audit/-/*. A scope allows
// an action on a resource when both match.
type Scope struct {
	Action string
	Kind   string
	NS     string
	Name   string
}

var (
	scopeActionRe = regexp.MustCompile(`^(\*|[a-z][a-z0-9-]*\.(\*|[a-z][a-z0-9-]*))$`)
	scopeKindRe   = regexp.MustCompile(`^(\*|[a-z][a-z0-9-]*)$`)
	scopeNSRe     = regexp.MustCompile(`^(\*|-|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$`)
)

// ParseScope parses ACTION:RESOURCE.
func ParseScope(s string) (Scope, error) {
	if len(s) > MaxScopeLen {
		return Scope{}, fmt.Errorf("scope %.40q...: longer than %d bytes", s, MaxScopeLen)
	}
	action, res, ok := strings.Cut(s, ":")
	if !ok {
		return Scope{}, fmt.Errorf("scope %q: want ACTION:KIND/NAMESPACE/NAME (e.g. kv.read:kv/shop/*)", s)
	}
	if !scopeActionRe.MatchString(action) {
		return Scope{}, fmt.Errorf("scope %q: action %q must be noun.verb, noun.* or *", s, action)
	}
	parts := strings.SplitN(res, "/", 3)
	if len(parts) != 3 {
		return Scope{}, fmt.Errorf("scope %q: resource %q must be KIND/NAMESPACE/NAME (namespace - for cluster-scoped, * for any)", s, res)
	}
	sc := Scope{Action: action, Kind: parts[0], NS: parts[1], Name: parts[2]}
	switch {
	case strings.ContainsAny(s, " \t\n\r"):
		// First: white space in a name would otherwise be reported as
		// whatever follows it (a claim "a:b/c/* d:e/f/g" split on tabs).
		return Scope{}, fmt.Errorf("scope %q: contains white space", s)
	case !scopeKindRe.MatchString(sc.Kind):
		return Scope{}, fmt.Errorf("scope %q: kind %q must be lowercase letters, digits and dashes, or *", s, sc.Kind)
	case !scopeNSRe.MatchString(sc.NS):
		return Scope{}, fmt.Errorf("scope %q: namespace %q must be a DNS label, - or *", s, sc.NS)
	case sc.Name == "":
		return Scope{}, fmt.Errorf("scope %q: empty resource name (use * for any)", s)
	case strings.Contains(strings.TrimSuffix(sc.Name, "*"), "*"):
		return Scope{}, fmt.Errorf("scope %q: name %q may hold * only at its end", s, sc.Name)
	}
	return sc, nil
}

// ParseScopes parses each scope; a duplicate or more than MaxScopes is an
// error. The result is sorted.
func ParseScopes(ss []string) ([]Scope, error) {
	if len(ss) == 0 {
		return nil, fmt.Errorf("no scope: name at least one ACTION:RESOURCE")
	}
	if len(ss) > MaxScopes {
		return nil, fmt.Errorf("%d scopes: at most %d", len(ss), MaxScopes)
	}
	out := make([]Scope, 0, len(ss))
	seen := map[string]bool{}
	for _, s := range ss {
		sc, err := ParseScope(s)
		if err != nil {
			return nil, err
		}
		if seen[s] {
			return nil, fmt.Errorf("scope %q given twice", s)
		}
		seen[s] = true
		out = append(out, sc)
	}
	sortScopes(out)
	return out, nil
}

func sortScopes(s []Scope) {
	sort.Slice(s, func(i, j int) bool { return s[i].String() < s[j].String() })
}

func (s Scope) String() string { return s.Action + ":" + s.Kind + "/" + s.NS + "/" + s.Name }

// Allows reports whether s allows action on the resource kind/ns/name.
func (s Scope) Allows(action, kind, ns, name string) bool {
	return matchAction(s.Action, action) && matchExact(s.Kind, kind) && matchExact(s.NS, ns) && matchName(s.Name, name)
}

func matchAction(pattern, action string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasSuffix(pattern, ".*"):
		return strings.HasPrefix(action, strings.TrimSuffix(pattern, "*"))
	}
	return pattern == action
}

func matchExact(pattern, v string) bool { return pattern == "*" || pattern == v }

func matchName(pattern, name string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, p)
	}
	return pattern == name
}

// Within reports whether everything s allows, parent allows too: the
// attenuation check, decided on the patterns alone.
func (s Scope) Within(parent Scope) bool {
	return actionWithin(s.Action, parent.Action) && exactWithin(s.Kind, parent.Kind) &&
		exactWithin(s.NS, parent.NS) && nameWithin(s.Name, parent.Name)
}

func actionWithin(child, parent string) bool {
	switch {
	case parent == "*":
		return true
	case child == "*":
		return false
	case strings.HasSuffix(parent, ".*"):
		return strings.HasPrefix(child, strings.TrimSuffix(parent, "*"))
	}
	return child == parent
}

func exactWithin(child, parent string) bool { return parent == "*" || child == parent }

func nameWithin(child, parent string) bool {
	p, pglob := strings.CutSuffix(parent, "*")
	if !pglob {
		return child == parent
	}
	// A child glob c* is within p* when c starts with p; an exact child
	// name n when n does.
	c, _ := strings.CutSuffix(child, "*")
	return strings.HasPrefix(c, p)
}

// ScopesWithin reports whether every scope of child is within some scope of
// parent, and names the first that is not.
func ScopesWithin(child, parent []Scope) (Scope, bool) {
	for _, c := range child {
		ok := false
		for _, p := range parent {
			if c.Within(p) {
				ok = true
				break
			}
		}
		if !ok {
			return c, false
		}
	}
	return Scope{}, true
}

// AnyAllows reports whether some scope of ss allows the action on the
// resource.
func AnyAllows(ss []Scope, action, kind, ns, name string) bool {
	for _, s := range ss {
		if s.Allows(action, kind, ns, name) {
			return true
		}
	}
	return false
}

// FormatScopes is scopes as the scope claim writes them: space-separated.
func FormatScopes(ss []Scope) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}

// parseScopeClaim parses the space-separated scope claim.
func parseScopeClaim(s string) ([]Scope, error) {
	if s == "" || strings.TrimSpace(s) != s || strings.Contains(s, "  ") {
		return nil, fmt.Errorf("scope claim %q: want space-separated ACTION:RESOURCE patterns", s)
	}
	return ParseScopes(strings.Split(s, " "))
}
