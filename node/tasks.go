package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/control"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/scheduler/executor"
)

// tasksService implements unumv1.TasksServer on every node: what its
// executor runs (`unum ps`), task logs, and exec tasks relayed by a
// control node.
type tasksService struct {
	unumv1.UnimplementedTasksServer
	n *node
}

var _ unumv1.TasksServer = (*tasksService)(nil)

// Resources of one exec task: a short command, not a workload.
const (
	execCPUMillis = 500
	execMemoryMiB = 256
)

func (t *tasksService) executor() (*executor.Executor, error) {
	if t.n.compute == nil {
		if t.n.computeErr != "" {
			return nil, status.Errorf(codes.FailedPrecondition, "node %s runs no tasks: %s", t.n.cfg.Name, t.n.computeErr)
		}
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is not a compute node", t.n.cfg.Name)
	}
	return t.n.compute.exec, nil
}

// List implements unumv1.TasksServer.
func (t *tasksService) List(_ context.Context, req *unumv1.ListTasksRequest) (*unumv1.ListTasksResponse, error) {
	out := &unumv1.ListTasksResponse{Node: t.n.cfg.Name}
	if t.n.compute == nil {
		return out, nil
	}
	for _, ts := range t.n.compute.exec.Tasks(req.GetAll()) { // sorted by id
		p := taskStatusProto(ts)
		p.Node = t.n.cfg.Name
		out.Tasks = append(out.Tasks, p)
	}
	return out, nil
}

// Logs implements unumv1.TasksServer. The call was decided job.logs on the
// request's job; the allocation must be of that job.
func (t *tasksService) Logs(req *unumv1.TaskLogsRequest, stream unumv1.Tasks_LogsServer) error {
	ex, err := t.executor()
	if err != nil {
		return err
	}
	found := false
	for _, ts := range ex.Tasks(true) {
		if ts.ID == req.GetAllocId() && ts.Namespace == req.GetNamespace() && ts.Job == req.GetJob() {
			found = true
			break
		}
	}
	if !found {
		return status.Errorf(codes.NotFound, "node %s has no task %s of job %s/%s", t.n.cfg.Name, req.GetAllocId(), req.GetNamespace(), req.GetJob())
	}
	return ex.Logs(stream.Context(), req.GetAllocId(), req.GetFollow(), func(s string, line []byte) error {
		return stream.Send(&unumv1.TaskLogChunk{Stream: s, Line: line})
	})
}

// ExecNodeDetails are the details of a node's exec.run event.
type ExecNodeDetails struct {
	Command  []string `json:"command"`
	Task     string   `json:"task"`
	ExitCode int      `json:"exit_code"`
	Relay    string   `json:"relayed_by"`
	Error    string   `json:"error,omitempty"`
}

// Exec implements unumv1.TasksServer: a control node relays `unum exec`.
// The node runs the command only if the relay is a control node and the
// credential it carries is valid now, held by the exec service, addressed
// to this node and scoped to exec.node on it; the task runs under that
// credential (UNUM_DELEGATED_CREDENTIAL), as a short confined batch task.
func (t *tasksService) Exec(req *unumv1.NodeExecRequest, stream unumv1.Tasks_ExecServer) error {
	ctx := stream.Context()
	n := t.n
	ex, err := t.executor()
	if err != nil {
		return err
	}
	relay, err := controlRelay(ctx, n.creds)
	if err != nil {
		n.recordExecRefusal(ctx, req, nil, err)
		return err
	}
	cred, err := n.verifyExecCredential(req.GetCredential())
	if err != nil {
		err = status.Errorf(codes.PermissionDenied, "exec credential: %v", err)
		n.recordExecRefusal(ctx, req, cred, err)
		return err
	}
	argv := req.GetCommand()
	if len(argv) == 0 || argv[0] == "" {
		return status.Error(codes.InvalidArgument, "command is empty")
	}
	timeout := time.Duration(req.GetTimeoutSeconds()) * time.Second
	if timeout <= 0 || timeout > time.Hour {
		return status.Errorf(codes.InvalidArgument, "timeout_seconds %d: want 1..3600", req.GetTimeoutSeconds())
	}
	if left := time.Until(cred.Expiry); left < timeout {
		timeout = left
	}
	var idb [6]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return status.Errorf(codes.Internal, "task id: %v", err)
	}
	spec := executor.TaskSpec{
		ID: execTaskPrefix + hex.EncodeToString(idb[:]), Namespace: "-", Job: "exec",
		Command: argv[0], Args: argv[1:],
		Env:       map[string]string{"UNUM_DELEGATED_CREDENTIAL": req.GetCredential()},
		CPUMillis: execCPUMillis, MemoryMiB: execMemoryMiB, Batch: true,
		Restart: executor.Restart{Policy: executor.RestartNever},
	}
	var mu sync.Mutex
	send := func(ev *unumv1.ExecEvent) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(ev)
	}
	out := &lineSender{send: func(b []byte) error { return send(&unumv1.ExecEvent{Stdout: b}) }}
	errOut := &lineSender{send: func(b []byte) error { return send(&unumv1.ExecEvent{Stderr: b}) }}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	code, runErr := ex.RunOnce(rctx, spec, out, errOut)
	out.flush()
	errOut.flush()
	d := ExecNodeDetails{Command: control.RecordedCommand(argv), Task: spec.ID, ExitCode: code, Relay: relay}
	outcome := audit.Allow
	if runErr != nil {
		d.Error, outcome = audit.Clip(runErr.Error(), 512), audit.Error
	}
	chain := make([]string, len(cred.Chain))
	for i, l := range cred.Chain {
		chain[i] = l.Actor.String()
	}
	ev := audit.Event{Kind: audit.KindJob, Action: audit.ActionExecRun, Outcome: outcome, Privileged: true,
		Subject: cred.Subject.String(), Chain: chain, Creds: cred.JTIs(), Resource: "node/-/" + n.cfg.Name}.WithDetails(d)
	rec, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	if err := n.audit.Record(rec, &ev); err != nil {
		n.log.Error("audit record failed", "action", ev.Action, "err", err)
	}
	rcancel()
	if runErr != nil {
		return send(&unumv1.ExecEvent{Error: runErr.Error(), ExitCode: int32(code)})
	}
	return send(&unumv1.ExecEvent{Exited: true, ExitCode: int32(code)})
}

