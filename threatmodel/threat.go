package threatmodel

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Status says where a threat stands.
type Status string

const (
	// Mitigated threats name the tests that prove the mitigation.
	Mitigated Status = "mitigated"
	// Accepted threats are known and deliberately not (fully) mitigated; the
	// Reason says why and where the acceptance ends.
	Accepted Status = "accepted"
	// Open threats are known and not yet answered.
	Open Status = "open"
)

// Capability is what the attacker holds: the class of attacker a threat
// assumes. The classes are the issue-9 list; each threat picks the weakest
// class that can mount it.
type Capability string

const (
	// NetworkPeer reaches a listener over the network and holds no
	// credential of the cluster (or a stolen, copied, out-of-band one: a
	// join token read from a log).
	NetworkPeer Capability = "network-peer"
	// CompromisedWorkload runs code as a task, or as another local user, on
	// a node: it can reach the node's sockets and its own task's files.
	CompromisedWorkload Capability = "compromised-workload"
	// CompromisedNode holds a node's SVID and keys, or root on the node.
	CompromisedNode Capability = "compromised-node"
	// MaliciousInsider holds a legitimate credential: a user's certificate,
	// a delegated credential, an operator role, an audit reader's access.
	MaliciousInsider Capability = "malicious-insider"
	// StolenDisk reads (or writes) a node's disk or a backup offline.
	StolenDisk Capability = "stolen-disk"
)

// Capabilities lists the attacker classes in the order the register and
// the docs group them.
func Capabilities() []Capability {
	return []Capability{NetworkPeer, CompromisedWorkload, CompromisedNode, MaliciousInsider, StolenDisk}
}

// Threat is one entry of the register.
type Threat struct {
	// ID is "T-" followed by at least three digits, e.g. "T-001". IDs are
	// never reused once published.
	ID    string `json:"id"`
	Title string `json:"title"`
	// STRIDE holds the letters of the classes the threat belongs to, in
	// STRIDE order, e.g. "S" or "SE".
	STRIDE string `json:"stride"`
	// Asset is what the attacker is after.
	Asset string `json:"asset"`
	// Boundary is the trust boundary the attack crosses, in words.
	Boundary string `json:"boundary"`
	// Crosses names the boundaries of TrustBoundaries that Boundary
	// describes (one or more).
	Crosses []string `json:"crosses"`
	// Attacker is who attacks, and from where, in words.
	Attacker string `json:"attacker"`
	// Capability classifies Attacker: what the attacker holds.
	Capability Capability `json:"capability"`
	Mitigation string     `json:"mitigation"`
	Status     Status     `json:"status"`
	// Reason is required for Accepted threats.
	Reason string `json:"reason,omitempty"`
	// Tests are references "pkgpath.TestName[/subtest]"; see ParseTestRef.
	Tests []string `json:"tests"`
	// Kernel is set when part of the mitigation depends on a kernel feature
	// that production kernels may lack (BPF LSM, say).
	Kernel *KernelDependency `json:"kernel,omitempty"`
}

// KernelDependency names the tests of a mitigation that need a kernel
// feature and the tests of what stands in when the kernel lacks it. The
// results check lets a Tests entry skip only when its skip message starts
// with KernelLacks(Feature) (the feature probe said no) and every Fallback
// test passed in the same run. Tests and Fallback are also listed in the
// threat's Tests.
type KernelDependency struct {
	Feature  string   `json:"feature"`  // "bpf-lsm"
	Tests    []string `json:"tests"`    // may skip when the probe says the kernel lacks Feature
	Fallback []string `json:"fallback"` // must pass whenever one of Tests skipped
}

// KernelLacks is how a test that needs feature says the kernel lacks it:
// t.Skip(threatmodel.KernelLacks("bpf-lsm") + reason). The check reads the
// skip message for it; any other skip of a mitigated threat's test fails.
func KernelLacks(feature string) string { return "kernel lacks " + feature + ": " }

const strideOrder = "STRIDE"

