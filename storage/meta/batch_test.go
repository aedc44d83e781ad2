package meta

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// preload writes n keys prefix/000.. with values v000.. in one Txn per 100.
func preload(t testing.TB, c *clientv3.Client, prefix string, n int) []string {
	t.Helper()
	ctx := testContext(t, 10*time.Second)
	keys := make([]string, n)
	for start := 0; start < n; start += 100 {
		var ops []clientv3.Op
		for i := start; i < min(n, start+100); i++ {
			keys[i] = fmt.Sprintf("%s/%03d", prefix, i)
			ops = append(ops, clientv3.OpPut(keys[i], fmt.Sprintf("v%03d", i)))
		}
		_, err := c.Txn(ctx).Then(ops...).Commit()
		require.NoError(t, err)
	}
	return keys
}

func TestBatchReaderConcurrent(t *testing.T) {
	c := shared.srv.Client()
	keys := preload(t, c, "/test/conc", 200)
	b := NewBatchReader(c)
	defer b.Close()
	ctx := testContext(t, 30*time.Second)

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 40 {
				want := map[string]string{}
				ask := []string{"/test/conc/missing"}
				for range 1 + rng.IntN(3) {
					i := rng.IntN(len(keys))
					want[keys[i]] = fmt.Sprintf("v%03d", i)
					ask = append(ask, keys[i])
				}
				got, err := b.Get(ctx, ask...)
				if err != nil {
					errs <- err
					return
				}
				if len(got) != len(want) {
					errs <- fmt.Errorf("got %d keys, want %d", len(got), len(want))
					return
				}
				for k, v := range want {
					if kv := got[k]; kv == nil || string(kv.Value) != v {
						errs <- fmt.Errorf("key %s: got %v, want %s", k, kv, v)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// TestBatchReaderSeesPriorWrites is the linearizability check: a value
// whose write was acknowledged before Get was called is always seen, while
// other readers keep batches in flight.
func TestBatchReaderSeesPriorWrites(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	writer, err := NewClient(ctx, []string{shared.clientURL}, shared.tls)
	require.NoError(t, err)
	defer writer.Close()
	b := NewBatchReader(shared.srv.Client())
	defer b.Close()

	const rounds = 60
	var acked atomic.Int64 // highest value of /test/lin/shared acknowledged
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	fail := func(err error) { errs <- err }

	// One writer of a shared key, readers that each read after noting what
	// was acknowledged.
	wg.Go(func() {
		for i := int64(1); i <= rounds; i++ {
			if _, err := writer.Put(ctx, "/test/lin/shared", strconv.FormatInt(i, 10)); err != nil {
				fail(err)
				return
			}
			acked.Store(i)
		}
	})
	for range 8 {
		wg.Go(func() {
			for acked.Load() < rounds {
				floor := acked.Load()
				got, err := b.Get(ctx, "/test/lin/shared")
				if err != nil {
					fail(err)
					return
				}
				if floor == 0 {
					continue
				}
				kv := got["/test/lin/shared"]
				if kv == nil {
					fail(fmt.Errorf("acknowledged value %d not seen: key missing", floor))
					return
				}
				if v, _ := strconv.ParseInt(string(kv.Value), 10, 64); v < floor {
					fail(fmt.Errorf("stale read: got %d after %d was acknowledged", v, floor))
					return
				}
			}
		})
	}
	// Writers that read their own writes back through the batch reader.
	for g := range 8 {
		wg.Go(func() {
			key := fmt.Sprintf("/test/lin/own/%d", g)
			for i := range rounds / 2 {
				if _, err := writer.Put(ctx, key, strconv.Itoa(i)); err != nil {
					fail(err)
					return
				}
				got, err := b.Get(ctx, key, "/test/lin/shared")
				if err != nil {
					fail(err)
					return
				}
				if kv := got[key]; kv == nil || string(kv.Value) != strconv.Itoa(i) {
					fail(fmt.Errorf("%s: wrote %d, read %v", key, i, kv))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestBatchReaderLargeGet(t *testing.T) {
	c := shared.srv.Client()
	keys := preload(t, c, "/test/large", 300)
	b := NewBatchReader(c)
	defer b.Close()
	ctx := testContext(t, 10*time.Second)

	// More distinct keys than one Txn may carry, with duplicates.
	ask := append(append([]string{}, keys...), keys[:50]...)
	got, err := b.Get(ctx, ask...)
	require.NoError(t, err)
	require.Len(t, got, len(keys))
	for i, k := range keys {
		require.Equal(t, fmt.Sprintf("v%03d", i), string(got[k].Value))
	}
}

func TestBatchReaderErrors(t *testing.T) {
	b := NewBatchReader(shared.srv.Client())
	ctx := testContext(t, 10*time.Second)

	got, err := b.Get(ctx)
	require.NoError(t, err)
	require.Empty(t, got)

	_, err = b.Get(ctx, "/ok", "")
	require.ErrorContains(t, err, "empty key")
	_, err = b.Get(ctx, strings.Repeat("k", maxKeyBytes+1))
	require.ErrorContains(t, err, "more than")

	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.Get(done, "/test/rw")
	require.ErrorIs(t, err, context.Canceled)

	b.Close()
	b.Close()
	_, err = b.Get(ctx, "/test/rw")
	require.ErrorIs(t, err, ErrClosed)
}

func TestSplitKeys(t *testing.T) {
	key := func(n int) string { return strings.Repeat("k", n) }
	many := func(n, size int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = key(size)
		}
		return out
	}
	tests := []struct {
		name  string
		keys  []string
		sizes []int
	}{
		{name: "one", keys: many(1, 3), sizes: []int{1}},
		{name: "exactly max ops", keys: many(128, 3), sizes: []int{128}},
		{name: "one over max ops", keys: many(129, 3), sizes: []int{128, 1}},
		{name: "300", keys: many(300, 3), sizes: []int{128, 128, 44}},
		{name: "byte limit", keys: many(100, maxKeyBytes), sizes: []int{64, 36}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chunks := splitKeys(tc.keys)
			var sizes []int
			total := 0
			for _, c := range chunks {
				sizes = append(sizes, len(c))
				total += len(c)
				bytes := 0
				for _, k := range c {
					bytes += len(k)
				}
				require.LessOrEqual(t, bytes, maxTxnKeyBytes)
			}
			require.Equal(t, tc.sizes, sizes)
			require.Equal(t, len(tc.keys), total)
		})
	}
}

// BenchmarkBatchReader measures linearizable single-key reads from 32
// concurrent callers (the CA's load shape) against the shared member.
func BenchmarkBatchReader(b *testing.B) {
	c := shared.srv.Client()
	keys := preload(b, c, "/bench/batch", 1000)
	r := NewBatchReader(c)
	defer r.Close()
	benchmarkReads(b, func(ctx context.Context, key string) error {
		got, err := r.Get(ctx, key)
		if err == nil && got[key] == nil {
			err = fmt.Errorf("%s missing", key)
		}
		return err
	}, keys)
}

// BenchmarkUnbatchedGet is the baseline: one linearizable Range per read.
func BenchmarkUnbatchedGet(b *testing.B) {
	c := shared.srv.Client()
	keys := preload(b, c, "/bench/batch", 1000)
	benchmarkReads(b, func(ctx context.Context, key string) error {
		_, err := c.Get(ctx, key)
		return err
	}, keys)
}

func benchmarkReads(b *testing.B, read func(context.Context, string) error, keys []string) {
	ctx := testContext(b, 5*time.Minute)
	var seed atomic.Uint64
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 2))
		for pb.Next() {
			if err := read(ctx, keys[rng.IntN(len(keys))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}
