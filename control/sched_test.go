package control

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
)

// heartbeater reports for a compute node, as the node's heartbeat loop
// does, until stopped.
type heartbeater struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	// tasks are reported with every heartbeat.
	tasks []*unumv1.TaskStatus
}

func startHeartbeats(t *testing.T, name string) *heartbeater {
	t.Helper()
	require.NoError(t, putNode(name))
	cc := unumv1.NewClusterClient(conn(t, "/node/"+name))
	hb := &heartbeater{stop: make(chan struct{}), done: make(chan struct{})}
	beat := func() error {
		hb.mu.Lock()
		tasks := hb.tasks
		hb.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := cc.Heartbeat(ctx, &unumv1.HeartbeatRequest{AgentReady: true, SvidExpiresAtUnix: time.Now().Add(time.Hour).Unix(),
			Compute: true, Capacity: &unumv1.Resources{CpuMillis: 1000, MemoryMib: 1024}, Limits: []string{"cpu: test"}, Tasks: tasks})
		return err
	}
	require.NoError(t, beat())
	go func() {
		defer close(hb.done)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-hb.stop:
				return
			case <-tick.C:
				_ = beat()
			}
		}
	}()
	t.Cleanup(hb.halt)
	return hb
}

func (hb *heartbeater) halt() {
	select {
	case <-hb.stop:
	default:
		close(hb.stop)
	}
	<-hb.done
}

func putNode(name string) error {
	id := spiffeid.RequireFromPath(h.td, "/node/"+name)
	_, err := h.etcd.Client().Put(context.Background(), nodeKey(name), mustJSON(NodeRecord{Name: name, SPIFFEID: id.String(), Roles: []string{"compute"}, APIAddress: "127.0.0.1:1"}))
	return err
}

// allocsOfJob reads the job's allocations from etcd.
func allocsOfJob(t *testing.T, ns, job string) []AllocRecord {
	t.Helper()
	resp, err := h.etcd.Client().Get(ctxT(t), prefixAllocs, clientv3.WithPrefix())
	require.NoError(t, err)
	var out []AllocRecord
	for _, kv := range resp.Kvs {
		a, err := decode[AllocRecord](kv.Value)
		require.NoError(t, err)
		if a.Namespace == ns && a.Job == job {
			out = append(out, a)
		}
	}
	return out
}

func waitAllocs(t *testing.T, ns, job string, what string, ok func([]AllocRecord) bool) []AllocRecord {
	t.Helper()
	var got []AllocRecord
	require.Eventually(t, func() bool { got = allocsOfJob(t, ns, job); return ok(got) }, 20*time.Second, 50*time.Millisecond, "waiting for %s", what)
	return got
}

const schedJob = `
name: sched-e2e
type: service
count: 2
# HTML-special characters: the stored spec must stay canonical.
task: {command: /bin/sleep, args: ["1000"], env: {X: "a<b&c>"}}
resources: {cpu: 400, memory: 256}
anti_affinity: node
ports: [http]
`

