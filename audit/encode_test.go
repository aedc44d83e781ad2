package audit

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStoredEventIsCanonical: what the log stores (the Merkle leaf) is
// byte for byte json.Marshal of the event as Record returns it (details
// compacted, time in UTC), whatever the details' spacing, HTML-sensitive
// characters or the caller's time zone, and it decodes back.
func TestStoredEventIsCanonical(t *testing.T) {
	zone := time.FixedZone("x", 3600)
	l := openTestLog(t, filepath.Join(t.TempDir(), "audit"), testSigner(t, "n1"), func(c *Config) {
		c.Now = func() time.Time { return time.Date(2026, 11, 26, 5, 6, 7, 890, zone) }
	})
	for _, e := range []Event{
		{Kind: KindAudit, Action: "audit.prune", Outcome: Allow},
		*testEvent(7),
		{Kind: KindAuthz, Action: "id.register", Subject: "spiffe://td/user/<admin>", Chain: []string{"a", "b"},
			Resource: "id/ns/job", Outcome: Deny, Privileged: true, DecisionID: "n1.00ff", PolicyRevision: 12,
			Reasons: []string{"r1", "\u2028"}, RequestDigest: "sha256:00",
			Details: []byte("{ \"input\" : {\"a\": [1, 2 ,3]}, \"html\": \"<b>&</b>\" }")},
	} {
		require.NoError(t, l.Record(context.Background(), &e))
		_, idx, err := ParseEventID(e.ID)
		require.NoError(t, err)
		stored, err := l.Get(idx)
		require.NoError(t, err)
		want := e
		want.Time = want.Time.UTC()
		var compact json.RawMessage
		if len(want.Details) > 0 {
			require.NoError(t, json.Unmarshal(want.Details, &compact))
			want.Details, err = json.Marshal(compact)
			require.NoError(t, err)
		}
		wantB, err := json.Marshal(&want)
		require.NoError(t, err)
		require.Equal(t, string(wantB), string(stored))
		dec, err := DecodeEvent(stored)
		require.NoError(t, err)
		require.Equal(t, e.ID, dec.ID)
	}
}
