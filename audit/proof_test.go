package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proofFixture is a small log built in memory: n encoded events of node
// "n1", their leaf hashes, a checkpoint of all of them signed by n1's key
// and countersigned by witness w1, and the published keys.
type proofFixture struct {
	events [][]byte
	leaves []Hash
	note   []byte
	keys   *Keys
	node   *Signer
	wit    *Signer
}

func newProofFixture(t testing.TB, n int) *proofFixture {
	t.Helper()
	f := &proofFixture{}
	var err error
	f.node, err = LoadOrCreateSigner("n1", t.TempDir()+"/node.key")
	require.NoError(t, err)
	f.wit, err = LoadOrCreateSigner("w1", t.TempDir()+"/witness.key")
	require.NoError(t, err)
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for i := range n {
		e := Event{V: Version, ID: EventID("n1", uint64(i)), Time: at.Add(time.Duration(i) * time.Millisecond), Node: "n1",
			Kind: KindAuthz, Action: "id.register", Subject: "spiffe://unum.test/user/alice", Resource: "id/web/job/api",
			Outcome: Allow, DecisionID: fmt.Sprintf("n1.%016x", i), Reasons: []string{"role operator may id.register <&>"}}
		e = e.WithDetails(map[string]any{"n": i, "note": "quote \" and \\u escape é"})
		raw, err := e.Encode()
		require.NoError(t, err)
		f.events = append(f.events, raw)
		f.leaves = append(f.leaves, LeafHash(raw))
	}
	sc, err := f.node.Sign(Checkpoint{Node: "n1", Size: uint64(n), Root: RootOf(f.leaves), Time: at.Add(time.Second)})
	require.NoError(t, err)
	require.NoError(t, f.wit.Cosign(sc, at.Add(2*time.Second)))
	f.note = sc.Marshal()
	f.keys = &Keys{Nodes: map[string][]byte{"n1": f.node.PublicKeyset()}, Witnesses: map[string][]byte{"w1": f.wit.PublicKeyset()}}
	return f
}

func (f *proofFixture) bundle(t testing.TB, i uint64) *ProofBundle {
	t.Helper()
	path, err := InclusionProof(i, uint64(len(f.leaves)), naiveHasher(f.leaves))
	require.NoError(t, err)
	b, err := NewProofBundle(f.events[i], i, f.note, path)
	require.NoError(t, err)
	return b
}

func (f *proofFixture) bundleJSON(t testing.TB, i uint64) []byte {
	t.Helper()
	data, err := json.MarshalIndent(f.bundle(t, i), "", "  ")
	require.NoError(t, err)
	return data
}

// TestProofBundleRoundTrip: every event's bundle verifies, pretty-printed
// as the CLI prints it, and says what it proves.
func TestProofBundleRoundTrip(t *testing.T) {
	f := newProofFixture(t, 13)
	for i := range uint64(13) {
		data := f.bundleJSON(t, i)
		require.Contains(t, string(data), "\n    \"action\": \"id.register\"", "the event is embedded as a readable object")
		res, err := VerifyProofBundle(data, f.keys)
		require.NoError(t, err, "event %d", i)
		require.Equal(t, EventID("n1", i), res.Event.ID)
		require.Equal(t, f.leaves[i], res.Leaf)
		require.Equal(t, uint64(13), res.Checkpoint.Size)
		require.Equal(t, []string{"w1"}, res.Witnesses)
	}
}

