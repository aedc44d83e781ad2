package policy

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// builtinEngine compiles the shipped bundle as revision rev.
func builtinEngine(t testing.TB, rev int64) *Engine {
	t.Helper()
	e, err := NewEngine(context.Background(), Builtin(), rev)
	require.NoError(t, err)
	return e
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestViewFreshness(t *testing.T) {
	const bound = 10 * time.Second
	v := NewView(0)
	require.Equal(t, DefaultStaleBound, v.bound)
	require.Nil(t, v.Engine())
	require.ErrorIs(t, v.Fresh(t0), ErrNoPolicy)
	require.Equal(t, Status{Age: -1}, v.Status(t0))

	// Served, but not yet confirmed latest.
	e1 := builtinEngine(t, 1)
	v.Set(e1)
	require.Same(t, e1, v.Engine())
	require.ErrorIs(t, v.Fresh(t0), ErrStale)
	require.ErrorContains(t, v.Fresh(t0), "not yet confirmed")

	// Confirmed at t0: fresh up to and including the bound.
	v.Observe(1, t0)
	require.NoError(t, v.Fresh(t0))
	require.NoError(t, v.Fresh(t0.Add(bound)))
	require.ErrorIs(t, v.Fresh(t0.Add(bound+time.Nanosecond)), ErrStale)
	require.Equal(t, Status{Revision: 1, Latest: 1, Age: 3 * time.Second}, v.Status(t0.Add(3*time.Second)))

	// Each progress report confirms it again.
	v.Observe(1, t0.Add(8*time.Second))
	require.NoError(t, v.Fresh(t0.Add(15*time.Second)))

	// A report from before the last one changes nothing.
	v.Observe(1, t0.Add(time.Second))
	require.Equal(t, 8*time.Second, v.Status(t0.Add(16*time.Second)).Age)

	// Revision 2 appears at t0+9s: revision 1 is confirmed no more, so the
	// view goes stale one bound after its last confirmation, and stays
	// stale however often the store reports revision 2, until 2 is served.
	v.Observe(2, t0.Add(9*time.Second))
	require.NoError(t, v.Fresh(t0.Add(18*time.Second)))
	for s := 10; s <= 60; s += 10 {
		v.Observe(2, t0.Add(time.Duration(s)*time.Second))
	}
	err := v.Fresh(t0.Add(60 * time.Second))
	require.ErrorIs(t, err, ErrStale)
	require.ErrorContains(t, err, "serving revision 1, revision 2 is the latest")

	changed := v.Changed()
	e2 := builtinEngine(t, 2)
	v.Set(e2)
	select {
	case <-changed:
	default:
		t.Fatal("Set did not close Changed")
	}
	require.NoError(t, v.Fresh(t0.Add(62*time.Second)))
	require.Equal(t, Status{Revision: 2, Latest: 2, Age: 2 * time.Second}, v.Status(t0.Add(62*time.Second)))

	// An older engine delivered late (a lagging control node) is served
	// but was never confirmed: stale at once, whatever was confirmed for
	// revision 2 before.
	v.Set(e1)
	require.Same(t, e1, v.Engine())
	require.ErrorIs(t, v.Fresh(t0.Add(62*time.Second)), ErrStale)
	v.Observe(2, t0.Add(65*time.Second))
	require.ErrorIs(t, v.Fresh(t0.Add(65*time.Second)), ErrStale)
}

// A store restored from a backup reports a lower latest revision than a
// node serves: the node's newer revision no longer exists and must not
// count as current, and the store's revision, once loaded, does.
func TestViewStoreRestored(t *testing.T) {
	v := NewView(10 * time.Second)
	v.Observe(5, t0)
	v.Set(builtinEngine(t, 5))
	require.NoError(t, v.Fresh(t0))
	v.Observe(3, t0.Add(time.Second))
	require.NoError(t, v.Fresh(t0.Add(10*time.Second)), "within the bound of its last confirmation")
	require.ErrorContains(t, v.Fresh(t0.Add(11*time.Second)), "serving revision 5, revision 3 is the latest")
	v.Set(builtinEngine(t, 3))
	require.NoError(t, v.Fresh(t0.Add(11*time.Second)))
	// A report older than the last changes nothing.
	v.Observe(5, t0)
	require.Equal(t, int64(3), v.Status(t0.Add(11*time.Second)).Latest)
}

func TestViewCustomBound(t *testing.T) {
	v := NewView(time.Minute)
	v.Set(builtinEngine(t, 1))
	v.Observe(1, t0)
	require.NoError(t, v.Fresh(t0.Add(time.Minute)))
	require.ErrorIs(t, v.Fresh(t0.Add(time.Minute+time.Millisecond)), ErrStale)
}

// A revision seen before it is served counts as confirmed from the time it
// was last reported, not from when it was compiled.
func TestViewSetAfterObserve(t *testing.T) {
	v := NewView(10 * time.Second)
	v.Observe(3, t0)
	v.Set(builtinEngine(t, 3))
	require.NoError(t, v.Fresh(t0.Add(10*time.Second)))
	require.ErrorIs(t, v.Fresh(t0.Add(11*time.Second)), ErrStale)
}

// A confirmation later than the clock a request read (a progress report
// racing it) counts as fresh, not as never confirmed.
func TestViewConfirmedAfterNow(t *testing.T) {
	v := NewView(10 * time.Second)
	v.Set(builtinEngine(t, 1))
	v.Observe(1, t0.Add(time.Millisecond))
	require.NoError(t, v.Fresh(t0))
	require.Equal(t, time.Duration(0), v.Status(t0).Age)
}
