package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
)

// The tamper tests damage a stopped node's log on disk the way an attacker
// who knows the format would (through Pebble, keeping its checksums valid)
// and check that VerifyDir names the first damaged index. keys are the
// published ones, as an operator holding `unum audit keys` passes them.

const tamperEntries = 100

// buildTamperLog writes 100 entries with a checkpoint every 10, the last
// one countersigned by a witness, and closes the log.
func buildTamperLog(t *testing.T) (dir string, keys *Keys, witnessed *SignedCheckpoint) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "audit")
	node, witness := testSigner(t, "n1"), testSigner(t, "ctl")
	l := openTestLog(t, dir, node, func(c *Config) { c.CheckpointEntries = 10 })
	recordN(t, l, tamperEntries)
	sc, err := l.Checkpoint(context.Background())
	require.NoError(t, err)
	require.Equal(t, uint64(tamperEntries), sc.Size)
	cos := *sc
	require.NoError(t, witness.Cosign(&cos, sc.Time))
	require.NoError(t, l.StoreCosigned(&cos))
	keys = keysFor(node, witness)
	require.NoError(t, l.RememberKeys(keys))
	require.NoError(t, l.Close())
	rep, err := VerifyDir(context.Background(), dir, keys)
	require.NoError(t, err)
	require.True(t, rep.OK, rep.String())
	require.Equal(t, uint64(10), rep.Checkpoints)
	require.Equal(t, uint64(1), rep.Witnessed)
	return dir, keys, &cos
}

func withDB(t *testing.T, dir string, f func(db *pebble.DB)) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{discardLogger()}})
	require.NoError(t, err)
	f(db)
	require.NoError(t, db.Close())
}

func getEntry(t *testing.T, db *pebble.DB, i uint64) []byte {
	v, c, err := db.Get(entryKey(i))
	require.NoError(t, err)
	defer c.Close()
	return slices.Clone(v)
}

func TestVerifyDetectsTampering(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, db *pebble.DB)
		bad     uint64
		problem string
	}{{
		name: "flip a byte in an entry",
		tamper: func(t *testing.T, db *pebble.DB) {
			v := getEntry(t, db, 37)
			v[len(v)-5] ^= 0x01
			require.NoError(t, db.Set(entryKey(37), v, pebble.Sync))
		},
		bad: 37, problem: "hash chain broken",
	}, {
		name:   "delete an entry",
		tamper: func(t *testing.T, db *pebble.DB) { require.NoError(t, db.Delete(entryKey(37), pebble.Sync)) },
		bad:    37, problem: "entry 37 is missing",
	}, {
		name: "reorder two entries",
		tamper: func(t *testing.T, db *pebble.DB) {
			a, b := getEntry(t, db, 20), getEntry(t, db, 30)
			require.NoError(t, db.Set(entryKey(20), b, pebble.Sync))
			require.NoError(t, db.Set(entryKey(30), a, pebble.Sync))
		},
		bad: 20, problem: "does not hold event n1:20",
	}, {
		name: "truncate the tail",
		tamper: func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.DeleteRange(entryKey(95), entryKey(tamperEntries), pebble.Sync))
		},
		bad: 95, problem: "truncated",
	}, {
		name: "truncate the tail and its checkpoints",
		tamper: func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.DeleteRange(entryKey(95), entryKey(tamperEntries), pebble.Sync))
			require.NoError(t, db.Delete(checkpointKey(100, 0), pebble.Sync))
		},
		// The witnessed copy still names size 100.
		bad: 100, problem: "witnessed checkpoint at size 100 is not among",
	}, {
		name: "alter an entry and recompute the chain after it",
		tamper: func(t *testing.T, db *pebble.DB) {
			prev := Hash(getEntry(t, db, 36)[:32])
			for i := uint64(37); i < tamperEntries; i++ {
				data := getEntry(t, db, i)[32:]
				if i == 37 {
					data = bytes.Replace(data, []byte("job-37"), []byte("job-99"), 1)
				}
				prev = chainHash(prev, LeafHash(data))
				require.NoError(t, db.Set(entryKey(i), append(prev[:], data...), pebble.Sync))
			}
		},
		bad: 30, problem: "entries [30,40) were altered",
	}, {
		name: "drop the oldest entries without a signed prune",
		tamper: func(t *testing.T, db *pebble.DB) {
			// A forged prune record: the chain resumes correctly, but no
			// checkpoint the node signed says entries were pruned.
			rec, err := json.Marshal(pruneRecord{Pruned: 10, Chain: Hash(getEntry(t, db, 9)[:32])})
			require.NoError(t, err)
			require.NoError(t, db.DeleteRange(entryKey(0), entryKey(10), pebble.Sync))
			require.NoError(t, db.Set(keyPrune, rec, pebble.Sync))
		},
		bad: 0, problem: "no signed checkpoint prunes them",
	}, {
		name: "drop the oldest entries silently",
		tamper: func(t *testing.T, db *pebble.DB) {
			require.NoError(t, db.DeleteRange(entryKey(0), entryKey(10), pebble.Sync))
		},
		bad: 0, problem: "entry 0 is missing",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, keys, _ := buildTamperLog(t)
			withDB(t, dir, func(db *pebble.DB) { tc.tamper(t, db) })
			rep, err := VerifyDir(context.Background(), dir, keys)
			require.NoError(t, err)
			require.False(t, rep.OK, "tampering not detected")
			require.Equal(t, tc.bad, rep.BadIndex, rep.String())
			require.Contains(t, rep.Problem, tc.problem)
		})
	}
}
