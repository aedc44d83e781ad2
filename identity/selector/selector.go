package selector

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Selector types. They are the middle field of the CLI spelling
// FAMILY:TYPE:VALUE; each type belongs to exactly one family.
const (
	// Family unix: facts the kernel reports about any process.
	TypeUID    = "uid"
	TypeGID    = "gid"
	TypePath   = "path"
	TypeSHA256 = "sha256"
	// Family unum: facts unum itself established. TypeTask is the id of the
	// scheduled task (allocation) whose cgroup the process runs in.
	TypeTask = "task"
)

// Family prefixes. The family is implied by the type, so a Selector stores
// only Type and Value; the prefix keeps the spelling open for more families
// without ambiguity.
const (
	unixPrefix = "unix:"
	unumPrefix = "unum:"
)

// maxTaskIDLen bounds a task id: it is a cgroup directory name and a DNS-ish
// label, so 64 bytes is plenty.
const maxTaskIDLen = 64

// maxLen bounds the length of a selector string. Paths longer than PATH_MAX
// cannot name an executable, so anything longer is a mistake or an attack.
const maxLen = len(unixPrefix) + len(TypePath) + 1 + 4096

// Selector is one fact a process must satisfy. The zero value is invalid.
type Selector struct {
	Type  string // one of TypeUID, TypeGID, TypePath, TypeSHA256, TypeTask
	Value string // canonical spelling of the value, see Parse
}

// Parse parses a selector written as unix:TYPE:VALUE or unum:TYPE:VALUE. It
// accepts only the canonical spelling of numeric values, paths and task ids,
// and normalises a SHA-256 digest to lowercase, so that Parse(s.String()) ==
// s for every parsed s. A type is accepted only under its own family
// (unix:task:x and unum:uid:1 are errors).
func Parse(s string) (Selector, error) {
	if len(s) > maxLen {
		return Selector{}, fmt.Errorf("selector %.40q...: longer than %d bytes", s, maxLen)
	}
	var family string
	switch {
	case strings.HasPrefix(s, unixPrefix):
		family = unixPrefix
	case strings.HasPrefix(s, unumPrefix):
		family = unumPrefix
	default:
		return Selector{}, fmt.Errorf("selector %q: must start with %q or %q", s, unixPrefix, unumPrefix)
	}
	typ, value, ok := strings.Cut(s[len(family):], ":")
	if !ok {
		return Selector{}, fmt.Errorf("selector %q: want %sTYPE:VALUE", s, family)
	}
	if typ != "" && familyOf(typ) != "" && familyOf(typ) != family {
		return Selector{}, fmt.Errorf("selector %q: type %q belongs to family %q, not %q", s, typ, strings.TrimSuffix(familyOf(typ), ":"), strings.TrimSuffix(family, ":"))
	}
	sel, err := canonical(typ, value)
	if err != nil {
		return Selector{}, fmt.Errorf("selector %q: %w", s, err)
	}
	return sel, nil
}

// familyOf returns the prefix of typ's family, or "" for an unknown type.
func familyOf(typ string) string {
	switch typ {
	case TypeUID, TypeGID, TypePath, TypeSHA256:
		return unixPrefix
	case TypeTask:
		return unumPrefix
	}
	return ""
}

// MustParse is Parse for selectors known at compile time (tests, defaults).
// It panics on error.
func MustParse(s string) Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// String returns the CLI spelling, FAMILY:TYPE:VALUE. A selector of unknown
// type (only possible when built by hand) is spelled with the unix prefix;
// Parse and ValidateSet refuse it.
func (s Selector) String() string {
	family := familyOf(s.Type)
	if family == "" {
		family = unixPrefix
	}
	return family + s.Type + ":" + s.Value
}

// canonical checks value for typ and returns the selector in canonical form.
func canonical(typ, value string) (Selector, error) {
	switch typ {
	case TypeUID, TypeGID:
		if _, err := parseID(value); err != nil {
			return Selector{}, fmt.Errorf("%s: %w", typ, err)
		}
		return Selector{Type: typ, Value: value}, nil
	case TypePath:
		if err := checkPath(value); err != nil {
			return Selector{}, fmt.Errorf("path: %w", err)
		}
		return Selector{Type: typ, Value: value}, nil
	case TypeSHA256:
		if len(value) != 64 {
			return Selector{}, fmt.Errorf("sha256: want 64 hex digits, got %d characters", len(value))
		}
		for i := 0; i < len(value); i++ {
			if !isHex(value[i]) {
				return Selector{}, fmt.Errorf("sha256: %q is not a hex digit", value[i])
			}
		}
		return Selector{Type: typ, Value: strings.ToLower(value)}, nil
	case TypeTask:
		if err := CheckTaskID(value); err != nil {
			return Selector{}, fmt.Errorf("task: %w", err)
		}
		return Selector{Type: typ, Value: value}, nil
	case "":
		return Selector{}, errors.New("missing type (want uid, gid, path, sha256 or task)")
	default:
		return Selector{}, fmt.Errorf("unknown type %q (want uid, gid, path, sha256 or task)", typ)
	}
}

