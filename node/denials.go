package node

import (
	"net/netip"
	"time"
)

// denials aggregates the kernel's denial events into audit events: the
// first of a kind (task, hook, destination, protocol, socket type,
// audit-only) is recorded at once, repeats within the window are counted
// and recorded as one event when it ends. It also counts every denial per
// second over the last minute. Not safe for concurrent use (the enforcer
// holds its lock).
type denials struct {
	window   time.Duration
	max      int // kinds tracked at once (see add)
	pending  map[denyKey]*denial
	minute   [60]int64 // denials per second, a ring indexed by unix second
	minuteAt int64
}

// maxDenialKinds bounds the kinds tracked at once: a task scanning
// addresses makes a new kind per destination.
const maxDenialKinds = 4096

func newDenials(window time.Duration) *denials {
	return &denials{window: window, max: maxDenialKinds, pending: map[denyKey]*denial{}}
}

// add counts d, which happened at now; it reports whether d is the first
// of its kind in a window (record it now).
func (a *denials) add(d denial, now time.Time) bool {
	a.roll(now.Unix())
	a.minute[now.Unix()%60]++
	if _, ok := a.pending[d.key]; !ok && len(a.pending) >= a.max {
		// Too many kinds: count this one under its task and hook alone
		// (destination unknown), recorded at the window's end.
		d.key.addr, d.key.port, d.key.overflow = netip.Addr{}, 0, true
		if _, ok := a.pending[d.key]; !ok {
			p := d
			p.first, p.count, p.since = now, 1, now
			a.pending[d.key] = &p
			return false
		}
	}
	if p, ok := a.pending[d.key]; ok {
		if p.count == 0 {
			p.since = now
		}
		p.count++
		return false
	}
	// The first is recorded now: the window counts only the repeats.
	p := d
	p.first, p.count = now, 0
	a.pending[d.key] = &p
	return true
}

// expire ends the windows that are over at now and returns those that had
// repeats, each one event with their count.
func (a *denials) expire(now time.Time) []denial {
	var out []denial
	for k, p := range a.pending {
		if now.Sub(p.first) < a.window {
			continue
		}
		delete(a.pending, k)
		if p.count > 0 {
			out = append(out, *p)
		}
	}
	return out
}

// perMinute is the number of denials in the minute up to now.
func (a *denials) perMinute(now time.Time) int64 {
	a.roll(now.Unix())
	var n int64
	for _, c := range a.minute {
		n += c
	}
	return n
}

// roll clears the per-second buckets that fell out of the minute.
func (a *denials) roll(now int64) {
	switch {
	case now <= a.minuteAt:
		return
	case now-a.minuteAt >= 60:
		a.minute = [60]int64{}
	default:
		for s := a.minuteAt + 1; s <= now; s++ {
			a.minute[s%60] = 0
		}
	}
	a.minuteAt = now
}
