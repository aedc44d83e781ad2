package audit

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Report is what verification found. When OK is false, BadIndex is the
// first entry (or tree size) found damaged and Problem says why.
type Report struct {
	Node     string `json:"node"`
	OK       bool   `json:"ok"`
	BadIndex uint64 `json:"bad_index,omitempty"`
	Problem  string `json:"problem,omitempty"`
	// Size is the number of entries ever appended; Entries those present
	// (Size - Pruned).
	Size    uint64 `json:"size"`
	Entries uint64 `json:"entries"`
	Pruned  uint64 `json:"pruned"`
	// Checkpoints were checked (signature, and root where the entries are
	// still held); Witnessed of them carry valid countersignatures;
	// WitnessedSize is the largest witnessed size.
	Checkpoints   uint64 `json:"checkpoints"`
	Witnessed     uint64 `json:"witnessed"`
	WitnessedSize uint64 `json:"witnessed_size"`
	Root          Hash   `json:"-"`
	// KeysUnauthenticated: the keys came from the log's own folder, not
	// from the caller, so a forgery that replaced them too would pass.
	KeysUnauthenticated bool `json:"keys_unauthenticated,omitempty"`
}

func (r *Report) fail(i uint64, format string, args ...any) Report {
	r.OK, r.BadIndex, r.Problem = false, i, fmt.Sprintf(format, args...)
	return *r
}

// String is the one line `unum audit verify` prints.
func (r Report) String() string {
	if !r.OK {
		return fmt.Sprintf("FAIL %s: index %d: %s", r.Node, r.BadIndex, r.Problem)
	}
	s := fmt.Sprintf("OK %s: %d entries (%d pruned), %d checkpoints, %d witnessed (up to size %d)", r.Node, r.Entries, r.Pruned, r.Checkpoints, r.Witnessed, r.WitnessedSize)
	if r.KeysUnauthenticated {
		s += "; keys from the log's folder, not authenticated (pass --keys)"
	}
	return s
}

// Verify checks the open log (see VerifyDir) against keys (nil: the key
// copies stored beside the log).
func (l *Log) Verify(ctx context.Context, keys *Keys) Report {
	snap := l.db.NewSnapshot()
	defer snap.Close()
	return verify(ctx, snap, keys)
}

// VerifyDir verifies a stopped node's log at rest (DIR/audit), read-only:
// every entry's hash chain and id, the Merkle tree against every
// checkpoint's root, checkpoint signatures, countersignatures, and that
// missing entries are accounted for by a signed prune. keys nil uses the
// copies stored in the log (reported as unauthenticated).
func VerifyDir(ctx context.Context, dir string, keys *Keys) (Report, error) {
	return verifyDirFS(ctx, vfs.Default, dir, keys)
}

func verifyDirFS(ctx context.Context, fs vfs.FS, dir string, keys *Keys) (Report, error) {
	if _, err := fs.Stat(dir); err != nil {
		return Report{}, fmt.Errorf("audit log %s: %w", dir, err)
	}
	opts := pebbleOptions(fs, discardLogger(), true)
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return Report{}, fmt.Errorf("open audit log %s read-only: %w", dir, err)
	}
	defer db.Close()
	return verify(ctx, db, keys), nil
}

func storedKeys(db pebbleReader, node string) (*Keys, error) {
	k := &Keys{Nodes: map[string][]byte{}, Witnesses: map[string][]byte{}}
	v, c, err := db.Get(keyNodeKey)
	if err != nil {
		return nil, fmt.Errorf("the log holds no copy of its node key: %w", err)
	}
	k.Nodes[node] = slices.Clone(v)
	c.Close()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: keyWitness, UpperBound: append(slices.Clone(keyWitness), 0xff)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k.Witnesses[string(it.Key()[len(keyWitness):])] = slices.Clone(it.Value())
	}
	return k, it.Error()
}

