package jointoken

import (
	"fmt"
	"slices"
	"strings"
)

// The roles a node may be given.
const (
	RoleCompute = "compute"
	RoleControl = "control"
)

// maxNodeNameLen is a DNS label's limit.
const maxNodeNameLen = 63

// ParseRoles reads a comma-separated role list as given to --roles
// ("compute", "control", "compute,control"), tolerating spaces around names.
// The result is sorted and deduplicated. An empty list, an empty element or
// an unknown role is an error.
func ParseRoles(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("roles: empty (want one or more of %s, %s)", RoleCompute, RoleControl)
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return NormalizeRoles(parts)
}

// NormalizeRoles validates a role list (as received over the API) and
// returns it sorted and deduplicated, in a new slice.
func NormalizeRoles(roles []string) ([]string, error) {
	if len(roles) == 0 {
		return nil, fmt.Errorf("roles: empty (want one or more of %s, %s)", RoleCompute, RoleControl)
	}
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		switch r {
		case RoleCompute, RoleControl:
			out = append(out, r)
		case "":
			return nil, fmt.Errorf("roles: empty role name in list")
		default:
			return nil, fmt.Errorf("roles: unknown role %q (want %s or %s)", r, RoleCompute, RoleControl)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ValidateNodeName accepts DNS-label-like names,
// [a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?, since the name becomes a path segment
// of spiffe://TD/node/NAME and often a host name.
func ValidateNodeName(name string) error { return validateName("node name", name) }

// ValidateUserName accepts the same names as ValidateNodeName: the name
// becomes a path segment of spiffe://TD/user/NAME, and a login name that
// is also a valid host and file name keeps every later use (audit
// records, policy data, file names) free of quoting.
func ValidateUserName(name string) error { return validateName("user name", name) }

func validateName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s: empty", what)
	case len(name) > maxNodeNameLen:
		return fmt.Errorf("%s: %d characters, at most %d allowed", what, len(name), maxNodeNameLen)
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("%s %q: must start and end with a lowercase letter or digit", what, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("%s %q: position %d is not a lowercase letter, digit or '-'", what, name, i+1)
		}
	}
	return nil
}
