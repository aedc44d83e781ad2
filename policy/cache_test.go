package policy

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCacheableAnalysis: only a decision that is a pure function of the
// input minus its context is cached.
func TestCacheableAnalysis(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		extra  string
		cached bool
	}{
		{"shipped", "", true},
		{"reads the deciding node", "package unum.authz\n\nimport rego.v1\n\ndenies contains \"x\" if input.context.node == \"n9\"\n", false},
		{"reads the time", "package unum.authz\n\nimport rego.v1\n\ndenies contains \"late\" if time.now_ns() > 0\n", false},
		{"binds the time", "package unum.authz\n\nimport rego.v1\n\nnow := time.now_ns()\n\ndenies contains \"late\" if now < 0\n", false},
		{"reads the whole input", "package unum.authz\n\nimport rego.v1\n\nwhole := input\n\ndenies contains \"x\" if whole.context.node == \"n9\"\n", false},
		{"random", "package unum.authz\n\nimport rego.v1\n\ndenies contains \"x\" if rand.intn(\"k\", 2) == 1\n", false},
		{"reads the subject only", "package unum.authz\n\nimport rego.v1\n\ndenies contains \"x\" if input.subject.name == \"mallory\"\n", true},
		// Ways around a literal input.context (found in review).
		{"reads the context by iteration", "package unum.authz\n\nimport rego.v1\n\ndenies contains \"x\" if {\n\tsome k\n\tinput[k].node == \"n9\"\n}\n", false},
		{"reads a computed key", "package unum.authz\n\nimport rego.v1\n\nk := concat(\"\", [\"con\", \"text\"])\n\ndenies contains \"x\" if input[k].node == \"n9\"\n", false},
		{"swaps in a random builtin", "package unum.authz\n\nimport rego.v1\n\ng(_, _) := 0\n\ndenies contains \"x\" if {\n\tg(\"k\", 1000000) > 500000 with g as rand.intn\n}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string][]byte{}
			for n, d := range Builtin().Files {
				files[n] = d
			}
			if tc.extra != "" {
				files["extra.rego"] = []byte(tc.extra)
			}
			e, err := NewEngine(ctx, &Bundle{Files: files}, 1)
			require.NoError(t, err)
			require.Equal(t, tc.cached, e.Cached())
		})
	}
	e, err := NewEngine(ctx, Builtin(), 1, WithoutDecisionCache())
	require.NoError(t, err)
	require.False(t, e.Cached())
}

// TestCachedEqualsEvaluated: on the shipped policy, cached answers equal
// evaluated ones for every request of a varied set, asked twice; and the
// minimum privileged set holds on hits.
func TestCachedEqualsEvaluated(t *testing.T) {
	ctx := context.Background()
	cached, err := NewEngine(ctx, Builtin(), 1)
	require.NoError(t, err)
	cold, err := NewEngine(ctx, Builtin(), 1, WithoutDecisionCache())
	require.NoError(t, err)
	var ins []Input
	for _, role := range []string{"", "viewer", "operator", "admin"} {
		for _, action := range []string{"node.ls", "id.register", "policy.apply", "user.renew", "cred.delegate", "id.show"} {
			ins = append(ins, userInput("u1", role, action, "user/-/u1"), userInput("admin", role, action, "policy/-/bundle"))
		}
	}
	for round := 0; round < 2; round++ {
		for _, in := range ins {
			in.Context.Time = time.Unix(int64(1_800_000_000+round), 0)
			a, err := cached.Eval(ctx, &in)
			require.NoError(t, err)
			b, err := cold.Eval(ctx, &in)
			require.NoError(t, err)
			require.Equal(t, b, a, "%s %s as %s", in.Action, in.Resource, in.Subject.Attributes["role"])
		}
	}
	// A different role attribute is a different key.
	v := userInput("u1", "viewer", "id.register", "id/web/job/a")
	o := userInput("u1", "operator", "id.register", "id/web/job/a")
	rv, _ := cached.Eval(ctx, &v)
	ro, _ := cached.Eval(ctx, &o)
	require.False(t, rv.Allow)
	require.True(t, ro.Allow)
	require.NotEqual(t, cacheKey(&v), cacheKey(&o))
}

func TestCacheKeyUnambiguous(t *testing.T) {
	a := Input{Subject: Subject{ID: "ab", Name: "c"}, Action: "x.y"}
	b := Input{Subject: Subject{ID: "a", Name: "bc"}, Action: "x.y"}
	require.NotEqual(t, cacheKey(&a), cacheKey(&b))
	c := Input{Subject: Subject{Attributes: map[string]string{"k": "v", "l": "w"}}}
	d := Input{Subject: Subject{Attributes: map[string]string{"l": "w", "k": "v"}}}
	require.Equal(t, cacheKey(&c), cacheKey(&d))
	c.Context.Node, d.Context.Node = "n1", "n2"
	require.Equal(t, cacheKey(&c), cacheKey(&d), "the context is not part of the key")
}

func TestDecisionCacheGenerations(t *testing.T) {
	c := newDecisionCache(2)
	c.put("a", Result{Allow: true})
	c.put("b", Result{})
	c.put("c", Result{}) // a and b move to the old generation
	_, ok := c.get("a")
	require.True(t, ok, "the old generation still answers, and promotes")
	c.put("d", Result{})
	c.put("e", Result{}) // old generation dropped
	_, ok = c.get("b")
	require.False(t, ok)
	require.LessOrEqual(t, len(c.cur)+len(c.old), 4)
}

// A rule in a *_test.rego file takes no part in decisions: the engine is
// built without test files, so it cannot smuggle a context-dependent rule
// past the cache analysis either.
func TestTestFilesOutOfTheEngine(t *testing.T) {
	ctx := context.Background()
	files := map[string][]byte{}
	for n, d := range Builtin().Files {
		files[n] = d
	}
	files["sneaky_test.rego"] = []byte("package unum.authz\n\nimport rego.v1\n\ndenies contains \"from a test file\" if input.context.node == \"n9\"\n")
	e, err := NewEngine(ctx, &Bundle{Files: files}, 1)
	require.NoError(t, err)
	in := userInput("admin", "", "node.ls", "node/-/*")
	in.Context.Node = "n9"
	r, err := e.Eval(ctx, &in)
	require.NoError(t, err)
	require.True(t, r.Allow, "a test file's rule decided: %v", r.Reasons)
}
