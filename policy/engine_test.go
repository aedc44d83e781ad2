package policy

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

var testTD = spiffeid.RequireTrustDomainFromString("unum.test")

func userInput(name, role, action, resource string) Input {
	r, err := ParseResource(resource)
	if err != nil {
		panic(err)
	}
	return Input{
		Subject:  Subject{ID: "spiffe://unum.test/user/" + name, Kind: "user", Name: name, Attributes: map[string]string{"role": role}},
		Action:   action,
		Resource: r,
		Context:  Context{Node: "n1", Time: time.Unix(1_800_000_000, 0)},
	}
}

func TestBuiltinBundleTestsPass(t *testing.T) {
	rep, err := Builtin().Test(context.Background())
	require.NoError(t, err)
	require.Empty(t, rep.Failures)
	require.Positive(t, rep.Passed)
	t.Logf("passed %d, coverage %.1f%%, not covered %v", rep.Passed, rep.Coverage, rep.NotCovered)
}

func TestBuiltinEngineDecides(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine(ctx, Builtin(), 1)
	require.NoError(t, err)
	for _, tc := range []struct {
		name             string
		in               Input
		allow, privilege bool
	}{
		{"admin applies", userInput("admin", "", "policy.apply", "policy/-/bundle"), true, true},
		{"viewer lists", userInput("vic", "viewer", "node.ls", "node/-/*"), true, false},
		{"viewer may not apply", userInput("vic", "viewer", "policy.apply", "policy/-/bundle"), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := e.Eval(ctx, &tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.allow, r.Allow, r.Reasons)
			require.Equal(t, tc.privilege, r.Privileged)
			require.NotEmpty(t, r.Reasons)
		})
	}
	require.Empty(t, Guard(ctx, e, testTD, time.Unix(1_800_000_000, 0), Cluster{}))
}