func verify(ctx context.Context, db pebbleReader, keys *Keys) Report {
	var r Report
	v, c, err := db.Get(keyNode)
	if err != nil {
		return r.fail(0, "the log does not say whose it is: %v", err)
	}
	r.Node = string(v)
	c.Close()
	if keys == nil {
		if keys, err = storedKeys(db, r.Node); err != nil {
			return r.fail(0, "%v", err)
		}
		r.KeysUnauthenticated = true
	}

	// Checkpoints, in size order: signatures first.
	var cps []*SignedCheckpoint
	var maxSignedPruned uint64
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixCheckpoint}, UpperBound: []byte{prefixCheckpoint + 1}})
	if err != nil {
		return r.fail(0, "read checkpoints: %v", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Key()) != 17 {
			it.Close()
			return r.fail(0, "a checkpoint key is damaged (%d bytes)", len(it.Key()))
		}
		size := binary.BigEndian.Uint64(it.Key()[1:])
		sc, err := ParseCheckpoint(slices.Clone(it.Value()))
		if err != nil {
			it.Close()
			return r.fail(size, "checkpoint at size %d: %v", size, err)
		}
		if sc.Size != size || sc.Pruned != binary.BigEndian.Uint64(it.Key()[9:]) || sc.Node != r.Node {
			it.Close()
			return r.fail(size, "checkpoint stored at size %d is %s's at size %d", size, sc.Node, sc.Size)
		}
		if err := keys.VerifyNode(sc); err != nil {
			it.Close()
			return r.fail(size, "checkpoint at size %d: %v", size, err)
		}
		ws, err := keys.VerifiedWitnesses(sc)
		if err != nil {
			it.Close()
			return r.fail(size, "checkpoint at size %d: %v", size, err)
		}
		if len(ws) > 0 {
			r.Witnessed++
			r.WitnessedSize = max(r.WitnessedSize, size)
		}
		maxSignedPruned = max(maxSignedPruned, sc.Pruned)
		cps = append(cps, sc)
	}
	if err := it.Close(); err != nil {
		return r.fail(0, "read checkpoints: %v", err)
	}
	r.Checkpoints = uint64(len(cps))
	if note, ok := keys.Checkpoints[r.Node]; ok {
		// The witnessed checkpoint the caller brought: the log must reach
		// it and agree with it, whatever the log's own folder still holds.
		w, err := ParseCheckpoint([]byte(note))
		if err != nil {
			return r.fail(0, "the witnessed checkpoint given: %v", err)
		}
		if err := keys.VerifyNode(w); err != nil {
			return r.fail(w.Size, "the witnessed checkpoint given: %v", err)
		}
		if ws, err := keys.VerifiedWitnesses(w); err != nil || len(ws) == 0 {
			return r.fail(w.Size, "the witnessed checkpoint given carries no valid countersignature: %v", err)
		}
		r.WitnessedSize = max(r.WitnessedSize, w.Size)
		i, found := slices.BinarySearchFunc(cps, w.Size, func(c *SignedCheckpoint, size uint64) int { return cmp.Compare(c.Size, size) })
		switch {
		case !found:
			cps = slices.Insert(cps, i, w)
		case cps[i].Root != w.Root:
			return r.fail(w.Size, "the log's checkpoint at size %d differs from the one its witness countersigned: a fork", w.Size)
		}
	}
	if w, c, err := db.Get(keyWitnessed); err == nil {
		sc, perr := ParseCheckpoint(slices.Clone(w))
		c.Close()
		if perr != nil {
			return r.fail(0, "stored witnessed checkpoint: %v", perr)
		}
		if len(cps) == 0 || !slices.ContainsFunc(cps, func(x *SignedCheckpoint) bool { return bytes.Equal(x.Body(), sc.Body()) }) {
			return r.fail(sc.Size, "the witnessed checkpoint at size %d is not among the log's checkpoints", sc.Size)
		}
	}

	// Where the entries start, and whether a signed prune says why.
	pr, err := readPrune(db)
	if err != nil {
		return r.fail(0, "%v", err)
	}
	r.Pruned = pr.Pruned
	if pr.Pruned > maxSignedPruned {
		return r.fail(maxSignedPruned, "entries [%d,%d) are missing and no signed checkpoint prunes them", maxSignedPruned, pr.Pruned)
	}
	f, err := frontierAt(db, pr.Pruned)
	if err != nil {
		return r.fail(pr.Pruned, "%v", err)
	}
	chain := pr.Chain
	next := 0 // the next checkpoint to compare with the tree
	checkRoot := func() *Report {
		for next < len(cps) && cps[next].Size <= f.Size() {
			cp := cps[next]
			if cp.Size == f.Size() && cp.Root != f.Root() {
				from := uint64(0)
				if next > 0 {
					from = cps[next-1].Size
				}
				rep := r.fail(max(from, pr.Pruned), "the tree of %d entries does not match the signed checkpoint: entries [%d,%d) were altered", cp.Size, max(from, pr.Pruned), cp.Size)
				return &rep
			}
			// A checkpoint below the prune point covers entries no longer
			// held: its signature was checked, its root cannot be.
			next++
		}
		return nil
	}
	if rep := checkRoot(); rep != nil {
		return *rep
	}

	prefix := []byte(`{"v":1,"id":"`)
	it, err = db.NewIter(&pebble.IterOptions{LowerBound: entryKey(pr.Pruned), UpperBound: []byte{prefixEntry + 1}})
	if err != nil {
		return r.fail(pr.Pruned, "read entries: %v", err)
	}
	defer it.Close()
	want := pr.Pruned
	var idBuf []byte
	for ok := it.First(); ok; ok = it.Next() {
		if want%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return r.fail(want, "verify stopped: %v", err)
			}
		}
		i := binary.BigEndian.Uint64(it.Key()[1:])
		if i != want {
			if i < want {
				return r.fail(want, "entry key out of order")
			}
			return r.fail(want, "entry %d is missing (the log jumps to %d)", want, i)
		}
		val := it.Value()
		if len(val) < 32 {
			return r.fail(i, "entry is damaged (%d bytes)", len(val))
		}
		data := val[32:]
		// Each event names its own index: a moved entry is caught here.
		idBuf = append(append(append(idBuf[:0], prefix...), EventID(r.Node, i)...), '"')
		if !bytes.HasPrefix(data, idBuf) {
			return r.fail(i, "entry %d does not hold event %s (moved, replaced or damaged)", i, EventID(r.Node, i))
		}
		leaf := LeafHash(data)
		chain = chainHash(chain, leaf)
		if !bytes.Equal(val[:32], chain[:]) {
			return r.fail(i, "hash chain broken at entry %d: the entry was altered", i)
		}
		f.Append(leaf, nil)
		want++
		if rep := checkRoot(); rep != nil {
			return *rep
		}
	}
	if err := it.Error(); err != nil {
		return r.fail(want, "read entries: %v (storage damaged after entry %d)", err, want)
	}
	r.Size, r.Entries, r.Root = want, want-pr.Pruned, f.Root()
	if next < len(cps) {
		last := cps[len(cps)-1]
		return r.fail(want, "the log ends at %d entries but a checkpoint was signed at size %d: it was truncated", want, last.Size)
	}
	r.OK = true
	return r
}