// Validate checks a register: unique well-formed IDs, required fields filled,
// STRIDE letters valid, a known attacker capability, one or more distinct
// known trust boundaries crossed, mitigated threats with at least one test,
// accepted threats with a reason, well-formed test references, and a kernel
// dependency (when there is one) whose tests and fallback tests are distinct
// tests of the threat. It checks TrustBoundaries too. It reports every
// problem, not just the first.
func Validate(threats []Threat) error {
	boundaries := TrustBoundaries()
	errs := []error{validateBoundaries(boundaries)}
	known := make(map[string]bool, len(boundaries))
	for _, b := range boundaries {
		known[b.Name] = true
	}
	seen := make(map[string]bool, len(threats))
	for i, t := range threats {
		name := t.ID
		if name == "" {
			name = fmt.Sprintf("threat #%d", i)
		}
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("threatmodel: %s: %s", name, fmt.Sprintf(format, args...)))
		}
		if _, err := idNumber(t.ID); err != nil {
			fail("%v", err)
		} else if seen[t.ID] {
			fail("duplicate id")
		}
		seen[t.ID] = true
		for _, f := range []struct{ field, value string }{
			{"title", t.Title},
			{"asset", t.Asset},
			{"boundary", t.Boundary},
			{"attacker", t.Attacker},
			{"mitigation", t.Mitigation},
		} {
			if strings.TrimSpace(f.value) == "" {
				fail("%s is empty", f.field)
			}
		}
		if err := validateSTRIDE(t.STRIDE); err != nil {
			fail("%v", err)
		}
		if t.Capability == "" {
			fail("capability is empty (want one of %v)", Capabilities())
		} else if !slices.Contains(Capabilities(), t.Capability) {
			fail("unknown capability %q (want one of %v)", t.Capability, Capabilities())
		}
		if len(t.Crosses) == 0 {
			fail("crosses no trust boundary")
		}
		crossed := make(map[string]bool, len(t.Crosses))
		for _, b := range t.Crosses {
			if !known[b] {
				fail("crosses unknown trust boundary %q", b)
			}
			if crossed[b] {
				fail("crosses trust boundary %q twice", b)
			}
			crossed[b] = true
		}
		switch t.Status {
		case Mitigated:
			if len(t.Tests) == 0 {
				fail("mitigated but names no test")
			}
		case Accepted:
			if strings.TrimSpace(t.Reason) == "" {
				fail("accepted without a reason")
			}
		case Open:
		default:
			fail("unknown status %q (want %s, %s or %s)", t.Status, Mitigated, Accepted, Open)
		}
		testSeen := make(map[string]bool, len(t.Tests))
		for _, ref := range t.Tests {
			if _, err := ParseTestRef(ref); err != nil {
				fail("%v", err)
			}
			if testSeen[ref] {
				fail("test %q listed twice", ref)
			}
			testSeen[ref] = true
		}
		if t.Kernel != nil {
			for _, err := range validateKernel(t.Kernel, testSeen) {
				fail("%v", err)
			}
		}
	}
	return errors.Join(errs...)
}

// validateKernel checks a kernel dependency against the threat's own tests
// (inTests): the results check excuses a skip only for the tests named here
// and only when the fallback ran, so both lists must be there, distinct, and
// among the tests the register holds the threat to.
func validateKernel(k *KernelDependency, inTests map[string]bool) []error {
	var errs []error
	if !isKebab(k.Feature) {
		errs = append(errs, fmt.Errorf("kernel feature %q: want lowercase kebab-case, e.g. bpf-lsm", k.Feature))
	}
	if len(k.Tests) == 0 {
		errs = append(errs, errors.New("kernel dependency names no test that needs the feature"))
	}
	if len(k.Fallback) == 0 {
		errs = append(errs, errors.New("kernel dependency names no fallback test"))
	}
	role := map[string]string{}
	for _, l := range []struct {
		name string
		refs []string
	}{{"kernel test", k.Tests}, {"kernel fallback", k.Fallback}} {
		for _, ref := range l.refs {
			if _, err := ParseTestRef(ref); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", l.name, err))
				continue
			}
			if !inTests[ref] {
				errs = append(errs, fmt.Errorf("%s %q is not among the threat's tests", l.name, ref))
			}
			switch prev := role[ref]; prev {
			case "":
				role[ref] = l.name
			case l.name:
				errs = append(errs, fmt.Errorf("%s %q listed twice", l.name, ref))
			default:
				errs = append(errs, fmt.Errorf("test %q is both a %s and a %s", ref, prev, l.name))
			}
		}
	}
	return errs
}

