package faultcluster

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/node"
)

// unumBin is the unum binary, built once for the package's tests: the
// nodes and the CLI are the real thing, as an operator runs them.
var unumBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", binDirPattern)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Held while the binary runs: another binary's sweep removes the
	// folder only once this process is gone, however it ended.
	lock, err := lockDirectory(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	unumBin = filepath.Join(dir, "unum")
	build := exec.Command("go", "build", "-o", unumBin, "github.com/unumos/unum/cmd/unum")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build unum:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	lock.Close()
	os.Exit(code)
}

// Timings of the shared cluster. Short SVIDs make an outage outlast them
// in seconds; the lease and grace make failover take seconds, not the
// defaults' tens of seconds, while staying above what two busy cores delay
// a heartbeat (sent every 2 s).
const (
	svidTTL   = 20 * time.Second
	nodeLease = 5 * time.Second
	downGrace = 6 * time.Second
)

// TestFaults runs the fault tests of issue 9 on one cluster of three
// control nodes and one compute-only node, each in its own network
// namespace. Each subtest puts the cluster back (heals, restarts what it
// killed) before the next.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a four-node cluster in network namespaces")
	}
	c := Start(t, Options{Binary: unumBin, Control: 3, Compute: 1, SVIDTTL: svidTTL, NodeLease: nodeLease, DownGrace: downGrace})
	t.Run("a minority partition cannot change policy or mint and converges after heal", func(t *testing.T) {
		defer restore(t, c)
		testMinorityPartition(t, c)
	})
	t.Run("workloads keep their SVIDs through a control-plane outage and renew after it", func(t *testing.T) {
		defer restore(t, c)
		testSVIDsThroughOutage(t, c)
	})
	t.Run("the scheduler leader fails over and no task runs twice", func(t *testing.T) {
		defer restore(t, c)
		testSchedulerFailover(t, c)
	})
	t.Run("no acknowledged audit event is lost across SIGKILL of any node", func(t *testing.T) {
		defer restore(t, c)
		testAuditSurvivesKill(t, c)
	})
	t.Run("a slow control node does not stop the cluster", func(t *testing.T) {
		defer restore(t, c)
		testSlowLink(t, c)
	})
}

// restore heals the network, removes rate limits, continues stopped nodes,
// restarts killed ones and waits until every node is ready again.
func restore(t *testing.T, c *Cluster) {
	t.Helper()
	c.Heal(t)
	for _, n := range c.Nodes() {
		_ = c.net.unshape(context.Background(), n.index)
		if n.PID() == 0 {
			c.startNode(t, n)
		} else {
			c.Cont(t, n)
		}
	}
	for _, n := range c.Nodes() {
		require.NoError(t, c.WaitReady(n))
	}
	// A test that failed half-way may have left nodes drained.
	undoDrains(t, c)
}

// figure logs a measured figure in the stable form the reports quote.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("figure: "+format, args...)
}

func requireOK(t *testing.T, r Result, what string) {
	t.Helper()
	require.Equal(t, 0, r.Code, "%s: %s%s", what, r.Stdout, r.Stderr)
}

type policyStatus struct {
	Latest int64 `json:"latest_revision"`
	Nodes  []struct {
		Name     string `json:"name"`
		Revision int64  `json:"revision"`
	} `json:"nodes"`
}

// revisionOf is the revision node name reports serving, and whether the
// status lists the node at all.
func (p policyStatus) revisionOf(name string) (int64, bool) {
	for _, n := range p.Nodes {
		if n.Name == name {
			return n.Revision, true
		}
	}
	return 0, false
}

// requireRevisionOf is revisionOf for a node that must be listed: a missing
// node must not pass a comparison by default.
func requireRevisionOf(t *testing.T, p policyStatus, name string) int64 {
	t.Helper()
	rev, ok := p.revisionOf(name)
	require.True(t, ok, "policy status does not list %s: %+v", name, p.Nodes)
	return rev
}

func getPolicyStatus(t *testing.T, c *Cluster, env []string) (policyStatus, bool) {
	t.Helper()
	r := c.Unum(t, env, "policy", "status", "-o", "json", "--timeout", "5s")
	var st policyStatus
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil {
		return st, false
	}
	return st, true
}

// bundleWith writes the cluster's current bundle plus a file whose only
// content is marker (a package no decision reads): a real new revision
// that changes no right.
func bundleWith(t *testing.T, c *Cluster, marker string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bundle")
	requireOK(t, c.Unum(t, c.Env(), "policy", "get", "--out", dir), "policy get")
	rego := fmt.Sprintf("package unum.fault\n\nimport rego.v1\n\nmarker := %q\n", marker)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "fault.rego"), []byte(rego), 0o644))
	return dir
}