// VerifyAgainst checks the node's newest signed checkpoint (sc) against the
// witness's newest countersigned one (w) with a consistency proof, using
// only published keys: what `unum audit verify` checks without trusting the
// node.
func VerifyAgainst(keys *Keys, w, sc *SignedCheckpoint, proof []Hash) error {
	if err := keys.VerifyNode(sc); err != nil {
		return err
	}
	if w == nil {
		return nil
	}
	if w.Node != sc.Node {
		return fmt.Errorf("witnessed checkpoint is %s's, not %s's", w.Node, sc.Node)
	}
	if err := keys.VerifyNode(w); err != nil {
		return err
	}
	ws, err := keys.VerifiedWitnesses(w)
	if err != nil {
		return err
	}
	if len(ws) == 0 {
		return errors.New("the witnessed checkpoint carries no countersignature")
	}
	if sc.Size < w.Size {
		return fmt.Errorf("the log of %s has %d entries, fewer than the %d its witness countersigned: it was truncated", sc.Node, sc.Size, w.Size)
	}
	if err := VerifyConsistency(w.Size, sc.Size, w.Root, sc.Root, proof); err != nil {
		return fmt.Errorf("the log of %s is not an extension of what %s witnessed at size %d (fork or rewrite): %w", sc.Node, strings.Join(ws, ","), w.Size, err)
	}
	return nil
}
