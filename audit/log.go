package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Errors returned by the Log.
var (
	// ErrUnavailable wraps every failure to make a record durable: the
	// caller fails closed on it.
	ErrUnavailable = errors.New("audit log unavailable")
	ErrClosed      = errors.New("audit log closed")
	ErrNotFound    = errors.New("audit event not found")
	ErrPruned      = errors.New("audit event pruned by retention")
)

const (
	defaultCheckpointEvery   = time.Second
	defaultCheckpointEntries = 10_000
	// maxBatch bounds one group commit, so a flood of records cannot make
	// one batch (and the time to the first answer) unbounded.
	maxBatch = 4096
)

// Config configures a Log.
type Config struct {
	// Dir is the log's own folder (DIR/audit).
	Dir string
	// FS is the file system the log writes through; nil is the OS's.
	// Tests inject errors here.
	FS vfs.FS
	// Node is the name of the node whose log this is.
	Node string
	// Signer signs checkpoints as Node. Required.
	Signer *Signer
	// Now is the clock events and checkpoints are stamped with.
	Now func() time.Time
	// CheckpointEvery and CheckpointEntries bound how much of the log a
	// checkpoint may leave uncovered (defaults 1s and 10,000).
	CheckpointEvery   time.Duration
	CheckpointEntries uint64
	// OnCheckpoint is called after each new checkpoint is durable, from the
	// log's goroutine: it must not block.
	OnCheckpoint func(*SignedCheckpoint)
	Logger       *slog.Logger
}

// Log is a node's append-only audit log. Every write runs on one goroutine
// (the writer), which owns the tree state; readers read Pebble directly.
// Safe for concurrent use.
//
// # Group commit
//
// Record hands its event to the writer and waits. The writer takes every
// record pending at that moment (up to maxBatch), numbers them, extends the
// hash chain and the Merkle tree, and applies them with their tree hashes
// as one Pebble batch without waiting for its sync; the syncer waits for
// that sync, then publishes the new size and answers them all. While one
// sync is under way the writer applies the next batches, and Pebble's WAL
// syncs everything written meanwhile at once: n concurrent records cost
// about one fsync, and the disk is never idle while records wait.
type Log struct {
	cfg Config
	db  *pebble.DB
	log *slog.Logger

	reqs chan *request
	ops  chan func()
	// syncq carries applied batches, in order, to the syncer, which waits
	// for each to be durable and only then answers and publishes it.
	syncq  chan *inflight
	stop   chan struct{}
	done   chan struct{}
	synced chan struct{}

	// Writer-owned state: the tree as applied (ahead of what is durable
	// while batches are in flight) and the newest checkpoint signed.
	frontier   Frontier
	chain      Hash
	lastSigned *SignedCheckpoint

	// size is the number of durable entries: readers never see more.
	size      atomic.Uint64
	pruned    atomic.Uint64
	latest    atomic.Pointer[SignedCheckpoint]
	witnessed atomic.Pointer[SignedCheckpoint]
	failed    atomic.Pointer[error]

	mu struct {
		sync.Mutex
		// grown is closed (and replaced) whenever the log grows.
		grown chan struct{}
	}
	closeOnce sync.Once
}

type request struct {
	e    Event
	err  error
	done chan struct{}
}

// inflight is a batch applied to Pebble whose sync the syncer awaits.
type inflight struct {
	b    *pebble.Batch
	reqs []*request
	// size is the log's size once b is durable; checkpoint, when set, is
	// the checkpoint b stores; then runs after either, with b's outcome.
	size       uint64
	checkpoint *SignedCheckpoint
	then       func(error)
}

// Keys in the log's Pebble.
const (
	prefixEntry      = 'e' // e BE64(i) -> chain(32) || event
	prefixTree       = 't' // t level BE64(i) -> subtree hash
	prefixCheckpoint = 'c' // c BE64(size) BE64(pruned) -> note
	prefixDecision   = 'd' // d decision id -> BE64(i)
)

