package audit

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memRecorder keeps what it is given; fail makes it refuse.
type memRecorder struct {
	mu     sync.Mutex
	events []Event
	fail   bool
}

func (m *memRecorder) Record(_ context.Context, e *Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("disk full")
	}
	m.events = append(m.events, *e)
	return nil
}

// A flood of refusals costs the log each action's burst plus one summary
// per action, and the summary counts every refusal it stands for.
func TestLimiterSummarizesAFlood(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	rec := &memRecorder{}
	var counted int
	l := NewLimiter(rec, LimiterConfig{Rate: 1, Burst: 3, Now: func() time.Time { return now }, OnSuppressed: func() { counted++ }})
	for i := 0; i < 1000; i++ {
		require.NoError(t, l.Record(ctx, &Event{Kind: KindAuthn, Action: ActionAuthnMTLS, Outcome: Deny}))
	}
	for i := 0; i < 5; i++ {
		require.NoError(t, l.Record(ctx, &Event{Kind: KindToken, Action: ActionTokenUse, Outcome: Deny}))
	}
	require.Len(t, rec.events, 6, "each action's burst")
	require.Equal(t, 997+2, counted)

	now = now.Add(10 * time.Second)
	require.NoError(t, l.Flush(ctx))
	require.Len(t, rec.events, 8, "one summary per action")
	var total uint64
	for _, e := range rec.events[6:] {
		require.Equal(t, Deny, e.Outcome)
		var d SuppressedDetails
		require.NoError(t, json.Unmarshal(e.Details, &d))
		total += d.Suppressed
		require.False(t, d.First.After(d.Last))
	}
	require.EqualValues(t, 997+2, total)
	require.Equal(t, ActionAuthnMTLS, rec.events[6].Action, "sorted by action")
	require.Equal(t, KindAuthn, rec.events[6].Kind)

	require.NoError(t, l.Flush(ctx))
	require.Len(t, rec.events, 8, "nothing new: no summary")

	// The bucket refilled: recorded one by one again.
	require.NoError(t, l.Record(ctx, &Event{Kind: KindAuthn, Action: ActionAuthnMTLS, Outcome: Deny}))
	require.Len(t, rec.events, 9)
}

// A flood of the cheapest refusal (TLS probes of a port anyone can reach)
// does not drain the bucket of another action: a Workload API caller
// refused during the flood is still recorded one by one, with its pid,
// uid and executable, not folded into an anonymous count.
func TestLimiterFloodOfOneActionSparesTheOthers(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	rec := &memRecorder{}
	l := NewLimiter(rec, LimiterConfig{Rate: 2, Burst: 50, Now: func() time.Time { return now }})
	for i := 0; i < 10000; i++ {
		require.NoError(t, l.Record(ctx, &Event{Kind: KindAuthn, Action: ActionAuthnEtcd, Outcome: Deny}))
	}
	attest := Event{Kind: KindAuthn, Action: ActionWorkloadAttest, Outcome: Deny, Resource: "workload-api/-/FetchX509SVID",
		Details: json.RawMessage(`{"pid":4242,"uid":65534,"path":"/usr/bin/sleep"}`)}
	require.NoError(t, l.Record(ctx, &attest))
	last := rec.events[len(rec.events)-1]
	require.Equal(t, ActionWorkloadAttest, last.Action, "recorded one by one during the flood")
	require.JSONEq(t, string(attest.Details), string(last.Details))
}

// A summary the log cannot take is not lost: the next flush records it,
// with what was suppressed meanwhile.
func TestLimiterKeepsUnrecordedSummary(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	rec := &memRecorder{}
	l := NewLimiter(rec, LimiterConfig{Rate: 1, Burst: 1, Now: func() time.Time { return now }})
	for i := 0; i < 4; i++ {
		require.NoError(t, l.Record(ctx, &Event{Kind: KindAuthn, Action: ActionAuthnMTLS, Outcome: Deny}))
	}
	rec.fail = true
	require.ErrorContains(t, l.Flush(ctx), "disk full")
	require.NoError(t, l.Record(ctx, &Event{Kind: KindAuthn, Action: ActionAuthnMTLS, Outcome: Deny}))
	rec.fail = false
	require.NoError(t, l.Flush(ctx))
	require.Len(t, rec.events, 2)
	var d SuppressedDetails
	require.NoError(t, json.Unmarshal(rec.events[1].Details, &d))
	require.EqualValues(t, 4, d.Suppressed)
}
