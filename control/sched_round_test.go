package control

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/scheduler"
	"github.com/unumos/unum/scheduler/jobspec"
)

// roundFixture builds a schedState by hand: the round is a pure function,
// so it is tested without etcd.
type roundFixture struct {
	st        schedState
	now       time.Time
	observing time.Time
	ids       int
}

func newRoundFixture() *roundFixture {
	return &roundFixture{now: time.Unix(1_800_000_000, 0), st: schedState{
		rev: 100, nodes: map[string]NodeRecord{}, status: map[string]NodeStatus{},
		sched: map[string]NodeSched{}, tasks: map[string]TaskStatusRecord{},
	}}
}

func (f *roundFixture) node(name string, age time.Duration, cpu, mem int64, draining bool) {
	f.st.nodes[name] = NodeRecord{Name: name, Roles: []string{"compute"}}
	f.st.status[name] = NodeStatus{LastSeen: f.now.Add(-age), AgentReady: true, Enforcement: "degraded"}
	f.st.sched[name] = NodeSched{Compute: true, CPUMillis: cpu, MemoryMiB: mem, Draining: draining}
}

func (f *roundFixture) job(t *testing.T, yaml string, version int64, stopped bool) {
	t.Helper()
	j, err := jobspec.Parse([]byte(yaml))
	require.NoError(t, err)
	canon, err := j.Canonical()
	require.NoError(t, err)
	f.st.jobs = append(f.st.jobs, jobEntry{rec: JobRecord{Namespace: j.Namespace, Name: j.Name, SPIFFEID: "spiffe://unum.test/ns/" + j.Namespace + "/job/" + j.Name,
		Spec: string(canon), Version: version, Stopped: stopped}, modRev: 10, spec: j})
	sort.Slice(f.st.jobs, func(a, b int) bool { return f.st.jobs[a].rec.Name < f.st.jobs[b].rec.Name })
}

func (f *roundFixture) alloc(id, job string, index int, node string, version int64) {
	f.st.allocs = append(f.st.allocs, allocEntry{rec: AllocRecord{ID: id, Namespace: "default", Job: job, Index: index, Node: node,
		JobVersion: version, CPUMillis: 100, MemoryMiB: 64, Priority: 500, Class: "prod"}, modRev: 20})
	sortAllocs(f.st.allocs)
}

func (f *roundFixture) run() round {
	return planRound(f.st, f.now, f.observing, 10*time.Second, 20*time.Second, func() string { f.ids++; return fmt.Sprintf("new%d", f.ids) })
}

// describe renders a round for comparison: removals with reasons, then
// finished, then placements.
func describe(r round) string {
	var b strings.Builder
	for _, rm := range r.remove {
		fmt.Fprintf(&b, "remove %s (%s/%s[%d] on %s): %s\n", rm.alloc.rec.ID, rm.alloc.rec.Namespace, rm.alloc.rec.Job, rm.alloc.rec.Index, rm.alloc.rec.Node, rm.reason)
	}
	for _, a := range r.finished {
		fmt.Fprintf(&b, "finished %s\n", a.rec.ID)
	}
	for _, a := range r.place {
		fmt.Fprintf(&b, "place %s %s/%s[%d] v%d on %s\n", a.ID, a.Namespace, a.Job, a.Index, a.JobVersion, a.Node)
	}
	for _, u := range r.plan.Unplaced {
		fmt.Fprintf(&b, "unplaced %s\n", u.Task)
	}
	return b.String()
}

const webJob = `
name: web
type: service
count: 2
task: {command: /bin/true}
resources: {cpu: 100, memory: 64}
anti_affinity: node
`