var (
	keyWitnessed = []byte("w")
	keyPrune     = []byte("p")
	keyNode      = []byte("m/node")
	keyNodeKey   = []byte("k/node")
	keyWitness   = []byte("k/w/")
)

func entryKey(i uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixEntry}, i)
}

func treeKey(level uint8, i uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixTree, level}, i)
}

// checkpointKey orders checkpoints by size, then by pruned count: a prune
// at the size of a witnessed checkpoint signs a new one beside it, never
// over it.
func checkpointKey(size, pruned uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{prefixCheckpoint}, size), pruned)
}

func decisionKey(id string) []byte { return append([]byte{prefixDecision}, id...) }

func chainHash(prev, leaf Hash) Hash {
	var buf [64]byte
	copy(buf[:32], prev[:])
	copy(buf[32:], leaf[:])
	return sha256.Sum256(buf[:])
}

// pruneRecord is stored at keyPrune: entries [0, Pruned) are gone; Chain
// is the hash chain at entry Pruned-1, where verification resumes.
type pruneRecord struct {
	Pruned uint64 `json:"pruned"`
	Chain  Hash   `json:"chain"`
}

// pebbleLogger turns Pebble's fatal errors (a failed WAL write or sync)
// into panics the writer recovers from, instead of an exit: the log then
// refuses every record, and the node stays up to say so.
type pebbleLogger struct{ log *slog.Logger }

type pebbleFatal struct{ msg string }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	panic(pebbleFatal{fmt.Sprintf(format, args...)})
}

func pebbleOptions(fs vfs.FS, log *slog.Logger, readOnly bool) *pebble.Options {
	if fs == nil {
		fs = vfs.Default
	}
	// The log is written in order and read rarely: a large memtable and
	// a high L0 threshold mean fewer, larger flushes and compactions, and
	// no block compression (events are small JSON; CPU is the scarce part
	// on the request path, not disk).
	o := &pebble.Options{FS: fs, Logger: pebbleLogger{log}, ReadOnly: readOnly,
		MemTableSize: 64 << 20, L0CompactionThreshold: 8, L0StopWritesThreshold: 64}
	o.EnsureDefaults()
	for i := range o.Levels {
		o.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	}
	return o
}

// Open opens (or creates) the log in cfg.Dir and starts its writer.
func Open(cfg Config) (*Log, error) {
	if cfg.Signer == nil || cfg.Node == "" || cfg.Dir == "" {
		return nil, errors.New("audit: dir, node and signer are required")
	}
	if cfg.Signer.Name() != cfg.Node {
		return nil, fmt.Errorf("audit: signer %s cannot sign node %s's log", cfg.Signer.Name(), cfg.Node)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = defaultCheckpointEvery
	}
	if cfg.CheckpointEntries == 0 {
		cfg.CheckpointEntries = defaultCheckpointEntries
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "audit")
	db, err := pebble.Open(cfg.Dir, pebbleOptions(cfg.FS, log, false))
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", cfg.Dir, err)
	}
	l := &Log{cfg: cfg, db: db, log: log, reqs: make(chan *request, maxBatch), ops: make(chan func()),
		syncq: make(chan *inflight, 256), stop: make(chan struct{}), done: make(chan struct{}), synced: make(chan struct{})}
	l.mu.grown = make(chan struct{})
	if err := l.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open audit log %s: %w", cfg.Dir, err)
	}
	go l.run()
	go l.syncer()
	return l, nil
}

