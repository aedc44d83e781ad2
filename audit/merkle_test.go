package audit

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

func testLeaves(n int) []Hash {
	out := make([]Hash, n)
	for i := range out {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		out[i] = LeafHash(b[:])
	}
	return out
}

func naiveHasher(leaves []Hash) RangeHasher {
	return func(lo, hi uint64) (Hash, error) { return RootOf(leaves[lo:hi]), nil }
}

// TestFrontierMatchesNaiveRoot checks the incremental root and every
// reported subtree against the naive recursive definition.
func TestFrontierMatchesNaiveRoot(t *testing.T) {
	leaves := testLeaves(300)
	var f Frontier
	require.Equal(t, EmptyRoot(), f.Root())
	for i, l := range leaves {
		f.Append(l, func(s Subtree) {
			lo := s.Index << s.Level
			hi := lo + 1<<s.Level
			require.LessOrEqual(t, hi, uint64(i+1))
			require.Equal(t, RootOf(leaves[lo:hi]), s.Hash, "subtree level %d index %d", s.Level, s.Index)
		})
		require.Equal(t, RootOf(leaves[:i+1]), f.Root(), "size %d", i+1)
		g, err := NewFrontier(f.Size(), f.Nodes())
		require.NoError(t, err)
		require.Equal(t, f.Root(), g.Root())
	}
}

// TestProofsRoundTrip generates and verifies every inclusion and
// consistency proof of trees up to 64 leaves, and checks that a proof
// stops verifying when any hash in it, the index or the size changes.
func TestProofsRoundTrip(t *testing.T) {
	leaves := testLeaves(64)
	h := naiveHasher(leaves)
	for n := uint64(1); n <= 64; n++ {
		root := RootOf(leaves[:n])
		for i := uint64(0); i < n; i++ {
			p, err := InclusionProof(i, n, h)
			require.NoError(t, err)
			require.NoError(t, VerifyInclusion(i, n, leaves[i], p, root), "inclusion %d/%d", i, n)
			for j := range p {
				bad := append([]Hash(nil), p...)
				bad[j][0] ^= 1
				require.ErrorIs(t, VerifyInclusion(i, n, leaves[i], bad, root), ErrProof)
			}
			if n > 1 {
				require.Error(t, VerifyInclusion((i+1)%n, n, leaves[i], p, root))
			}
		}
		for m := uint64(0); m <= n; m++ {
			p, err := ConsistencyProof(m, n, h)
			require.NoError(t, err)
			oldRoot := RootOf(leaves[:m])
			require.NoError(t, VerifyConsistency(m, n, oldRoot, root, p), "consistency %d->%d", m, n)
			if m > 0 && m < n {
				for j := range p {
					bad := append([]Hash(nil), p...)
					bad[j][0] ^= 1
					require.ErrorIs(t, VerifyConsistency(m, n, oldRoot, root, bad), ErrProof)
				}
				forked := oldRoot
				forked[1] ^= 1
				require.ErrorIs(t, VerifyConsistency(m, n, forked, root, p), ErrProof)
			}
		}
	}
}

func FuzzVerifyInclusion(f *testing.F) {
	leaves := testLeaves(16)
	p, _ := InclusionProof(5, 16, naiveHasher(leaves))
	var seed []byte
	for _, h := range p {
		seed = append(seed, h[:]...)
	}
	f.Add(uint64(5), uint64(16), seed)
	f.Fuzz(func(t *testing.T, index, size uint64, raw []byte) {
		path := make([]Hash, len(raw)/32)
		for i := range path {
			copy(path[i][:], raw[i*32:])
		}
		root := RootOf(leaves)
		if VerifyInclusion(index, size, leaves[index%16], path, root) == nil {
			// Anything accepted must be the one true path of that leaf
			// (the size is not bound by a path alone: the signed
			// checkpoint binds it to the root).
			require.Equal(t, index%16, index)
			want, _ := InclusionProof(index, 16, naiveHasher(leaves))
			require.Equal(t, want, path)
		}
	})
}

func FuzzVerifyConsistency(f *testing.F) {
	leaves := testLeaves(16)
	p, _ := ConsistencyProof(6, 16, naiveHasher(leaves))
	var seed []byte
	for _, h := range p {
		seed = append(seed, h[:]...)
	}
	f.Add(uint64(6), seed)
	f.Fuzz(func(t *testing.T, old uint64, raw []byte) {
		path := make([]Hash, len(raw)/32)
		for i := range path {
			copy(path[i][:], raw[i*32:])
		}
		if old > 16 {
			old %= 17
		}
		// A proof for a forged old root must never verify.
		forged := RootOf(leaves[:old])
		forged[0] ^= 0x80
		if old > 0 && old < 16 {
			require.Error(t, VerifyConsistency(old, 16, forged, RootOf(leaves), path))
		}
		_ = VerifyConsistency(old, 16, RootOf(leaves[:old]), RootOf(leaves), path)
	})
}
