package scheduler

import "math/bits"

// portSet is the used ports of one node's range, as a bitmap. It is made
// only for nodes that have a port in use: most nodes never need one.
type portSet struct {
	lo, hi int
	used   []uint64
	n      int // ports in use
	// next is a lower bound on the lowest free port, so that allocating
	// from a busy node does not rescan its full words every time.
	next int
}

func newPortSet(r PortRange) *portSet {
	return &portSet{lo: r.Lo, hi: r.Hi, used: make([]uint64, (r.Hi-r.Lo)/64+1), next: r.Lo}
}

func (s *portSet) size() int { return s.hi - s.lo + 1 }

// take marks port p used and reports whether it was free and in range.
func (s *portSet) take(p int) bool {
	if p < s.lo || p > s.hi {
		return false
	}
	w, b := (p-s.lo)/64, uint((p-s.lo)%64)
	if s.used[w]&(1<<b) != 0 {
		return false
	}
	s.used[w] |= 1 << b
	s.n++
	return true
}

// release frees port p, which must have been taken.
func (s *portSet) release(p int) {
	w, b := (p-s.lo)/64, uint((p-s.lo)%64)
	s.used[w] &^= 1 << b
	s.n--
	s.next = min(s.next, p)
}

// lowestFree takes and returns the lowest free port, or 0 when all are used.
func (s *portSet) lowestFree() int {
	for w := (s.next - s.lo) / 64; w < len(s.used); w++ {
		free := ^s.used[w]
		if free == 0 {
			continue
		}
		p := s.lo + w*64 + bits.TrailingZeros64(free)
		if p > s.hi {
			break
		}
		s.take(p)
		s.next = p + 1
		return p
	}
	s.next = s.hi + 1
	return 0
}
