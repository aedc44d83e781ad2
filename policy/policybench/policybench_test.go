package policybench

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

var td = spiffeid.RequireTrustDomainFromString("bench.test")

// TestPathsAgree checks that the benchmark measures real decisions: every
// case gets its expected answer on both paths, and each path is recorded
// or evaluated as it claims.
func TestPathsAgree(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{DefaultBindings, 3, 0} {
		b, err := Bundle(td, n)
		require.NoError(t, err)
		d, ring, err := Decider(ctx, b, 256)
		require.NoError(t, err)
		raw, err := NewRaw(ctx, b)
		require.NoError(t, err)
		cases := Cases(td, n)
		require.Len(t, cases, 64)
		names := map[string]int{}
		for _, c := range cases {
			names[c.Name]++
			dec, err := d.Decide(ctx, c.Input, "")
			require.NoError(t, err, "%d bindings, %s", n, c.Name)
			require.Equal(t, c.Allow, dec.Allow, "%d bindings, %s: %v", n, c.Name, dec.Reasons)
			require.Equal(t, c.Privileged, dec.Privileged, "%d bindings, %s", n, c.Name)
			rec, ok := ring.Get(dec.ID)
			require.True(t, ok, "decision %s not in the log", dec.ID)
			require.Equal(t, c.Input.Subject.ID, rec.Input.Subject.ID)

			allow, err := raw.Decide(ctx, RawInput(&c.Input, time.Now()))
			require.NoError(t, err, "%d bindings, %s", n, c.Name)
			require.Equal(t, c.Allow, allow, "raw opa, %d bindings, %s", n, c.Name)
		}
		require.Equal(t, 16, names["admin"])
		require.Equal(t, 16, names["attribute-viewer"])
		require.Equal(t, 16, names["denied-workload"])
		if n > 1 {
			// Both roles' tables are exercised.
			require.Equal(t, 16, names["bound-viewer"]+names["bound-operator"])
			require.Positive(t, names["bound-viewer"])
			require.Positive(t, names["bound-operator"])
		}
	}
}

// TestBindingsAreWhatAllows checks that the bound users are allowed
// because of their binding: with the shipped (empty) bindings, the same
// requests are denied.
func TestBindingsAreWhatAllows(t *testing.T) {
	ctx := context.Background()
	b, err := Bundle(td, DefaultBindings)
	require.NoError(t, err)
	d, _, err := Decider(ctx, b, 16)
	require.NoError(t, err)
	empty, err := Bundle(td, 0)
	require.NoError(t, err)
	d0, _, err := Decider(ctx, empty, 16)
	require.NoError(t, err)
	seen := 0
	for _, c := range Cases(td, DefaultBindings) {
		if c.Name != "bound-viewer" && c.Name != "bound-operator" {
			continue
		}
		seen++
		dec, err := d.Decide(ctx, c.Input, "")
		require.NoError(t, err)
		require.True(t, dec.Allow, dec.Reasons)
		dec0, err := d0.Decide(ctx, c.Input, "")
		require.NoError(t, err)
		require.False(t, dec0.Allow, dec0.Reasons)
	}
	require.Equal(t, 16, seen)
}

func TestBundleIsDeterministic(t *testing.T) {
	a, err := Bundle(td, 50)
	require.NoError(t, err)
	b, err := Bundle(td, 50)
	require.NoError(t, err)
	require.Equal(t, a.Digest(), b.Digest())
	c, err := Bundle(td, 51)
	require.NoError(t, err)
	require.NotEqual(t, a.Digest(), c.Digest())
	require.Equal(t, Cases(td, 50), Cases(td, 50))
}
