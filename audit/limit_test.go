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

// A flood of refusals costs the log the bucket's burst plus one summary
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
	require.Len(t, rec.events, 3, "the burst")
	require.Equal(t, 1002, counted)

	now = now.Add(10 * time.Second)
	require.NoError(t, l.Flush(ctx))
	require.Len(t, rec.events, 5, "one summary per action")
	var total uint64
	for _, e := range rec.events[3:] {
		require.Equal(t, Deny, e.Outcome)
		var d SuppressedDetails
		require.NoError(t, json.Unmarshal(e.Details, &d))
		total += d.Suppressed
		require.False(t, d.First.After(d.Last))
	}
	require.EqualValues(t, 1002, total)
	require.Equal(t, ActionAuthnMTLS, rec.events[3].Action, "sorted by action")
	require.Equal(t, KindAuthn, rec.events[3].Kind)

	require.NoError(t, l.Flush(ctx))
	require.Len(t, rec.events, 5, "nothing new: no summary")

	// The bucket refilled: recorded one by one again.
	require.NoError(t, l.Record(ctx, &Event{Kind: KindAuthn, Action: ActionAuthnMTLS, Outcome: Deny}))
	require.Len(t, rec.events, 6)
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
