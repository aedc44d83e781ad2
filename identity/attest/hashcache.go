package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// defaultHashCacheSize bounds how many executables' digests one Credentials
// value remembers. A node runs few distinct binaries; the bound only stops a
// workload that churns out new binaries from growing the agent's memory.
const defaultHashCacheSize = 512

// fileKey identifies one version of a file. ctime is included because, unlike
// mtime, no unprivileged process can set it back after rewriting a binary in
// place.
type fileKey struct {
	dev, ino, size uint64
	mtime, ctime   unix.Timespec
}

func keyOf(st *unix.Stat_t) fileKey {
	return fileKey{dev: st.Dev, ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim, ctime: st.Ctim}
}

// hashCache maps file versions to their SHA-256, evicting oldest first.
type hashCache struct {
	max int
	mu  struct {
		sync.Mutex
		sums  map[fileKey]string
		order []fileKey // insertion order, for eviction
	}
}

func newHashCache(max int) *hashCache {
	c := &hashCache{max: max}
	c.mu.sums = make(map[fileKey]string)
	return c
}

// sum returns the hex SHA-256 of the open file fd whose stat is st, from the
// cache when this version of the file was hashed before. It does not take
// ownership of fd.
func (c *hashCache) sum(fd int, st *unix.Stat_t) (string, error) {
	key := keyOf(st)
	c.mu.Lock()
	s, ok := c.mu.sums[key]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	// Hash outside the lock: binaries can be large. Two callers hashing the
	// same new binary at once both do the work; that is rare and harmless.
	dup, err := unix.Dup(fd)
	if err != nil {
		return "", fmt.Errorf("hash executable: dup: %w", err)
	}
	f := os.NewFile(uintptr(dup), "exe")
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size)); err != nil {
		return "", fmt.Errorf("hash executable: %w", err)
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return "", fmt.Errorf("hash executable: fstat: %w", err)
	}
	if keyOf(&after) != key {
		return "", errors.New("hash executable: file changed while it was being hashed")
	}
	s = hex.EncodeToString(h.Sum(nil))
	c.put(key, s)
	return s, nil
}

func (c *hashCache) put(key fileKey, s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.mu.sums[key]; ok {
		return
	}
	for len(c.mu.order) >= c.max {
		delete(c.mu.sums, c.mu.order[0])
		c.mu.order = c.mu.order[1:]
	}
	c.mu.sums[key] = s
	c.mu.order = append(c.mu.order, key)
}
