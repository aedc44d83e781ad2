package audit

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BenchmarkRecordParallel records durable events from many goroutines
// (b.SetParallelism scales them beyond GOMAXPROCS, as the node's request
// handlers are).
func BenchmarkRecordParallel(b *testing.B) {
	l := openTestLog(b, filepath.Join(b.TempDir(), "audit"), testSigner(b, "n1"))
	var n atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Record(context.Background(), testEvent(int(n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
