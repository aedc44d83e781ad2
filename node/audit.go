package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/internal/rpc"
)

// The node's side of the audit log: it opens the log before anything can
// act and closes it last, submits every checkpoint the log signs to the
// witness (the control plane) and keeps the countersigned copies, and
// follows the cluster's audit settings from heartbeat answers: retention,
// and what a non-privileged action does when its record cannot be made
// durable (auditOnFailure, read by the decision log).
const (
	// auditSubmitTimeout bounds one submission: the witness answers
	// after its round (1 s).
	auditSubmitTimeout = 10 * time.Second
	// auditRetryMin and auditRetryMax bound the backoff after a failed
	// submission.
	auditRetryMin = 500 * time.Millisecond
	auditRetryMax = 30 * time.Second
	// auditKeysRefresh is how often the published keys are fetched again
	// (besides whenever a countersignature does not verify with them).
	auditKeysRefresh = 5 * time.Minute
	// auditRetentionEvery is how often retention runs. Computing the cut
	// reads the retained entries back to the byte budget, so it is not
	// run on every heartbeat.
	auditRetentionEvery = time.Minute
	// maxRetention caps retention_seconds so that it cannot overflow a
	// time.Duration.
	maxRetention = 100 * 365 * 24 * time.Hour
)

// auditPublicKeyset loads the audit checkpoint keyset at path, creating
// it when there is none, and returns its public half.
func auditPublicKeyset(path string) ([]byte, error) {
	h, err := audit.LoadOrCreateSigningKeyset(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return audit.PublicKeysetOf(h)
}

// openAudit opens the node's audit log, signing with DIR/keys/audit.key
// (made now for a node of a cluster made before audit: it registers on
// its first submission).
func (n *node) openAudit() error {
	signer, err := audit.LoadOrCreateSigner(n.cfg.Name, n.l.AuditKey())
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	if err := os.MkdirAll(n.l.AuditDir(), 0o700); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	n.auditKick = make(chan struct{}, 1)
	n.retentionKick = make(chan struct{}, 1)
	l, err := audit.Open(audit.Config{
		Dir:    n.l.AuditDir(),
		FS:     n.o.AuditFS,
		Node:   n.cfg.Name,
		Signer: signer,
		Logger: n.log,
		OnCheckpoint: func(*audit.SignedCheckpoint) {
			kick(n.auditKick)
		},
	})
	if err != nil {
		return err
	}
	n.audit, n.auditPub = l, signer.PublicKeyset()
	return nil
}

func (n *node) closeAudit() {
	if n.audit == nil {
		return
	}
	if err := n.audit.Close(); err != nil {
		n.log.Error("close audit log", "err", err)
	}
}

// kick wakes a loop waiting on c without blocking.
func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// auditError is what heartbeats report: "" while the log can record.
func (n *node) auditError() string {
	if err := n.audit.Err(); err != nil {
		return err.Error()
	}
	return ""
}

// applyAuditSettings follows the settings a heartbeat answer carries (nil:
// a control plane that sends none; the current ones stay).
func (n *node) applyAuditSettings(pc *unumv1.AuditConfig) {
	if pc == nil {
		return
	}
	s, err := audit.Settings{OnFailure: pc.GetOnFailure(), RetentionSeconds: pc.GetRetentionSeconds(), RetentionBytes: pc.GetRetentionBytes()}.Normalize()
	if err != nil {
		n.log.Warn("ignoring audit settings from the control plane", "err", err)
		return
	}
	if old := n.auditSettings.Swap(&s); old == nil || *old != s {
		n.log.Info("audit settings", "on_failure", s.OnFailure, "retention_seconds", s.RetentionSeconds, "retention_bytes", s.RetentionBytes)
		kick(n.retentionKick)
	}
}

func (n *node) currentAuditSettings() audit.Settings {
	if s := n.auditSettings.Load(); s != nil {
		return *s
	}
	return audit.DefaultSettings()
}

// auditOnFailure is what a non-privileged action does when its record
// cannot be made durable: audit.OnFailureDeny (also until the control
// plane said otherwise) or audit.OnFailureAllowAndAlert. Privileged
// actions always fail closed.
func (n *node) auditOnFailure() string { return n.currentAuditSettings().OnFailure }

// auditRetentionLoop prunes the log by the cluster's retention settings
// every auditRetentionEvery and whenever they change.
func (n *node) auditRetentionLoop(ctx context.Context) {
	t := time.NewTicker(auditRetentionEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.retentionKick:
		}
		if to, err := n.applyRetention(ctx, time.Now()); err != nil {
			n.log.Warn("audit retention", "err", err)
		} else if to > 0 {
			n.log.Debug("audit retention", "pruned", to)
		}
	}
}