// load restores the writer's state from disk.
func (l *Log) load() error {
	if v, ok, err := l.getCopy(keyNode); err != nil {
		return err
	} else if ok && string(v) != l.cfg.Node {
		return fmt.Errorf("the log is node %s's, not %s's", v, l.cfg.Node)
	}
	pr, err := readPrune(l.db)
	if err != nil {
		return err
	}
	size := pr.Pruned
	l.chain = pr.Chain
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: entryKey(0), UpperBound: []byte{prefixEntry + 1}})
	if err != nil {
		return err
	}
	if it.Last() {
		i := binary.BigEndian.Uint64(it.Key()[1:])
		if len(it.Value()) < 32 {
			it.Close()
			return fmt.Errorf("entry %d is damaged: run `unum audit verify --offline`", i)
		}
		size = i + 1
		copy(l.chain[:], it.Value()[:32])
	}
	if err := it.Close(); err != nil {
		return err
	}
	f, err := frontierAt(l.db, size)
	if err != nil {
		return err
	}
	l.frontier = *f
	l.size.Store(size)
	l.pruned.Store(pr.Pruned)
	if sc, err := lastCheckpoint(l.db); err != nil {
		return err
	} else if sc != nil {
		l.latest.Store(sc)
		l.lastSigned = sc
	}
	if v, ok, err := l.getCopy(keyWitnessed); err != nil {
		return err
	} else if ok {
		sc, err := ParseCheckpoint(v)
		if err != nil {
			return fmt.Errorf("stored witnessed checkpoint: %w", err)
		}
		l.witnessed.Store(sc)
	}
	b := l.db.NewBatch()
	b.Set(keyNode, []byte(l.cfg.Node), nil)
	b.Set(keyNodeKey, l.cfg.Signer.PublicKeyset(), nil)
	return l.apply(b)
}

// frontierAt rebuilds the tree's frontier at size from the stored subtree
// hashes: one per set bit of size.
func frontierAt(db pebbleReader, size uint64) (*Frontier, error) {
	var nodes []Hash
	var start uint64
	for b := 63; b >= 0; b-- {
		if size&(1<<b) == 0 {
			continue
		}
		h, err := readHash(db, treeKey(uint8(b), start>>b))
		if err != nil {
			return nil, fmt.Errorf("tree hash of entries [%d,%d): %w", start, start+1<<b, err)
		}
		nodes = append(nodes, h)
		start += 1 << b
	}
	return NewFrontier(size, nodes)
}

type pebbleReader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func readHash(db pebbleReader, key []byte) (Hash, error) {
	v, c, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return Hash{}, errors.New("missing")
	}
	if err != nil {
		return Hash{}, err
	}
	defer c.Close()
	if len(v) != len(Hash{}) {
		return Hash{}, fmt.Errorf("damaged: %d bytes", len(v))
	}
	return Hash(v), nil
}

func readPrune(db pebbleReader) (pruneRecord, error) {
	var pr pruneRecord
	v, c, err := db.Get(keyPrune)
	if errors.Is(err, pebble.ErrNotFound) {
		return pr, nil
	}
	if err != nil {
		return pr, err
	}
	defer c.Close()
	if err := json.Unmarshal(v, &pr); err != nil {
		return pr, fmt.Errorf("prune record: %w", err)
	}
	return pr, nil
}

func lastCheckpoint(db pebbleReader) (*SignedCheckpoint, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixCheckpoint}, UpperBound: []byte{prefixCheckpoint + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	if !it.Last() {
		return nil, it.Error()
	}
	sc, err := ParseCheckpoint(slices.Clone(it.Value()))
	if err != nil {
		return nil, fmt.Errorf("stored checkpoint: %w", err)
	}
	return sc, nil
}

func (l *Log) getCopy(key []byte) ([]byte, bool, error) {
	v, c, err := l.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer c.Close()
	return slices.Clone(v), true, nil
}

// apply commits b durably; applyAsync applies it and leaves the wait for
// its sync to the caller (SyncWait). Pebble's fatal errors arrive as
// panics (see pebbleLogger); they and ordinary errors mark the log failed.
func (l *Log) apply(b *pebble.Batch) error {
	return l.guard(func() error { return b.Commit(pebble.Sync) })
}

