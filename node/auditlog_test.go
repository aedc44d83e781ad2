package node

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/audit"
)

// events returns l's events from index from on, decoded.
func events(t *testing.T, l *audit.Log, from uint64) []*audit.Event {
	t.Helper()
	var out []*audit.Event
	require.NoError(t, l.Scan(context.Background(), from, func(_ uint64, raw []byte) bool {
		e, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		out = append(out, e)
		return true
	}))
	return out
}

// findEvent returns the first event of action in l from index from on, or
// nil.
func findEvent(t *testing.T, l *audit.Log, from uint64, action string) *audit.Event {
	t.Helper()
	for _, e := range events(t, l, from) {
		if e.Action == action {
			return e
		}
	}
	return nil
}

// requireNotInLog fails when secret appears in any event of l.
func requireNotInLog(t *testing.T, l *audit.Log, secret []byte) {
	t.Helper()
	require.NotEmpty(t, secret)
	require.NoError(t, l.Scan(context.Background(), 0, func(i uint64, raw []byte) bool {
		require.False(t, bytes.Contains(raw, secret), "entry %d holds a secret", i)
		return true
	}))
}
