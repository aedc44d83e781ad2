package policy

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultStaleBound is how long a node may go without confirming that it
// serves the latest policy revision before it refuses privileged actions.
const DefaultStaleBound = 10 * time.Second

// ErrStale means the node cannot show that it serves the latest policy.
var ErrStale = errors.New("policy view is stale")

// ErrNoPolicy means no policy has been loaded yet.
var ErrNoPolicy = errors.New("no policy loaded yet")

// View is a node's current policy: the engine it serves and what it knows
// about the latest revision in the store. It is fed by the node's policy
// watch (Set when a revision is compiled, Observe on every watch progress
// report) and read per request. Safe for concurrent use.
type View struct {
	bound time.Duration

	mu struct {
		sync.Mutex
		engine *Engine
		// latest is the newest revision the store is known to hold, as
		// of latestAt.
		latest   int64
		latestAt time.Time
		// currentAt is the last time the served engine was known to be
		// the latest revision.
		currentAt time.Time
		changed   chan struct{}
	}
}

// NewView returns an empty view whose freshness bound is bound
// (DefaultStaleBound when zero).
func NewView(bound time.Duration) *View {
	if bound <= 0 {
		bound = DefaultStaleBound
	}
	v := &View{bound: bound}
	v.mu.changed = make(chan struct{})
	return v
}

// Bound is the view's freshness bound.
func (v *View) Bound() time.Duration { return v.bound }

// Engine returns the served engine, nil before the first Set.
func (v *View) Engine() *Engine {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.engine
}

// Set serves e. It is current only when its revision is the latest the
// store reported: an engine delivered late, or one newer than a store
// restored from backup, is served but stale (privileged actions refused)
// until the store's latest revision is loaded.
func (v *View) Set(e *Engine) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mu.engine = e
	if e.revision == v.mu.latest && !v.mu.latestAt.IsZero() {
		v.mu.currentAt = v.mu.latestAt
	} else {
		// A revision other than the latest known (an older one pushed by
		// a lagging control node) was never confirmed: it starts stale.
		v.mu.currentAt = time.Time{}
	}
	close(v.mu.changed)
	v.mu.changed = make(chan struct{})
}

// Observe records that, at time at, the store's latest revision was latest
// (a watch event or progress report). A report older than the last one
// changes nothing; a newer one wins even when its revision is lower (the
// store was restored from a backup): revisions are compared for equality,
// never assumed to only grow.
func (v *View) Observe(latest int64, at time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if at.Before(v.mu.latestAt) {
		return
	}
	v.mu.latest, v.mu.latestAt = latest, at
	if e := v.mu.engine; e != nil && e.revision == latest {
		v.mu.currentAt = at
	}
}

// Changed returns a channel closed at the next Set.
func (v *View) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.changed
}

// Status is the view's state for health and heartbeats.
type Status struct {
	Revision int64 // served; 0 for none
	Latest   int64 // newest known in the store
	// Age is how long ago the served revision was last confirmed latest
	// (-1 when never).
	Age time.Duration
}

// Status reports the view at now.
func (v *View) Status(now time.Time) Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := Status{Latest: v.mu.latest, Age: -1}
	if v.mu.engine != nil {
		s.Revision = v.mu.engine.revision
	}
	if !v.mu.currentAt.IsZero() {
		// A confirmation after now (a progress report racing the request that
		// read the clock) is age 0, never "unconfirmed".
		s.Age = max(now.Sub(v.mu.currentAt), 0)
	}
	return s
}

// Fresh returns nil when the served revision was confirmed latest within
// the bound at now; ErrNoPolicy or ErrStale (with the revisions) otherwise.
func (v *View) Fresh(now time.Time) error {
	s := v.Status(now)
	switch {
	case s.Revision == 0:
		return ErrNoPolicy
	case s.Age < 0:
		return fmt.Errorf("%w: serving revision %d, not yet confirmed as the latest", ErrStale, s.Revision)
	case s.Age > v.bound:
		if s.Latest != s.Revision {
			return fmt.Errorf("%w: serving revision %d, revision %d is the latest, last current %s ago (bound %s)", ErrStale, s.Revision, s.Latest, s.Age.Round(time.Millisecond), v.bound)
		}
		return fmt.Errorf("%w: serving revision %d, not confirmed latest for %s (bound %s)", ErrStale, s.Revision, s.Age.Round(time.Millisecond), v.bound)
	}
	return nil
}