func (l *Log) applyAsync(b *pebble.Batch) error {
	return l.guard(func() error { return l.db.ApplyNoSyncWait(b, pebble.Sync) })
}

func (l *Log) guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fatal, ok := r.(pebbleFatal)
			if !ok {
				panic(r)
			}
			err = errors.New(fatal.msg)
		}
		if err != nil {
			l.fail(err)
			err = *l.failed.Load()
		}
	}()
	return f()
}

// fail marks the log failed: sticky, since Pebble's commit pipeline is
// unusable after a failed WAL write or sync.
func (l *Log) fail(err error) {
	err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	if l.failed.CompareAndSwap(nil, &err) {
		l.log.Error("audit log write failed; refusing records until the node restarts", "err", err)
	}
}

// Err is nil while the log can record, else why it cannot.
func (l *Log) Err() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Size is the number of entries ever appended (pruned ones included).
func (l *Log) Size() uint64 { return l.size.Load() }

// Pruned is the number of leading entries retention removed.
func (l *Log) Pruned() uint64 { return l.pruned.Load() }

// Node is the name of the node whose log this is.
func (l *Log) Node() string { return l.cfg.Node }

// Latest is the newest checkpoint (nil before the first).
func (l *Log) Latest() *SignedCheckpoint { return l.latest.Load() }

// LatestWitnessed is the newest countersigned checkpoint (nil before the
// first).
func (l *Log) LatestWitnessed() *SignedCheckpoint { return l.witnessed.Load() }

// Record appends e and returns once it is durable. It fills in e's V, ID,
// Node and Time (the log's clock, whatever e held). An error wraps ErrUnavailable when the log
// cannot write, or describes what is wrong with e.
func (l *Log) Record(ctx context.Context, e *Event) error {
	if err := l.Err(); err != nil {
		return err
	}
	r := &request{e: *e, done: make(chan struct{})}
	select {
	case l.reqs <- r:
	case <-l.stop:
		return fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-r.done:
	case <-l.synced:
		// Closed: the request may have slipped in after the writer
		// drained the queue; nobody will answer it.
		select {
		case <-r.done:
		default:
			return fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
		}
	case <-ctx.Done():
		// It may still become durable; the caller fails closed anyway.
		return ctx.Err()
	}
	if r.err == nil {
		e.V, e.ID, e.Node, e.Time = r.e.V, r.e.ID, r.e.Node, r.e.Time
	}
	return r.err
}

var _ Recorder = (*Log)(nil)

func (l *Log) run() {
	defer close(l.done)
	defer close(l.syncq)
	tick := time.NewTicker(l.cfg.CheckpointEvery)
	defer tick.Stop()
	batch := make([]*request, 0, maxBatch)
	for {
		select {
		case <-l.stop:
			l.drain()
			return
		case f := <-l.ops:
			f()
		case <-tick.C:
			l.maybeCheckpoint(false, nil)
		case r := <-l.reqs:
			batch = append(batch[:0], r)
		more:
			for len(batch) < maxBatch {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
				default:
					break more
				}
			}
			l.commit(batch)
			if l.frontier.Size()-l.signedSize() >= l.cfg.CheckpointEntries {
				l.maybeCheckpoint(true, nil)
			}
		}
	}
}

// drain answers records still queued at Close.
func (l *Log) drain() {
	for {
		select {
		case r := <-l.reqs:
			r.err = fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
			close(r.done)
		default:
			return
		}
	}
}

func (l *Log) signedSize() uint64 {
	if l.lastSigned != nil {
		return l.lastSigned.Size
	}
	return 0
}