// CheckTaskID reports whether id is a valid task id: [a-z0-9][a-z0-9-]{0,63}.
// The attestor uses it to decide whether a cgroup directory name can be a
// task at all, so that the selector language and the attestor agree on one
// definition.
func CheckTaskID(id string) error {
	if id == "" {
		return errors.New("empty task id")
	}
	if len(id) > maxTaskIDLen {
		return fmt.Errorf("task id is %d bytes, the limit is %d", len(id), maxTaskIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && i > 0:
		default:
			return fmt.Errorf("task id %q: want [a-z0-9][a-z0-9-]*", id)
		}
	}
	return nil
}

// parseID parses a uid or gid in canonical decimal: digits only, no sign,
// no leading zeros (a leading zero reads as octal to some tools, so refusing
// it avoids two people reading one selector differently).
func parseID(v string) (uint32, error) {
	if v == "" {
		return 0, errors.New("empty id")
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", v)
		}
	}
	if len(v) > 1 && v[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", v)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is out of the uint32 range", v)
	}
	return uint32(n), nil
}

func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("path contains a NUL byte")
	case !filepath.IsAbs(p):
		return fmt.Errorf("%q is not absolute", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("%q is not clean (want %q)", p, filepath.Clean(p))
	}
	return nil
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// ValidateSet checks that set is a sensible AND of selectors:
//   - it is not empty (an empty AND matches every process);
//   - every selector is valid and canonical (a Selector built by hand rather
//     than by Parse is checked too);
//   - a path or sha256 selector comes with a uid, gid or task selector: a
//     binary selector alone would let any user run that binary, or connect
//     and then exec it, to obtain the identity;
//   - no selector appears twice;
//   - at most one uid, path, sha256 and task: a process has exactly one of
//     each, so two different values could never match, which is always a
//     mistake.
//
// A task selector is enough on its own: a task's cgroup is owned by root, so
// no process can put itself into it (cgroup.procs is not writable to it);
// only the node's executor places processes there. It may be combined with
// unix selectors to narrow the identity to, say, one uid within the task.
func ValidateSet(set []Selector) error {
	if len(set) == 0 {
		return errors.New("selector set is empty: it would match every process")
	}
	seen := make(map[Selector]bool, len(set))
	byType := make(map[string]Selector, 5)
	for _, s := range set {
		c, err := canonical(s.Type, s.Value)
		if err != nil {
			return fmt.Errorf("selector %q: %w", s.String(), err)
		}
		if c != s {
			return fmt.Errorf("selector %q is not canonical (want %q)", s.String(), c.String())
		}
		if seen[s] {
			return fmt.Errorf("selector %q appears twice", s.String())
		}
		seen[s] = true
		if s.Type != TypeGID {
			if prev, ok := byType[s.Type]; ok {
				return fmt.Errorf("selectors %q and %q can never both match: a process has one %s", prev.String(), s.String(), s.Type)
			}
		}
		byType[s.Type] = s
	}
	_, hasUID := byType[TypeUID]
	_, hasGID := byType[TypeGID]
	_, hasTask := byType[TypeTask]
	if hasUID || hasGID || hasTask {
		return nil
	}
	for _, s := range set {
		if s.Type == TypePath || s.Type == TypeSHA256 {
			return fmt.Errorf("selector %q needs a unix:uid, unix:gid or unum:task selector beside it: a binary selector alone can be satisfied by any user", s.String())
		}
	}
	return nil
}

// Process is what attestation learned about a connecting process.
type Process struct {
	PID  int
	UID  uint32   // effective uid
	GIDs []uint32 // effective gid first, then supplementary groups
	Path string   // resolved executable path
	// Task is the id of the scheduled task whose cgroup the process is in,
	// as the attestor read it from the kernel; "" when the process is in no
	// task's cgroup (or the attestor was not told where task cgroups are).
	Task string
	// SHA256 returns the lowercase hex SHA-256 of the executable. It is lazy
	// because hashing a large binary is expensive and most sets never need it.
	SHA256 func() (string, error)
}

// Match reports whether p satisfies every selector in set. The set is
// validated first, so an invalid set (including an empty one) is an error,
// never a match. Digest selectors are evaluated last so the executable is
// hashed only when everything else matched.
func Match(set []Selector, p Process) (bool, error) {
	if err := ValidateSet(set); err != nil {
		return false, err
	}
	var needDigest []Selector
	for _, s := range set {
		switch s.Type {
		case TypeUID:
			id, _ := parseID(s.Value) // validated above
			if p.UID != id {
				return false, nil
			}
		case TypeGID:
			id, _ := parseID(s.Value)
			if !containsID(p.GIDs, id) {
				return false, nil
			}
		case TypePath:
			if p.Path != s.Value {
				return false, nil
			}
		case TypeTask:
			// Exact comparison: "" (no task) never equals a valid task id.
			if p.Task != s.Value {
				return false, nil
			}
		case TypeSHA256:
			needDigest = append(needDigest, s)
		}
	}
	if len(needDigest) == 0 {
		return true, nil
	}
	if p.SHA256 == nil {
		return false, errors.New("match: process has no executable digest to compare with a sha256 selector")
	}
	sum, err := p.SHA256()
	if err != nil {
		return false, fmt.Errorf("match: hash executable of pid %d: %w", p.PID, err)
	}
	for _, s := range needDigest {
		if sum != s.Value {
			return false, nil
		}
	}
	return true, nil
}

func containsID(ids []uint32, id uint32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
