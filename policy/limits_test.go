package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDelegationLimits: a bundle sets the bounds of delegated credentials
// in package unum.delegation; out-of-range or ill-typed values refuse the
// bundle at compile, naming the field.
func TestDelegationLimits(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine(ctx, Builtin(), 1)
	require.NoError(t, err)
	require.Equal(t, DefaultDelegationLimits, e.Limits())

	for _, tc := range []struct {
		name, rego string
		want       DelegationLimits
		err        string
	}{
		{"both", "package unum.delegation\nmax_depth := 2\nmax_ttl_seconds := 300\n", DelegationLimits{MaxDepth: 2, MaxTTL: 5 * time.Minute}, ""},
		{"depth only", "package unum.delegation\nmax_depth := 16\n", DelegationLimits{MaxDepth: 16, MaxTTL: DefaultDelegationLimits.MaxTTL}, ""},
		{"other rules ignored", "package unum.delegation\nhelper := {\"x\": 1}\n", DefaultDelegationLimits, ""},
		{"depth too deep", "package unum.delegation\nmax_depth := 17\n", DelegationLimits{}, "max_depth is 17, want an integer from 1 to 16"},
		{"depth zero", "package unum.delegation\nmax_depth := 0\n", DelegationLimits{}, "max_depth is 0"},
		{"ttl past the cap", "package unum.delegation\nmax_ttl_seconds := 86401\n", DelegationLimits{}, "max_ttl_seconds is 86401"},
		{"ttl a string", "package unum.delegation\nmax_ttl_seconds := \"1h\"\n", DelegationLimits{}, "max_ttl_seconds is string"},
		{"ttl fractional", "package unum.delegation\nmax_ttl_seconds := 1.5\n", DelegationLimits{}, "max_ttl_seconds is 1.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEngine(ctx, bundleWith(map[string]string{"delegation.rego": tc.rego}), 2)
			if tc.err != "" {
				var be *BundleError
				require.True(t, errors.As(err, &be), "%v", err)
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, e.Limits())
		})
	}
}
