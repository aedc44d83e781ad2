package meta

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrClosed is returned by BatchReader.Get after Close.
var ErrClosed = errors.New("batch reader closed")

// Limits on what one Txn carries. etcd refuses a Txn of more than
// max-txn-ops operations or a request of more than 1.5 MiB, and one refused
// Txn would fail every caller in it, so batches are split well inside both.
const (
	maxKeyBytes      = 16 << 10
	maxTxnKeyBytes   = 1 << 20
	maxTxnOpsPerRead = 128
)

// BatchReader coalesces concurrent linearizable reads of single keys into
// read-only etcd Txns: each Txn costs one ReadIndex round trip however many
// keys it reads, which is what lets the CA confirm a registration entry per
// SVID at thousands of SVIDs per second.
//
// # Linearizability
//
// A Get is answered only by a Txn that started after the Get was called.
// The reader runs a group commit: while one batch is in flight, new Gets
// queue; when it returns, everything queued goes out in the next batch. A
// Get never joins a Txn already in flight, whose ReadIndex may predate a
// write the caller has seen acknowledged.
//
// All keys of one batch are read at one revision: the first Txn fixes it and
// the others (a batch of more than 128 distinct keys) read at it.
//
// # Failure
//
// A Txn error fails every Get of its batch; callers retry. A batch runs until
// the latest deadline among its callers (or without one if any caller has
// none), so a cluster without quorum holds the reader up no longer than its
// callers are prepared to wait.
//
// Returned KeyValues are shared by the callers of a batch and must be treated
// as read-only.
type BatchReader struct {
	kv     clientv3.KV
	ctx    context.Context // cancelled by Close; parent of every Txn
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: "the queue may be non-empty"
	done   chan struct{} // closed when the loop has exited

	mu struct {
		sync.Mutex
		queue  []*readRequest
		closed bool
	}
}

type readRequest struct {
	ctx  context.Context
	keys []string
	res  chan readResult // capacity 1, so the loop never blocks on a caller that left
}

type readResult struct {
	kvs map[string]*mvccpb.KeyValue
	err error
}