// syncer waits for each applied batch to be durable, in order, then
// publishes it and answers its records.
func (l *Log) syncer() {
	defer close(l.synced)
	for it := range l.syncq {
		err := l.Err()
		if err == nil {
			if err = it.b.SyncWait(); err != nil {
				l.fail(err)
				err = l.Err()
			}
		}
		it.b.Close()
		if err == nil {
			if it.checkpoint != nil {
				l.latest.Store(it.checkpoint)
				if l.cfg.OnCheckpoint != nil {
					l.cfg.OnCheckpoint(it.checkpoint)
				}
			} else if it.size > l.size.Load() {
				l.size.Store(it.size)
				l.mu.Lock()
				close(l.mu.grown)
				l.mu.grown = make(chan struct{})
				l.mu.Unlock()
			}
		}
		for _, r := range it.reqs {
			if r.err == nil {
				r.err = err
			}
			close(r.done)
		}
		if it.then != nil {
			it.then(err)
		}
	}
}

// commit writes one group of records.
func (l *Log) commit(reqs []*request) {
	if err := l.Err(); err != nil {
		for _, r := range reqs {
			r.err = err
			close(r.done)
		}
		return
	}
	f := Frontier{size: l.frontier.size, nodes: slices.Clone(l.frontier.nodes)}
	chain := l.chain
	now := l.cfg.Now()
	b := l.db.NewBatch()
	written := 0
	for _, r := range reqs {
		e := &r.e
		i := f.Size()
		// The log stamps every event itself: times then only grow along
		// the log (retention relies on it), whatever a caller's clock says.
		e.V, e.Node, e.ID, e.Time = Version, l.cfg.Node, EventID(l.cfg.Node, i), now
		data, err := e.Encode()
		if err != nil {
			r.err = err
			continue
		}
		leaf := LeafHash(data)
		chain = chainHash(chain, leaf)
		b.Set(entryKey(i), append(chain[:], data...), nil)
		f.Append(leaf, func(s Subtree) { b.Set(treeKey(s.Level, s.Index), s.Hash[:], nil) })
		// Only the decision itself is indexed: events recorded after the
		// action it allowed carry its id too (to link them), and must not
		// take its place.
		if e.Kind == KindAuthz && e.DecisionID != "" {
			b.Set(decisionKey(e.DecisionID), binary.BigEndian.AppendUint64(nil, i), nil)
		}
		written++
	}
	if written == 0 {
		for _, r := range reqs {
			close(r.done)
		}
		return
	}
	if err := l.applyAsync(b); err != nil {
		for _, r := range reqs {
			if r.err == nil {
				r.err = err
			}
			close(r.done)
		}
		return
	}
	l.frontier, l.chain = f, chain
	// reqs is the writer's buffer, reused for the next group.
	l.syncq <- &inflight{b: b, reqs: slices.Clone(reqs), size: f.Size()}
}

// maybeCheckpoint signs a checkpoint of the tree as applied when it grew
// (or was pruned) since the last one; force makes one even of an empty
// log. then, if set, runs once the checkpoint is durable (or failed), with
// the checkpoint.
func (l *Log) maybeCheckpoint(force bool, then func(*SignedCheckpoint, error)) {
	done := func(sc *SignedCheckpoint, err error) {
		if then != nil {
			then(sc, err)
		}
	}
	last := l.lastSigned
	size, pruned := l.frontier.Size(), l.Pruned()
	if last != nil && last.Size == size && last.Pruned == pruned {
		// Nothing new; wait for it to be durable like any other.
		l.syncq <- &inflight{b: l.db.NewBatch(), then: func(err error) { done(last, err) }}
		return
	}
	if size == 0 && !force {
		done(nil, nil)
		return
	}
	if err := l.Err(); err != nil {
		done(nil, err)
		return
	}
	sc, err := l.cfg.Signer.Sign(Checkpoint{Node: l.cfg.Node, Size: size, Root: l.frontier.Root(), Time: l.cfg.Now().UTC(), Pruned: pruned})
	if err != nil {
		done(nil, err)
		return
	}
	b := l.db.NewBatch()
	b.Set(checkpointKey(size, pruned), sc.Marshal(), nil)
	if err := l.applyAsync(b); err != nil {
		done(nil, err)
		return
	}
	l.lastSigned = sc
	l.syncq <- &inflight{b: b, checkpoint: sc, then: func(err error) { done(sc, err) }}
}

