package audit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func FuzzDecodeEvent(f *testing.F) {
	e := testEvent(3)
	e.V, e.ID, e.Node, e.Time = Version, "n1:3", "n1", time.Date(2026, 11, 26, 1, 2, 3, 4, time.UTC)
	good, err := e.Encode()
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte(`{"v":1,"id":"n1:0","time":"2026-11-26T00:00:00Z","node":"n1","kind":"audit","action":"audit.prune","outcome":"allow","details":{"from":0,"to":5}}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(`{"v":1,"details":[1]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEvent(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes to the same.
		again, err := e.Encode()
		require.NoError(t, err)
		e2, err := DecodeEvent(again)
		require.NoError(t, err)
		require.Equal(t, e.ID, e2.ID)
		require.Equal(t, e.Action, e2.Action)
		require.True(t, e.Time.Equal(e2.Time))
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	s := testSigner(f, "n1")
	w := testSigner(f, "ctl")
	sc, err := s.Sign(Checkpoint{Node: "n1", Size: 42, Root: LeafHash([]byte("x")), Time: time.Date(2026, 11, 26, 0, 0, 0, 5, time.UTC), Pruned: 3})
	require.NoError(f, err)
	require.NoError(f, w.Cosign(sc, time.Date(2026, 11, 26, 0, 0, 1, 0, time.UTC)))
	f.Add(sc.Marshal())
	keys := keysFor(s, w)
	f.Fuzz(func(t *testing.T, note []byte) {
		p, err := ParseCheckpoint(note)
		if err != nil {
			return
		}
		require.Equal(t, note, p.Marshal(), "only canonical notes parse")
		// A note that verifies must be the one signed.
		if keys.VerifyNode(p) == nil {
			require.Equal(t, sc.Body(), p.Body())
		}
		if ws, err := keys.VerifiedWitnesses(p); err == nil && len(ws) > 0 {
			require.Equal(t, sc.Body(), p.Body())
		}
	})
}

func FuzzParseKeys(f *testing.F) {
	f.Add([]byte(`{"nodes":{},"witnesses":{}}`))
	f.Add([]byte(`{"nodes":{"n1":"AAAA"},"witnesses":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseKeys(b)
	})
}

func TestEventIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id    string
		node  string
		index uint64
		err   bool
	}{
		{"n1:0", "n1", 0, false},
		{"node-a.b:18446744073709551615", "node-a.b", 1<<64 - 1, false},
		{"n1", "", 0, true},
		{":5", "", 0, true},
		{"n1:x", "", 0, true},
		{"n1:-1", "", 0, true},
	} {
		node, index, err := ParseEventID(tc.id)
		if tc.err {
			require.Error(t, err, tc.id)
			continue
		}
		require.NoError(t, err, tc.id)
		require.Equal(t, tc.node, node)
		require.Equal(t, tc.index, index)
		require.Equal(t, tc.id, EventID(node, index))
	}
}