// TestSchedulerEndToEnd drives the real leader against the harness's
// etcd: submit, place, bind identities to placements, lose a node, stop.
func TestSchedulerEndToEnd(t *testing.T) {
	hbs := map[string]*heartbeater{}
	for _, n := range []string{"sched-a", "sched-b", "sched-c"} {
		hbs[n] = startHeartbeats(t, n)
	}
	// Other tests' nodes and jobs must not take these nodes: label them and
	// constrain the job to the label.
	sched := unumv1.NewSchedulerClient(conn(t, "/user/admin"))
	for n := range hbs {
		_, err := sched.LabelNode(ctxT(t), &unumv1.LabelNodeRequest{Name: n, Labels: []string{"suite=sched"}})
		require.NoError(t, err)
	}
	spec := []byte(schedJob + "constraints: [{label: suite, op: \"=\", value: sched}]\n")

	// A dry run plans and stores nothing.
	dry, err := sched.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: spec, Namespace: "default", Name: "sched-e2e", DryRun: true})
	require.NoError(t, err)
	require.False(t, dry.GetSubmitted())
	require.Len(t, dry.GetPlan().GetPlacements(), 2)
	require.NotEqual(t, dry.GetPlan().GetPlacements()[0].GetNode(), dry.GetPlan().GetPlacements()[1].GetNode())
	resp, err := h.etcd.Client().Get(ctxT(t), jobKey("default", "sched-e2e"))
	require.NoError(t, err)
	require.Empty(t, resp.Kvs, "a dry run stored the job")

	sub, err := sched.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: spec, Namespace: "default", Name: "sched-e2e"})
	require.NoError(t, err)
	require.True(t, sub.GetSubmitted())
	require.Equal(t, "spiffe://unum.test/ns/default/job/sched-e2e", sub.GetJob().GetSpiffeId())
	allocs := waitAllocs(t, "default", "sched-e2e", "two placements", func(a []AllocRecord) bool { return len(a) == 2 })
	require.NotEqual(t, allocs[0].Node, allocs[1].Node, "anti-affinity")
	st, err := sched.JobStatus(ctxT(t), &unumv1.JobStatusRequest{Namespace: "default", Name: "sched-e2e"})
	require.NoError(t, err)
	require.Equal(t, "pending", st.GetJob().GetState(), "placed, nothing reported running yet")
	// Env values (secrets) are not shown, to anyone: the spec is redacted.
	require.NotContains(t, st.GetJob().GetSpecJson(), "a<b&c>")
	require.Contains(t, st.GetJob().GetSpecJson(), `"X":"(redacted)"`)
	for _, a := range st.GetAllocations() {
		require.NotContains(t, a.GetSpecJson(), "a<b&c>")
	}
	for _, a := range allocs {
		require.Contains(t, a.Ports, "http")
		require.GreaterOrEqual(t, a.Ports["http"], 20000)
	}
	// The same spec again changes nothing.
	again, err := sched.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: spec, Namespace: "default", Name: "sched-e2e"})
	require.NoError(t, err)
	require.False(t, again.GetSubmitted())
	require.Len(t, again.GetPlan().GetKept(), 2)

	victim := allocs[0]
	var other string
	for n := range hbs {
		if n != allocs[0].Node && n != allocs[1].Node {
			other = n
		}
	}
	jobID := "spiffe://unum.test/ns/default/job/sched-e2e"

	t.Run("the CA mints a task's SVID only for the node it is placed on", func(t *testing.T) {
		thief := unumv1.NewIdentityClient(conn(t, "/node/"+other))
		_, err := thief.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: allocEntryPrefix + victim.ID, SpiffeId: jobID, Csr: csrFor(t, jobID)})
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "not assigned to node "+other)
		owner := unumv1.NewIdentityClient(conn(t, "/node/"+victim.Node))
		// The owner cannot mint another job's identity on its allocation.
		_, err = owner.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: allocEntryPrefix + victim.ID, SpiffeId: "spiffe://unum.test/ns/default/job/other", Csr: csrFor(t, "spiffe://unum.test/ns/default/job/other")})
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		got, err := owner.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: allocEntryPrefix + victim.ID, SpiffeId: jobID, Csr: csrFor(t, jobID)})
		require.NoError(t, err)
		require.NotEmpty(t, got.GetChain())
		evs := h.findEvents(t, audit.ActionSVIDIssue, func(e *audit.Event) bool {
			return e.Outcome == audit.Deny && e.Subject == "spiffe://unum.test/node/"+other
		})
		require.NotEmpty(t, evs, "the refusal is audited")
	})

	t.Run("a node reports only on its own allocations", func(t *testing.T) {
		hb := hbs[other]
		hb.mu.Lock()
		hb.tasks = []*unumv1.TaskStatus{{Id: victim.ID, State: "running", Pid: 4242}}
		hb.mu.Unlock()
		owner := hbs[victim.Node]
		owner.mu.Lock()
		owner.tasks = []*unumv1.TaskStatus{{Id: victim.ID, State: "running", Pid: 77}}
		owner.mu.Unlock()
		require.Eventually(t, func() bool {
			r, err := h.etcd.Client().Get(ctxT(t), taskStatusKey(victim.Node, victim.ID))
			return err == nil && len(r.Kvs) == 1
		}, 10*time.Second, 50*time.Millisecond)
		r, err := h.etcd.Client().Get(ctxT(t), taskStatusKey(other, victim.ID))
		require.NoError(t, err)
		require.Empty(t, r.Kvs, "a node wrote a state for another node's task")
		st, err := sched.JobStatus(ctxT(t), &unumv1.JobStatusRequest{Namespace: "default", Name: "sched-e2e"})
		require.NoError(t, err)
		require.Equal(t, int32(1), st.GetJob().GetRunning())
		hb.mu.Lock()
		hb.tasks = nil
		hb.mu.Unlock()
	})

	t.Run("a lost node's task is re-placed after the grace period", func(t *testing.T) {
		hbs[victim.Node].halt()
		after := waitAllocs(t, "default", "sched-e2e", "re-placement", func(a []AllocRecord) bool {
			for _, x := range a {
				if x.ID == victim.ID {
					return false
				}
			}
			return len(a) == 2
		})
		for _, a := range after {
			require.NotEqual(t, victim.Node, a.Node)
		}
		require.NotEmpty(t, h.findEvents(t, audit.ActionNodeDown, func(e *audit.Event) bool { return e.Resource == "node/-/"+victim.Node }))
		require.NotEmpty(t, h.findEvents(t, audit.ActionJobPlace, nil))
		// The lost node can no longer mint for the task it had.
		owner := unumv1.NewIdentityClient(conn(t, "/node/"+victim.Node))
		_, err := owner.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: allocEntryPrefix + victim.ID, SpiffeId: jobID, Csr: csrFor(t, jobID)})
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	})

	t.Run("stop kills every task", func(t *testing.T) {
		_, err := sched.StopJob(ctxT(t), &unumv1.StopJobRequest{Namespace: "default", Name: "sched-e2e"})
		require.NoError(t, err)
		waitAllocs(t, "default", "sched-e2e", "no allocations", func(a []AllocRecord) bool { return len(a) == 0 })
		st, err := sched.JobStatus(ctxT(t), &unumv1.JobStatusRequest{Namespace: "default", Name: "sched-e2e"})
		require.NoError(t, err)
		require.Equal(t, "stopped", st.GetJob().GetState())
	})
}

