package policy

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func rec(id string, allow bool, shadow *ShadowResult) *Record {
	return &Record{ID: id, Result: Result{Allow: allow, Reasons: []string{"r"}}, Shadow: shadow}
}

func TestRing(t *testing.T) {
	ctx := context.Background()
	g := NewRing(3)
	for _, id := range []string{"a", "b", "c", "d"} {
		require.NoError(t, g.Record(ctx, rec(id, true, nil)))
	}
	_, ok := g.Get("a")
	require.False(t, ok, "the oldest decision was not evicted")
	for _, id := range []string{"b", "c", "d"} {
		r, ok := g.Get(id)
		require.True(t, ok, id)
		require.Equal(t, id, r.ID)
	}
	_, ok = g.Get("zz")
	require.False(t, ok)

	// A shadow's findings outlive a busy stream of unchanged decisions.
	require.NoError(t, g.Record(ctx, rec("s1-deny", true, &ShadowResult{ShadowID: "s1", Result: Result{Allow: false}, Live: Result{Allow: true}})))
	require.NoError(t, g.Record(ctx, rec("s1-same", true, &ShadowResult{ShadowID: "s1", Result: Result{Allow: true}, Live: Result{Allow: true}})))
	require.NoError(t, g.Record(ctx, rec("s2-err", true, &ShadowResult{ShadowID: "s2", Result: Result{Allow: true}, Err: "boom", Live: Result{Allow: true}})))
	for i := range 10 {
		require.NoError(t, g.Record(ctx, rec(string(rune('e'+i)), true, nil)))
	}
	_, ok = g.Get("s1-deny")
	require.False(t, ok)
	ids := func(rs []*Record) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	require.Equal(t, []string{"s1-deny"}, ids(g.ShadowChanges("s1")))
	require.Equal(t, []string{"s2-err"}, ids(g.ShadowChanges("s2")))
	require.Empty(t, g.ShadowChanges("s3"))

	// The changes keep their own newest n, oldest first.
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		require.NoError(t, g.Record(ctx, rec(id, false, &ShadowResult{ShadowID: "s1", Result: Result{Allow: true}})))
	}
	require.Equal(t, []string{"c2", "c3", "c4"}, ids(g.ShadowChanges("s1")))
	require.Empty(t, g.ShadowChanges("s2"))
}

func TestShadowChanged(t *testing.T) {
	live := Result{Allow: true, Privileged: false, Reasons: []string{"a"}}
	for _, tc := range []struct {
		name    string
		s       ShadowResult
		liveErr string
		changed bool
	}{
		{"same", ShadowResult{Result: Result{Allow: true, Reasons: []string{"other reasons"}}}, "", false},
		{"allow", ShadowResult{Result: Result{Allow: false}}, "", true},
		{"privileged", ShadowResult{Result: Result{Allow: true, Privileged: true}}, "", true},
		{"shadow fails", ShadowResult{Result: Result{Allow: true}, Err: "x"}, "", true},
		{"live fails", ShadowResult{Result: Result{Allow: true}}, "x", true},
		{"both fail", ShadowResult{Result: Result{Allow: true}, Err: "x"}, "y", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.Live, s.LiveErr = live, tc.liveErr
			require.Equal(t, tc.changed, s.Changed())
		})
	}
}
