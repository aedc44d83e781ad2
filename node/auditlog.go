package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/control"
	"github.com/unumos/unum/internal/metrics/label"
	"github.com/unumos/unum/internal/seal"
	"github.com/unumos/unum/policy"
)

// Rate of refusals from unauthenticated peers (refused handshakes and
// enrolment calls) recorded one by one, per action (audit.Limiter keeps a
// bucket for each); beyond it they are counted and summarized every
// refusalSummaryEvery (T-062).
const (
	refusalRate         = 2
	refusalBurst        = 50
	refusalSummaryEvery = 10 * time.Second
)

// newRefusalLimiter is the node's recorder of refusals anyone can cause
// (refused handshakes, tokens, Workload API callers): rec behind
// audit.Limiter at refusalRate per action; onSuppressed counts what it
// only summarizes.
func newRefusalLimiter(rec audit.Recorder, onSuppressed func()) *audit.Limiter {
	return audit.NewLimiter(rec, audit.LimiterConfig{Rate: refusalRate, Burst: refusalBurst, OnSuppressed: onSuppressed})
}

// openAuditLog opens the audit log of the node in l, creating its signing
// key on first use. fsys is nil for the OS's file system.
func openAuditLog(l Layout, name string, fsys vfs.FS, log *slog.Logger) (*audit.Log, error) {
	signer, err := audit.LoadOrCreateSigner(name, l.AuditKey())
	if err != nil {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	return audit.Open(audit.Config{Dir: l.AuditDir(), FS: fsys, Node: name, Signer: signer, Logger: log})
}

// decisionLog is the node's policy.DecisionLog: every decision becomes an
// authz event in the node's audit log before the call runs, and is counted.
// A decision the log cannot record is refused (the Decider fails closed on
// our error) unless it is unprivileged and audit.on_failure is
// allow-and-alert: then it is let through, counted, logged, and one
// audit.unavailable event records how many once the log records again
// (across a restart too: see saveUnrecorded).
//
// The in-memory ring keeps the decisions a shadow bundle would have
// changed, for shadow reports.
type decisionLog struct {
	n       *node
	shadows *policy.Ring

	// unrecorded counts decisions let through unrecorded since the last
	// audit.unavailable event; first is when the first of them was made.
	mu         sync.Mutex
	unrecorded uint64
	first      time.Time
	// reporting is set while one goroutine writes the audit.unavailable
	// event, so concurrent successes do not each try.
	reporting atomic.Bool
}

var _ policy.DecisionLog = (*decisionLog)(nil)

// UnavailableDetails are the details of an audit.unavailable event.
type UnavailableDetails struct {
	// Unrecorded is how many decisions were let through (or refused, for
	// denials) without a record, between First and Last.
	Unrecorded   uint64    `json:"unrecorded"`
	First        time.Time `json:"first"`
	Last         time.Time `json:"last"`
	OnFailure    string    `json:"on_failure"`
	AfterRestart bool      `json:"after_restart,omitempty"`
}

// Record implements policy.DecisionLog.
func (l *decisionLog) Record(ctx context.Context, r *policy.Record) error {
	n := l.n
	outcome := label.DecisionDeny
	switch {
	case r.Err != "":
		outcome = label.DecisionRefused
	case r.Result.Allow:
		outcome = label.DecisionAllow
	}
	n.obs.m.Decision(outcome)
	if r.Shadow != nil && r.Shadow.Changed() {
		_ = l.shadows.Record(ctx, r)
	}
	if n.audit == nil {
		return errors.New("this node has no audit log")
	}
	e := control.DecisionEvent(r)
	err := n.audit.Record(ctx, &e)
	if err == nil {
		l.reportUnrecorded(ctx)
		return nil
	}
	if ctx.Err() != nil || r.Result.Privileged || n.auditOnFailure() != audit.OnFailureAllowAndAlert {
		return err
	}
	l.mu.Lock()
	if l.unrecorded == 0 {
		l.first = r.Time
	}
	l.unrecorded++
	count := l.unrecorded
	l.mu.Unlock()
	n.obs.m.AuditUnrecorded()
	// One line per power of two: loud at first, bounded under load.
	if count&(count-1) == 0 {
		n.log.Error("audit log cannot record decisions: letting unprivileged calls through (audit.on_failure allow-and-alert)",
			"unrecorded", count, "decision_id", r.ID, "action", r.Input.Action, "err", err)
	}
	return nil
}

// takeUnrecorded returns and resets the count of unrecorded decisions.
func (l *decisionLog) takeUnrecorded() (uint64, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, f := l.unrecorded, l.first
	l.unrecorded, l.first = 0, time.Time{}
	return c, f
}

// putBack returns a count that could not be recorded.
func (l *decisionLog) putBack(c uint64, first time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unrecorded == 0 || first.Before(l.first) {
		l.first = first
	}
	l.unrecorded += c
}

// reportUnrecorded records one audit.unavailable event for the decisions
// let through unrecorded, once the log records again.
func (l *decisionLog) reportUnrecorded(ctx context.Context) {
	l.mu.Lock()
	pending := l.unrecorded > 0
	l.mu.Unlock()
	if !pending || !l.reporting.CompareAndSwap(false, true) {
		return
	}
	defer l.reporting.Store(false)
	c, first := l.takeUnrecorded()
	if c == 0 {
		return
	}
	if err := l.n.recordUnavailable(ctx, UnavailableDetails{Unrecorded: c, First: first.UTC(), Last: time.Now().UTC(), OnFailure: audit.OnFailureAllowAndAlert}); err != nil {
		l.putBack(c, first)
	}
}

// recordUnavailable records an audit.unavailable event (an alert: outcome
// error).
func (n *node) recordUnavailable(ctx context.Context, d UnavailableDetails) error {
	e := audit.Event{Kind: audit.KindAudit, Action: audit.ActionAuditUnavailable, Subject: n.id.String(), Outcome: audit.Error,
		Reasons: []string{fmt.Sprintf("%d decisions were made while the audit log could not record them", d.Unrecorded)}}
	e = e.WithDetails(d)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := n.audit.Record(ctx, &e); err != nil {
		return err
	}
	n.log.Warn("audit log records again; unrecorded decisions recorded as one audit.unavailable event", "unrecorded", d.Unrecorded, "event", e.ID)
	return nil
}

// unrecordedFile keeps the count of unrecorded decisions across a restart
// (the log's failure is sticky until then), outside the audit log.
func (l Layout) unrecordedFile() string { return l.path("audit-unrecorded.json") }

// saveUnrecorded writes the pending count of unrecorded decisions to
// DIR/audit-unrecorded.json (at shutdown), so the next run records it.
func (n *node) saveUnrecorded() {
	c, first := n.decisionLog.takeUnrecorded()
	if c == 0 {
		return
	}
	d := UnavailableDetails{Unrecorded: c, First: first.UTC(), Last: time.Now().UTC(), OnFailure: audit.OnFailureAllowAndAlert, AfterRestart: true}
	b, _ := json.Marshal(d)
	if err := seal.WriteFileAtomic(n.l.unrecordedFile(), b, 0o600); err != nil {
		n.log.Error("save the count of unrecorded decisions", "unrecorded", c, "err", err)
	}
}

// recordSavedUnrecorded records the count a previous run saved, then
// removes it.
func (n *node) recordSavedUnrecorded(ctx context.Context) error {
	b, err := os.ReadFile(n.l.unrecordedFile())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var d UnavailableDetails
	if err := json.Unmarshal(b, &d); err != nil {
		return fmt.Errorf("%s: %w", n.l.unrecordedFile(), err)
	}
	if err := n.recordUnavailable(ctx, d); err != nil {
		return err
	}
	return os.Remove(n.l.unrecordedFile())
}

// recordEvent records what the node did on its own, after it happened: a
// failure is logged (the node's audit health shows it), not returned.
func (n *node) recordEvent(e audit.Event) {
	if n.audit == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.audit.Record(ctx, &e); err != nil {
		n.log.Warn("audit record failed", "action", e.Action, "err", err)
	}
}

// recordNodeLeave records that the node shut down cleanly: the last event
// of a run.
func (n *node) recordNodeLeave() {
	n.recordEvent(audit.Event{Kind: audit.KindNode, Action: audit.ActionNodeLeave, Subject: n.id.String(), Outcome: audit.Allow,
		Resource: "node/-/" + n.cfg.Name, Reasons: []string{"clean shutdown"}})
}

// # Break-glass inbox
//
// `unum admin recover` must record what it does in the node's audit log.
// With the node stopped it opens the log itself; while the node runs the
// log is the node's (Pebble locks it), so recover drops the event in
// DIR/audit-inbox/ (0700, the node's own user) and waits until the node
// has recorded and removed it. The node takes only recovery events from
// there, and marks them as such.

// AuditInbox is where local tools hand the running node events to record.
func (l Layout) AuditInbox() string { return l.path("audit-inbox") }

const (
	inboxPoll = 200 * time.Millisecond
	// inboxWait is how long recover waits for a running node.
	inboxWait = 15 * time.Second
	// maxInboxFile bounds what the node reads from one inbox file.
	maxInboxFile = 16 << 10
)

// rejectedSuffix marks an inbox file the node would not record.
const rejectedSuffix = ".rejected"

// inboxLoop records the inbox's events until ctx ends.
func (n *node) inboxLoop(ctx context.Context) {
	if err := os.MkdirAll(n.l.AuditInbox(), 0o700); err != nil {
		n.log.Error("audit inbox", "err", err)
		return
	}
	t := time.NewTicker(inboxPoll)
	defer t.Stop()
	for {
		n.drainInbox(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *node) drainInbox(ctx context.Context) {
	names, err := os.ReadDir(n.l.AuditInbox())
	if err != nil {
		return
	}
	for _, d := range names {
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".json") {
			continue
		}
		path := filepath.Join(n.l.AuditInbox(), d.Name())
		e, err := readInboxEvent(path)
		if err != nil {
			// Renamed, not removed: the waiting tool must not take a
			// vanished file for a recorded event.
			n.log.Warn("audit inbox: rejected", "file", path, "err", err)
			if rerr := os.Rename(path, path+rejectedSuffix); rerr != nil {
				_ = os.Remove(path)
			}
			continue
		}
		if err := n.audit.Record(ctx, e); err != nil {
			// Left in place: recover is waiting, and fails closed when the
			// node cannot record it.
			n.log.Error("audit inbox: cannot record", "file", path, "err", err)
			continue
		}
		_ = os.Remove(path)
	}
}

// readInboxEvent reads one inbox file: a recovery event only.
func readInboxEvent(path string) (*audit.Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, maxInboxFile+1)
	k, _ := f.Read(b)
	if k > maxInboxFile {
		return nil, errors.New("too large")
	}
	var e audit.Event
	if err := json.Unmarshal(b[:k], &e); err != nil {
		return nil, err
	}
	if e.Kind != audit.KindRecovery || e.Action != audit.ActionRecover {
		return nil, fmt.Errorf("a %s/%s event: the inbox takes recovery events only", e.Kind, e.Action)
	}
	// The log assigns these.
	e.V, e.ID, e.Node = 0, "", ""
	e.Reasons = append(e.Reasons, "handed to the running node through its audit inbox")
	return &e, nil
}

// recordRecovery records a break-glass recovery in the log of the node in
// l: itself when the node is stopped, else through the running node's
// inbox. It returns only once the event is durable.
func recordRecovery(ctx context.Context, l Layout, name string, e *audit.Event) error {
	log, openErr := openAuditLog(l, name, nil, slog.New(slog.DiscardHandler))
	if openErr == nil {
		err := log.Record(ctx, e)
		if cerr := log.Close(); err == nil {
			err = cerr
		}
		return err
	}
	// Most likely the node runs and holds the log: hand it the event.
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(l.AuditInbox(), 0o700); err != nil {
		return fmt.Errorf("%w; audit inbox: %w", openErr, err)
	}
	path := filepath.Join(l.AuditInbox(), fmt.Sprintf("recover-%d.json", time.Now().UnixNano()))
	if err := seal.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("%w; audit inbox: %w", openErr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, inboxWait)
	defer cancel()
	// The node removes the file once the event is durable, or renames it
	// (rejectedSuffix) when it will not record it.
	outcome := func() (bool, error) {
		if _, err := os.Stat(path + rejectedSuffix); err == nil {
			_ = os.Remove(path + rejectedSuffix)
			return true, fmt.Errorf("the audit log cannot record the recovery: opening it: %v; and the running node rejected the event", openErr)
		}
		_, err := os.Stat(path)
		return errors.Is(err, fs.ErrNotExist), nil
	}
	for {
		if done, err := outcome(); done {
			return err
		}
		select {
		case <-ctx.Done():
			if err := os.Remove(path); errors.Is(err, fs.ErrNotExist) {
				if _, err := outcome(); err != nil {
					return err
				}
				return nil // the node recorded it after all
			}
			return fmt.Errorf("the audit log cannot record the recovery: opening it: %v; and no running node recorded it within %s", openErr, inboxWait)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