func TestSchedulerRefusals(t *testing.T) {
	admin := unumv1.NewSchedulerClient(conn(t, "/user/admin"))
	for _, tc := range []struct {
		name string
		who  string
		req  *unumv1.SubmitJobRequest
		code codes.Code
		msg  string
	}{
		{"a spec naming another job than the request", "/user/admin",
			&unumv1.SubmitJobRequest{Spec: []byte(schedJob), Namespace: "default", Name: "other"}, codes.InvalidArgument, "the spec is job default/sched-e2e"},
		{"a spec in another namespace than decided", "/user/admin",
			&unumv1.SubmitJobRequest{Spec: []byte(schedJob), Namespace: "bank", Name: "sched-e2e"}, codes.InvalidArgument, "the spec is job default/sched-e2e"},
		{"a bad spec", "/user/admin",
			&unumv1.SubmitJobRequest{Spec: []byte("name: x\ntype: service\n"), Namespace: "default", Name: "x"}, codes.InvalidArgument, "task.command"},
		{"egress in another trust domain", "/user/admin",
			&unumv1.SubmitJobRequest{Spec: []byte(schedJob + "egress: [\"spiffe://evil.test/ns/a/job/b\"]\n"), Namespace: "default", Name: "sched-e2e"}, codes.InvalidArgument, "egress"},
		{"a workload submitting a job", "/ns/default/job/web",
			&unumv1.SubmitJobRequest{Spec: []byte(schedJob), Namespace: "default", Name: "sched-e2e"}, codes.PermissionDenied, ""},
		{"a node submitting a job", "/node/node-1",
			&unumv1.SubmitJobRequest{Spec: []byte(schedJob), Namespace: "default", Name: "sched-e2e"}, codes.PermissionDenied, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := admin
			if tc.who != "/user/admin" {
				c = unumv1.NewSchedulerClient(conn(t, tc.who))
			}
			_, err := c.SubmitJob(ctxT(t), tc.req)
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), tc.msg)
		})
	}
	t.Run("labels are checked", func(t *testing.T) {
		_, err := admin.LabelNode(ctxT(t), &unumv1.LabelNodeRequest{Name: "node-1", Labels: []string{"bad key=x"}})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		_, err = admin.LabelNode(ctxT(t), &unumv1.LabelNodeRequest{Name: "node-1", Labels: []string{"node=x"}})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		_, err = admin.LabelNode(ctxT(t), &unumv1.LabelNodeRequest{Name: "nope", Labels: []string{"a=b"}})
		require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	})
	t.Run("egress the policy forbids is recorded as denied, not granted", func(t *testing.T) {
		spec := []byte(schedJob + "egress: [\"spiffe://unum.test/ns/default/job/db\", \"spiffe://unum.test/ns/bank/job/vault\"]\n")
		resp, err := admin.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: spec, Namespace: "default", Name: "sched-e2e", DryRun: true})
		require.NoError(t, err)
		eg := resp.GetJob().GetEgress()
		require.Len(t, eg, 2)
		require.True(t, eg[0].GetAllowed())
		require.False(t, eg[1].GetAllowed())
		require.NotEmpty(t, eg[1].GetReasons())
	})
}

