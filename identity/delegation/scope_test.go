package delegation

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output in testdata/*.txt (only when the diff is understood)")

// TestScopesData runs testdata/scopes.txt. Each case is a command line, a
// line "----", and the expected output up to a blank line; lines starting
// with # are comments. Commands:
//
//	parse SCOPE                     the canonical form, or error: why
//	scopes SCOPE...                 ParseScopes: sorted canonical forms, or error
//	claim "QUOTED"                  the scope claim as a verifier reads it
//	allows SCOPE ACTION KIND/NS/NAME  true or false
//	within CHILD PARENT             true or false (Scope.Within)
//	setwithin CHILD,... PARENT,...  ScopesWithin: true, or false and the first scope not within
func TestScopesData(t *testing.T) {
	const path = "testdata/scopes.txt"
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var out []string
	for i := 0; i < len(lines); {
		line := lines[i]
		if line == "" || strings.HasPrefix(line, "#") {
			out = append(out, line)
			i++
			continue
		}
		require.Less(t, i+1, len(lines), "%s:%d: command without ----", path, i+1)
		require.Equal(t, "----", lines[i+1], "%s:%d: want ---- after the command", path, i+2)
		j := i + 2
		for j < len(lines) && lines[j] != "" {
			j++
		}
		want := strings.Join(lines[i+2:j], "\n")
		got := runScopeCommand(t, line)
		if !*rewrite {
			require.Equal(t, want, got, "%s:%d: %s", path, i+1, line)
		}
		out = append(out, line, "----", got)
		i = j
	}
	if *rewrite {
		require.NoError(t, os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644))
	}
}

func runScopeCommand(t *testing.T, line string) string {
	cmd, rest, _ := strings.Cut(line, " ")
	args := strings.Fields(rest)
	errOr := func(s string, err error) string {
		if err != nil {
			return "error: " + err.Error()
		}
		return s
	}
	parse := func(s string) Scope {
		sc, err := ParseScope(s)
		require.NoError(t, err, "%q", line)
		return sc
	}
	parseList := func(s string) []Scope {
		var out []Scope
		for _, p := range strings.Split(s, ",") {
			out = append(out, parse(p))
		}
		return out
	}
	switch cmd {
	case "parse":
		sc, err := ParseScope(rest)
		return errOr(sc.String(), err)
	case "scopes":
		ss, err := ParseScopes(args)
		return errOr(FormatScopes(ss), err)
	case "claim":
		s, err := strconv.Unquote(rest)
		require.NoError(t, err, "%q", line)
		ss, err := parseScopeClaim(s)
		return errOr(FormatScopes(ss), err)
	case "allows":
		require.Len(t, args, 3, "%q", line)
		res := strings.SplitN(args[2], "/", 3)
		require.Len(t, res, 3, "%q", line)
		return strconv.FormatBool(parse(args[0]).Allows(args[1], res[0], res[1], res[2]))
	case "within":
		require.Len(t, args, 2, "%q", line)
		return strconv.FormatBool(parse(args[0]).Within(parse(args[1])))
	case "setwithin":
		require.Len(t, args, 2, "%q", line)
		s, ok := ScopesWithin(parseList(args[0]), parseList(args[1]))
		if ok {
			return "true"
		}
		return "false " + s.String()
	}
	t.Fatalf("unknown command in %q", line)
	return ""
}

// scopeUniverse is a small universe of scope patterns and the concrete
// (action, resource) requests that tell them apart: every literal the
// patterns name, and for each a sibling no pattern names exactly (the "z"
// suffix, "zz" kinds and namespaces, a "zz" noun and verb).
type scopeUniverse struct {
	patterns []Scope
	requests [][4]string // action, kind, ns, name
}

func newScopeUniverse(t *testing.T) scopeUniverse {
	actions := []string{"*", "kv.*", "kv.read", "kv.write", "kvx.*", "queue.*", "queue.read"}
	kinds := []string{"*", "kv", "queue"}
	nss := []string{"*", "shop", "web", "-"}
	names := []string{"*", "o*", "or*", "orders", "orders-*", "orders-1", "orders-1*", "other", "x"}
	var u scopeUniverse
	for _, a := range actions {
		for _, k := range kinds {
			for _, ns := range nss {
				for _, n := range names {
					u.patterns = append(u.patterns, parse(t, a+":"+k+"/"+ns+"/"+n))
				}
			}
		}
	}
	concrete := func(patterns []string, sibling func(string) string) []string {
		seen := map[string]bool{}
		var out []string
		add := func(s string) {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
		for _, p := range patterns {
			lit := strings.TrimSuffix(p, "*")
			add(lit)
			add(sibling(lit))
		}
		return out
	}
	var cActions []string
	for _, a := range concrete(actions, func(s string) string { return s + "zz" }) {
		if a == "" || strings.HasSuffix(a, ".") {
			a += "zz" // kv. → kv.zz; "" → zz, then zz.zz below
		}
		if !strings.Contains(a, ".") {
			a += ".zz"
		}
		cActions = append(cActions, a)
	}
	cKinds := concrete(kinds, func(s string) string { return s + "zz" })
	cNSs := concrete(nss, func(s string) string { return s + "zz" })
	cNames := concrete(names, func(s string) string { return s + "z" })
	for _, a := range cActions {
		for _, k := range cKinds {
			for _, ns := range cNSs {
				for _, n := range cNames {
					u.requests = append(u.requests, [4]string{a, k, ns, n})
				}
			}
		}
	}
	return u
}

func parse(t *testing.T, s string) Scope {
	t.Helper()
	sc, err := ParseScope(s)
	require.NoError(t, err)
	return sc
}

// allowed is the set of requests of u that s allows, as a bit set.
func (u scopeUniverse) allowed(s Scope) []uint64 {
	bits := make([]uint64, (len(u.requests)+63)/64)
	for i, r := range u.requests {
		if s.Allows(r[0], r[1], r[2], r[3]) {
			bits[i/64] |= 1 << (i % 64)
		}
	}
	return bits
}

func subset(a, b []uint64) bool {
	for i := range a {
		if a[i]&^b[i] != 0 {
			return false
		}
	}
	return true
}

// TestWithinAgainstBruteForce checks Scope.Within against the naive
// reference over a small universe: child.Within(parent) exactly when every
// request the child allows the parent allows too. Sound (Within never lets
// a child widen) and, over this universe, complete (it never refuses a
// real narrowing).
func TestWithinAgainstBruteForce(t *testing.T) {
	u := newScopeUniverse(t)
	allowed := make([][]uint64, len(u.patterns))
	for i, p := range u.patterns {
		allowed[i] = u.allowed(p)
	}
	within := 0
	for i, c := range u.patterns {
		for j, p := range u.patterns {
			got, want := c.Within(p), subset(allowed[i], allowed[j])
			if got != want {
				t.Fatalf("%s.Within(%s) = %v, but by brute force over %d requests the child's rights ⊆ the parent's is %v",
					c, p, got, len(u.requests), want)
			}
			if got {
				within++
			}
		}
	}
	t.Logf("%d patterns, %d requests, %d of %d pairs within", len(u.patterns), len(u.requests), within, len(u.patterns)*len(u.patterns))
	require.Greater(t, within, len(u.patterns), "the universe exercises more than identity")
}

// TestScopesWithinAgainstBruteForce: for random sets of scopes, when
// ScopesWithin says the child set is within the parent set, every request
// a child scope allows some parent scope allows.
func TestScopesWithinAgainstBruteForce(t *testing.T) {
	u := newScopeUniverse(t)
	allowed := make([][]uint64, len(u.patterns))
	for i, p := range u.patterns {
		allowed[i] = u.allowed(p)
	}
	rng := rand.New(rand.NewPCG(6, 70))
	pick := func() []int {
		out := make([]int, 1+rng.IntN(3))
		for i := range out {
			out[i] = rng.IntN(len(u.patterns))
		}
		return out
	}
	scopes := func(idx []int) []Scope {
		out := make([]Scope, len(idx))
		for i, j := range idx {
			out[i] = u.patterns[j]
		}
		return out
	}
	union := func(idx []int) []uint64 {
		acc := make([]uint64, len(allowed[0]))
		for _, j := range idx {
			for i := range acc {
				acc[i] |= allowed[j][i]
			}
		}
		return acc
	}
	accepted := 0
	for range 20000 {
		parent := pick()
		// Half the children are drawn from narrowings of the parent's own
		// scopes, so that both answers come up often.
		child := pick()
		if rng.IntN(2) == 0 {
			for i := range child {
				p := u.patterns[parent[rng.IntN(len(parent))]]
				for {
					c := rng.IntN(len(u.patterns))
					if u.patterns[c].Within(p) {
						child[i] = c
						break
					}
				}
			}
		}
		if _, ok := ScopesWithin(scopes(child), scopes(parent)); ok {
			accepted++
			require.True(t, subset(union(child), union(parent)), "%s within %s, but it allows more",
				FormatScopes(scopes(child)), FormatScopes(scopes(parent)))
		}
	}
	require.Greater(t, accepted, 5000)
	t.Logf("%d of 20000 child sets within their parent set", accepted)
}

// TestScopeRoundTrip: every pattern of the universe prints as it parses.
func TestScopeRoundTrip(t *testing.T) {
	for _, s := range newScopeUniverse(t).patterns {
		require.Equal(t, s, parse(t, s.String()), fmt.Sprint(s))
	}
}