// applyRetention prunes the entries the settings no longer keep, never
// past the newest witnessed checkpoint (what no witness countersigned is
// never dropped), and returns the new pruned count (0: nothing pruned).
func (n *node) applyRetention(ctx context.Context, now time.Time) (uint64, error) {
	return pruneForRetention(ctx, n.audit, n.currentAuditSettings(), now)
}

func pruneForRetention(ctx context.Context, l *audit.Log, s audit.Settings, now time.Time) (uint64, error) {
	if s.RetentionSeconds == 0 && s.RetentionBytes == 0 {
		return 0, nil
	}
	// Nothing to prune before a witness countersigned something; and a
	// log that has not grown since its last witnessed checkpoint waits for
	// its next entry (not needed for correctness: a prune's checkpoint is
	// stored beside the witnessed one; it just keeps prunes rare).
	w := l.LatestWitnessed()
	if w == nil || l.Size() <= w.Size {
		return 0, nil
	}
	maxAge := maxRetention
	if s.RetentionSeconds < int64(maxRetention/time.Second) {
		maxAge = time.Duration(s.RetentionSeconds) * time.Second
	}
	point, err := l.RetentionPoint(ctx, now, maxAge, s.RetentionBytes)
	if err != nil {
		return 0, fmt.Errorf("retention point: %w", err)
	}
	point = min(point, w.Size)
	if point <= l.Pruned() {
		return 0, nil
	}
	return l.Prune(ctx, point)
}

// auditSubmitter submits the log's checkpoints to the witness, one at a
// time, each with a consistency proof from the checkpoint the witness
// holds (base), and keeps the countersigned copies.
type auditSubmitter struct {
	n *node
	// ac returns the client of the witness to ask now.
	ac func() unumv1.AuditClient
	// base is what the witness holds for this node as far as we know
	// (nil: nothing); baseKnown is false until learned, and again after
	// the witness said it holds something else.
	base      *audit.SignedCheckpoint
	baseKnown bool
	fromLocal bool // learn the base from the log's own witnessed copy first
	keys      *audit.Keys
	keysAt    time.Time
}

// auditSubmitLoop runs until ctx ends, submitting whenever the log signs a
// checkpoint and retrying failures with backoff (during which new
// checkpoints wait: a refused log is not resubmitted every second).
func (n *node) auditSubmitLoop(ctx context.Context, ac func() unumv1.AuditClient) {
	s := &auditSubmitter{n: n, ac: ac, fromLocal: true}
	// Something to submit from the start, so that even a quiet node is
	// witnessed (and a node of an older cluster registers its key).
	if _, err := n.audit.Checkpoint(ctx); err != nil && ctx.Err() == nil {
		n.log.Warn("audit checkpoint", "err", err)
	}
	var backoff time.Duration
	for ctx.Err() == nil {
		err := s.step(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 0
			s.waitForCheckpoint(ctx)
			continue
		}
		backoff = min(max(2*backoff, auditRetryMin), auditRetryMax)
		if status.Code(err) == codes.Aborted {
			backoff = auditRetryMin // a lost race or a stale base: again soon
		}
		level := n.log.Debug
		switch {
		case status.Code(err) == codes.FailedPrecondition:
			level = n.log.Error // the witness refuses this log's history
		case backoff == auditRetryMax:
			level = n.log.Warn // failing for a while: nothing new is witnessed
		}
		level("audit checkpoint submission failed; retrying", "retry_in", backoff, "err", err)
		sleepCtx(ctx, backoff)
	}
}