// TestStaleLeaderCannotCommit: a plan fenced by an election key that is
// no longer the leader's (its session expired, a successor was elected)
// writes nothing; nor does a plan computed from a state that changed.
func TestStaleLeaderCannotCommit(t *testing.T) {
	require.NoError(t, putNode("stale-a"))
	st, err := h.srv.readSchedState(ctxT(t))
	require.NoError(t, err)
	a := AllocRecord{ID: "stale0000000001", Namespace: "default", Job: "stale", Node: "stale-a", JobVersion: 1, SPIFFEID: "spiffe://unum.test/ns/default/job/stale"}
	r := round{place: []AllocRecord{a}}
	goneLeader := clientv3.Compare(clientv3.CreateRevision(prefixSchedLeader+"/no-such-key"), "=", 12345)
	err = h.srv.commitRound(ctxT(t), goneLeader, st, r)
	require.Error(t, err)
	require.Contains(t, err.Error(), "optimistic concurrency")
	got, err := h.etcd.Client().Get(ctxT(t), allocKey("stale-a", a.ID))
	require.NoError(t, err)
	require.Empty(t, got.Kvs, "a stale leader's plan was applied")

	// A valid fence, but the node's allocations changed after the read.
	// (A record the leader cannot read, so the running leader leaves it be.)
	_, err = h.etcd.Client().Put(ctxT(t), allocKey("stale-a", "stale0000000002"), "not json")
	require.NoError(t, err)
	defer h.etcd.Client().Delete(context.Background(), allocKey("stale-a", "stale0000000002"))
	always := clientv3.Compare(clientv3.CreateRevision(nodeKey("stale-a")), ">", 0)
	err = h.srv.commitRound(ctxT(t), always, st, r)
	require.Error(t, err)
	got, err = h.etcd.Client().Get(ctxT(t), allocKey("stale-a", a.ID))
	require.NoError(t, err)
	require.Empty(t, got.Kvs, "a plan from a stale read was applied")
}

// TestEnforcementRequired: with enforcement required, a node that does
// not enforce (the test nodes report none) is shown as unschedulable and
// receives no new tasks; settings changes are checked, privileged and
// audited.
func TestEnforcementRequired(t *testing.T) {
	startHeartbeats(t, "req-a")
	admin := unumv1.NewEnforcementClient(conn(t, "/user/admin"))
	_, err := admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Mode: "partial"})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Namespace: "shop"})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Mode: "audit-only", Namespace: "Not_A_Label"})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	off := false
	_, err = unumv1.NewEnforcementClient(conn(t, "/node/req-a")).Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Required: &off})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	on := true
	got, err := admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Required: &on})
	require.NoError(t, err)
	require.True(t, got.GetRequired())
	t.Cleanup(func() {
		_, _ = admin.Configure(context.Background(), &unumv1.ConfigureEnforcementRequest{Required: &off})
	})
	got, err = admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Mode: "audit-only", Namespace: "shop"})
	require.NoError(t, err)
	require.Equal(t, []string{"shop"}, got.GetAuditOnlyNamespaces())
	got, err = admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Mode: "enforce", Namespace: "shop"})
	require.NoError(t, err)
	require.Empty(t, got.GetAuditOnlyNamespaces())
	// A namespace cannot enforce alone in an audit-only cluster.
	_, err = admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Mode: "audit-only"})
	require.NoError(t, err)
	_, err = admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Mode: "enforce", Namespace: "shop"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	got, err = admin.Configure(ctxT(t), &unumv1.ConfigureEnforcementRequest{Mode: "enforce"})
	require.NoError(t, err)
	require.False(t, got.GetAuditOnly())
	require.True(t, got.GetRequired(), "a namespace change kept the requirement")

	st, err := admin.Status(ctxT(t), &unumv1.EnforcementStatusRequest{})
	require.NoError(t, err)
	require.True(t, st.GetSettings().GetRequired())
	nodes, err := unumv1.NewClusterClient(conn(t, "/user/admin")).ListNodes(ctxT(t), &unumv1.ListNodesRequest{})
	require.NoError(t, err)
	found := false
	for _, n := range nodes.GetNodes() {
		if n.GetName() == "req-a" {
			found = true
			require.Contains(t, n.GetUnschedulable(), "enforcement is required")
		}
	}
	require.True(t, found)
	sched := unumv1.NewSchedulerClient(conn(t, "/user/admin"))
	_, err = sched.LabelNode(ctxT(t), &unumv1.LabelNodeRequest{Name: "req-a", Labels: []string{"suite=req"}})
	require.NoError(t, err)
	spec := "name: req\ntype: service\ntask: {command: /bin/true}\nresources: {cpu: 10, memory: 10}\nconstraints: [{label: suite, op: \"=\", value: req}]\n"
	resp, err := sched.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: []byte(spec), Namespace: "default", Name: "req", DryRun: true})
	require.NoError(t, err)
	require.Empty(t, resp.GetPlan().GetPlacements())
	require.Len(t, resp.GetPlan().GetUnplaced(), 1)
	evs := h.findEvents(t, audit.ActionEnforcementSet, func(e *audit.Event) bool { return e.Kind == audit.KindKernel })
	require.NotEmpty(t, evs)
	last := details[EnforcementDetails](t, evs[len(evs)-1])
	require.True(t, last.Before.AuditOnly)
	require.False(t, last.After.AuditOnly)
}

