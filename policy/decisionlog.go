package policy

import (
	"context"
	"sync"
	"time"
)

// Record is one decision as made: enough to explain it later.
type Record struct {
	ID       string    `json:"decision_id"`
	Time     time.Time `json:"time"`
	Revision int64     `json:"revision"`
	// Digest is the served bundle's sha256 (revision numbers are reused
	// after a restore from backup).
	Digest string `json:"sha256,omitempty"`
	Input  Input  `json:"input"`
	Result Result `json:"result"`
	// Err is set when the engine failed (the call was denied).
	Err string `json:"error,omitempty"`
	// Shadow is the candidate bundle's answer while one is shadowed.
	Shadow *ShadowResult `json:"shadow,omitempty"`
	// RequestDigest is sha256:HEX of the request message the decision was
	// about ("" for streams), so the audit log can match a request without
	// holding its content.
	RequestDigest string `json:"request_digest,omitempty"`
	// Creds are the jtis of the delegated credential the call presented
	// (its own first, then its ancestors'); Principals each principal's own
	// answer, whose intersection Result is. Both empty for a direct call.
	Creds      []string          `json:"creds,omitempty"`
	Principals []PrincipalResult `json:"principals,omitempty"`
}

// ShadowResult is what a shadowed candidate bundle decided for the same
// input.
type ShadowResult struct {
	ShadowID string `json:"shadow_id"`
	Result   Result `json:"result"`
	Err      string `json:"error,omitempty"`
	// Live and LiveErr are the served bundle's own answer for the same
	// input, before the node's freshness checks: the shadow is compared
	// with the policy, not with a refusal for a stale view.
	Live    Result `json:"live"`
	LiveErr string `json:"live_error,omitempty"`
}

// Changed reports whether the shadow would have decided differently from
// the served bundle.
func (s *ShadowResult) Changed() bool {
	return s.Result.Allow != s.Live.Allow || s.Result.Privileged != s.Live.Privileged || (s.Err == "") != (s.LiveErr == "")
}

// DecisionLog receives every decision. Record is called on the request
// path after the decision and before the action runs, and returns only once
// the record is durable; implementations must be safe for concurrent use.
// An error refuses the action (the Decider fails closed); an
// implementation that lets some actions through unrecorded (the node's
// allow-and-alert setting, never for privileged ones) returns nil for them
// and accounts for them itself.
type DecisionLog interface {
	Record(ctx context.Context, r *Record) error
}

// Ring is a bounded in-memory DecisionLog: the newest n decisions by id,
// and separately the newest n decisions a shadow bundle would change, so a
// busy node does not evict a shadow's findings. Safe for concurrent use.
type Ring struct {
	mu      sync.Mutex
	recs    []*Record
	next    int
	byID    map[string]*Record
	changed []*Record
	nextChg int
}

// NewRing holds the newest n decisions and n shadow changes.
func NewRing(n int) *Ring {
	return &Ring{recs: make([]*Record, n), byID: make(map[string]*Record, n), changed: make([]*Record, n)}
}

var _ DecisionLog = (*Ring)(nil)

// Record implements DecisionLog.
func (g *Ring) Record(_ context.Context, r *Record) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old := g.recs[g.next]; old != nil {
		delete(g.byID, old.ID)
	}
	g.recs[g.next] = r
	g.byID[r.ID] = r
	g.next = (g.next + 1) % len(g.recs)
	if r.Shadow != nil && r.Shadow.Changed() {
		g.changed[g.nextChg] = r
		g.nextChg = (g.nextChg + 1) % len(g.changed)
	}
	return nil
}

// Get returns the decision id, if still held.
func (g *Ring) Get(id string) (*Record, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.byID[id]
	return r, ok
}

// ShadowChanges returns the held decisions that shadow shadowID would have
// changed, oldest first.
func (g *Ring) ShadowChanges(shadowID string) []*Record {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*Record
	n := len(g.changed)
	for i := 0; i < n; i++ {
		r := g.changed[(g.nextChg+i)%n]
		if r != nil && r.Shadow.ShadowID == shadowID {
			out = append(out, r)
		}
	}
	return out
}
