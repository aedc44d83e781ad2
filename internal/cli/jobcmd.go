package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/scheduler/jobspec"
)

func jobCommands() []*command {
	return []*command{
		{name: "run", summary: "validate a job spec FILE, print the plan and submit it (--dry-run: plan only)", run: runJobRun},
		{name: "ls", summary: "list jobs", run: runJobLs},
		{name: "status", summary: "a job's state and each task's node, state, restarts and exit code", run: runJobStatus},
		{name: "stop", summary: "stop a job: its tasks are killed", run: runJobStop},
		{name: "logs", summary: "stdout and stderr of a job's tasks, each line prefixed with its task (-f follows)", run: runJobLogs},
		{name: "endpoints", summary: "node address and port of each running task of a job", run: runJobEndpoints},
	}
}

// nsFlag registers -n NAMESPACE.
func nsFlag(fs *flag.FlagSet) *string {
	return fs.String("n", "default", "namespace")
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func runJobRun(e *env, args []string) error {
	fs := flag.NewFlagSet("unum job run", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	ns := nsFlag(fs)
	dryRun := fs.Bool("dry-run", false, "print the plan, submit nothing")
	var (
		spec []byte
		job  *jobspec.Job
	)
	c, err := cf.connect(e, fs, args, 1, "unum job run FILE [--dry-run] [-n NAMESPACE]", func(pos []string) error {
		var err error
		if pos[0] == "-" {
			spec, err = io.ReadAll(io.LimitReader(e.stdin, jobspec.MaxSpecBytes+1))
		} else {
			spec, err = os.ReadFile(pos[0])
		}
		if err != nil {
			return fmt.Errorf("read job spec: %w", err)
		}
		job, err = jobspec.Parse(spec)
		if err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		if flagSet(fs, "n") && *ns != job.Namespace {
			return usagef("-n %s, but the spec is job %s/%s: set namespace in the spec", *ns, job.Namespace, job.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewSchedulerClient(c.conn).SubmitJob(c.ctx, &unumv1.SubmitJobRequest{
		Spec: spec, Namespace: job.Namespace, Name: job.Name, DryRun: *dryRun,
	})
	if err != nil {
		return err
	}
	return output.Write(e.stdout, c.format, resp, func(tw *tabwriter.Writer) error {
		j := resp.GetJob()
		fmt.Fprintf(tw, "job %s/%s version %d (%s)\n", j.GetNamespace(), j.GetName(), j.GetVersion(), j.GetSpiffeId())
		writePlan(tw, resp.GetPlan())
		for _, eg := range j.GetEgress() {
			if eg.GetAllowed() {
				fmt.Fprintf(tw, "egress %s: allowed by policy\n", eg.GetTarget())
			} else {
				fmt.Fprintf(tw, "egress %s: DENIED by policy (%s): the job will not reach it\n", eg.GetTarget(), strings.Join(eg.GetReasons(), "; "))
			}
		}
		switch {
		case *dryRun:
			fmt.Fprintln(tw, "dry run: nothing submitted")
		case !resp.GetSubmitted():
			fmt.Fprintln(tw, "unchanged: this version is already submitted")
		default:
			fmt.Fprintln(tw, "submitted")
		}
		return nil
	})
}

func writePlan(tw *tabwriter.Writer, p *unumv1.JobPlan) {
	if len(p.GetPlacements()) > 0 {
		fmt.Fprintln(tw, "TASK\tNODE\tPORTS")
		for _, pl := range p.GetPlacements() {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", pl.GetTask(), pl.GetNode(), fmtPorts(pl.GetPorts()))
		}
	}
	for _, pr := range p.GetPreemptions() {
		fmt.Fprintf(tw, "preempts %s (allocation %s) on %s for %s\n", pr.GetTask(), pr.GetAlloc(), pr.GetNode(), pr.GetForTask())
	}
	for _, u := range p.GetUnplaced() {
		fmt.Fprintf(tw, "cannot place %s: %s\n", u.GetTask(), u.GetReason())
	}
	if n := len(p.GetReplaces()); n > 0 {
		fmt.Fprintf(tw, "replaces %d task(s) of the earlier version\n", n)
	}
	if n := len(p.GetKept()); n > 0 {
		fmt.Fprintf(tw, "keeps %d task(s) as they are\n", n)
	}
}

func fmtPorts(ports map[string]int32) string {
	if len(ports) == 0 {
		return "-"
	}
	names := make([]string, 0, len(ports))
	for n := range ports {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, ports[n])
	}
	return strings.Join(parts, ",")
}

func runJobLs(e *env, args []string) error {
	fs := flag.NewFlagSet("unum job ls", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	ns := nsFlag(fs)
	all := fs.Bool("A", false, "every namespace")
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	req := &unumv1.ListJobsRequest{Namespace: *ns}
	if *all {
		req.Namespace = ""
	}
	resp, err := unumv1.NewSchedulerClient(c.conn).ListJobs(c.ctx, req)
	if err != nil {
		return err
	}
	return output.Write(e.stdout, c.format, resp, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tTYPE\tSTATE\tRUNNING\tVERSION\tSUBMITTED BY")
		for _, j := range resp.GetJobs() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\n", j.GetNamespace(), j.GetName(), j.GetType(), j.GetState(),
				j.GetRunning(), j.GetCount(), j.GetVersion(), j.GetSubmittedBy())
		}
		return nil
	})
}

func jobStatus(c *clientCall, ns, name string) (*unumv1.JobStatusResponse, error) {
	return unumv1.NewSchedulerClient(c.conn).JobStatus(c.ctx, &unumv1.JobStatusRequest{Namespace: ns, Name: name})
}

func runJobStatus(e *env, args []string) error {
	fs := flag.NewFlagSet("unum job status", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	ns := nsFlag(fs)
	c, err := cf.connect(e, fs, args, 1, "unum job status NAME [-n NAMESPACE]", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := jobStatus(c, *ns, c.args[0])
	if err != nil {
		return err
	}
	return output.Write(e.stdout, c.format, resp, func(tw *tabwriter.Writer) error {
		j := resp.GetJob()
		fmt.Fprintf(tw, "job %s/%s (%s) version %d: %s, %d/%d running\n", j.GetNamespace(), j.GetName(), j.GetSpiffeId(),
			j.GetVersion(), j.GetState(), j.GetRunning(), j.GetCount())
		for _, eg := range j.GetEgress() {
			verdict := "allowed"
			if !eg.GetAllowed() {
				verdict = "DENIED: " + strings.Join(eg.GetReasons(), "; ")
			}
			fmt.Fprintf(tw, "egress %s: %s\n", eg.GetTarget(), verdict)
		}
		fmt.Fprintln(tw, "TASK\tALLOCATION\tNODE\tSTATE\tRESTARTS\tEXIT\tPORTS\tSTARTED\tMESSAGE")
		for _, a := range resp.GetAllocations() {
			st := a.GetStatus()
			state := "placed"
			if st != nil {
				state = st.GetState()
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", a.GetIndex(), a.GetId(), a.GetNode(), state, st.GetRestarts(),
				fmtExit(st), fmtPorts(a.GetPorts()), fmtUnix(st.GetStartedAtUnix()), dash(st.GetMessage()))
		}
		return nil
	})
}

func fmtExit(st *unumv1.TaskStatus) string {
	switch {
	case st == nil || (st.GetFinishedAtUnix() == 0 && st.GetState() != "complete" && st.GetState() != "failed"):
		return "-"
	case st.GetSignal() != "":
		return "signal " + st.GetSignal()
	}
	return fmt.Sprint(st.GetExitCode())
}

func fmtUnix(sec int64) string {
	if sec == 0 {
		return "-"
	}
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}

func runJobStop(e *env, args []string) error {
	fs := flag.NewFlagSet("unum job stop", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	ns := nsFlag(fs)
	c, err := cf.connect(e, fs, args, 1, "unum job stop NAME [-n NAMESPACE]", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewSchedulerClient(c.conn).StopJob(c.ctx, &unumv1.StopJobRequest{Namespace: *ns, Name: c.args[0]})
	if err != nil {
		return err
	}
	return output.Write(e.stdout, c.format, resp, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "job %s/%s stopped: %d task(s) will be killed\n", *ns, c.args[0], resp.GetStoppedAllocations())
		return nil
	})
}

// nodesByName lists the cluster's nodes, for dialing them.
func nodesByName(c *clientCall) (map[string]*unumv1.Node, error) {
	resp, err := unumv1.NewClusterClient(c.conn).ListNodes(c.ctx, &unumv1.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]*unumv1.Node{}
	for _, n := range resp.GetNodes() {
		out[n.GetName()] = n
	}
	return out, nil
}

func runJobLogs(e *env, args []string) error {
	fs := flag.NewFlagSet("unum job logs", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	ns := nsFlag(fs)
	task := fs.Int("task", -1, "only task N (its index)")
	follow := fs.Bool("f", false, "follow: keep printing new lines")
	c, err := cf.connect(e, fs, args, 1, "unum job logs NAME [--task N] [-f] [-n NAMESPACE]", nil)
	if err != nil {
		return err
	}
	defer c.close()
	st, err := jobStatus(c, *ns, c.args[0])
	if err != nil {
		return err
	}
	nodes, err := nodesByName(c)
	if err != nil {
		return err
	}
	creds, err := cf.credentials()
	if err != nil {
		return err
	}
	var allocs []*unumv1.Allocation
	for _, a := range st.GetAllocations() {
		if *task < 0 || int(a.GetIndex()) == *task {
			allocs = append(allocs, a)
		}
	}
	if len(allocs) == 0 {
		return fmt.Errorf("job %s/%s has no task%s placed", *ns, c.args[0], map[bool]string{true: fmt.Sprintf(" %d", *task), false: ""}[*task >= 0])
	}
	ctx := c.ctx
	if *follow {
		// Following ends with the user's interrupt, not the call timeout.
		ctx = e.ctx
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(allocs))
	for i, a := range allocs {
		wg.Go(func() {
			n, ok := nodes[a.GetNode()]
			if !ok {
				errs[i] = fmt.Errorf("task %d: node %s is not a member", a.GetIndex(), a.GetNode())
				return
			}
			errs[i] = streamLogs(ctx, creds, n, a, *follow, func(prefix, stream string, line []byte) {
				mu.Lock()
				defer mu.Unlock()
				w := e.stdout
				if stream == "stderr" {
					w = e.stderr
				}
				fmt.Fprintf(w, "%s %s", prefix, line)
				if len(line) == 0 || line[len(line)-1] != '\n' {
					fmt.Fprintln(w)
				}
			})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func streamLogs(ctx context.Context, creds *rpc.Credentials, n *unumv1.Node, a *unumv1.Allocation, follow bool, emit func(prefix, stream string, line []byte)) error {
	cc, err := dialNodeAt(creds, n)
	if err != nil {
		return fmt.Errorf("task %d on %s: %w", a.GetIndex(), n.GetName(), err)
	}
	defer cc.Close()
	s, err := unumv1.NewTasksClient(cc).Logs(ctx, &unumv1.TaskLogsRequest{AllocId: a.GetId(), Follow: follow, Namespace: a.GetNamespace(), Job: a.GetJob()})
	if err != nil {
		return fmt.Errorf("task %d on %s: %w", a.GetIndex(), n.GetName(), err)
	}
	prefix := fmt.Sprintf("[%s[%d]]", a.GetJob(), a.GetIndex())
	for {
		chunk, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if follow && ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("task %d on %s: %w", a.GetIndex(), n.GetName(), err)
		}
		emit(prefix, chunk.GetStream(), chunk.GetLine())
	}
}

// endpoint is where a running task listens.
type endpoint struct {
	Task    int    `json:"task"`
	Node    string `json:"node"`
	Port    string `json:"port"`
	Address string `json:"address"`
}

func runJobEndpoints(e *env, args []string) error {
	fs := flag.NewFlagSet("unum job endpoints", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	ns := nsFlag(fs)
	c, err := cf.connect(e, fs, args, 1, "unum job endpoints NAME [-n NAMESPACE]", nil)
	if err != nil {
		return err
	}
	defer c.close()
	st, err := jobStatus(c, *ns, c.args[0])
	if err != nil {
		return err
	}
	var eps []endpoint
	for _, a := range st.GetAllocations() {
		if a.GetStatus().GetState() != "running" {
			continue
		}
		host := hostOf(a.GetNodeAddress())
		names := make([]string, 0, len(a.GetPorts()))
		for n := range a.GetPorts() {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			eps = append(eps, endpoint{Task: int(a.GetIndex()), Node: a.GetNode(), Port: n, Address: fmt.Sprintf("%s:%d", host, a.GetPorts()[n])})
		}
	}
	return output.Write(e.stdout, c.format, struct {
		Endpoints []endpoint `json:"endpoints"`
	}{eps}, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "TASK\tNODE\tPORT\tADDRESS")
		for _, ep := range eps {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", ep.Task, ep.Node, ep.Port, ep.Address)
		}
		return nil
	})
}

// hostOf is the host part of a node's API address.
func hostOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		return addr[:i]
	}
	return addr
}

// psRow is one task in `unum ps`.
type psRow struct {
	Node      string `json:"node"`
	Namespace string `json:"namespace"`
	Job       string `json:"job"`
	Task      int    `json:"task"`
	Alloc     string `json:"allocation"`
	SPIFFEID  string `json:"spiffe_id"`
	UID       uint32 `json:"uid"`
	PID       int32  `json:"pid"`
	State     string `json:"state"`
	Restarts  int32  `json:"restarts"`
	Started   int64  `json:"started_at_unix,omitempty"`
	CPUNanos  uint64 `json:"cpu_nanos"`
	Memory    uint64 `json:"memory_bytes"`
}

func runPs(e *env, args []string) error {
	fs := flag.NewFlagSet("unum ps", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	all := fs.Bool("all", false, "include finished tasks")
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	nodes, err := nodesByName(c)
	if err != nil {
		return err
	}
	creds, err := cf.credentials()
	if err != nil {
		return err
	}
	var compute []*unumv1.Node
	for _, n := range nodes {
		if slices.Contains(n.GetRoles(), "compute") {
			compute = append(compute, n)
		}
	}
	rows, failures := askEach(compute, func(n *unumv1.Node) ([]psRow, error) {
		cc, err := dialNodeAt(creds, n)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		resp, err := unumv1.NewTasksClient(cc).List(c.ctx, &unumv1.ListTasksRequest{All: *all})
		if err != nil {
			return nil, err
		}
		var out []psRow
		for _, t := range resp.GetTasks() {
			out = append(out, psRow{Node: n.GetName(), Namespace: t.GetNamespace(), Job: t.GetJob(), Task: int(t.GetIndex()),
				Alloc: t.GetId(), SPIFFEID: t.GetSpiffeId(), UID: t.GetUid(), PID: t.GetPid(), State: t.GetState(),
				Restarts: t.GetRestarts(), Started: t.GetStartedAtUnix(), CPUNanos: t.GetCpuNanos(), Memory: t.GetMemoryBytes()})
		}
		return out, nil
	})
	slices.SortFunc(rows, func(a, b psRow) int {
		return strings.Compare(a.Node+"/"+a.Namespace+"/"+a.Job+fmt.Sprintf("/%09d", a.Task), b.Node+"/"+b.Namespace+"/"+b.Job+fmt.Sprintf("/%09d", b.Task))
	})
	now := time.Now()
	err = output.Write(e.stdout, c.format, struct {
		Tasks []psRow `json:"tasks"`
	}{rows}, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "NODE\tJOB\tTASK\tIDENTITY\tUID\tPID\tSTATE\tUPTIME\tCPU\tMEMORY\tRESTARTS")
		for _, r := range rows {
			up := "-"
			if r.Started > 0 && r.State == "running" {
				up = now.Sub(time.Unix(r.Started, 0)).Truncate(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\n", r.Node, r.Namespace, r.Job, r.Task, r.SPIFFEID, r.UID, r.PID,
				r.State, up, time.Duration(r.CPUNanos).Truncate(time.Millisecond), fmtBytes(r.Memory), r.Restarts)
		}
		return nil
	})
	for _, f := range failures {
		fmt.Fprintf(e.stderr, "node %s did not answer: %v\n", f.node, f.err)
	}
	if err == nil && len(failures) > 0 {
		return fmt.Errorf("%d node(s) did not answer", len(failures))
	}
	return err
}

func fmtBytes(b uint64) string {
	const mib = 1 << 20
	if b < mib {
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%.1fMiB", float64(b)/mib)
}

func runNodeDrain(e *env, args []string) error {
	fs := flag.NewFlagSet("unum node drain", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	undo := fs.Bool("undo", false, "make the node schedulable again")
	c, err := cf.connect(e, fs, args, 1, "unum node drain NAME [--undo]", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewSchedulerClient(c.conn).DrainNode(c.ctx, &unumv1.DrainNodeRequest{Name: c.args[0], Drain: !*undo})
	if err != nil {
		return err
	}
	return output.Write(e.stdout, c.format, resp, func(tw *tabwriter.Writer) error {
		if resp.GetNode().GetDraining() {
			fmt.Fprintf(tw, "node %s is draining: it gets no new tasks (%d running stay)\n", c.args[0], resp.GetNode().GetAllocations())
		} else {
			fmt.Fprintf(tw, "node %s is schedulable\n", c.args[0])
		}
		return nil
	})
}

func runNodeLabel(e *env, args []string) error {
	fs := flag.NewFlagSet("unum node label", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, -1, "", func(pos []string) error {
		if len(pos) < 2 {
			return usagef("usage: unum node label NAME KEY=VALUE|KEY- ...")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewSchedulerClient(c.conn).LabelNode(c.ctx, &unumv1.LabelNodeRequest{Name: c.args[0], Labels: c.args[1:]})
	if err != nil {
		return err
	}
	return output.Write(e.stdout, c.format, resp, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "node %s labels: %s\n", c.args[0], fmtLabels(resp.GetNode().GetLabels()))
		return nil
	})
}

func fmtLabels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}
