package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testSigner is a fresh node key; keysFor publishes it.
func testSigner(t testing.TB, name string) *Signer {
	t.Helper()
	h, err := NewSigningKeyset()
	require.NoError(t, err)
	s, err := NewSigner(name, h)
	require.NoError(t, err)
	return s
}

func keysFor(node, witness *Signer) *Keys {
	k := &Keys{Nodes: map[string][]byte{node.Name(): node.PublicKeyset()}, Witnesses: map[string][]byte{}}
	if witness != nil {
		k.Witnesses[witness.Name()] = witness.PublicKeyset()
	}
	return k
}

func openTestLog(t testing.TB, dir string, s *Signer, opts ...func(*Config)) *Log {
	t.Helper()
	cfg := Config{Dir: dir, Node: s.Name(), Signer: s, CheckpointEvery: time.Hour}
	for _, o := range opts {
		o(&cfg)
	}
	l, err := Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func testEvent(i int) *Event {
	return &Event{Kind: KindAuthz, Action: "id.register", Subject: "spiffe://unum.local/user/admin",
		Resource: fmt.Sprintf("id/default/job-%d", i), Outcome: Allow, DecisionID: fmt.Sprintf("n1.%016x", i)}
}

func recordN(t testing.TB, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		require.NoError(t, l.Record(context.Background(), testEvent(i)))
	}
}

func TestRecordReopenAndProofs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	s := testSigner(t, "n1")
	l := openTestLog(t, dir, s)
	e := testEvent(0)
	require.NoError(t, l.Record(context.Background(), e))
	require.Equal(t, "n1:0", e.ID)
	require.Equal(t, "n1", e.Node)
	recordN(t, l, 40)
	sc, err := l.Checkpoint(context.Background())
	require.NoError(t, err)
	require.Equal(t, uint64(41), sc.Size)
	require.NoError(t, keysFor(s, nil).VerifyNode(sc))

	// Every entry proves its inclusion in the signed root.
	for i := uint64(0); i < sc.Size; i++ {
		raw, err := l.Get(i)
		require.NoError(t, err)
		p, err := l.InclusionProof(i, sc.Size)
		require.NoError(t, err)
		require.NoError(t, VerifyInclusion(i, sc.Size, LeafHash(raw), p, sc.Root))
	}
	i, raw, err := l.FindDecision("n1.0000000000000007")
	require.NoError(t, err)
	ev, err := DecodeEvent(raw)
	require.NoError(t, err)
	require.Equal(t, "n1:8", ev.ID, "decision 7 is the 9th event")
	require.Equal(t, uint64(8), i)

	// Reopen: the tree continues where it was, and consistency holds.
	require.NoError(t, l.Close())
	l = openTestLog(t, dir, s)
	require.Equal(t, uint64(41), l.Size())
	recordN(t, l, 30)
	sc2, err := l.Checkpoint(context.Background())
	require.NoError(t, err)
	p, err := l.ConsistencyProof(sc.Size, sc2.Size)
	require.NoError(t, err)
	require.NoError(t, VerifyConsistency(sc.Size, sc2.Size, sc.Root, sc2.Root, p))
	rep := l.Verify(context.Background(), keysFor(s, nil))
	require.True(t, rep.OK, rep.String())
	require.Equal(t, uint64(71), rep.Entries)
	require.Equal(t, uint64(2), rep.Checkpoints)
}

func TestConcurrentRecordsShareSyncs(t *testing.T) {
	s := testSigner(t, "n1")
	l := openTestLog(t, filepath.Join(t.TempDir(), "audit"), s)
	var wg sync.WaitGroup
	ids := make(chan string, 64*50)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				e := testEvent(i)
				if err := l.Record(context.Background(), e); err != nil {
					t.Error(err)
					return
				}
				ids <- e.ID
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		require.False(t, seen[id], "id %s given twice", id)
		seen[id] = true
	}
	require.Len(t, seen, 64*50)
	require.Equal(t, uint64(64*50), l.Size())
	_, err := l.Checkpoint(context.Background())
	require.NoError(t, err)
	rep := l.Verify(context.Background(), keysFor(s, nil))
	require.True(t, rep.OK, rep.String())
}

// TestRecordRacingClose: records in flight when the log closes all return
// (durable, or ErrUnavailable), none hangs.
func TestRecordRacingClose(t *testing.T) {
	for round := 0; round < 20; round++ {
		l, err := Open(Config{Dir: filepath.Join(t.TempDir(), "audit"), Node: "n1", Signer: testSigner(t, "n1"), CheckpointEvery: time.Hour})
		require.NoError(t, err)
		var wg sync.WaitGroup
		for w := 0; w < 32; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					if err := l.Record(context.Background(), testEvent(i)); err != nil {
						require.ErrorIs(t, err, ErrUnavailable)
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(round) * time.Millisecond)
		require.NoError(t, l.Close())
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: a Record hung after Close", round)
		}
	}
}
