package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Prune removes entries [Pruned(), before) for retention, never past the
// newest witnessed checkpoint: what no witness has countersigned is never
// dropped. It keeps the tree's hashes (proofs and roots of later
// checkpoints still verify), stores where the hash chain resumes, signs a
// checkpoint whose pruned line says how many are gone, and records an
// audit.prune event. It returns the new number of pruned entries.
func (l *Log) Prune(ctx context.Context, before uint64) (uint64, error) {
	var from, to uint64
	var err error
	signed := make(chan error, 1)
	if derr := l.do(ctx, func() {
		from = l.Pruned()
		to = before
		if w := l.witnessed.Load(); w == nil {
			to = from
		} else {
			to = min(to, w.Size)
		}
		to = min(to, l.Size())
		if to <= from {
			return
		}
		var last []byte
		var ok bool
		if last, ok, err = l.getCopy(entryKey(to - 1)); err != nil {
			return
		} else if !ok || len(last) < 32 {
			err = fmt.Errorf("prune: entry %d is missing", to-1)
			return
		}
		pr := pruneRecord{Pruned: to, Chain: Hash(last[:32])}
		rec, _ := json.Marshal(pr)
		b := l.db.NewBatch()
		if err = b.DeleteRange(entryKey(from), entryKey(to), nil); err != nil {
			return
		}
		b.Set(keyPrune, rec, nil)
		if err = l.apply(b); err != nil {
			return
		}
		l.pruned.Store(to)
		l.maybeCheckpoint(true, func(_ *SignedCheckpoint, cerr error) { signed <- cerr })
	}); derr != nil {
		return l.Pruned(), derr
	}
	if to > from && err == nil {
		err = <-signed
	}
	if err != nil || to <= from {
		return l.Pruned(), err
	}
	ev := Event{Kind: KindAudit, Action: ActionAuditPrune, Outcome: Allow,
		Resource: "audit/-/log"}.WithDetails(map[string]uint64{"from": from, "to": to})
	return to, l.Record(ctx, &ev)
}

// RetentionPoint is the index before which entries are older than maxAge
// (0: no age limit) or beyond maxBytes of entries (0: no size limit),
// counted from the newest. Prune caps it at the witnessed size.
func (l *Log) RetentionPoint(ctx context.Context, now time.Time, maxAge time.Duration, maxBytes int64) (uint64, error) {
	point := l.Pruned()
	if maxAge > 0 {
		cutoff := now.Add(-maxAge)
		// Entries are appended in time order (one writer stamps them), so
		// the first one at or after the cutoff ends the run.
		err := l.Scan(ctx, point, func(i uint64, raw []byte) bool {
			t, ok := eventTime(raw)
			if ok && !t.Before(cutoff) {
				return false
			}
			point = i + 1
			return true
		})
		if err != nil {
			return 0, err
		}
	}
	if maxBytes > 0 {
		var total int64
		var keepFrom uint64
		err := l.ScanBackward(ctx, l.Size(), func(i uint64, raw []byte) bool {
			total += int64(len(raw)) + 32
			if total > maxBytes {
				keepFrom = i + 1
				return false
			}
			return true
		})
		if err != nil {
			return 0, err
		}
		point = max(point, keepFrom)
	}
	return point, nil
}

func eventTime(raw []byte) (time.Time, bool) {
	var t struct {
		Time time.Time `json:"time"`
	}
	if json.Unmarshal(raw, &t) != nil {
		return time.Time{}, false
	}
	return t.Time, true
}