// validateBoundaries checks the trust boundaries threats refer to: names
// unique and kebab-case, title and description filled.
func validateBoundaries(bs []TrustBoundary) error {
	var errs []error
	seen := make(map[string]bool, len(bs))
	for i, b := range bs {
		if !isKebab(b.Name) {
			errs = append(errs, fmt.Errorf("threatmodel: trust boundary #%d: name %q: want lowercase kebab-case", i, b.Name))
		}
		if seen[b.Name] {
			errs = append(errs, fmt.Errorf("threatmodel: trust boundary %q: duplicate name", b.Name))
		}
		seen[b.Name] = true
		if strings.TrimSpace(b.Title) == "" || strings.TrimSpace(b.Description) == "" {
			errs = append(errs, fmt.Errorf("threatmodel: trust boundary %q: title or description is empty", b.Name))
		}
	}
	return errors.Join(errs...)
}

// isKebab reports whether s is lowercase kebab-case: words of a-z and 0-9
// joined by single hyphens.
func isKebab(s string) bool {
	if s == "" {
		return false
	}
	for _, w := range strings.Split(s, "-") {
		if w == "" || strings.TrimLeft(w, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			return false
		}
	}
	return true
}

func validateSTRIDE(s string) error {
	if s == "" {
		return errors.New("STRIDE class is empty")
	}
	last := -1
	for _, c := range s {
		i := strings.IndexRune(strideOrder, c)
		if i < 0 {
			return fmt.Errorf("STRIDE class %q: %q is not one of %s", s, c, strideOrder)
		}
		if i <= last {
			return fmt.Errorf("STRIDE class %q: letters must be distinct and in %s order", s, strideOrder)
		}
		last = i
	}
	return nil
}

// idNumber returns the number of an ID "T-NNN" (three or more digits).
func idNumber(id string) (int, error) {
	digits, ok := strings.CutPrefix(id, "T-")
	if !ok || len(digits) < 3 || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, fmt.Errorf("id %q: want T- followed by at least three digits", id)
	}
	n, err := strconv.Atoi(digits)
	if err != nil {
		return 0, fmt.Errorf("id %q: %w", id, err)
	}
	return n, nil
}

// sortByID orders threats by the number in their IDs, so T-1000 follows
// T-999; malformed IDs sort first, by string.
func sortByID(threats []Threat) {
	slices.SortStableFunc(threats, func(a, b Threat) int {
		na, errA := idNumber(a.ID)
		nb, errB := idNumber(b.ID)
		switch {
		case errA != nil && errB != nil:
			return cmp.Compare(a.ID, b.ID)
		case errA != nil:
			return -1
		case errB != nil:
			return 1
		}
		return cmp.Compare(na, nb)
	})
}

// TestRef names a Go test: the package directory relative to the module
// root, the test function, and optionally a subtest path.
type TestRef struct {
	Package string // "identity/ca"
	Func    string // "TestVerifyCSRRefuses"
	Subtest string // "" or "extra_uri" (may itself contain '/')
}

func (r TestRef) String() string {
	s := r.Package + "." + r.Func
	if r.Subtest != "" {
		s += "/" + r.Subtest
	}
	return s
}

// ParseTestRef reads "pkgpath.TestName[/subtest]". The package path is
// everything before the first ".Test"; its segments may not be empty, "." or
// "..", so a reference cannot point outside the module.
func ParseTestRef(ref string) (TestRef, error) {
	i := strings.Index(ref, ".Test")
	if i <= 0 {
		return TestRef{}, fmt.Errorf("test %q: want pkgpath.TestName", ref)
	}
	pkg, rest := ref[:i], ref[i+1:]
	fn, sub, hasSub := strings.Cut(rest, "/")
	if hasSub && sub == "" {
		return TestRef{}, fmt.Errorf("test %q: empty subtest name", ref)
	}
	for _, seg := range strings.Split(pkg, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.TrimLeft(seg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != "" {
			return TestRef{}, fmt.Errorf("test %q: bad package path %q (want a path relative to the module root)", ref, pkg)
		}
	}
	if !isTestFuncName(fn) {
		return TestRef{}, fmt.Errorf("test %q: %q is not a test function name (TestXxx)", ref, fn)
	}
	return TestRef{Package: pkg, Func: fn, Subtest: sub}, nil
}

// isTestFuncName follows go test: "Test" then nothing or a non-lowercase
// start, and the whole an ASCII identifier.
func isTestFuncName(s string) bool {
	rest, ok := strings.CutPrefix(s, "Test")
	if !ok {
		return false
	}
	if rest != "" && rest[0] >= 'a' && rest[0] <= 'z' {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c != '_' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}