// do runs f on the writer goroutine.
func (l *Log) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case l.ops <- func() { f(); close(done) }:
	case <-l.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-l.done:
		return ErrClosed
	}
}

// Checkpoint signs a checkpoint of the log as it is now (or returns the
// newest one when nothing changed since).
func (l *Log) Checkpoint(ctx context.Context) (*SignedCheckpoint, error) {
	type result struct {
		sc  *SignedCheckpoint
		err error
	}
	res := make(chan result, 1)
	if err := l.do(ctx, func() {
		l.maybeCheckpoint(true, func(sc *SignedCheckpoint, err error) { res <- result{sc, err} })
	}); err != nil {
		return nil, err
	}
	select {
	case r := <-res:
		return r.sc, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// StoreCosigned keeps a countersigned copy of one of this log's own
// checkpoints: its body must be exactly the stored one's.
func (l *Log) StoreCosigned(sc *SignedCheckpoint) error {
	var err error
	if derr := l.do(context.Background(), func() {
		v, ok, gerr := l.getCopy(checkpointKey(sc.Size, sc.Pruned))
		if gerr != nil {
			err = gerr
			return
		}
		if !ok {
			err = fmt.Errorf("no checkpoint of size %d in this log", sc.Size)
			return
		}
		mine, perr := ParseCheckpoint(v)
		if perr != nil {
			err = perr
			return
		}
		if !bytes.Equal(mine.Body(), sc.Body()) || !bytes.Equal(mine.Sig, sc.Sig) {
			err = fmt.Errorf("countersigned checkpoint of size %d is not this log's", sc.Size)
			return
		}
		note := sc.Marshal()
		b := l.db.NewBatch()
		b.Set(checkpointKey(sc.Size, sc.Pruned), note, nil)
		if w := l.witnessed.Load(); w == nil || sc.Size >= w.Size {
			b.Set(keyWitnessed, note, nil)
		}
		if err = l.apply(b); err != nil {
			return
		}
		if w := l.witnessed.Load(); w == nil || sc.Size >= w.Size {
			l.witnessed.Store(sc)
		}
		if last := l.latest.Load(); last != nil && last.Size == sc.Size && last.Time.Equal(sc.Time) {
			l.latest.Store(sc)
		}
		if l.lastSigned != nil && l.lastSigned.Size == sc.Size && l.lastSigned.Time.Equal(sc.Time) {
			l.lastSigned = sc
		}
	}); derr != nil {
		return derr
	}
	return err
}

// RememberKeys keeps a copy of the published keys beside the log, so an
// offline verify without --keys can still check countersignatures (with
// keys it then reports as unauthenticated).
func (l *Log) RememberKeys(k *Keys) error {
	b := l.db.NewBatch()
	for name, pub := range k.Witnesses {
		b.Set(append(slices.Clone(keyWitness), name...), pub, nil)
	}
	return l.apply(b)
}

// Get returns entry i's event as stored.
func (l *Log) Get(i uint64) ([]byte, error) {
	if i < l.Pruned() {
		return nil, fmt.Errorf("%w: %s", ErrPruned, EventID(l.cfg.Node, i))
	}
	if i >= l.Size() {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, EventID(l.cfg.Node, i))
	}
	v, ok, err := l.getCopy(entryKey(i))
	if err != nil {
		return nil, err
	}
	if !ok || len(v) < 32 {
		return nil, fmt.Errorf("%w: %s is missing from the log", ErrNotFound, EventID(l.cfg.Node, i))
	}
	return v[32:], nil
}

// FindDecision returns the authorization event recording decision id.
func (l *Log) FindDecision(id string) (uint64, []byte, error) {
	v, ok, err := l.getCopy(decisionKey(id))
	if err != nil {
		return 0, nil, err
	}
	if !ok || len(v) != 8 {
		return 0, nil, fmt.Errorf("%w: no decision %s in %s's log", ErrNotFound, id, l.cfg.Node)
	}
	i := binary.BigEndian.Uint64(v)
	raw, err := l.Get(i)
	return i, raw, err
}

// Scan calls fn with entries [from, Size()) in order until fn returns
// false. raw is fn's to keep.
func (l *Log) Scan(ctx context.Context, from uint64, fn func(i uint64, raw []byte) bool) error {
	return l.scan(ctx, max(from, l.Pruned()), l.Size(), false, fn)
}

// ScanBackward calls fn with entries below before, newest first, until fn
// returns false.
func (l *Log) ScanBackward(ctx context.Context, before uint64, fn func(i uint64, raw []byte) bool) error {
	return l.scan(ctx, l.Pruned(), min(before, l.Size()), true, fn)
}

func (l *Log) scan(ctx context.Context, lo, hi uint64, backward bool, fn func(i uint64, raw []byte) bool) error {
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: entryKey(lo), UpperBound: entryKey(hi)})
	if err != nil {
		return err
	}
	defer it.Close()
	first, next := it.First, it.Next
	if backward {
		first, next = it.Last, it.Prev
	}
	for ok := first(); ok; ok = next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		v := it.Value()
		if len(v) < 32 {
			continue
		}
		if !fn(binary.BigEndian.Uint64(it.Key()[1:]), slices.Clone(v[32:])) {
			return nil
		}
	}
	return it.Error()
}

