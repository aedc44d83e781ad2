package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/scheduler"
)

// `unum exec`: bash for the cluster. The caller was decided exec.run (a
// privileged action, recorded durably before this handler runs). The
// handler mints one credential delegated by the caller to the exec service
// (sub the caller, act spiffe://TD/system/exec), scoped to exec.node on
// exactly the nodes it runs on and addressed to them, records the mint,
// and asks each node to run the command under it as a short confined
// batch task. Everything the task does is therefore attributable to the
// person who ran it.

// ExecService is the name of the exec service's SPIFFE ID
// (spiffe://TD/system/exec), the holder of exec credentials.
const ExecService = "exec"

// ExecNodeAction is the scope action of an exec credential.
const ExecNodeAction = "exec.node"

// Limits of one exec.
const (
	maxExecArgs    = 256
	maxExecBytes   = 64 << 10
	maxExecTimeout = time.Hour
)

// NodeDialer dials a member node's API as this control node.
type NodeDialer func(ctx context.Context, n NodeRecord) (*grpc.ClientConn, error)

// SchedulerService implements unumv1.SchedulerServer on a control node:
// the job handlers of Server plus Exec, which needs the node's credential
// issuer and a way to reach nodes.
type SchedulerService struct {
	*Server
	Creds *CredentialService
	Dial  NodeDialer
}

var _ unumv1.SchedulerServer = (*SchedulerService)(nil)

// ExecDetails are an exec.run event's details on the control node.
type ExecDetails struct {
	Selector string   `json:"selector"`
	Command  []string `json:"command"`
	Nodes    []string `json:"nodes"`
	JTI      string   `json:"jti,omitempty"`
	Timeout  string   `json:"timeout"`
}

// Exec implements unumv1.SchedulerServer.
func (x *SchedulerService) Exec(req *unumv1.ExecRequest, stream unumv1.Scheduler_ExecServer) error {
	ctx := stream.Context()
	s := x.Server
	d := ExecDetails{Selector: clip(req.GetSelector()), Command: RecordedCommand(req.GetCommand())}
	err := x.exec(ctx, req, stream, &d)
	outcome, reasons := outcomeOf(err)
	s.record(ctx, audit.Event{Kind: audit.KindJob, Action: audit.ActionExecRun, Outcome: outcome, Reasons: reasons,
		Resource: "node/-/" + clip(req.GetSelector())}.WithDetails(d))
	return err
}

// RecordedCommand is an exec command as audit events hold it: at most 16
// arguments (then how many more), each clipped.
func RecordedCommand(argv []string) []string {
	const most = 16
	var out []string
	for i, a := range argv {
		if i == most {
			out = append(out, fmt.Sprintf("... %d more", len(argv)-most))
			break
		}
		out = append(out, clip(a))
	}
	return out
}

func (x *SchedulerService) exec(ctx context.Context, req *unumv1.ExecRequest, stream unumv1.Scheduler_ExecServer, d *ExecDetails) error {
	s := x.Server
	caller, err := callerOf(ctx)
	if err != nil {
		return err
	}
	if _, delegated := rpc.CredentialFromContext(ctx); delegated {
		return status.Error(codes.PermissionDenied, "exec runs only as the caller itself, not on a delegated credential")
	}
	if err := checkExecCommand(req.GetCommand()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	timeout := time.Duration(req.GetTimeoutSeconds()) * time.Second
	if timeout <= 0 || timeout > maxExecTimeout {
		return status.Errorf(codes.InvalidArgument, "timeout_seconds %d: want 1..%d", req.GetTimeoutSeconds(), int(maxExecTimeout.Seconds()))
	}
	d.Timeout = timeout.String()
	sel, err := ParseSelector(req.GetSelector())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if x.Creds == nil || x.Dial == nil {
		return status.Error(codes.Unavailable, "this control node cannot run exec")
	}
	iss := x.Creds.Issuer()
	if iss == nil {
		return status.Error(codes.Unavailable, "this control node's credential keyring is not loaded")
	}
	st, err := s.readSchedState(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "%v", err)
	}
	now := s.cfg.Clock()
	var targets []NodeRecord
	for _, name := range slices.Sorted(maps.Keys(st.nodes)) {
		ns, ok := st.sched[name]
		if !ok || !ns.Compute || !selects(sel, &scheduler.Node{Name: name, Labels: ns.Labels}) {
			continue
		}
		ls, ok := st.status[name]
		if leaseOf(ls, ok, now, s.nodeLease(), s.downGrace()) != leaseReady {
			continue
		}
		targets = append(targets, st.nodes[name])
		d.Nodes = append(d.Nodes, name)
	}
	if len(targets) == 0 {
		return status.Errorf(codes.NotFound, "no ready compute node matches %q", req.GetSelector())
	}
	execID, err := identity.SystemID(s.cfg.TrustDomain, ExecService)
	if err != nil {
		return status.Errorf(codes.Internal, "exec service id: %v", err)
	}
	dec, _ := rpc.DecisionFromContext(ctx)
	r := delegation.Request{Caller: caller.ID, Holder: execID, TTL: timeout + time.Minute, MaxTTL: dec.Limits.MaxTTL, MaxDepth: dec.Limits.MaxDepth}
	for _, n := range targets {
		id, err := spiffeid.FromString(n.SPIFFEID)
		if err != nil {
			return status.Errorf(codes.Internal, "node %s: %v", n.Name, err)
		}
		r.Audience = append(r.Audience, id)
		sc, err := delegation.ParseScope(ExecNodeAction + ":node/-/" + n.Name)
		if err != nil {
			return status.Errorf(codes.Internal, "scope: %v", err)
		}
		r.Scopes = append(r.Scopes, sc)
	}
	if r.TTL > r.MaxTTL && r.MaxTTL > 0 {
		r.TTL = r.MaxTTL
	}
	c, err := iss.Plan(r)
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "exec credential: %v", err)
	}
	signed, err := x.Creds.sign(ctx, iss, c)
	if err != nil {
		return err
	}
	d.JTI = signed.GetJti()

	var mu sync.Mutex
	send := func(ev *unumv1.ExecEvent) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(ev)
	}
	var wg sync.WaitGroup
	for _, n := range targets {
		wg.Go(func() {
			if err := x.execOn(ctx, n, req, signed.GetToken(), signed.GetJti(), timeout, send); err != nil {
				_ = send(&unumv1.ExecEvent{Node: n.Name, Error: clip(status.Convert(err).Message()), CredentialId: signed.GetJti()})
			}
		})
	}
	wg.Wait()
	return nil
}

