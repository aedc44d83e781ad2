package audit

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
)

// Merkle tree hashing, proofs and their verification as in RFC 6962 and
// RFC 9162 section 2.1. Everything here is a pure function of its inputs.

// Hash is a SHA-256 tree hash.
type Hash [sha256.Size]byte

// EmptyRoot is the root of the empty tree: SHA-256 of nothing.
var emptyRoot = sha256.Sum256(nil)

// EmptyRoot returns the root hash of a tree of size 0.
func EmptyRoot() Hash { return emptyRoot }

// LeafHash is SHA-256(0x00 || data).
func LeafHash(data []byte) Hash {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(data)
	var out Hash
	h.Sum(out[:0])
	return out
}

// NodeHash is SHA-256(0x01 || left || right).
func NodeHash(left, right Hash) Hash {
	var buf [1 + 2*sha256.Size]byte
	buf[0] = 1
	copy(buf[1:], left[:])
	copy(buf[1+sha256.Size:], right[:])
	return sha256.Sum256(buf[:])
}

// splitPoint is the largest power of two smaller than n (n >= 2).
func splitPoint(n uint64) uint64 {
	return 1 << (bits.Len64(n-1) - 1)
}

// RangeHasher returns the Merkle tree hash of leaves [lo, hi) (hi > lo).
// Proof generation asks only for ranges that are either a complete, aligned
// subtree or the right edge of the tree, so a log that stores its complete
// subtrees answers every call with O(log n) reads.
type RangeHasher func(lo, hi uint64) (Hash, error)

// InclusionProof is RFC 9162's PATH(index, D[size]): the audit path of leaf
// index in the tree of the first size leaves.
func InclusionProof(index, size uint64, h RangeHasher) ([]Hash, error) {
	if index >= size {
		return nil, fmt.Errorf("inclusion proof: index %d is not in a tree of size %d", index, size)
	}
	var path []Hash
	lo, hi := uint64(0), size
	// Walk down from the root; siblings are collected bottom-up at the end.
	for hi-lo > 1 {
		k := splitPoint(hi - lo)
		var sib Hash
		var err error
		if index < lo+k {
			sib, err = h(lo+k, hi)
			hi = lo + k
		} else {
			sib, err = h(lo, lo+k)
			lo += k
		}
		if err != nil {
			return nil, err
		}
		path = append(path, sib)
	}
	reverse(path)
	return path, nil
}

// ConsistencyProof is RFC 9162's PROOF(old, D[size]): it shows the tree of
// the first old leaves is a prefix of the tree of size leaves. It is empty
// when old is 0 or old == size.
func ConsistencyProof(old, size uint64, h RangeHasher) ([]Hash, error) {
	if old > size {
		return nil, fmt.Errorf("consistency proof: old size %d is larger than %d", old, size)
	}
	if old == 0 || old == size {
		return nil, nil
	}
	var path []Hash
	lo, hi, complete := uint64(0), size, true
	m := old
	for {
		n := hi - lo
		if m == n {
			if !complete {
				r, err := h(lo, hi)
				if err != nil {
					return nil, err
				}
				path = append(path, r)
			}
			break
		}
		k := splitPoint(n)
		var sib Hash
		var err error
		if m <= k {
			sib, err = h(lo+k, hi)
			hi = lo + k
		} else {
			sib, err = h(lo, lo+k)
			lo += k
			m -= k
			complete = false
		}
		if err != nil {
			return nil, err
		}
		path = append(path, sib)
	}
	reverse(path)
	return path, nil
}

func reverse(p []Hash) {
	for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
		p[i], p[j] = p[j], p[i]
	}
}

// ErrProof is returned (wrapped) by the verifiers for a proof that does
// not prove what it claims.
var ErrProof = errors.New("invalid proof")