// TestSubmitIntoForeignNamespace: a principal bound to one namespace
// (data.namespace_bindings) submits there and nowhere else, through the
// real route, interceptor and policy; a request naming its own namespace
// with a spec naming another is refused too.
func TestSubmitIntoForeignNamespace(t *testing.T) {
	admin := policyClient(t, "/user/admin")
	t.Cleanup(func() { restoreBuiltin(t) })
	applied, err := admin.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: bundleWith(map[string]string{
		"data.json": `{"bindings": {}, "namespace_bindings": {"spiffe://unum.test/user/shop-dev": ["shop"]}}`})})
	require.NoError(t, err)
	waitServing(t, applied.GetRevision())
	dev := unumv1.NewSchedulerClient(conn(t, "/user/shop-dev"))
	job := func(ns string) []byte {
		return []byte("name: web\nnamespace: " + ns + "\ntype: service\ntask: {command: /bin/true}\nresources: {cpu: 10, memory: 10}\n")
	}
	_, err = dev.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: job("shop"), Namespace: "shop", Name: "web", DryRun: true})
	require.NoError(t, err)
	_, err = dev.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: job("bank"), Namespace: "bank", Name: "web", DryRun: true})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = dev.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: job("bank"), Namespace: "shop", Name: "web", DryRun: true})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = dev.StopJob(ctxT(t), &unumv1.StopJobRequest{Namespace: "bank", Name: "web"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
}

// TestIdentityNumbers: every job gets a distinct, non-zero identity number
// for the kernel's maps, even when submitted concurrently, and keeps it
// across versions and resubmissions.
func TestIdentityNumbers(t *testing.T) {
	admin := unumv1.NewSchedulerClient(conn(t, "/user/admin"))
	spec := func(name, cmd string) []byte {
		// A constraint no node meets: the jobs stay unplaced.
		return []byte("name: " + name + "\nnamespace: netid\ntype: service\ntask: {command: " + cmd + "}\nresources: {cpu: 10, memory: 10}\nconstraints: [{label: suite, op: \"=\", value: none}]\n")
	}
	names := []string{"a", "b", "c", "d", "e", "f"}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Go(func() {
			for {
				_, err := admin.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: spec(n, "/bin/true"), Namespace: "netid", Name: n})
				if status.Code(err) == codes.Aborted {
					continue
				}
				errs[i] = err
				return
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, n := range names {
			_, _ = admin.StopJob(context.Background(), &unumv1.StopJobRequest{Namespace: "netid", Name: n})
		}
	})
	numbers := func() map[string]uint32 {
		out := map[string]uint32{}
		for _, n := range names {
			resp, err := h.etcd.Client().Get(ctxT(t), jobKey("netid", n))
			require.NoError(t, err)
			require.Len(t, resp.Kvs, 1)
			rec, err := decode[JobRecord](resp.Kvs[0].Value)
			require.NoError(t, err)
			out[n] = rec.NetID
		}
		return out
	}
	seen := map[uint32]string{}
	first := numbers()
	for i, n := range names {
		require.NoError(t, errs[i], n)
		num := first[n]
		require.NotZero(t, num, n)
		require.Empty(t, seen[num], "%s and %s share identity number %d", n, seen[num], num)
		seen[num] = n
	}
	_, err := admin.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: spec("a", "/bin/true"), Namespace: "netid", Name: "a"})
	require.NoError(t, err)
	_, err = admin.SubmitJob(ctxT(t), &unumv1.SubmitJobRequest{Spec: spec("b", "/bin/false"), Namespace: "netid", Name: "b"})
	require.NoError(t, err)
	require.Equal(t, first, numbers(), "a resubmission or a new version changed an identity number")
}