// execOn runs the command on one node and forwards its events.
func (x *SchedulerService) execOn(ctx context.Context, n NodeRecord, req *unumv1.ExecRequest, token, jti string, timeout time.Duration, send func(*unumv1.ExecEvent) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	cc, err := x.Dial(ctx, n)
	if err != nil {
		return fmt.Errorf("dial %s: %w", n.Name, err)
	}
	defer cc.Close()
	st, err := unumv1.NewTasksClient(cc).Exec(ctx, &unumv1.NodeExecRequest{
		ExecId: jti, Command: req.GetCommand(), TimeoutSeconds: int32(timeout.Seconds()), Credential: token,
	})
	if err != nil {
		return err
	}
	exited := false
	for {
		ev, err := st.Recv()
		if errors.Is(err, io.EOF) {
			if !exited {
				return errors.New("the node ended the exec without an exit status")
			}
			return nil
		}
		if err != nil {
			return err
		}
		ev.Node, ev.CredentialId = n.Name, jti
		exited = exited || ev.GetExited() || ev.GetError() != ""
		if err := send(ev); err != nil {
			return err
		}
	}
}

func checkExecCommand(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("command is empty")
	}
	if len(argv) > maxExecArgs {
		return fmt.Errorf("command has %d arguments, at most %d", len(argv), maxExecArgs)
	}
	total := 0
	for i, a := range argv {
		total += len(a)
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("command argument %d contains a NUL byte", i)
		}
	}
	if total > maxExecBytes {
		return fmt.Errorf("command is %d bytes, at most %d", total, maxExecBytes)
	}
	return nil
}

// ParseSelector parses a node selector "KEY=VALUE,KEY!=VALUE,KEY" into
// the scheduler's constraints (=, != and exists; the key "node" is the
// node's name); "" selects every node.
func ParseSelector(s string) ([]scheduler.Constraint, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > 1024 {
		return nil, fmt.Errorf("selector is %d bytes, at most 1024", len(s))
	}
	var out []scheduler.Constraint
	for _, term := range strings.Split(s, ",") {
		var c scheduler.Constraint
		switch {
		case strings.Contains(term, "!="):
			k, v, _ := strings.Cut(term, "!=")
			c = scheduler.Constraint{Label: k, Op: scheduler.OpNotEqual, Values: []string{v}}
		case strings.Contains(term, "="):
			k, v, _ := strings.Cut(term, "=")
			c = scheduler.Constraint{Label: k, Op: scheduler.OpEqual, Values: []string{v}}
		default:
			c = scheduler.Constraint{Label: term, Op: scheduler.OpExists}
		}
		if !labelKeyRE.MatchString(c.Label) {
			return nil, fmt.Errorf("selector term %q: %q is not a label key", term, c.Label)
		}
		if c.Op != scheduler.OpExists && !labelValueRE.MatchString(c.Values[0]) {
			return nil, fmt.Errorf("selector term %q: %q is not a label value", term, c.Values[0])
		}
		out = append(out, c)
	}
	return out, nil
}

// selects reports whether every constraint of sel holds on node n.
func selects(sel []scheduler.Constraint, n *scheduler.Node) bool {
	for _, c := range sel {
		if !c.Holds(n) {
			return false
		}
	}
	return true
}
