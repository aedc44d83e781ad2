package audit

import (
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSplitEncodingIsCanonical: the log's two-half encoding is byte for
// byte json.Marshal(&Event), and eventBody has exactly Event's fields after
// Node (a field added to one and not the other fails here).
func TestSplitEncodingIsCanonical(t *testing.T) {
	et, bt := reflect.TypeFor[Event](), reflect.TypeFor[eventBody]()
	require.Equal(t, et.NumField()-4, bt.NumField())
	for i := 0; i < bt.NumField(); i++ {
		ef, bf := et.Field(i+4), bt.Field(i)
		require.Equal(t, ef.Name, bf.Name)
		require.Equal(t, ef.Type, bf.Type)
		require.Equal(t, ef.Tag, bf.Tag)
	}
	for _, tc := range []struct {
		node string
		e    Event
	}{
		{"n1", Event{Kind: KindAudit, Action: "audit.prune", Outcome: Allow}},
		{"node-<&>\"x", *testEvent(7)},
		{"n1", Event{Kind: KindAuthz, Action: "id.register", Subject: "spiffe://td/user/<admin>", Chain: []string{"a", "b"},
			Resource: "id/ns/job", Outcome: Deny, Privileged: true, DecisionID: "n1.00ff", PolicyRevision: 12,
			Reasons: []string{"r1", "\u2028"}, RequestDigest: "sha256:00",
			Details: []byte("{ \"input\" : {\"a\": [1, 2 ,3]}, \"html\": \"<b>&</b>\" }")}},
	} {
		body, err := tc.e.encodeBody()
		require.NoError(t, err)
		at := time.Date(2026, 11, 26, 5, 6, 7, 890, time.FixedZone("x", 3600))
		got, err := newAssembler(tc.node).assemble(body, 42, at)
		require.NoError(t, err)
		want := tc.e
		want.V, want.ID, want.Node, want.Time = Version, EventID(tc.node, 42), tc.node, at
		wantB, err := want.Encode()
		require.NoError(t, err)
		require.Equal(t, string(wantB), string(got))
		dec, err := DecodeEvent(got)
		require.NoError(t, err)
		require.Equal(t, want.ID, dec.ID)
	}
}
