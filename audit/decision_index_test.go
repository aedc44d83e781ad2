package audit

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Events recorded after an action carry the id of the decision that
// allowed it; FindDecision still finds the decision.
func TestFindDecisionIgnoresLinkedEvents(t *testing.T) {
	l := openTestLog(t, filepath.Join(t.TempDir(), "audit"), testSigner(t, "n1"))
	dec := testEvent(1)
	require.NoError(t, l.Record(context.Background(), dec))
	after := &Event{Kind: KindEntry, Action: ActionEntryCreate, Outcome: Allow, DecisionID: dec.DecisionID}
	require.NoError(t, l.Record(context.Background(), after))
	i, raw, err := l.FindDecision(dec.DecisionID)
	require.NoError(t, err)
	require.EqualValues(t, 0, i)
	got, err := DecodeEvent(raw)
	require.NoError(t, err)
	require.Equal(t, KindAuthz, got.Kind)
}