// waitForCheckpoint waits for the log's next checkpoint (or for the time
// to fetch the published keys again).
func (s *auditSubmitter) waitForCheckpoint(ctx context.Context) {
	if s.pending() {
		return
	}
	refresh := time.NewTimer(auditKeysRefresh)
	defer refresh.Stop()
	select {
	case <-ctx.Done():
	case <-s.n.auditKick:
	case <-refresh.C:
		if err := s.fetchKeys(ctx); err != nil {
			s.n.log.Debug("refresh audit keys", "err", err)
		}
	}
}

// pending reports whether the newest checkpoint is not yet witnessed.
func (s *auditSubmitter) pending() bool {
	latest := s.n.audit.Latest()
	return latest != nil && s.baseKnown && (s.base == nil || !bytes.Equal(latest.Body(), s.base.Body()))
}

// step learns the base if needed and submits the newest checkpoint when
// the witness does not hold it yet.
func (s *auditSubmitter) step(ctx context.Context) error {
	if s.keys != nil && time.Since(s.keysAt) > auditKeysRefresh {
		if err := s.fetchKeys(ctx); err != nil {
			s.n.log.Debug("refresh audit keys", "err", err)
		}
	}
	if !s.baseKnown {
		if err := s.learnBase(ctx); err != nil {
			return err
		}
	}
	if !s.pending() {
		return nil
	}
	return s.submit(ctx, s.n.audit.Latest())
}

// learnBase finds what the witness holds: the log's own newest witnessed
// copy at start, else (and after the witness said otherwise) the
// witness's answer.
func (s *auditSubmitter) learnBase(ctx context.Context) error {
	if s.fromLocal {
		s.fromLocal = false
		if w := s.n.audit.LatestWitnessed(); w != nil {
			s.base, s.baseKnown = w, true
			return nil
		}
	}
	rctx, cancel := context.WithTimeout(ctx, auditSubmitTimeout)
	defer cancel()
	resp, err := s.ac().Witnessed(rctx, &unumv1.AuditWitnessedRequest{Node: s.n.cfg.Name})
	if err != nil {
		return fmt.Errorf("ask the witness what it holds: %w", err)
	}
	s.base = nil
	if notes := resp.GetCheckpoints(); len(notes) > 0 {
		w, err := audit.ParseCheckpoint(notes[0])
		if err != nil {
			return fmt.Errorf("witnessed checkpoint: %w", err)
		}
		if w.Node != s.n.cfg.Name {
			return fmt.Errorf("asked for the witnessed checkpoint of %s, got %s's", s.n.cfg.Name, w.Node)
		}
		s.base = w
		// Keep it when it is one of ours (an answer lost on the way
		// here); a checkpoint this log never signed stays out of it.
		if s.n.audit.LatestWitnessed() == nil || w.Size > s.n.audit.LatestWitnessed().Size {
			if err := s.checkCosigned(ctx, w); err == nil {
				_ = s.n.audit.StoreCosigned(w)
			}
		}
	}
	s.baseKnown = true
	return nil
}