// VerifyInclusion checks that leaf (a LeafHash) is at index in the tree of
// size with root (RFC 9162 2.1.3.2).
func VerifyInclusion(index, size uint64, leaf Hash, path []Hash, root Hash) error {
	if index >= size {
		return fmt.Errorf("%w: index %d is not in a tree of size %d", ErrProof, index, size)
	}
	fn, sn := index, size-1
	r := leaf
	for _, p := range path {
		if sn == 0 {
			return fmt.Errorf("%w: inclusion path longer than the tree is deep", ErrProof)
		}
		if fn&1 == 1 || fn == sn {
			r = NodeHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = NodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return fmt.Errorf("%w: inclusion path too short", ErrProof)
	}
	if r != root {
		return fmt.Errorf("%w: inclusion path does not lead to the root", ErrProof)
	}
	return nil
}

// VerifyConsistency checks that the tree of size old with root oldRoot is
// a prefix of the tree of size size with root newRoot (RFC 9162 2.1.4.2).
func VerifyConsistency(old, size uint64, oldRoot, newRoot Hash, path []Hash) error {
	switch {
	case old > size:
		return fmt.Errorf("%w: old size %d is larger than new size %d", ErrProof, old, size)
	case old == size:
		if len(path) != 0 {
			return fmt.Errorf("%w: a proof between equal sizes must be empty", ErrProof)
		}
		if oldRoot != newRoot {
			return fmt.Errorf("%w: two different roots for size %d", ErrProof, size)
		}
		return nil
	case old == 0:
		if len(path) != 0 {
			return fmt.Errorf("%w: a proof from the empty tree must be empty", ErrProof)
		}
		return nil
	case len(path) == 0:
		return fmt.Errorf("%w: empty consistency proof", ErrProof)
	}
	if old&(old-1) == 0 { // a power of two: the old root is itself a node of the new tree
		path = append([]Hash{oldRoot}, path...)
	}
	fn, sn := old-1, size-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return fmt.Errorf("%w: consistency path too long", ErrProof)
		}
		if fn&1 == 1 || fn == sn {
			fr = NodeHash(c, fr)
			sr = NodeHash(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = NodeHash(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return fmt.Errorf("%w: consistency path too short", ErrProof)
	}
	if fr != oldRoot {
		return fmt.Errorf("%w: proof does not lead to the old root", ErrProof)
	}
	if sr != newRoot {
		return fmt.Errorf("%w: proof does not lead to the new root", ErrProof)
	}
	return nil
}

// Subtree names a complete, aligned subtree: leaves [Index<<Level,
// (Index+1)<<Level).
type Subtree struct {
	Level uint8
	Index uint64
	Hash  Hash
}

// Frontier is the compact state of a growing tree: the roots of the
// complete subtrees its size decomposes into, largest first. It computes
// the root of every prefix without holding the leaves. The zero Frontier is
// the empty tree.
type Frontier struct {
	size  uint64
	nodes []Hash // one per set bit of size, highest bit first
}

// Size is the number of leaves appended.
func (f *Frontier) Size() uint64 { return f.size }

// Append adds a leaf hash and calls done for every complete subtree it
// finishes, the leaf itself (level 0) first.
func (f *Frontier) Append(leaf Hash, done func(Subtree)) {
	h, idx, level := leaf, f.size, uint8(0)
	if done != nil {
		done(Subtree{Level: 0, Index: idx, Hash: h})
	}
	// Merge while the lowest bits of the old size are set: each set bit is
	// a complete subtree of that level waiting for its right sibling.
	for s := f.size; s&1 == 1; s >>= 1 {
		left := f.nodes[len(f.nodes)-1]
		f.nodes = f.nodes[:len(f.nodes)-1]
		h = NodeHash(left, h)
		level++
		idx >>= 1
		if done != nil {
			done(Subtree{Level: level, Index: idx, Hash: h})
		}
	}
	f.nodes = append(f.nodes, h)
	f.size++
}

// Root is the Merkle tree hash of the leaves appended so far.
func (f *Frontier) Root() Hash {
	if f.size == 0 {
		return emptyRoot
	}
	r := f.nodes[len(f.nodes)-1]
	for i := len(f.nodes) - 2; i >= 0; i-- {
		r = NodeHash(f.nodes[i], r)
	}
	return r
}

// Nodes returns the frontier's subtree roots, largest first (a copy).
func (f *Frontier) Nodes() []Hash { return append([]Hash(nil), f.nodes...) }

// NewFrontier rebuilds a frontier of size from its subtree roots, largest
// first, as returned by Nodes. It checks only their number.
func NewFrontier(size uint64, nodes []Hash) (*Frontier, error) {
	if bits.OnesCount64(size) != len(nodes) {
		return nil, fmt.Errorf("frontier of size %d needs %d subtree hashes, got %d", size, bits.OnesCount64(size), len(nodes))
	}
	return &Frontier{size: size, nodes: append([]Hash(nil), nodes...)}, nil
}

// RootOf computes the Merkle tree hash of leaf hashes directly: the naive
// reference the tests check everything else against.
func RootOf(leaves []Hash) Hash {
	switch len(leaves) {
	case 0:
		return emptyRoot
	case 1:
		return leaves[0]
	}
	k := splitPoint(uint64(len(leaves)))
	return NodeHash(RootOf(leaves[:k]), RootOf(leaves[k:]))
}
