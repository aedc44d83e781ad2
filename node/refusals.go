package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/agent"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/storage/meta"
)

// refusalRecordTimeout bounds recording one refusal: the caller is a
// handshake or a Workload API call, which must not wait on a slow disk.
const refusalRecordTimeout = 5 * time.Second

// EtcdRefusalDetails are the details of an authn.etcd event: those of
// the API's refused handshakes (authn.mtls: the caller's address), and
// the etcd listener.
type EtcdRefusalDetails struct {
	rpc.AuthnDetails
	// Endpoint is the etcd listener: "client" or "peer".
	Endpoint string `json:"endpoint"`
}

// WorkloadRefusalDetails are the details of a workload.attest event. PID
// and UID are the caller's at connect; Path the executable attestation
// read ("" when it failed before), clipped to audit.MaxFieldBytes (the
// caller chooses it, up to PATH_MAX). Attestation is true when attestation
// itself failed (the caller is not the process that connected, or could
// not be read), false when it succeeded and matched no entry.
type WorkloadRefusalDetails struct {
	Method      string `json:"method"`
	PID         int    `json:"pid"`
	UID         uint32 `json:"uid"`
	Path        string `json:"path,omitempty"`
	Attestation bool   `json:"attestation"`
}

// recordEtcdRefusal records a connection etcd refused at the handshake
// (T-006): who tried to reach the store without a member certificate.
// Anyone who reaches the port can cause one, hence rec is the node's
// rate-limited refusals recorder. etcd reports from its own goroutine,
// with no context of a call.
func recordEtcdRefusal(rec audit.Recorder, log *slog.Logger, r meta.Refusal) {
	e := audit.Event{Kind: audit.KindAuthn, Action: audit.ActionAuthnEtcd, Outcome: audit.Deny,
		Resource: "etcd/-/" + r.Endpoint,
		Reasons:  []string{audit.Clip("tls handshake refused on the etcd "+r.Endpoint+" port: "+r.Reason, audit.MaxFieldBytes)}}.
		WithDetails(EtcdRefusalDetails{AuthnDetails: rpc.AuthnDetails{Peer: r.Remote}, Endpoint: r.Endpoint})
	recordRefusal(context.Background(), rec, log, &e)
}

// recordWorkloadRefusal records a Workload API call the agent refused
// (T-003, T-004, T-010): a caller whose process is gone or exec'd since it
// connected, or that matched no entry. Any local process can cause one,
// hence rec is the node's rate-limited refusals recorder. ctx is the
// call's.
func recordWorkloadRefusal(ctx context.Context, rec audit.Recorder, log *slog.Logger, r agent.Refusal) {
	e := audit.Event{Kind: audit.KindAuthn, Action: audit.ActionWorkloadAttest, Outcome: audit.Deny,
		Resource: "workload-api/-" + r.Method,
		Reasons:  []string{audit.Clip(r.Reason, audit.MaxFieldBytes)}}.
		WithDetails(WorkloadRefusalDetails{Method: r.Method, PID: r.PID, UID: r.UID, Path: audit.Clip(r.Path, audit.MaxFieldBytes), Attestation: r.Attestation})
	recordRefusal(ctx, rec, log, &e)
}

// recordRefusal records e. The refused caller may hang up at once, which
// cancels its call's context: the record outlives it (WithoutCancel), as
// the decision records of internal/rpc do, bounded by its own timeout.
func recordRefusal(ctx context.Context, rec audit.Recorder, log *slog.Logger, e *audit.Event) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refusalRecordTimeout)
	defer cancel()
	if err := rec.Record(ctx, e); err != nil {
		log.Warn("audit record failed", "action", e.Action, "err", err)
	}
}
