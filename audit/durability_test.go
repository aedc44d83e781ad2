package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/require"
)

func TestForgeryByAnotherKeyIsDetected(t *testing.T) {
	dir, keys, _ := buildTamperLog(t)
	// The attacker replaces the whole log with one of their own making:
	// same node name, plausible events, their own key.
	require.NoError(t, os.RemoveAll(dir))
	forger := testSigner(t, "n1")
	l := openTestLog(t, dir, forger, func(c *Config) { c.CheckpointEntries = 10 })
	recordN(t, l, tamperEntries)
	_, err := l.Checkpoint(context.Background())
	require.NoError(t, err)
	require.NoError(t, l.Close())

	rep, err := VerifyDir(context.Background(), dir, keys)
	require.NoError(t, err)
	require.False(t, rep.OK)
	require.Equal(t, uint64(10), rep.BadIndex, rep.String())
	require.Contains(t, rep.Problem, "not signed by its published key")

	// Without the published keys the forgery is self-consistent: verify
	// says so instead of claiming it authentic.
	rep, err = VerifyDir(context.Background(), dir, nil)
	require.NoError(t, err)
	require.True(t, rep.OK)
	require.True(t, rep.KeysUnauthenticated)
	require.Contains(t, rep.String(), "not authenticated")
}

// TestByteFlipInStoreFilesIsDetected flips a byte of an event in the
// store's own files. Pebble treats a damaged record at the end of its last
// WAL as a torn write and ends the log there: to the folder alone the log
// then looks whole but shorter. The witnessed checkpoint exported with the
// keys catches that truncation.
func TestByteFlipInStoreFilesIsDetected(t *testing.T) {
	dir, keys, w := buildTamperLog(t)
	keys.Checkpoints = map[string]string{"n1": string(w.Marshal())}
	// Find the file holding entry 37's event and flip one of its bytes.
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	require.NoError(t, err)
	flipped := ""
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		if i := bytes.Index(b, []byte("default/job-37")); i >= 0 {
			b[i+len("default/job-")] ^= 0x01
			require.NoError(t, os.WriteFile(f, b, 0o600))
			flipped = filepath.Base(f)
			break
		}
	}
	require.NotEmpty(t, flipped, "entry 37 is in one of the store's files")
	rep, err := VerifyDir(context.Background(), dir, keys)
	require.NoError(t, err)
	require.False(t, rep.OK, "a flipped byte in %s went unnoticed", flipped)
	require.Equal(t, uint64(100), rep.WitnessedSize)
	require.Equal(t, uint64(37), rep.BadIndex, rep.String())
	require.Contains(t, rep.Problem, "truncated")
}

