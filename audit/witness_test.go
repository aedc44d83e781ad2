package audit

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

// testTree is a node's log as the witness sees it: leaves, and checkpoints
// of its prefixes signed with the node's key.
type testTree struct {
	t      *testing.T
	signer *Signer
	leaves []Hash
}

func newTestTree(t *testing.T, node string, n int) *testTree {
	h, err := NewSigningKeyset()
	require.NoError(t, err)
	s, err := NewSigner(node, h)
	require.NoError(t, err)
	return &testTree{t: t, signer: s, leaves: testLeaves(n)}
}

func (tt *testTree) checkpoint(size, pruned uint64) *SignedCheckpoint {
	sc, err := tt.signer.Sign(Checkpoint{Node: tt.signer.Name(), Size: size, Root: RootOf(tt.leaves[:size]), Time: time.Unix(1700000000, int64(size)).UTC(), Pruned: pruned})
	require.NoError(tt.t, err)
	return sc
}

// checkpointLater is a checkpoint signed a second after every checkpoint
// of checkpoint(): what a node signs later.
func (tt *testTree) checkpointLater(size, pruned uint64) *SignedCheckpoint {
	sc, err := tt.signer.Sign(Checkpoint{Node: tt.signer.Name(), Size: size, Root: RootOf(tt.leaves[:size]), Time: time.Unix(1700000001, int64(size)).UTC(), Pruned: pruned})
	require.NoError(tt.t, err)
	return sc
}

func (tt *testTree) proof(old, size uint64) []Hash {
	p, err := ConsistencyProof(old, size, naiveHasher(tt.leaves))
	require.NoError(tt.t, err)
	return p
}