// register registers a workload entry and returns its id.
func register(t *testing.T, c *Cluster, env []string, id, nodeName, selector string) (string, Result) {
	t.Helper()
	r := c.Unum(t, env, "id", "register", "--spiffe-id", id, "--node", nodeName, "--selector", selector, "-o", "json", "--timeout", "10s")
	if r.Code != 0 {
		return "", r
	}
	var e struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &e), r.Stdout)
	require.NotEmpty(t, e.ID, r.Stdout)
	return e.ID, r
}

// mint asks via's API, with as's node SVID (what as's agent presents), to
// sign an SVID for entryID: the CA path every workload identity takes.
func mint(ctx context.Context, via, as *Node, entryID, id string) (*x509.Certificate, error) {
	creds, err := node.Layout{Dir: as.Dir}.Credentials()
	if err != nil {
		return nil, err
	}
	cc, err := rpc.Dial(creds, []string{via.API()})
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	sid := spiffeid.RequireFromString(id)
	key, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := ca.CreateCSR(key, sid)
	if err != nil {
		return nil, err
	}
	resp, err := unumv1.NewIdentityClient(cc).MintX509SVID(ctx, &unumv1.MintX509SVIDRequest{EntryId: entryID, SpiffeId: id, Csr: csr})
	if err != nil {
		return nil, err
	}
	if len(resp.GetChain()) == 0 {
		return nil, fmt.Errorf("mint: empty chain")
	}
	return x509.ParseCertificate(resp.GetChain()[0])
}

func etcdLeader(t *testing.T, c *Cluster, via *Node) *Node {
	t.Helper()
	st, err := c.Status(context.Background(), via)
	require.NoError(t, err)
	require.NotEmpty(t, st.GetEtcdLeader())
	return c.Node(t, st.GetEtcdLeader())
}