func TestPlanRound(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, f *roundFixture)
		want  string
	}{
		{
			name: "a new job is placed, one task per node",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				f.job(t, webJob, 1, false)
			},
			want: "place new1 default/web[0] v1 on a\nplace new2 default/web[1] v1 on b\n",
		},
		{
			name: "a placed job is left alone",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				f.job(t, webJob, 1, false)
				f.alloc("x1", "web", 0, "a", 1)
				f.alloc("x2", "web", 1, "b", 1)
			},
			want: "",
		},
		{
			name: "a down node keeps its tasks and gets no new ones",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", 15*time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				f.node("c", time.Second, 1000, 1024, false)
				f.job(t, webJob, 1, false)
				f.alloc("x1", "web", 0, "a", 1)
			},
			want: "place new1 default/web[1] v1 on b\n",
		},
		{
			name: "a lost node's tasks are re-placed elsewhere",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", 31*time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				f.node("c", time.Second, 1000, 1024, false)
				f.job(t, webJob, 1, false)
				f.alloc("x1", "web", 0, "a", 1)
				f.alloc("x2", "web", 1, "b", 1)
			},
			want: "remove x1 (default/web[0] on a): node a lost its lease\nplace new1 default/web[0] v1 on c\n",
		},
		{
			name: "a new version waits for a down node's task: it may still run",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", 15*time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				f.node("c", time.Second, 1000, 1024, false)
				f.job(t, webJob, 2, false)
				f.alloc("x1", "web", 0, "a", 1)
				f.alloc("x2", "web", 1, "b", 1)
			},
			want: "remove x2 (default/web[1] on b): replaced by job version 2\nplace new1 default/web[1] v2 on b\n",
		},
		{
			name: "a node that can no longer run tasks loses them",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				f.st.sched["a"] = NodeSched{}
				f.job(t, webJob, 1, false)
				f.alloc("x1", "web", 0, "a", 1)
				f.alloc("x2", "web", 1, "b", 1)
			},
			want: "remove x1 (default/web[0] on a): node a cannot run tasks\nunplaced default/web[0]\n",
		},
		{
			name: "a draining node gets nothing",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, true)
				f.node("b", time.Second, 1000, 1024, false)
				f.job(t, webJob, 1, false)
			},
			want: "place new1 default/web[0] v1 on b\nunplaced default/web[1]\n",
		},
		{
			name: "a node failing a cluster requirement gets nothing",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				st := f.st.status["b"]
				st.Enforcement = string(enforcement.ModeAuditOnly)
				f.st.status["b"] = st
				f.st.settings = EnforcementSettings{Required: true}
				f.job(t, webJob, 1, false)
			},
			want: "place new1 default/web[0] v1 on b\nunplaced default/web[1]\n",
		},
		{
			name: "a node whose agent has not synced gets nothing",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				st := f.st.status["a"]
				st.AgentReady = false
				f.st.status["a"] = st
				f.job(t, webJob, 1, false)
			},
			want: "place new1 default/web[0] v1 on b\nunplaced default/web[1]\n",
		},
		{
			name: "a stopped job's tasks go",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.job(t, webJob, 1, true)
				f.alloc("x1", "web", 0, "a", 1)
			},
			want: "remove x1 (default/web[0] on a): job stopped\n",
		},
		{
			name: "a new version replaces the old one's tasks",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				f.job(t, webJob, 2, false)
				f.alloc("x1", "web", 0, "a", 1)
				f.alloc("x2", "web", 1, "b", 2)
			},
			want: "remove x1 (default/web[0] on a): replaced by job version 2\nplace new1 default/web[0] v2 on a\n",
		},
		{
			name: "a removed node's tasks and a deleted job's tasks go",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("b", time.Second, 1000, 1024, false)
				f.alloc("x1", "gone", 0, "b", 1)
				f.alloc("x2", "gone", 1, "zz", 1)
			},
			want: "remove x1 (default/gone[0] on b): job deleted\nremove x2 (default/gone[1] on zz): node zz was removed\n",
		},
		{
			name: "a finished task is marked done, not re-placed",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.node("b", time.Second, 1000, 1024, false)
				f.job(t, webJob, 1, false)
				f.alloc("x1", "web", 0, "a", 1)
				f.alloc("x2", "web", 1, "b", 1)
				f.st.tasks["x1"] = TaskStatusRecord{State: "failed"}
				f.st.tasks["x2"] = TaskStatusRecord{State: "running"}
			},
			want: "finished x1\n",
		},
		{
			name: "count reduced",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.job(t, strings.Replace(webJob, "count: 2", "count: 1", 1), 1, false)
				f.alloc("x1", "web", 0, "a", 1)
				f.alloc("x2", "web", 1, "a", 1)
			},
			want: "remove x2 (default/web[1] on a): job count reduced to 1\n",
		},
		{
			name: "a node never heard from gets nothing",
			setup: func(t *testing.T, f *roundFixture) {
				f.node("a", time.Second, 1000, 1024, false)
				f.st.nodes["b"] = NodeRecord{Name: "b"}
				f.st.sched["b"] = NodeSched{Compute: true, CPUMillis: 1000, MemoryMiB: 1024}
				f.job(t, webJob, 1, false)
			},
			want: "place new1 default/web[0] v1 on a\nunplaced default/web[1]\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRoundFixture()
			tc.setup(t, f)
			require.Equal(t, tc.want, describe(f.run()))
		})
	}
}