// TestCheckSubmission: the witness's rules, each refusal with its kind.
func TestCheckSubmission(t *testing.T) {
	tree := newTestTree(t, "n1", 40)
	pub := tree.signer.PublicKeyset()
	// fork: the same node key signing another history of the same node.
	fork := &testTree{t: t, signer: tree.signer, leaves: append(append([]Hash(nil), tree.leaves[:10]...), testLeaves(40)[:30]...)}
	fork.leaves[12][0] ^= 1
	// forger: another key signing the real history.
	forger := newTestTree(t, "n1", 40)
	forger.leaves = tree.leaves
	other := newTestTree(t, "n2", 40)

	w20 := tree.checkpoint(20, 0)
	for _, tc := range []struct {
		name string
		prev *SignedCheckpoint
		sub  Submission
		want string // Refusal kind; "" accepts
	}{
		{"first checkpoint", nil, Submission{Checkpoint: tree.checkpoint(20, 0)}, ""},
		{"first checkpoint of an empty log", nil, Submission{Checkpoint: tree.checkpoint(0, 0)}, ""},
		{"extends the witnessed one", w20, Submission{Checkpoint: tree.checkpoint(33, 0), FromSize: 20, Proof: tree.proof(20, 33)}, ""},
		{"same size, newer (prune record)", w20, Submission{Checkpoint: tree.checkpoint(20, 7), FromSize: 20}, ""},
		{"from the empty tree", tree.checkpoint(0, 0), Submission{Checkpoint: tree.checkpoint(5, 0)}, ""},
		{"prunes up to the witnessed size", w20, Submission{Checkpoint: tree.checkpoint(25, 20), FromSize: 20, Proof: tree.proof(20, 25)}, ""},
		{"prunes past the witnessed size", w20, Submission{Checkpoint: tree.checkpoint(25, 25), FromSize: 20, Proof: tree.proof(20, 25)}, "fork"},
		{"a first checkpoint with pruned entries", nil, Submission{Checkpoint: tree.checkpoint(25, 3)}, "fork"},

		{"truncation", w20, Submission{Checkpoint: tree.checkpointLater(19, 0), FromSize: 20}, "truncation"},
		{"truncation to empty", w20, Submission{Checkpoint: tree.checkpointLater(0, 0), FromSize: 20}, "truncation"},
		{"an older smaller checkpoint arriving late", w20, Submission{Checkpoint: tree.checkpoint(19, 0), FromSize: 19}, "stale"},
		{"an older smaller checkpoint at the same instant", tree.checkpoint(20, 0), Submission{Checkpoint: func() *SignedCheckpoint {
			sc, err := tree.signer.Sign(Checkpoint{Node: "n1", Size: 5, Root: RootOf(tree.leaves[:5]), Time: tree.checkpoint(20, 0).Time})
			require.NoError(t, err)
			return sc
		}()}, "stale"},
		{"fork: same size, other root", w20, Submission{Checkpoint: fork.checkpoint(20, 0), FromSize: 20}, "fork"},
		{"fork: honest-looking proof of the forked tree", w20, Submission{Checkpoint: fork.checkpoint(30, 0), FromSize: 20, Proof: fork.proof(20, 30)}, "fork"},
		{"fork: the real tree's proof with the forked root", w20, Submission{Checkpoint: fork.checkpoint(30, 0), FromSize: 20, Proof: tree.proof(20, 30)}, "fork"},
		{"fork: no proof", w20, Submission{Checkpoint: tree.checkpoint(30, 0), FromSize: 20}, "fork"},
		{"fork: a proof too long", w20, Submission{Checkpoint: tree.checkpoint(30, 0), FromSize: 20, Proof: append(tree.proof(20, 30), Hash{})}, "fork"},
		{"fork: un-pruning", tree.checkpoint(20, 10), Submission{Checkpoint: tree.checkpoint(30, 5), FromSize: 20, Proof: tree.proof(20, 30)}, "fork"},
		{"signed by another key", w20, Submission{Checkpoint: forger.checkpoint(30, 0), FromSize: 20, Proof: tree.proof(20, 30)}, "signature"},
		{"signed by another key, first checkpoint", nil, Submission{Checkpoint: forger.checkpoint(30, 0)}, "signature"},
		{"another node's checkpoint", w20, Submission{Checkpoint: other.checkpoint(30, 0), FromSize: 20}, "invalid"},
		{"stale base", w20, Submission{Checkpoint: tree.checkpoint(30, 0), FromSize: 10, Proof: tree.proof(10, 30)}, "stale"},
		{"stale base: the witness holds nothing", nil, Submission{Checkpoint: tree.checkpoint(30, 0), FromSize: 10, Proof: tree.proof(10, 30)}, "stale"},
		{"proof longer than any tree needs", w20, Submission{Checkpoint: tree.checkpoint(30, 0), FromSize: 20, Proof: make([]Hash, MaxProofLen+1)}, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSubmission(pub, tc.prev, tc.sub)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Equal(t, tc.want, Refusal(err), "%v", err)
		})
	}
	t.Run("tampered signature", func(t *testing.T) {
		sc := tree.checkpoint(30, 0)
		sc.Size = 31 // the body no longer matches the signature
		err := CheckSubmission(pub, nil, Submission{Checkpoint: sc})
		require.ErrorIs(t, err, ErrSignature)
	})
}

func TestPublicKeysetOf(t *testing.T) {
	h, err := NewSigningKeyset()
	require.NoError(t, err)
	pub, err := PublicKeysetOf(h)
	require.NoError(t, err)
	s, err := NewSigner("n1", h)
	require.NoError(t, err)
	require.Equal(t, s.PublicKeyset(), pub)
	require.NoError(t, CheckPublicKeyset(pub))
	require.Error(t, CheckPublicKeyset([]byte("not a keyset")))
	// A private keyset is no registration: secrets never go to etcd.
	var priv bytes.Buffer
	require.NoError(t, insecurecleartextkeyset.Write(h, keyset.NewBinaryWriter(&priv)))
	require.Error(t, CheckPublicKeyset(priv.Bytes()))
}