// testMinorityPartition: T-008, T-038, T-044 on a real partition.
func testMinorityPartition(t *testing.T, c *Cluster) {
	ctrl := c.ControlNodes()
	// Cut off the etcd leader: the majority must elect a new one and keep
	// serving, the old leader must notice it leads nobody.
	minority := etcdLeader(t, c, ctrl[0])
	majority := slices.DeleteFunc(slices.Clone(ctrl), func(n *Node) bool { return n == minority })
	via := majority[0]
	ns := "fault"
	minorityID := "spiffe://" + TrustDomain + "/ns/" + ns + "/job/minority"
	majorityID := "spiffe://" + TrustDomain + "/ns/" + ns + "/job/majority"
	minorityEntry, r := register(t, c, c.Env(), minorityID, minority.Name, "unix:uid:4242")
	requireOK(t, r, "register")
	majorityEntry, r := register(t, c, c.Env(), majorityID, via.Name, "unix:uid:4242")
	requireOK(t, r, "register")
	ctx := context.Background()
	// Both mint before the partition: what is refused later is refused
	// because of it.
	_, err := mint(ctx, minority, minority, minorityEntry, minorityID)
	require.NoError(t, err)
	st, ok := getPolicyStatus(t, c, c.Env())
	require.True(t, ok)
	before := st.Latest
	minorityBundle := bundleWith(t, c, "applied through the minority")
	majorityBundle := bundleWith(t, c, "applied through the majority")

	c.Isolate(t, minority)
	partitioned := time.Now()
	t.Logf("isolated %s (the etcd leader); majority %s", minority.Name, majority[0].Name+","+majority[1].Name)

	// The minority refuses to change policy: every attempt fails, until it
	// says why (its views are stale: it cannot confirm anything with a
	// quorum). A timeout alone would not prove the refusal is deliberate.
	var refusal string
	for deadline := time.Now().Add(60 * time.Second); ; {
		r := c.Unum(t, c.EnvAt(minority), "policy", "apply", minorityBundle, "-m", "through the minority", "--timeout", "5s")
		require.NotEqual(t, 0, r.Code, "a control node cut off from the quorum applied policy: %s", r.Stdout)
		if strings.Contains(r.Stderr, "stale") {
			require.Equal(t, 1, r.Code, r.Stderr)
			refusal = strings.TrimSpace(r.Stderr)
			break
		}
		require.True(t, time.Now().Before(deadline), "the minority never said why it refused: %s", r.Stderr)
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("minority refused policy apply after %s: %s", time.Since(partitioned).Round(100*time.Millisecond), refusal)
	// …and to mint, even for an entry of its own node it minted for just
	// before: Unavailable, naming the missing quorum or the stale view.
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err = mint(mctx, minority, minority, minorityEntry, minorityID)
	cancel()
	require.Error(t, err, "a control node cut off from the quorum minted an SVID")
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	if !strings.Contains(err.Error(), "no etcd quorum") {
		require.Contains(t, err.Error(), "stale", "%v", err)
	}
	// So does its enrolment-free admin path: registering an identity.
	neverID := "spiffe://" + TrustDomain + "/ns/" + ns + "/job/never"
	_, r = register(t, c, c.EnvAt(minority), neverID, minority.Name, "unix:uid:4243")
	require.NotEqual(t, 0, r.Code, "the minority registered an identity")

	// The majority keeps serving: policy apply and minting work through it
	// while the partition holds.
	r = c.Unum(t, c.EnvAt(via), "policy", "apply", majorityBundle, "-m", "through the majority")
	requireOK(t, r, "policy apply through the majority")
	mctx, cancel = context.WithTimeout(ctx, 20*time.Second)
	svid, err := mint(mctx, via, via, majorityEntry, majorityID)
	cancel()
	require.NoError(t, err, "the majority must mint during the partition")
	got, err := x509svid.IDFromCert(svid)
	require.NoError(t, err)
	require.Equal(t, majorityID, got.String())
	st, ok = getPolicyStatus(t, c, c.EnvAt(via))
	require.True(t, ok)
	latest := st.Latest
	require.Equal(t, before+1, latest, "exactly the majority's revision was added")
	require.Less(t, requireRevisionOf(t, st, minority.Name), latest, "the minority cannot have heard of the new revision")

	c.Heal(t)
	healed := time.Now()
	// The minority converges: it serves the majority's revision (its
	// heartbeat says so) and mints again through its own API.
	var policyAfter, mintAfter time.Duration
	for deadline := healed.Add(90 * time.Second); policyAfter == 0 || mintAfter == 0; {
		require.True(t, time.Now().Before(deadline), "the minority never converged after heal")
		if policyAfter == 0 {
			if st, ok := getPolicyStatus(t, c, c.EnvAt(minority)); ok && st.Latest == latest {
				if rev, listed := st.revisionOf(minority.Name); listed && rev == latest {
					policyAfter = time.Since(healed)
				}
			}
		}
		if mintAfter == 0 {
			mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := mint(mctx, minority, minority, minorityEntry, minorityID); err == nil {
				mintAfter = time.Since(healed)
			}
			cancel()
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Nothing the minority refused landed later.
	r = c.Unum(t, c.Env(), "policy", "history", "-o", "json")
	requireOK(t, r, "policy history")
	require.NotContains(t, r.Stdout, "through the minority")
	require.Contains(t, r.Stdout, "through the majority")
	r = c.Unum(t, c.Env(), "id", "list", "-o", "json")
	requireOK(t, r, "id list")
	require.Contains(t, r.Stdout, majorityID+`"`)
	require.NotContains(t, r.Stdout, neverID+`"`, "the registration the minority refused landed after heal")
	st, ok = getPolicyStatus(t, c, c.Env())
	require.True(t, ok)
	require.Equal(t, latest, st.Latest)
	figure(t, "minority partition: minority serves the majority's policy revision %d %s after heal; mints again %s after heal (partition lasted %s)",
		latest, policyAfter.Round(10*time.Millisecond), mintAfter.Round(10*time.Millisecond), healed.Sub(partitioned).Round(100*time.Millisecond))
}

// fetchSVID fetches the SVIDs of the test process from socket with an
// unmodified go-spiffe client, as a workload does, and returns the one for
// id. 10 s: an agent on two busy cores may take seconds to answer.
func fetchSVID(socket, id string) (*x509svid.SVID, error) {
	return fetchSVIDWithin(socket, id, 10*time.Second)
}

func fetchSVIDWithin(socket, id string, within time.Duration) (*x509svid.SVID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return nil, err
	}
	for _, s := range svids {
		if s.ID.String() == id {
			return s, nil
		}
	}
	return nil, fmt.Errorf("no svid %s among %d", id, len(svids))
}

// testSVIDsThroughOutage: the agent serves what it holds while the control
// plane is unreachable, never past expiry, and renews once it is back.
func testSVIDsThroughOutage(t *testing.T, c *Cluster) {
	w := c.ComputeOnly()[0]
	id := "spiffe://" + TrustDomain + "/ns/fault/job/outage"
	// The test process (uid 0) is the workload.
	_, r := register(t, c, c.Env(), id, w.Name, "unix:uid:0")
	requireOK(t, r, "register")
	var err error
	require.Eventually(t, func() bool { _, err = fetchSVID(w.Socket(), id); return err == nil }, 60*time.Second, 250*time.Millisecond,
		"the workload never got its SVID: %v", err)

	// The control plane is down: every control node SIGSTOPped (it holds
	// its sockets and answers nothing, as a hung or frozen process does).
	ctrl := c.ControlNodes()
	svidOutage(t, c, w, id, "control plane down (all %d control nodes SIGSTOPped)", func() {
		for _, n := range ctrl {
			c.Stop(t, n)
		}
	}, func() {
		for _, n := range ctrl {
			c.Cont(t, n)
		}
	}, len(ctrl))
	// The control plane runs but the node cannot reach it.
	svidOutage(t, c, w, id, "compute node partitioned from the control plane", func() {
		c.Partition(t, []*Node{w}, ctrl)
	}, func() { c.Heal(t) })
}

// svidOutage checks one outage: begin starts it, end ends it. The agent on
// w must serve its cached SVID for id until expiry, none after, and a new
// one after end.
func svidOutage(t *testing.T, c *Cluster, w *Node, id, what string, begin, end func(), args ...any) {
	t.Helper()
	what = fmt.Sprintf(what, args...)
	// Start from a settled agent: the SVID it serves now is the one it
	// will hold through the outage.
	_, err := fetchSVID(w.Socket(), id)
	require.NoError(t, err)
	begin()
	outage := time.Now()
	// The first SVID served once the outage holds is the cached one: no
	// mint can reach the agent any more.
	cached, err := fetchSVID(w.Socket(), id)
	require.NoError(t, err, "%s: the agent stopped serving its SVID as soon as the control plane went away", what)
	expiry := cached.Certificates[0].NotAfter
	serial := cached.Certificates[0].SerialNumber
	require.Less(t, time.Until(expiry), svidTTL+time.Second)
	served := 1
	// Until expiry (less a second for the fetch itself), every fetch
	// answers with the cached SVID.
	for time.Until(expiry) > time.Second {
		s, err := fetchSVID(w.Socket(), id)
		require.NoError(t, err, "%s: the agent stopped serving an unexpired SVID during the outage (%s before expiry)", what, time.Until(expiry))
		require.Equal(t, serial, s.Certificates[0].SerialNumber, "%s: a new SVID was minted while the control plane was unreachable", what)
		served++
		time.Sleep(250 * time.Millisecond)
	}
	// Past expiry the agent serves no expired SVID. An agent that serves
	// answers at once: 3 s is plenty, and a stream that stays silent is
	// the expected outcome.
	time.Sleep(time.Until(expiry) + 1500*time.Millisecond)
	s, err := fetchSVIDWithin(w.Socket(), id, 3*time.Second)
	if err == nil {
		require.True(t, s.Certificates[0].NotAfter.After(time.Now()), "%s: the agent served an expired SVID", what)
		require.FailNow(t, "an SVID was served after expiry although the control plane is unreachable", "%s: serial %s", what, s.Certificates[0].SerialNumber)
	}

	end()
	recovered := time.Now()
	var renewed *x509svid.SVID
	require.Eventually(t, func() bool {
		s, err := fetchSVID(w.Socket(), id)
		if err != nil {
			return false
		}
		renewed = s
		return true
	}, 90*time.Second, 100*time.Millisecond, "%s: the workload got no SVID after the control plane came back", what)
	renewal := time.Since(recovered)
	require.NotEqual(t, serial, renewed.Certificates[0].SerialNumber)
	require.True(t, renewed.Certificates[0].NotAfter.After(expiry), "%s: the renewed SVID must expire later", what)
	figure(t, "control-plane outage (%s): %d fetches served the cached SVID for %s until it expired; renewed SVID served %s after recovery",
		what, served, expiry.Sub(outage).Round(100*time.Millisecond), renewal.Round(10*time.Millisecond))
}

// schedLeaderKey is the scheduler's election prefix (control/schema.go).
const schedLeaderKey = "/unum/sched/leader"

// schedLeader is the node holding the scheduler election: the key with the
// lowest create revision under the prefix (etcd's election rule).
func schedLeader(ctx context.Context, cli *clientv3.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, schedLeaderKey+"/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// psTask is one row of `unum ps -o json`.
type psTask struct {
	Node  string `json:"node"`
	Job   string `json:"job"`
	Alloc string `json:"allocation"`
	PID   int32  `json:"pid"`
	State string `json:"state"`
}

// runningTasks lists job's running tasks from `unum ps` (nodes that do
// not answer are left out: a killed node). It returns errors, never fails
// the test: require.Eventually conditions call it.
func runningTasks(ctx context.Context, c *Cluster, job string) ([]psTask, error) {
	r, err := c.Run(ctx, c.Env(), "ps", "-o", "json", "--timeout", "5s")
	if err != nil {
		return nil, err
	}
	var out struct {
		Tasks []psTask `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		return nil, fmt.Errorf("unum ps (exit %d): %w: %s", r.Code, err, r.Stderr)
	}
	var mine []psTask
	for _, task := range out.Tasks {
		if task.Job == job && task.State == "running" {
			mine = append(mine, task)
		}
	}
	return mine, nil
}

// procsRunning are the pids on this machine whose command line is exactly
// argv. Every node runs on this machine, so /proc sees every task.
func procsRunning(argv []string) []int {
	want := []byte(strings.Join(argv, "\x00") + "\x00")
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Equal(cmdline, want) {
			continue
		}
		// A zombie has run its course.
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(st), ") Z ") {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// waitSchedLeader waits until the scheduler leader is someone other than
// not (and running) and returns it; it fails the test after a minute.
func waitSchedLeader(t *testing.T, c *Cluster, cli *clientv3.Client, not string) (*Node, time.Duration) {
	t.Helper()
	start := time.Now()
	for deadline := start.Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		l, err := schedLeader(context.Background(), cli)
		if err == nil && l != "" && l != not {
			return c.Node(t, l), time.Since(start)
		}
	}
	t.Fatalf("no scheduler leader other than %s after a minute", not)
	return nil, 0
}

// drain drains n; undoDrains lets every node take tasks again.
func drain(t *testing.T, c *Cluster, n *Node) {
	t.Helper()
	requireOK(t, c.Unum(t, c.Env(), "node", "drain", n.Name), "drain "+n.Name)
}

func undoDrains(t *testing.T, c *Cluster) {
	t.Helper()
	for _, n := range c.Nodes() {
		requireOK(t, c.Unum(t, c.Env(), "node", "drain", "--undo", n.Name), "undo drain "+n.Name)
	}
}

// waitTasks waits until `unum ps` lists exactly one running task of job
// for which ok holds, keeping the most it ever listed at once in maxPS.
func waitTasks(t *testing.T, c *Cluster, job string, maxPS *int, ok func(psTask) bool, what string) psTask {
	t.Helper()
	var tasks []psTask
	var err error
	require.Eventually(t, func() bool {
		tasks, err = runningTasks(context.Background(), c, job)
		*maxPS = max(*maxPS, len(tasks))
		return err == nil && len(tasks) == 1 && ok(tasks[0])
	}, 90*time.Second, 250*time.Millisecond, "%s: last listing %v (err %v)", what, tasks, err)
	return tasks[0]
}

// testSchedulerFailover: T-089 with real processes. First the task runs on
// the leader's node and both die together; then the leader alone dies
// while the task's node lives. The kernel's process events prove that no
// two copies of the task ever ran at once (procWatch), not a sample of
// /proc.
func testSchedulerFailover(t *testing.T, c *Cluster) {
	ctx := context.Background()
	cli, err := c.Etcd(ctx)
	require.NoError(t, err)
	defer cli.Close()
	leaderName, err := schedLeader(ctx, cli)
	require.NoError(t, err)
	require.NotEmpty(t, leaderName, "no scheduler leader")
	leader := c.Node(t, leaderName)

	// A command line no other process has: /proc finds every copy.
	argv := []string{"/bin/sleep", fmt.Sprintf("86400.%d", time.Now().UnixNano()%1_000_000_007)}
	spec := filepath.Join(t.TempDir(), "job.yaml")
	require.NoError(t, os.WriteFile(spec, []byte(fmt.Sprintf(`
name: failover
namespace: fault
type: service
count: 1
task: {command: %s, args: [%q]}
resources: {cpu: 50, memory: 32}
`, argv[0], argv[1])), 0o644))
	// Place the task on the leader's node: drain the others while it is
	// placed. Drains are undone whatever happens (and restore undoes them
	// too).
	defer undoDrains(t, c)
	for _, n := range c.Nodes() {
		if n != leader {
			drain(t, c, n)
		}
	}
	defer func() {
		c.Unum(t, c.Env(), "job", "stop", "-n", "fault", "failover")
		require.Eventually(t, func() bool { return len(procsRunning(argv)) == 0 }, 60*time.Second, 200*time.Millisecond,
			"the job's task outlived its job")
	}()
	requireOK(t, c.Unum(t, c.Env(), "job", "run", spec), "job run")
	maxPS := 0
	first := waitTasks(t, c, "failover", &maxPS, func(psTask) bool { return true }, "the task was never placed")
	require.Equal(t, leader.Name, first.Node)
	// The re-placement goes to a compute-only node: the other control nodes
	// stay drained until it happened. A compute-only node is never the
	// scheduler leader, so phase 2 can always kill the leader while the
	// task's node lives.
	for _, n := range c.ComputeOnly() {
		requireOK(t, c.Unum(t, c.Env(), "node", "drain", "--undo", n.Name), "undo drain")
	}
	require.Len(t, procsRunning(argv), 1)

	// Phase 1: the leader and the task's node die together.
	etcdWas := etcdLeader(t, c, leader).Name
	w, err := watchProcs(argv)
	require.NoError(t, err)
	c.Kill(leader)
	killed := time.Now()
	newLeader, failover := waitSchedLeader(t, c, cli, leader.Name)
	moved := waitTasks(t, c, "failover", &maxPS, func(x psTask) bool { return x.Node != leader.Name }, "the task was never re-placed")
	replaced := time.Since(killed)
	// Watch a little longer: a second copy would show up now.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if tasks, err := runningTasks(ctx, c, "failover"); err == nil {
			maxPS = max(maxPS, len(tasks))
		}
	}
	seen := w.halt()
	require.NoError(t, seen.err)
	// Exactly the old copy and its replacement, and the replacement exec'd
	// only after the old one had exited (kernel timestamps, one clock).
	require.Len(t, seen.copies, 2, "want the old copy and one replacement, saw pids %v", seen.pids())
	require.NotZero(t, seen.copies[0].exit, "the old copy (pid %d) never exited", seen.copies[0].pid)
	require.Zero(t, seen.copies[1].exit, "the replacement (pid %d) exited", seen.copies[1].pid)
	require.Empty(t, seen.overlap(), "the task ran twice")
	require.LessOrEqual(t, maxPS, 1, "unum ps listed the task running twice")
	require.Equal(t, []int{seen.copies[1].pid}, procsRunning(argv), "the job must be back at its one replica")
	require.Equal(t, c.ComputeOnly()[0].Name, moved.Node, "the other control nodes were drained: the task had one place to go")
	undoDrains(t, c)
	figure(t, "scheduler failover (leader's node killed with the task; it was the etcd leader: %v): new leader %s elected %s after the kill; task re-placed on %s %s after; the replacement exec'd %s after the old copy exited (kernel process events: %d copies, %d events watched, %d exec'd processes gone before read)",
		etcdWas == leader.Name, newLeader.Name, failover.Round(10*time.Millisecond), moved.Node, replaced.Round(10*time.Millisecond),
		seen.gap(1).Round(10*time.Millisecond), len(seen.copies), seen.events, seen.unreadable)

	c.startNode(t, leader)
	require.NoError(t, c.WaitReady(leader))

	// Phase 2: only the leader dies; the task's node lives. Its task must
	// keep running as it is: not re-placed, not doubled.
	taskNode := moved.Node
	leader, _ = waitSchedLeader(t, c, cli, taskNode)
	pidsBefore := procsRunning(argv)
	require.Len(t, pidsBefore, 1)
	etcdWas = etcdLeader(t, c, leader).Name
	w, err = watchProcs(argv)
	require.NoError(t, err)
	c.Kill(leader)
	newLeader, failover = waitSchedLeader(t, c, cli, leader.Name)
	// The new leader sees a live node with its task: nothing to do. Watch
	// past the lease and grace, when a wrong re-placement would happen.
	for end := time.Now().Add(nodeLease + downGrace + 2*time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if tasks, err := runningTasks(ctx, c, "failover"); err == nil {
			maxPS = max(maxPS, len(tasks))
		}
	}
	seen = w.halt()
	require.NoError(t, seen.err)
	require.Equal(t, pidsBefore, seen.pids(), "the task was restarted or doubled although its node lived")
	require.Zero(t, seen.copies[0].exit, "the task exited although its node lived")
	require.LessOrEqual(t, maxPS, 1)
	figure(t, "scheduler failover (leader only; it was the etcd leader: %v): leader %s killed, %s elected %s later; the task on %s kept its one process (pid %d) through %d kernel process events",
		etcdWas == leader.Name, leader.Name, newLeader.Name, failover.Round(10*time.Millisecond), taskNode, pidsBefore[0], seen.events)
}

// auditEvent is one event of `unum audit query -o json`.
type auditEvent struct {
	ID       string   `json:"id"`
	Node     string   `json:"node"`
	Action   string   `json:"action"`
	Resource string   `json:"resource"`
	Outcome  string   `json:"outcome"`
	Kind     string   `json:"kind"`
	Creds    []string `json:"creds"`
}

func auditQuery(t *testing.T, c *Cluster, args ...string) []auditEvent {
	t.Helper()
	r := c.Unum(t, c.Env(), append([]string{"audit", "query", "-o", "json", "--limit", "0"}, args...)...)
	requireOK(t, r, "audit query")
	var out struct {
		Events []auditEvent `json:"events"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &out), r.Stdout)
	return out.Events
}

// acked is an action whose RPC returned success, and the events its
// serving node must hold.
type acked struct {
	what string
	node string
	// events are the events the node must hold, each at least once: a
	// predicate per event.
	events []func(ev auditEvent) bool
}

var credRe = regexp.MustCompile(`\(credential ([A-Za-z0-9_-]+)\)`)

// load issues acknowledged actions against n until stop closes: identity
// registrations through n's own API (control nodes) and execs run on n.
// Only actions whose command succeeded are returned.
// It never fails the test (a goroutine may not): a command that could not
// run is simply not acknowledged.
func load(ctx context.Context, c *Cluster, n *Node, seq *int, mu *sync.Mutex, stop <-chan struct{}, out chan<- acked) {
	w := c.ComputeOnly()[0]
	for {
		select {
		case <-stop:
			return
		default:
		}
		if n.Control {
			mu.Lock()
			*seq++
			i := *seq
			mu.Unlock()
			suffix := fmt.Sprintf("/ack-%05d", i)
			id := "spiffe://" + TrustDomain + "/ns/fault/job" + suffix
			// Not register(): this goroutine may not fail the test.
			r, err := c.Run(ctx, c.EnvAt(n), "id", "register", "--spiffe-id", id, "--node", w.Name,
				"--selector", fmt.Sprintf("unix:uid:%d", 30000+i), "--timeout", "10s")
			if err == nil && r.Code == 0 {
				// The decision (durable before the handler ran) and the
				// entry.create event, both on the node that served it.
				out <- acked{what: "id register " + id, node: n.Name, events: []func(auditEvent) bool{
					func(ev auditEvent) bool {
						return ev.Kind == "authz" && ev.Action == "id.register" && ev.Outcome == "allow" && strings.HasSuffix(ev.Resource, suffix)
					},
					func(ev auditEvent) bool {
						return ev.Action == "entry.create" && ev.Outcome == "allow" && strings.HasSuffix(ev.Resource, suffix)
					},
				}}
			}
		}
		r, err := c.Run(ctx, c.Env(), "exec", "--on", "node="+n.Name, "--timeout", "10s", "--", "/bin/true")
		if m := credRe.FindStringSubmatch(r.Stderr); err == nil && r.Code == 0 && m != nil {
			jti := m[1]
			// The node's own record of the exec it ran.
			out <- acked{what: "exec on " + n.Name + " credential " + jti, node: n.Name, events: []func(auditEvent) bool{
				func(ev auditEvent) bool {
					return ev.Action == "exec.run" && ev.Kind == "job" && slices.Contains(ev.Creds, jti)
				},
			}}
		}
	}
}

// testAuditSurvivesKill: T-054 across real processes: every node is
// SIGKILLed while it serves acknowledged actions, restarted, and every
// acknowledged event is there and every log verifies.
func testAuditSurvivesKill(t *testing.T, c *Cluster) {
	// Every node must have acknowledged at least this many actions before
	// its kill, so that "0 lost" is never vacuous for any node. Three
	// loaders reach 10 in 2–5 s on two busy cores.
	const minAcksPerNode = 10
	var acks []acked
	perNode := map[string]int{}
	seq := 0
	var mu sync.Mutex
	for _, n := range c.Nodes() {
		stop := make(chan struct{})
		out := make(chan acked, 1024)
		var wg sync.WaitGroup
		wg.Add(3)
		// Three loaders: actions overlap, so the kill lands in a group
		// commit with several records in flight.
		for range 3 {
			go func() {
				defer wg.Done()
				load(context.Background(), c, n, &seq, &mu, stop, out)
			}()
		}
		// Let the load run, then kill the node under it.
		before := 0
		deadline := time.After(60 * time.Second)
	wait:
		for before < minAcksPerNode {
			select {
			case a := <-out:
				acks = append(acks, a)
				before++
			case <-deadline:
				break wait
			}
		}
		c.Kill(n)
		time.Sleep(time.Second)
		close(stop)
		wg.Wait()
		close(out)
		after := 0
		for a := range out {
			acks = append(acks, a)
			after++
		}
		perNode[n.Name] = before + after
		t.Logf("killed %s with %d of its actions acknowledged before the kill, %d while it died", n.Name, before, after)
		require.GreaterOrEqual(t, before, minAcksPerNode, "%s acknowledged too few actions in a minute before its kill: the test would prove nothing for it", n.Name)
		c.startNode(t, n)
		require.NoError(t, c.WaitReady(n))
	}
	byNode := map[string][]auditEvent{}
	for _, n := range c.Nodes() {
		byNode[n.Name] = auditQuery(t, c, "--node", n.Name)
	}
	lost := 0
	events := 0
	for _, a := range acks {
		for i, match := range a.events {
			events++
			if !slices.ContainsFunc(byNode[a.node], func(ev auditEvent) bool { return ev.Node == a.node && match(ev) }) {
				lost++
				t.Errorf("lost: %s: its event #%d is not in %s's log", a.what, i+1, a.node)
			}
		}
	}
	r := c.Unum(t, c.Env(), "audit", "verify", "-o", "json")
	requireOK(t, r, "audit verify")
	var ver struct {
		Nodes []struct {
			Node    string `json:"node"`
			OK      bool   `json:"ok"`
			Problem string `json:"problem"`
			Entries uint64 `json:"entries"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &ver), r.Stdout)
	require.Len(t, ver.Nodes, len(c.Nodes()))
	for _, v := range ver.Nodes {
		require.True(t, v.OK, "%s: %s", v.Node, v.Problem)
	}
	var counts []string
	for _, n := range c.Nodes() {
		counts = append(counts, fmt.Sprintf("%s %d", n.Name, perNode[n.Name]))
	}
	figure(t, "audit across SIGKILL of all %d nodes: %d acknowledged actions (%s), %d events checked, events lost: %d; every log verifies",
		len(c.Nodes()), len(acks), strings.Join(counts, ", "), events, lost)
	require.Zero(t, lost, "acknowledged audit events were lost")
}

// testSlowLink: the etcd leader on a slow, congested link; the cluster
// keeps serving, through the slow node too, and loses nothing.
func testSlowLink(t *testing.T, c *Cluster) {
	slow := etcdLeader(t, c, c.ControlNodes()[0])
	c.Slow(t, slow, "256kbit", 400*time.Millisecond)
	start := time.Now()
	n := 0
	for i := range 6 {
		id := fmt.Sprintf("spiffe://%s/ns/fault/job/slow-%d", TrustDomain, i)
		// Half through the slow node's own API, half through any.
		env := c.Env()
		if i%2 == 0 {
			env = c.EnvAt(slow)
		}
		_, r := register(t, c, env, id, c.ComputeOnly()[0].Name, fmt.Sprintf("unix:uid:%d", 40000+i))
		requireOK(t, r, "register with a slow control node")
		n++
	}
	perAction := time.Since(start) / time.Duration(n)
	st, ok := getPolicyStatus(t, c, c.Env())
	require.True(t, ok)
	bundle := bundleWith(t, c, "applied with a slow control node")
	requireOK(t, c.Unum(t, c.Env(), "policy", "apply", bundle, "-m", "with a slow control node"), "policy apply")
	// The slow node follows: its own API serves the new revision.
	var converged time.Duration
	applied := time.Now()
	require.Eventually(t, func() bool {
		s, ok := getPolicyStatus(t, c, c.EnvAt(slow))
		if rev, listed := s.revisionOf(slow.Name); ok && listed && rev == st.Latest+1 {
			converged = time.Since(applied)
			return true
		}
		return false
	}, 60*time.Second, 250*time.Millisecond, "the slow node never served the new revision")
	other := c.ControlNodes()[0]
	if other == slow {
		other = c.ControlNodes()[1]
	}
	r := c.Unum(t, c.EnvAt(other), "id", "list", "-o", "json")
	requireOK(t, r, "id list through another node")
	for i := range n {
		require.Contains(t, r.Stdout, fmt.Sprintf("/job/slow-%d\"", i))
	}
	figure(t, "slow link (etcd leader %s, 256kbit, 400ms queue): %d registrations at %s each; the slow node served the new policy revision %s after apply",
		slow.Name, n, perAction.Round(time.Millisecond), converged.Round(10*time.Millisecond))
}
