package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf/ringbuf"
)

// ReadEvents calls fn with every event the programs report, in order,
// until ctx is done; it then returns nil. fn runs on the caller's
// goroutine and should be quick: while it runs, events queue in the ring
// buffer and those that do not fit are counted in Stats.Dropped. One
// caller at a time. Events queued while no agent was reading (the ring
// buffer is pinned) are delivered first. A record it cannot decode is
// skipped and counted in Stats.Undecodable: one bad record (from programs
// of another version sharing the pinned ring buffer during an upgrade, or
// a bug) must not stop the reading of all the others, and the programs
// enforce whether or not anyone reads. It returns an error only when the
// ring buffer itself fails.
func (e *Enforcer) ReadEvents(ctx context.Context, fn func(Event)) error {
	rd, err := ringbuf.NewReader(e.net.Events)
	if err != nil {
		return fmt.Errorf("enforcer: events reader: %w", err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-stop:
		}
		// Unblocks Read below.
		rd.Close()
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) && ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("enforcer: read events: %w", err)
		}
		ev, err := decodeEvent(rec.RawSample)
		if err != nil {
			// Logged at the first and then at every power of two, so
			// that a stream of them cannot flood the log.
			if n := e.undecodable.Add(1); n&(n-1) == 0 {
				e.log.Warn("skipped undecodable kernel event", "err", err, "undecodable", n)
			}
			continue
		}
		fn(ev)
	}
}