// TestProofBundleTampering: each way of altering a bundle, or verifying
// it with the wrong keys, is refused with a reason.
func TestProofBundleTampering(t *testing.T) {
	f := newProofFixture(t, 13)
	other := newProofFixture(t, 13) // same names, different keys
	unwitnessed, err := ParseCheckpoint(f.note)
	require.NoError(t, err)
	unwitnessed.Cosigs = nil
	forged, err := other.node.Sign(unwitnessed.Checkpoint)
	require.NoError(t, err)
	bigger, err := f.node.Sign(Checkpoint{Node: "n1", Size: 1000, Root: unwitnessed.Root, Time: unwitnessed.Time})
	require.NoError(t, err)

	tests := []struct {
		name    string
		edit    func(b *ProofBundle)
		keys    *Keys
		wantErr string
	}{
		{"event outcome changed", func(b *ProofBundle) {
			b.Event = bytes.Replace(b.Event, []byte(`"outcome":"allow"`), []byte(`"outcome":"deny"`), 1)
		}, nil, "not in the checkpoint"},
		{"event subject changed", func(b *ProofBundle) {
			b.Event = bytes.Replace(b.Event, []byte("alice"), []byte("alicf"), 1)
		}, nil, "not in the checkpoint"},
		{"event of another index", func(b *ProofBundle) { b.Event = f.events[4] }, nil, "says it is n1:4"},
		{"index changed", func(b *ProofBundle) { b.Index = 4 }, nil, "says it is n1:3"},
		{"event not an event", func(b *ProofBundle) { b.Event = json.RawMessage(`{"v":1}`) }, nil, "event"},
		{"proof hash changed", func(b *ProofBundle) {
			b.InclusionProof[0] = strings.Repeat("0", 64)
		}, nil, "not in the checkpoint"},
		{"proof hash dropped", func(b *ProofBundle) { b.InclusionProof = b.InclusionProof[1:] }, nil, "not in the checkpoint"},
		{"proof hash not hex", func(b *ProofBundle) { b.InclusionProof[0] = strings.Repeat("z", 64) }, nil, "hash 0"},
		{"checkpoint root changed, signature kept", func(b *ProofBundle) {
			b.Checkpoint = strings.Replace(b.Checkpoint, "\n13\n", "\n14\n", 1)
		}, nil, "not signed by its published key"},
		{"checkpoint signed by another key", func(b *ProofBundle) { b.Checkpoint = string(forged.Marshal()) }, nil, "not signed by its published key"},
		{"checkpoint of another size, signed", func(b *ProofBundle) { b.Checkpoint = string(bigger.Marshal()) }, nil, "not in the checkpoint"},
		{"no keys", func(*ProofBundle) {}, &Keys{}, "no published key for node n1"},
		{"another cluster's keys", func(*ProofBundle) {}, other.keys, "not signed by its published key"},
		{"another format", func(b *ProofBundle) { b.Format = "unum.audit.proof/v0" }, nil, "format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := f.bundle(t, 3)
			tt.edit(b)
			keys := f.keys
			if tt.keys != nil {
				keys = tt.keys
			}
			data, err := json.Marshal(b)
			require.NoError(t, err)
			_, err = VerifyProofBundle(data, keys)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}

	t.Run("a countersignature under an unknown key counts for nothing", func(t *testing.T) {
		b := f.bundle(t, 3)
		sc, err := ParseCheckpoint([]byte(b.Checkpoint))
		require.NoError(t, err)
		// Another cluster's witness of the same name replaces the real
		// countersignature: the bundle still proves the event, witnessed
		// by no one these keys know.
		require.NoError(t, other.wit.Cosign(sc, time.Now()))
		b.Checkpoint = string(sc.Marshal())
		data, err := json.Marshal(b)
		require.NoError(t, err)
		res, err := VerifyProofBundle(data, f.keys)
		require.NoError(t, err)
		require.Empty(t, res.Witnesses)
	})

	t.Run("an unwitnessed checkpoint verifies and says so", func(t *testing.T) {
		b := f.bundle(t, 3)
		b.Checkpoint = string(unwitnessed.Marshal())
		data, err := json.Marshal(b)
		require.NoError(t, err)
		res, err := VerifyProofBundle(data, f.keys)
		require.NoError(t, err)
		require.Empty(t, res.Witnesses)
	})
	t.Run("unknown fields, bad JSON and trailing data are refused", func(t *testing.T) {
		data := f.bundleJSON(t, 3)
		_, err := ParseProofBundle([]byte(`{"format":"unum.audit.proof/v1","event":{`))
		require.Error(t, err)
		_, err = ParseProofBundle(append([]byte(`{"extra":1,`), data[1:]...))
		require.ErrorContains(t, err, "unknown field")
		_, err = ParseProofBundle(append(data, []byte(`{}`)...))
		require.ErrorContains(t, err, "trailing data")
	})
}

// FuzzVerifyProofBundle: no input panics the verifier, and whatever it
// accepts proves only what is true: the leaf it vouches for is the real
// leaf at that index of the one checkpoint the node signed.
func FuzzVerifyProofBundle(f *testing.F) {
	fx := newProofFixture(f, 7)
	for i := range uint64(7) {
		f.Add(fx.bundleJSON(f, i))
	}
	compact, err := json.Marshal(fx.bundle(f, 6))
	require.NoError(f, err)
	f.Add(compact)
	f.Add([]byte(`{"format":"unum.audit.proof/v1","event":{},"index":0,"checkpoint":"","inclusion_proof":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := VerifyProofBundle(data, fx.keys)
		if err != nil {
			return
		}
		require.Less(t, res.Index, uint64(len(fx.leaves)))
		require.Equal(t, fx.leaves[res.Index], res.Leaf, "accepted a leaf that is not in the log")
		require.Equal(t, EventID("n1", res.Index), res.Event.ID)
	})
}
