package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf/ringbuf"
)

// ReadEvents calls fn with every event the programs report until ctx is
// done; it then returns nil. Events of one ring buffer come in order (the
// network layer's and the syscall audit layer's are two buffers, so
// between the two there is no order). fn runs on the caller's goroutine
// and should be quick: while it runs, events queue in the ring buffers
// and those that do not fit are counted in Stats.Dropped. One caller at a
// time. Events queued while no agent was reading (the ring buffers are
// pinned) are delivered first. A record it cannot decode is skipped and
// counted in Stats.Undecodable: one bad record (from programs of another
// version sharing a pinned ring buffer during an upgrade, or a bug) must
// not stop the reading of all the others, and the programs enforce
// whether or not anyone reads. It returns an error only when a ring
// buffer itself fails.
func (e *Enforcer) ReadEvents(ctx context.Context, fn func(Event)) error {
	type ring struct {
		name   string
		rd     *ringbuf.Reader
		decode func([]byte) (Event, error)
	}
	var rings []ring
	defer func() {
		for _, r := range rings {
			r.rd.Close()
		}
	}()
	rd, err := ringbuf.NewReader(e.net.Events)
	if err != nil {
		return fmt.Errorf("enforcer: events reader: %w", err)
	}
	rings = append(rings, ring{"events", rd, decodeEvent})
	if e.sys != nil {
		rd, err := ringbuf.NewReader(e.sys.SyscallEvents)
		if err != nil {
			return fmt.Errorf("enforcer: syscall events reader: %w", err)
		}
		rings = append(rings, ring{"syscall_events", rd, decodeSyscallEvent})
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	evs := make(chan Event)
	errc := make(chan error, len(rings))
	for _, r := range rings {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-ctx.Done()
			// Unblocks ReadInto below.
			r.rd.Close()
		}()
		go func() {
			defer wg.Done()
			var rec ringbuf.Record
			for {
				if err := r.rd.ReadInto(&rec); err != nil {
					if !errors.Is(err, os.ErrClosed) || ctx.Err() == nil {
						errc <- fmt.Errorf("enforcer: read %s: %w", r.name, err)
					}
					return
				}
				ev, err := r.decode(rec.RawSample)
				if err != nil {
					// Logged at the first and then at every power of two,
					// so that a stream of them cannot flood the log.
					if n := e.undecodable.Add(1); n&(n-1) == 0 {
						e.log.Warn("skipped undecodable kernel event", "ring", r.name, "err", err, "undecodable", n)
					}
					continue
				}
				select {
				case evs <- ev:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case ev := <-evs:
			fn(ev)
		}
	}
}