// controlRelay returns the caller's ID if its certificate chain is a
// control node's (its SVID issued by its own intermediate).
func controlRelay(ctx context.Context, bundles x509bundle.Source) (string, error) {
	caller, ok := rpc.CallerFromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no verified caller")
	}
	p, ok := peer.FromContext(ctx)
	if ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			// The handshake verified the caller's SVID but keeps no
			// chains; verify again to get the chains the leaf actually
			// verifies through (a certificate merely sent alongside
			// proves nothing).
			_, chains, err := x509svid.Verify(ti.State.PeerCertificates, bundles)
			if err == nil {
				for _, chain := range chains {
					if rpc.IsControlChain(caller.ID, chain) {
						return caller.ID.String(), nil
					}
				}
			}
		}
	}
	return "", status.Errorf(codes.PermissionDenied, "%s is not a control node: only control nodes relay exec", caller.ID)
}

// verifyExecCredential checks an exec credential for this node.
func (n *node) verifyExecCredential(token string) (*delegation.Credential, error) {
	// The relay presents it on the exec service's behalf, so the holder
	// binding is checked here (holder = the exec service) rather than
	// against the relay's certificate.
	cred, err := n.credVerifier.Verify(delegation.Presentation{Token: token, Inspect: true, Privileged: true})
	if err != nil {
		return cred, err // cred is set once the signature verified: the refusal names it
	}
	execID, err := identity.SystemID(n.td, control.ExecService)
	if err != nil {
		return nil, err
	}
	if cred.Holder() != execID {
		return cred, fmt.Errorf("held by %s, not the exec service %s", cred.Holder(), execID)
	}
	if !cred.AudienceIncludes(n.id) {
		return cred, fmt.Errorf("not addressed to %s", n.id)
	}
	if !cred.Allows(control.ExecNodeAction, "node", "-", n.cfg.Name) {
		return cred, fmt.Errorf("its scopes do not allow %s on node %s", control.ExecNodeAction, n.cfg.Name)
	}
	if !n.execUsed.use(cred.ID, cred.Expiry, time.Now()) {
		// One exec per credential per node: a relay (or anyone who saw
		// the token) cannot run more commands with it.
		return cred, fmt.Errorf("credential %s was already used on node %s", cred.ID, n.cfg.Name)
	}
	return cred, nil
}

// usedCredentials remembers the exec credentials a node has run, until
// they expire.
type usedCredentials struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// use reports whether jti was not used yet, and marks it used.
func (u *usedCredentials) use(jti string, expiry, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen == nil {
		u.seen = map[string]time.Time{}
	}
	for id, exp := range u.seen {
		if now.After(exp.Add(delegation.Leeway)) {
			delete(u.seen, id)
		}
	}
	if _, ok := u.seen[jti]; ok {
		return false
	}
	u.seen[jti] = expiry
	return true
}

// recordExecRefusal records an exec a node refused (cred is nil when its
// signature did not verify or was not looked at).
func (n *node) recordExecRefusal(ctx context.Context, req *unumv1.NodeExecRequest, cred *delegation.Credential, err error) {
	ev := audit.Event{Kind: audit.KindJob, Action: audit.ActionExecRun, Outcome: audit.Deny, Privileged: true,
		Reasons: []string{audit.Clip(status.Convert(err).Message(), 512)}, Resource: "node/-/" + n.cfg.Name}
	if c, ok := rpc.CallerFromContext(ctx); ok {
		ev.Subject = c.ID.String()
	}
	if cred != nil {
		ev.Subject, ev.Creds = cred.Subject.String(), cred.JTIs()
		for _, l := range cred.Chain {
			ev.Chain = append(ev.Chain, l.Actor.String())
		}
	}
	ev = ev.WithDetails(ExecNodeDetails{Command: control.RecordedCommand(req.GetCommand()), Error: audit.Clip(err.Error(), 512)})
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if rerr := n.audit.Record(rctx, &ev); rerr != nil {
		n.log.Error("audit record failed", "action", ev.Action, "err", rerr)
	}
}

// lineSender sends whole lines (a line cut at 16 KiB is sent as it is).
type lineSender struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	send func([]byte) error
	err  error
}

func (l *lineSender) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for l.err == nil {
		i := bytes.IndexByte(l.buf.Bytes(), '\n')
		if i < 0 {
			if l.buf.Len() < 16<<10 {
				break
			}
			i = l.buf.Len() - 1
		}
		line := append([]byte(nil), l.buf.Next(i+1)...)
		l.err = l.send(line)
	}
	return len(p), nil
}

func (l *lineSender) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 0 && l.err == nil {
		l.err = l.send(append([]byte(nil), l.buf.Bytes()...))
		l.buf.Reset()
	}
}

// dialNode dials a member node's API as this node (exec's fan-out).
func (n *node) dialNode(_ context.Context, rec control.NodeRecord) (*grpc.ClientConn, error) {
	id, err := identity.NodeID(n.td, rec.Name)
	if err != nil {
		return nil, err
	}
	return rpc.DialNode(n.creds, id, rec.APIAddress)
}