// NewBatchReader starts a reader on c. The caller owns it and must Close it;
// c must outlive it.
func NewBatchReader(c *clientv3.Client) *BatchReader {
	ctx, cancel := context.WithCancel(context.Background())
	b := &BatchReader{
		kv:     c.KV,
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	go b.loop()
	return b
}

// Get reads keys linearizably: every value returned is at least as new as
// any write acknowledged before Get was called. Keys that do not exist are
// absent from the map. Get returns ctx's error if ctx ends first.
func (b *BatchReader) Get(ctx context.Context, keys ...string) (map[string]*mvccpb.KeyValue, error) {
	if len(keys) == 0 {
		return map[string]*mvccpb.KeyValue{}, nil
	}
	for _, k := range keys {
		if k == "" {
			return nil, errors.New("linearizable read: empty key")
		}
		if len(k) > maxKeyBytes {
			return nil, fmt.Errorf("linearizable read: key %.40q... is %d bytes, more than %d", k, len(k), maxKeyBytes)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("linearizable read: %w", err)
	}
	req := &readRequest{
		ctx:  ctx,
		keys: append([]string(nil), keys...), // the loop may still read them after Get returns
		res:  make(chan readResult, 1),
	}
	b.mu.Lock()
	if b.mu.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("linearizable read: %w", ErrClosed)
	}
	b.mu.queue = append(b.mu.queue, req)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	select {
	case r := <-req.res:
		if r.err != nil {
			return nil, fmt.Errorf("linearizable read of %d keys: %w", len(keys), r.err)
		}
		return r.kvs, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("linearizable read: %w", ctx.Err())
	}
}

// Close stops the reader and waits for its goroutine. Gets queued or in
// flight fail with ErrClosed; later Gets too.
func (b *BatchReader) Close() {
	b.mu.Lock()
	b.mu.closed = true
	b.mu.Unlock()
	b.cancel()
	<-b.done
}

func (b *BatchReader) loop() {
	defer close(b.done)
	for {
		select {
		case <-b.ctx.Done():
			b.mu.Lock()
			queue := b.mu.queue
			b.mu.queue = nil
			b.mu.Unlock()
			for _, r := range queue {
				r.res <- readResult{err: ErrClosed}
			}
			return
		case <-b.wake:
		}
		b.mu.Lock()
		batch := b.mu.queue
		b.mu.queue = nil
		b.mu.Unlock()
		if len(batch) > 0 {
			b.serve(batch)
		}
	}
}

// serve reads the keys of batch, which were all requested before this call,
// and answers every request in it.
func (b *BatchReader) serve(batch []*readRequest) {
	live := batch[:0]
	for _, r := range batch {
		if r.ctx.Err() == nil { // a caller that left needs no answer
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}

	ctx, cancel := batchContext(b.ctx, live)
	defer cancel()
	kvs, err := b.read(ctx, distinctKeys(live))
	if err != nil && b.ctx.Err() != nil {
		err = ErrClosed
	}
	for _, r := range live {
		if err != nil {
			r.res <- readResult{err: err}
			continue
		}
		out := make(map[string]*mvccpb.KeyValue, len(r.keys))
		for _, k := range r.keys {
			if kv, ok := kvs[k]; ok {
				out[k] = kv
			}
		}
		r.res <- readResult{kvs: out}
	}
}

// batchContext lives as long as the most patient caller of the batch.
func batchContext(parent context.Context, reqs []*readRequest) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, r := range reqs {
		d, ok := r.ctx.Deadline()
		if !ok {
			return context.WithCancel(parent)
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(parent, latest)
}

func distinctKeys(reqs []*readRequest) []string {
	if len(reqs) == 1 && len(reqs[0].keys) == 1 {
		return reqs[0].keys
	}
	seen := make(map[string]struct{})
	var keys []string
	for _, r := range reqs {
		for _, k := range r.keys {
			if _, dup := seen[k]; !dup {
				seen[k] = struct{}{}
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// read fetches keys in as few read-only Txns as the limits allow, all at the
// revision the first one is served at.
func (b *BatchReader) read(ctx context.Context, keys []string) (map[string]*mvccpb.KeyValue, error) {
	chunks := splitKeys(keys)
	out := make(map[string]*mvccpb.KeyValue, len(keys))
	rev, err := b.readChunk(ctx, chunks[0], 0, out)
	if err != nil || len(chunks) == 1 {
		return out, err
	}
	rest := chunks[1:]
	parts := make([]map[string]*mvccpb.KeyValue, len(rest))
	errs := make([]error, len(rest))
	var wg sync.WaitGroup
	for i, chunk := range rest {
		parts[i] = make(map[string]*mvccpb.KeyValue, len(chunk))
		wg.Go(func() {
			_, errs[i] = b.readChunk(ctx, chunk, rev, parts[i])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, p := range parts {
		for k, kv := range p {
			out[k] = kv
		}
	}
	return out, nil
}

// readChunk reads keys in one read-only Txn (one linearizable round trip),
// at rev if rev > 0, into out, and returns the revision it read at.
func (b *BatchReader) readChunk(ctx context.Context, keys []string, rev int64, out map[string]*mvccpb.KeyValue) (int64, error) {
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		if rev > 0 {
			ops[i] = clientv3.OpGet(k, clientv3.WithRev(rev))
		} else {
			ops[i] = clientv3.OpGet(k)
		}
	}
	resp, err := b.kv.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, err
	}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().GetKvs() {
			out[string(kv.Key)] = kv
		}
	}
	return resp.Header.GetRevision(), nil
}

// splitKeys cuts keys into chunks that fit one Txn.
func splitKeys(keys []string) [][]string {
	var chunks [][]string
	start, size := 0, 0
	for i, k := range keys {
		if i > start && (i-start == maxTxnOpsPerRead || size+len(k) > maxTxnKeyBytes) {
			chunks = append(chunks, keys[start:i])
			start, size = i, 0
		}
		size += len(k)
	}
	return append(chunks, keys[start:])
}
