package audit

import (
	"context"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter records events that anyone can cause without authenticating
// (refused TLS handshakes, refused enrolment tokens) through a token
// bucket, so a flood of them cannot fill the log: beyond the bucket they
// are only counted, and Flush records one summary per action saying how
// many were suppressed and over which period. A refusal therefore costs the
// flooder a log entry only at the bucket's rate; the summaries at most one
// per action per flush.
//
// # One bucket per action
//
// Each action has its own bucket. With one shared bucket, whoever can
// cause the cheapest refusal (a TLS probe of etcd's or the API's port,
// from anywhere on the network) would drain it for all the others, and a
// local Workload API caller refused meanwhile would be recorded only as a
// count, without its pid, uid and executable. Per action, a flood of
// handshakes costs only the handshake events their detail. The actions
// are our constants (Action*), never caller input, so the buckets are
// bounded; the log's worst case grows to rate × the number of actions
// that pass through the limiter.
//
// Safe for concurrent use. Run (or Flush) must be called for summaries to
// be written.
type Limiter struct {
	rec   Recorder
	rate  rate.Limit
	burst int
	now   func() time.Time
	// onSuppressed is told of every suppressed event (a metric); it must
	// not block.
	onSuppressed func()

	mu struct {
		sync.Mutex
		buckets map[string]*rate.Limiter // by action, made on first use
		pending map[string]*suppressed   // by action
	}
}

type suppressed struct {
	kind        Kind
	n           uint64
	first, last time.Time
}

// SuppressedDetails are the details of a summary of suppressed events.
type SuppressedDetails struct {
	Suppressed uint64    `json:"suppressed"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
}

// LimiterConfig configures NewLimiter.
type LimiterConfig struct {
	// Rate and Burst are each action's token bucket: events recorded
	// one by one.
	Rate  rate.Limit
	Burst int
	// OnSuppressed is called for each suppressed event; nil: nothing.
	OnSuppressed func()
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// NewLimiter records through rec at most cfg's rate.
func NewLimiter(rec Recorder, cfg LimiterConfig) *Limiter {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnSuppressed == nil {
		cfg.OnSuppressed = func() {}
	}
	l := &Limiter{rec: rec, rate: cfg.Rate, burst: cfg.Burst, now: cfg.Now, onSuppressed: cfg.OnSuppressed}
	l.mu.buckets = map[string]*rate.Limiter{}
	l.mu.pending = map[string]*suppressed{}
	return l
}

var _ Recorder = (*Limiter)(nil)

// Record implements Recorder: it records e when its action's bucket
// allows, and otherwise counts it for the next summary and returns nil (a
// suppressed event is accounted for, not lost).
func (l *Limiter) Record(ctx context.Context, e *Event) error {
	now := l.now()
	if l.bucket(e.Action).AllowN(now, 1) {
		return l.rec.Record(ctx, e)
	}
	l.mu.Lock()
	s := l.mu.pending[e.Action]
	if s == nil {
		s = &suppressed{kind: e.Kind, first: now}
		l.mu.pending[e.Action] = s
	}
	s.n++
	s.last = now
	l.mu.Unlock()
	l.onSuppressed()
	return nil
}

// bucket is action's token bucket.
func (l *Limiter) bucket(action string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.mu.buckets[action]
	if b == nil {
		b = rate.NewLimiter(l.rate, l.burst)
		l.mu.buckets[action] = b
	}
	return b
}

// Flush records one summary event (outcome deny, details
// SuppressedDetails) per action with suppressed events since the last
// flush. A summary that cannot be recorded is kept for the next flush.
func (l *Limiter) Flush(ctx context.Context) error {
	l.mu.Lock()
	pending := l.mu.pending
	l.mu.pending = map[string]*suppressed{}
	l.mu.Unlock()
	actions := make([]string, 0, len(pending))
	for a := range pending {
		actions = append(actions, a)
	}
	sort.Strings(actions)
	var first error
	for _, a := range actions {
		s := pending[a]
		e := Event{Kind: s.kind, Action: a, Outcome: Deny,
			Reasons: []string{"more refusals than the audit log records one by one: summarized"}}
		e = e.WithDetails(SuppressedDetails{Suppressed: s.n, First: s.first.UTC(), Last: s.last.UTC()})
		if err := l.rec.Record(ctx, &e); err != nil {
			l.keep(a, s)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// keep puts back a summary that could not be recorded.
func (l *Limiter) keep(action string, s *suppressed) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.mu.pending[action]; cur != nil {
		cur.n += s.n
		cur.first = s.first
		return
	}
	l.mu.pending[action] = s
}

// Run flushes every period until ctx ends, reporting errors to onErr.
// The owner flushes once more when it is done with the limiter, before it
// closes the log.
func (l *Limiter) Run(ctx context.Context, period time.Duration, onErr func(error)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := l.Flush(ctx); err != nil && ctx.Err() == nil {
				onErr(err)
			}
		}
	}
}