// TestPlanRoundDeterministic: the same state gives the same round.
func TestPlanRoundDeterministic(t *testing.T) {
	build := func() round {
		f := newRoundFixture()
		for i := range 20 {
			f.node(fmt.Sprintf("n%02d", i), time.Second, 2000, 4096, i%7 == 0)
		}
		f.job(t, strings.Replace(webJob, "count: 2", "count: 9", 1), 1, false)
		f.job(t, "name: batch\ntype: batch\ncount: 30\ntask: {command: /bin/true}\nresources: {cpu: 300, memory: 100}\n", 3, false)
		return f.run()
	}
	first := describe(build())
	require.NotEmpty(t, first)
	for range 5 {
		require.Equal(t, first, describe(build()))
	}
}

func TestLeaseAndFence(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	lease, grace := 10*time.Second, 20*time.Second
	require.Equal(t, leaseUnknown, leaseOf(NodeStatus{}, false, now, lease, grace))
	require.Equal(t, leaseReady, leaseOf(NodeStatus{LastSeen: now.Add(-9 * time.Second)}, true, now, lease, grace))
	require.Equal(t, leaseDown, leaseOf(NodeStatus{LastSeen: now.Add(-10 * time.Second)}, true, now, lease, grace))
	require.Equal(t, leaseLost, leaseOf(NodeStatus{LastSeen: now.Add(-30 * time.Second)}, true, now, lease, grace))
	// A node fences itself strictly before its tasks are re-placed.
	require.Less(t, fenceAfter(lease, grace), lease+grace)
	require.Greater(t, fenceAfter(lease, grace), lease)
}

// TestNewLeaderGivesNodesALease: a leader that has just begun observing
// (elected, or back from an etcd outage) does not take the old heartbeats
// it finds for dead nodes.
func TestNewLeaderGivesNodesALease(t *testing.T) {
	f := newRoundFixture()
	f.node("a", time.Minute, 1000, 1024, false)
	f.node("b", time.Minute, 1000, 1024, false)
	f.job(t, webJob, 1, false)
	f.alloc("x1", "web", 0, "a", 1)
	f.alloc("x2", "web", 1, "b", 1)
	f.observing = f.now.Add(-2 * time.Second)
	require.Equal(t, "", describe(f.run()), "a new leader re-placed tasks at once")
	f.observing = f.now.Add(-31 * time.Second)
	require.Contains(t, describe(f.run()), "remove x1")
}

func TestParseSelector(t *testing.T) {
	nodes := []*scheduler.Node{
		{Name: "a", Labels: map[string]string{"zone": "eu", "gpu": "yes"}},
		{Name: "b", Labels: map[string]string{"zone": "us"}},
	}
	for _, tc := range []struct {
		sel  string
		want []string
	}{
		{"", []string{"a", "b"}},
		{"zone=eu", []string{"a"}},
		{"zone!=eu", []string{"b"}},
		{"gpu", []string{"a"}},
		{"node=b", []string{"b"}},
		{"node!=b,zone", []string{"a"}},
	} {
		sel, err := ParseSelector(tc.sel)
		require.NoError(t, err, tc.sel)
		var got []string
		for _, n := range nodes {
			if selects(sel, n) {
				got = append(got, n.Name)
			}
		}
		require.Equal(t, tc.want, got, tc.sel)
	}
	for sel, msg := range map[string]string{
		"bad key=x":               "is not a label key",
		"zone=not valid":          "is not a label value",
		"=x":                      "is not a label key",
		strings.Repeat("a", 1025): "at most 1024",
	} {
		_, err := ParseSelector(sel)
		require.ErrorContains(t, err, msg, sel)
	}
}