func (s *auditSubmitter) submit(ctx context.Context, latest *audit.SignedCheckpoint) error {
	req := &unumv1.SubmitCheckpointRequest{Checkpoint: latest.Marshal(), PublicKeyset: s.n.auditPub}
	if s.base != nil {
		req.FromSize = s.base.Size
		// A log smaller than what the witness holds has no proof to give;
		// the witness refuses it as a truncation.
		if s.base.Size <= latest.Size {
			proof, err := s.n.audit.ConsistencyProof(s.base.Size, latest.Size)
			if err != nil {
				return fmt.Errorf("consistency proof %d..%d: %w", s.base.Size, latest.Size, err)
			}
			req.ConsistencyProof = audit.HashesToBytes(proof)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, auditSubmitTimeout)
	defer cancel()
	resp, err := s.ac().SubmitCheckpoint(rctx, req)
	if err != nil {
		if status.Code(err) == codes.Aborted {
			s.baseKnown = false
		}
		return err
	}
	cosigned, err := audit.ParseCheckpoint(resp.GetCosigned())
	if err != nil {
		return fmt.Errorf("countersigned checkpoint: %w", err)
	}
	if !bytes.Equal(cosigned.Body(), latest.Body()) || !bytes.Equal(cosigned.Sig, latest.Sig) {
		return errors.New("the witness answered with another checkpoint than the one submitted")
	}
	// The witness stored it: it is the base now, whether or not its
	// countersignature checks out here.
	s.base = cosigned
	if err := s.checkCosigned(ctx, cosigned); err != nil {
		return err
	}
	return s.n.audit.StoreCosigned(cosigned)
}

// checkCosigned verifies sc's countersignatures under the published keys,
// fetching them again when they may not know its witness yet.
func (s *auditSubmitter) checkCosigned(ctx context.Context, sc *audit.SignedCheckpoint) error {
	fetched := false
	if s.keys == nil {
		if err := s.fetchKeys(ctx); err != nil {
			return err
		}
		fetched = true
	}
	ws, err := s.keys.VerifiedWitnesses(sc)
	if (err != nil || len(ws) == 0) && !fetched {
		if err := s.fetchKeys(ctx); err != nil {
			return err
		}
		ws, err = s.keys.VerifiedWitnesses(sc)
	}
	if err == nil && len(ws) == 0 {
		err = errors.New("no countersignature")
	}
	if err != nil {
		return fmt.Errorf("countersigned checkpoint of size %d: %w", sc.Size, err)
	}
	return nil
}

func (s *auditSubmitter) fetchKeys(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, auditSubmitTimeout)
	defer cancel()
	resp, err := s.ac().Keys(rctx, &unumv1.AuditKeysRequest{})
	if err != nil {
		return fmt.Errorf("published audit keys: %w", err)
	}
	keys, err := audit.KeysFromProto(resp)
	if err != nil {
		return err
	}
	s.keys, s.keysAt = keys, time.Now()
	s.n.auditKeys.Store(keys)
	if err := s.n.audit.RememberKeys(s.keys); err != nil {
		return fmt.Errorf("remember audit keys: %w", err)
	}
	return nil
}

// witnessClients picks the witness a control node submits to: another
// control node whenever the node knows one (the set changes as control
// nodes join; the connection follows it), else the default connection.
// Safe for concurrent use; close closes what it dialed.
type witnessClients struct {
	n        *node
	fallback unumv1.AuditClient
	mu       sync.Mutex
	addrs    []string
	cc       *grpc.ClientConn
}

func (w *witnessClients) client() unumv1.AuditClient {
	addrs := w.n.witnessAddresses()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !slices.Equal(addrs, w.addrs) {
		if w.cc != nil {
			w.cc.Close()
			w.cc = nil
		}
		w.addrs = addrs
		if len(addrs) > 0 {
			cc, err := rpc.DialChecked(w.n.creds, w.n.revocations, addrs, w.n.conns.DialOption())
			if err != nil {
				w.n.log.Warn("dial the other control nodes to witness this node's audit log", "err", err)
				w.addrs = nil
			} else {
				w.cc = cc
			}
		}
	}
	if w.cc != nil {
		return unumv1.NewAuditClient(w.cc)
	}
	return w.fallback
}

func (w *witnessClients) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cc != nil {
		w.cc.Close()
	}
}
