package revocation

import (
	"crypto/x509"
	"fmt"
	"sync"
	"time"
)

// DefaultBound is how old a view may be before privileged actions are
// refused.
const DefaultBound = 10 * time.Second

// View is a concurrent holder of the current Set and of when it was last
// known to be current. Its owner calls Update (new set) and Touch (still
// current, e.g. an etcd progress notification or a stream heartbeat);
// servers call Check and Fresh. Safe for concurrent use.
type View struct {
	bound time.Duration
	clock func() time.Time

	mu struct {
		sync.RWMutex
		set     *Set
		loaded  bool
		freshAt time.Time
		// changed is closed and replaced when the set changes.
		changed chan struct{}
	}
}

// NewView returns an unloaded view with bound (DefaultBound when zero) and
// clock (time.Now when nil).
func NewView(bound time.Duration, clock func() time.Time) *View {
	if bound <= 0 {
		bound = DefaultBound
	}
	if clock == nil {
		clock = time.Now
	}
	v := &View{bound: bound, clock: clock}
	v.mu.changed = make(chan struct{})
	return v
}

// Bound is the view's staleness bound.
func (v *View) Bound() time.Duration { return v.bound }

// Update installs set, known current at freshAt. A set read at an older
// etcd revision than the installed one is ignored (a failover to a lagging
// control node must not roll revocations back); etcd revisions only grow,
// also across a restore from backup, which bumps them.
func (v *View) Update(set *Set, freshAt time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.loaded && set.Revision() < v.mu.set.Revision() {
		return
	}
	v.mu.set = set
	v.mu.loaded = true
	if freshAt.After(v.mu.freshAt) {
		v.mu.freshAt = freshAt
	}
	close(v.mu.changed)
	v.mu.changed = make(chan struct{})
}

// Touch records that the installed set was still current at freshAt.
func (v *View) Touch(freshAt time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.loaded && freshAt.After(v.mu.freshAt) {
		v.mu.freshAt = freshAt
	}
}

// Snapshot returns the current set, a channel closed at the next change,
// and whether the view is loaded.
func (v *View) Snapshot() (*Set, <-chan struct{}, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.mu.set, v.mu.changed, v.mu.loaded
}

// Age is how long since the view was last known current; ok is false
// before the first Update.
func (v *View) Age() (age time.Duration, ok bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if !v.mu.loaded {
		return 0, false
	}
	return max(v.clock().Sub(v.mu.freshAt), 0), true
}

// Fresh returns nil when the view is within its bound, and otherwise an
// error wrapping ErrStale (or ErrNoView) that says how old it is.
func (v *View) Fresh() error {
	age, ok := v.Age()
	if !ok {
		return fmt.Errorf("%w: refusing privileged actions until it is", ErrNoView)
	}
	if age > v.bound {
		return fmt.Errorf("%w: last confirmed current %s ago (bound %s); refusing privileged actions until it catches up with the control plane",
			ErrStale, age.Round(100*time.Millisecond), v.bound)
	}
	return nil
}

// CheckChain checks a presented chain against the current set. An unloaded
// view revokes nothing: whether to act on it at all is the caller's
// question (Snapshot says whether it is loaded, Fresh how old it is).
func (v *View) CheckChain(chain []*x509.Certificate) error {
	set, _, _ := v.Snapshot()
	return set.CheckChain(chain)
}