func TestPruneIsSignedAndAccountedFor(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	node, witness := testSigner(t, "n1"), testSigner(t, "ctl")
	l := openTestLog(t, dir, node)
	recordN(t, l, 100)
	ctx := context.Background()

	n, err := l.Prune(ctx, 50)
	require.NoError(t, err)
	require.Zero(t, n, "nothing is pruned before a witness countersigned it")

	sc, err := l.Checkpoint(ctx)
	require.NoError(t, err)
	cos := *sc
	require.NoError(t, witness.Cosign(&cos, time.Now()))
	require.NoError(t, l.StoreCosigned(&cos))
	recordN(t, l, 20)

	n, err = l.Prune(ctx, 500)
	require.NoError(t, err)
	require.Equal(t, uint64(100), n, "pruning stops at the witnessed size")
	_, err = l.Get(10)
	require.ErrorIs(t, err, ErrPruned)
	latest := l.Latest()
	require.Equal(t, uint64(100), latest.Pruned)

	// Entries after the prune point still prove inclusion in the new root.
	sc, err = l.Checkpoint(ctx)
	require.NoError(t, err)
	for i := uint64(100); i < sc.Size; i++ {
		raw, err := l.Get(i)
		require.NoError(t, err)
		p, err := l.InclusionProof(i, sc.Size)
		require.NoError(t, err)
		require.NoError(t, VerifyInclusion(i, sc.Size, LeafHash(raw), p, sc.Root))
	}
	keys := keysFor(node, witness)
	rep := l.Verify(ctx, keys)
	require.True(t, rep.OK, rep.String())
	require.Equal(t, uint64(100), rep.Pruned)
	require.NoError(t, l.Close())

	// The prune itself is an event, and reopening resumes the chain.
	l = openTestLog(t, dir, node)
	raw, err := l.Get(120)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"action":"audit.prune"`)
	recordN(t, l, 5)
	_, err = l.Checkpoint(ctx)
	require.NoError(t, err)
	rep = l.Verify(ctx, keys)
	require.True(t, rep.OK, rep.String())
}

func TestRetentionPoint(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	l := openTestLog(t, filepath.Join(t.TempDir(), "audit"), testSigner(t, "n1"), func(c *Config) {
		c.Now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	})
	for i := 0; i < 10; i++ {
		clock.Store(now.Add(time.Duration(i-10) * time.Hour).UnixNano())
		e := testEvent(i)
		// A caller's time is not the log's: the log stamps its own.
		e.Time = now.Add(48 * time.Hour)
		require.NoError(t, l.Record(context.Background(), e))
	}
	p, err := l.RetentionPoint(context.Background(), now, 3*time.Hour+time.Minute, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(7), p, "entries older than 3h are before index 7")
	raw, err := l.Get(9)
	require.NoError(t, err)
	p, err = l.RetentionPoint(context.Background(), now, 0, int64(2*(len(raw)+32)))
	require.NoError(t, err)
	require.Equal(t, uint64(8), p, "two entries fit in the byte budget")
}

// TestWriteFailureFailsClosed injects I/O errors under the log: the record
// fails with ErrUnavailable, and so does every later one.
func TestWriteFailureFailsClosed(t *testing.T) {
	toggle := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			return errorfs.ErrInjected
		}
		return nil
	})}
	s := testSigner(t, "n1")
	l := openTestLog(t, filepath.Join(t.TempDir(), "audit"), s, func(c *Config) { c.FS = errorfs.Wrap(vfs.Default, toggle) })
	recordN(t, l, 10)
	require.NoError(t, l.Err())
	toggle.On()
	err := l.Record(context.Background(), testEvent(10))
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorIs(t, l.Err(), ErrUnavailable)
	toggle.Off()
	// Sticky: Pebble's commit pipeline is unusable after a failed write.
	require.ErrorIs(t, l.Record(context.Background(), testEvent(11)), ErrUnavailable)
	_, err = l.Checkpoint(context.Background())
	require.Error(t, err)
	require.Equal(t, uint64(10), l.Size())
}

// TestCrashKeepsAcknowledgedEvents runs a writer process that records
// events as fast as it can and prints the id of each acknowledged one, kills
// it with SIGKILL mid-stream, and checks that every acknowledged event is in
// the reopened log and that it verifies.
func TestCrashKeepsAcknowledgedEvents(t *testing.T) {
	if dir := os.Getenv("UNUM_AUDIT_CRASH_DIR"); dir != "" {
		crashWriter(dir)
		return
	}
	dir := filepath.Join(t.TempDir(), "audit")
	keyFile := filepath.Join(t.TempDir(), "audit.key")
	s, err := LoadOrCreateSigner("n1", keyFile)
	require.NoError(t, err)
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestCrashKeepsAcknowledgedEvents$")
		cmd.Env = append(os.Environ(), "UNUM_AUDIT_CRASH_DIR="+dir, "UNUM_AUDIT_CRASH_KEY="+keyFile)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		var acked []string
		sc := bufio.NewScanner(out)
		for sc.Scan() && len(acked) < 2000 {
			if id, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
				acked = append(acked, id)
			}
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		// Acks printed after the kill decision still count: drain them.
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
				acked = append(acked, id)
			}
		}
		_ = cmd.Wait()
		require.GreaterOrEqual(t, len(acked), 2000)

		l := openTestLog(t, dir, s)
		for _, id := range acked {
			_, idx, err := ParseEventID(id)
			require.NoError(t, err)
			raw, err := l.Get(idx)
			require.NoError(t, err, "acknowledged event %s lost", id)
			e, err := DecodeEvent(raw)
			require.NoError(t, err)
			require.Equal(t, id, e.ID)
		}
		_, err = l.Checkpoint(context.Background())
		require.NoError(t, err)
		rep := l.Verify(context.Background(), keysFor(s, nil))
		require.True(t, rep.OK, rep.String())
		t.Logf("round %d: %d acknowledged, %d in the log", round, len(acked), l.Size())
		require.NoError(t, l.Close())
	}
}

func crashWriter(dir string) {
	s, err := LoadOrCreateSigner("n1", os.Getenv("UNUM_AUDIT_CRASH_KEY"))
	if err != nil {
		panic(err)
	}
	l, err := Open(Config{Dir: dir, Node: "n1", Signer: s, CheckpointEvery: 50 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				e := testEvent(i)
				if err := l.Record(context.Background(), e); err != nil {
					if errors.Is(err, ErrUnavailable) {
						return
					}
					panic(err)
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %s\n", e.ID)
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestPruneAtAnyPoint prunes at sizes of every shape (odd, a power of
// two, one short of one): the tree rebuilt from stored hashes still yields
// the signed roots, proofs and a clean verify after reopening.
func TestPruneAtAnyPoint(t *testing.T) {
	for _, p := range []uint64{1, 7, 64, 99} {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), "audit")
			node, witness := testSigner(t, "n1"), testSigner(t, "ctl")
			l := openTestLog(t, dir, node)
			recordN(t, l, int(p))
			sc, err := l.Checkpoint(ctx)
			require.NoError(t, err)
			cos := *sc
			require.NoError(t, witness.Cosign(&cos, time.Now()))
			require.NoError(t, l.StoreCosigned(&cos))
			recordN(t, l, 13)
			n, err := l.Prune(ctx, p)
			require.NoError(t, err)
			require.Equal(t, p, n)
			require.NoError(t, l.Close())

			l = openTestLog(t, dir, node)
			recordN(t, l, 3)
			sc, err = l.Checkpoint(ctx)
			require.NoError(t, err)
			for i := p; i < sc.Size; i++ {
				raw, err := l.Get(i)
				require.NoError(t, err)
				proof, err := l.InclusionProof(i, sc.Size)
				require.NoError(t, err)
				require.NoError(t, VerifyInclusion(i, sc.Size, LeafHash(raw), proof, sc.Root))
			}
			cp, err := l.ConsistencyProof(cos.Size, sc.Size)
			require.NoError(t, err)
			require.NoError(t, VerifyAgainst(keysFor(node, witness), &cos, sc, cp))
			rep := l.Verify(ctx, keysFor(node, witness))
			require.True(t, rep.OK, rep.String())
			require.Equal(t, p, rep.Pruned)
		})
	}
}

// TestVerifyAgainstWitness is the check `unum audit verify` makes without
// trusting the node: its newest checkpoint must extend what the witness
// countersigned.
func TestVerifyAgainstWitness(t *testing.T) {
	ctx := context.Background()
	node, witness := testSigner(t, "n1"), testSigner(t, "ctl")
	keys := keysFor(node, witness)
	l := openTestLog(t, filepath.Join(t.TempDir(), "audit"), node)
	recordN(t, l, 50)
	w, err := l.Checkpoint(ctx)
	require.NoError(t, err)
	cos := *w
	require.NoError(t, witness.Cosign(&cos, time.Now()))
	recordN(t, l, 25)
	sc, err := l.Checkpoint(ctx)
	require.NoError(t, err)
	proof, err := l.ConsistencyProof(50, sc.Size)
	require.NoError(t, err)
	require.NoError(t, VerifyAgainst(keys, &cos, sc, proof))

	// A fork: the same node key, another history from entry 40 on.
	fork := openTestLog(t, filepath.Join(t.TempDir(), "audit"), node)
	recordN(t, fork, 40)
	for i := 0; i < 35; i++ {
		e := testEvent(i)
		e.Resource = "id/default/rewritten"
		require.NoError(t, fork.Record(ctx, e))
	}
	fsc, err := fork.Checkpoint(ctx)
	require.NoError(t, err)
	fproof, err := fork.ConsistencyProof(50, fsc.Size)
	require.NoError(t, err)
	require.ErrorContains(t, VerifyAgainst(keys, &cos, fsc, fproof), "fork or rewrite")

	// A truncation: fewer entries than witnessed.
	short := openTestLog(t, filepath.Join(t.TempDir(), "audit"), node)
	recordN(t, short, 30)
	ssc, err := short.Checkpoint(ctx)
	require.NoError(t, err)
	require.ErrorContains(t, VerifyAgainst(keys, &cos, ssc, nil), "truncated")

	// A witnessed checkpoint with a forged countersignature proves nothing:
	// one under another key counts for nothing, one under the witness's
	// key that does not verify is a bad signature.
	bad := cos
	bad.Cosigs = []Cosignature{{Witness: "ctl", Time: cos.Cosigs[0].Time, Sig: append([]byte(nil), w.Sig...)}}
	require.ErrorContains(t, VerifyAgainst(keys, &bad, sc, proof), "no countersignature")
	bad.Cosigs = []Cosignature{{Witness: "ctl", Time: cos.Cosigs[0].Time.Add(time.Second), Sig: cos.Cosigs[0].Sig}}
	require.ErrorIs(t, VerifyAgainst(keys, &bad, sc, proof), ErrSignature)
}

// TestPruneAtTheWitnessedSize prunes everything witnessed while nothing
// came after: the prune's checkpoint (same size, more pruned) is stored
// beside the witnessed one, which stays verifiable.
func TestPruneAtTheWitnessedSize(t *testing.T) {
	ctx := context.Background()
	node, witness := testSigner(t, "n1"), testSigner(t, "ctl")
	l := openTestLog(t, filepath.Join(t.TempDir(), "audit"), node)
	recordN(t, l, 20)
	sc, err := l.Checkpoint(ctx)
	require.NoError(t, err)
	cos := *sc
	require.NoError(t, witness.Cosign(&cos, time.Now()))
	require.NoError(t, l.StoreCosigned(&cos))
	n, err := l.Prune(ctx, 20)
	require.NoError(t, err)
	require.Equal(t, uint64(20), n)
	rep := l.Verify(ctx, keysFor(node, witness))
	require.True(t, rep.OK, rep.String())
	require.Equal(t, uint64(1), rep.Witnessed)
}

// TestWitnessWithANewKey: a control node that rejoined under its old name
// has a new witness key; its countersignatures under the old one no longer
// count, but they are not damage.
func TestWitnessWithANewKey(t *testing.T) {
	ctx := context.Background()
	node, old, renewed := testSigner(t, "n1"), testSigner(t, "ctl"), testSigner(t, "ctl")
	l := openTestLog(t, filepath.Join(t.TempDir(), "audit"), node)
	recordN(t, l, 5)
	sc, err := l.Checkpoint(ctx)
	require.NoError(t, err)
	cos := *sc
	require.NoError(t, old.Cosign(&cos, time.Now()))
	require.NoError(t, l.StoreCosigned(&cos))
	rep := l.Verify(ctx, keysFor(node, renewed))
	require.True(t, rep.OK, rep.String())
	require.Zero(t, rep.Witnessed, "a countersignature under a retired key counts for nothing")
	rep = l.Verify(ctx, keysFor(node, old))
	require.True(t, rep.OK, rep.String())
	require.Equal(t, uint64(1), rep.Witnessed)

	// A countersignature under the right key id that does not verify is
	// damage.
	bad := cos
	bad.Cosigs = []Cosignature{{Witness: "ctl", Time: cos.Cosigs[0].Time, Sig: append([]byte(nil), cos.Cosigs[0].Sig...)}}
	bad.Cosigs[0].Sig[len(bad.Cosigs[0].Sig)-1] ^= 1
	_, err = keysFor(node, old).VerifiedWitnesses(&bad)
	require.ErrorIs(t, err, ErrSignature)
}
