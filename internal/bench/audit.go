package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unumos/unum/audit"
)

// Result names of the audit component.
const (
	ResultAuditRecord = "audit_record_durable"
	ResultAuditVerify = "audit_verify_offline"
)

const (
	auditComponent = "audit"
	// The audit issue's targets on the 2-core machine: 64 concurrent
	// writers sustain 50,000 durable events/s with a p99 of 5 ms, and an
	// offline verify of 1,000,000 entries takes 10 s at most.
	auditWriters       = 64
	auditRateTarget    = 50_000
	auditP99Target     = 5 * time.Millisecond
	auditVerifyEntries = 1_000_000
	auditVerifyTarget  = 10 * time.Second
)

// auditEvent is a decision record of the size the node writes: an authz
// event whose details hold the whole policy input.
func auditEvent(i int) *audit.Event {
	e := audit.Event{Kind: audit.KindAuthz, Action: "kv.write", Subject: "spiffe://bench.local/ns/payments/job/api",
		Resource: "kv/payments/orders", Outcome: audit.Allow, DecisionID: fmt.Sprintf("bench.%016x", i), PolicyRevision: 7,
		Reasons: []string{"workload in its own namespace"}, RequestDigest: "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"}
	return new(e.WithDetails(map[string]any{"input": map[string]any{
		"subject":    map[string]any{"id": e.Subject, "kind": "workload", "namespace": "payments", "name": "api", "attributes": map[string]string{}},
		"action":     e.Action,
		"resource":   map[string]string{"kind": "kv", "namespace": "payments", "name": "orders"},
		"delegation": []any{},
		"context":    map[string]string{"node": "bench", "request_id": e.DecisionID},
	}, "digest": "sha256:9d1f6c3e1c3f0a4b8f5b2a4c7e9d0b1a2c3d4e5f60718293a4b5c6d7e8f90a1b"}))
}

// RunAudit measures the audit log in a temporary folder (on the
// filesystem of o.TempDir: a tmpfs makes fsync free, and such figures do
// not count): durable records from 64 concurrent writers, then an offline
// verify of a log of 1,000,000 entries (o.AuditVerifyEntries in tests).
func RunAudit(ctx context.Context, o Options) (Report, error) {
	progress := o.progressFunc(auditComponent)
	workers := o.Concurrency
	if workers <= 0 {
		workers = auditWriters
	}
	rep := Report{Component: auditComponent, Mode: "local", Settings: baseSettings(workers)}
	if o.Cluster != nil {
		return rep, fmt.Errorf("audit is measured on a log in a temporary folder; a cluster target does not apply")
	}
	tmp, err := os.MkdirTemp(o.TempDir, "unum-bench-audit-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(tmp)
	if rep.Filesystem, err = DescribeFilesystem(tmp); err != nil {
		return rep, err
	}
	if rep.Filesystem.StatfsType == "tmpfs" || rep.Filesystem.StatfsType == "ramfs" {
		rep.Settings.Extra["warning"] = "the log is on " + rep.Filesystem.StatfsType + ": fsync is free there, these figures do not count"
	}
	signer, err := audit.LoadOrCreateSigner("bench", filepath.Join(tmp, "audit.key"))
	if err != nil {
		return rep, err
	}
	dir := filepath.Join(tmp, "audit")
	l, err := audit.Open(audit.Config{Dir: dir, Node: "bench", Signer: signer, Logger: o.logger()})
	if err != nil {
		return rep, err
	}
	defer l.Close()
	ev := auditEvent(0)
	if err := l.Record(ctx, ev); err != nil {
		return rep, err
	}
	stored, err := l.Get(0)
	if err != nil {
		return rep, err
	}
	rep.Settings.Extra["event_bytes"] = fmt.Sprint(len(stored))
	rep.Settings.Extra["sync"] = "pebble batch commit with Sync per group"

	var seq atomic.Int64
	op := func(ctx context.Context, _ int) error {
		return l.Record(ctx, auditEvent(int(seq.Add(1))))
	}
	warm := max(o.duration()/5, minWindow)
	progress("warming up: %s, %d writers", warm, workers)
	measure(ctx, workers, warm, false, op)
	progress("measuring durable records: %s, %d writers", o.duration(), workers)
	rep.Settings.Windows[ResultAuditRecord] = o.duration().String()
	stop := startProfile(o, progress)
	s := measure(ctx, workers, o.duration(), true, op)
	stop()
	rec, err := s.result(ResultAuditRecord, fmt.Sprintf("audit.Log.Record of a %d-byte authz event, returning once durable (fsync'd; concurrent records share one sync), %d concurrent writers", len(stored), workers), workers, true)
	if err != nil {
		return rep, err
	}
	rec.setTarget(fmt.Sprintf(">= %d events/s and p99 <= %s", auditRateTarget, auditP99Target),
		rec.OpsPerSec >= auditRateTarget && rec.P99us <= micros(auditP99Target))
	rep.Results = append(rep.Results, rec)

	n := uint64(o.AuditVerifyEntries)
	if n == 0 {
		n = auditVerifyEntries
	}
	progress("filling the log to %d entries", n)
	var wg sync.WaitGroup
	var fillErr atomic.Pointer[error]
	for range 256 {
		wg.Go(func() {
			for l.Size() < n && ctx.Err() == nil {
				if err := l.Record(ctx, auditEvent(int(seq.Add(1)))); err != nil {
					fillErr.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := fillErr.Load(); p != nil {
		return rep, *p
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		return rep, err
	}
	size := l.Size()
	if err := l.Close(); err != nil {
		return rep, err
	}
	progress("verifying %d entries offline", size)
	cpu0, t0 := processCPU(), time.Now()
	vr, err := audit.VerifyDir(ctx, dir, nil)
	if err != nil {
		return rep, err
	}
	elapsed := time.Since(t0)
	if !vr.OK {
		return rep, fmt.Errorf("verify of the benchmark's own log failed: %s", vr)
	}
	v := sample{elapsed: elapsed, cpu: processCPU() - cpu0, ops: int64(vr.Entries)}
	vres, err := v.result(ResultAuditVerify, fmt.Sprintf("audit.VerifyDir of the stopped log, %d entries (%d checkpoints): hash chain, ids, Merkle tree against every checkpoint root, signatures; ops are entries", vr.Entries, vr.Checkpoints), 1, false)
	if err != nil {
		return rep, err
	}
	vres.setTarget(fmt.Sprintf("%d entries in <= %s", auditVerifyEntries, auditVerifyTarget), n >= auditVerifyEntries && elapsed <= auditVerifyTarget)
	rep.Results = append(rep.Results, vres)
	rep.Settings.Windows[ResultAuditVerify] = elapsed.Round(time.Millisecond).String()
	rep.Settings.LoadAverageEnd = loadAverage()
	return rep, nil
}