// Wait returns once the log holds more than size entries, with its new
// size.
func (l *Log) Wait(ctx context.Context, size uint64) (uint64, error) {
	for {
		l.mu.Lock()
		grown := l.mu.grown
		l.mu.Unlock()
		if s := l.Size(); s > size {
			return s, nil
		}
		select {
		case <-grown:
		case <-l.stop:
			return l.Size(), ErrClosed
		case <-ctx.Done():
			return l.Size(), ctx.Err()
		}
	}
}

// rangeHasher reads the tree of db: every complete aligned subtree is
// stored; the right edge is composed from them.
func rangeHasher(db pebbleReader) RangeHasher {
	var h RangeHasher
	h = func(lo, hi uint64) (Hash, error) {
		n := hi - lo
		if n&(n-1) == 0 && lo%n == 0 {
			level := uint8(bits.TrailingZeros64(n))
			v, err := readHash(db, treeKey(level, lo>>level))
			if err != nil {
				return Hash{}, fmt.Errorf("tree hash of entries [%d,%d): %w", lo, hi, err)
			}
			return v, nil
		}
		k := splitPoint(n)
		left, err := h(lo, lo+k)
		if err != nil {
			return Hash{}, err
		}
		right, err := h(lo+k, hi)
		if err != nil {
			return Hash{}, err
		}
		return NodeHash(left, right), nil
	}
	return h
}

// InclusionProof proves entry i is in the tree of size entries.
func (l *Log) InclusionProof(i, size uint64) ([]Hash, error) {
	if size > l.Size() {
		return nil, fmt.Errorf("inclusion proof: the log has %d entries, not %d", l.Size(), size)
	}
	return InclusionProof(i, size, rangeHasher(l.db))
}

// ConsistencyProof proves the tree of old entries is a prefix of the tree
// of size entries.
func (l *Log) ConsistencyProof(old, size uint64) ([]Hash, error) {
	if size > l.Size() {
		return nil, fmt.Errorf("consistency proof: the log has %d entries, not %d", l.Size(), size)
	}
	return ConsistencyProof(old, size, rangeHasher(l.db))
}

// Close stops the writer (queued records fail) and closes the store.
func (l *Log) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
		<-l.synced
		func() {
			// A store whose commit pipeline failed may panic on close.
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("close audit log: %v", r)
				}
			}()
			err = l.db.Close()
		}()
	})
	return err
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
