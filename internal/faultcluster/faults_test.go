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
	dir, err := os.MkdirTemp("", "unum-fault-bin-")
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
	c.Heal()
	for _, n := range c.Nodes() {
		_ = c.net.unshape(context.Background(), n.index)
		if n.PID() == 0 {
			c.startNode(n)
		} else {
			c.Cont(n)
		}
	}
	for _, n := range c.Nodes() {
		require.NoError(t, c.WaitReady(n))
	}
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

func (p policyStatus) revisionOf(name string) int64 {
	for _, n := range p.Nodes {
		if n.Name == name {
			return n.Revision
		}
	}
	return -1
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
	return c.Node(st.GetEtcdLeader())
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

	c.Isolate(minority)
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
	_, r = register(t, c, c.EnvAt(minority), "spiffe://"+TrustDomain+"/ns/"+ns+"/job/never", minority.Name, "unix:uid:4243")
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
	require.Less(t, st.revisionOf(minority.Name), latest, "the minority cannot have heard of the new revision")

	c.Heal()
	healed := time.Now()
	// The minority converges: it serves the majority's revision (its
	// heartbeat says so) and mints again through its own API.
	var policyAfter, mintAfter time.Duration
	for deadline := healed.Add(90 * time.Second); policyAfter == 0 || mintAfter == 0; {
		require.True(t, time.Now().Before(deadline), "the minority never converged after heal")
		if policyAfter == 0 {
			if st, ok := getPolicyStatus(t, c, c.EnvAt(minority)); ok && st.Latest == latest && st.revisionOf(minority.Name) == latest {
				policyAfter = time.Since(healed)
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
	st, ok = getPolicyStatus(t, c, c.Env())
	require.True(t, ok)
	require.Equal(t, latest, st.Latest)
	figure(t, "minority partition: minority serves the majority's policy revision %d %s after heal; mints again %s after heal (partition lasted %s)",
		latest, policyAfter.Round(10*time.Millisecond), mintAfter.Round(10*time.Millisecond), healed.Sub(partitioned).Round(100*time.Millisecond))
}

// fetchSVID fetches the SVIDs of the test process from socket with an
// unmodified go-spiffe client, as a workload does, and returns the one for id.
func fetchSVID(socket, id string) (*x509svid.SVID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
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

	c.Partition([]*Node{w}, c.ControlNodes())
	outage := time.Now()
	// The first SVID served once the partition holds is the cached one:
	// no mint can reach the agent any more.
	cached, err := fetchSVID(w.Socket(), id)
	require.NoError(t, err, "the agent stopped serving its SVID as soon as the control plane went away")
	expiry := cached.Certificates[0].NotAfter
	serial := cached.Certificates[0].SerialNumber
	require.Less(t, time.Until(expiry), svidTTL+time.Second)
	served := 1
	// Until expiry (less a second for the fetch itself), every fetch
	// answers with the cached SVID.
	for time.Until(expiry) > time.Second {
		s, err := fetchSVID(w.Socket(), id)
		require.NoError(t, err, "the agent stopped serving an unexpired SVID during the outage (%s before expiry)", time.Until(expiry))
		require.Equal(t, serial, s.Certificates[0].SerialNumber, "a new SVID was minted while the control plane was unreachable")
		served++
		time.Sleep(250 * time.Millisecond)
	}
	// Past expiry the agent serves no expired SVID.
	time.Sleep(time.Until(expiry) + 1500*time.Millisecond)
	s, err := fetchSVID(w.Socket(), id)
	if err == nil {
		require.True(t, s.Certificates[0].NotAfter.After(time.Now()), "the agent served an expired SVID")
		require.FailNow(t, "an SVID was served after expiry although the control plane is unreachable", "serial %s", s.Certificates[0].SerialNumber)
	}

	c.Heal()
	recovered := time.Now()
	var renewed *x509svid.SVID
	require.Eventually(t, func() bool {
		s, err := fetchSVID(w.Socket(), id)
		if err != nil {
			return false
		}
		renewed = s
		return true
	}, 90*time.Second, 100*time.Millisecond, "the workload got no SVID after the control plane came back")
	renewal := time.Since(recovered)
	require.NotEqual(t, serial, renewed.Certificates[0].SerialNumber)
	require.True(t, renewed.Certificates[0].NotAfter.After(expiry), "the renewed SVID must expire later")
	figure(t, "control-plane outage: %d fetches served the cached SVID for %s until it expired; renewed SVID served %s after recovery",
		served, expiry.Sub(outage).Round(100*time.Millisecond), renewal.Round(10*time.Millisecond))
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
// not answer are left out: a killed node).
func runningTasks(t *testing.T, c *Cluster, job string) []psTask {
	t.Helper()
	r := c.Unum(t, c.Env(), "ps", "-o", "json", "--timeout", "5s")
	var out struct {
		Tasks []psTask `json:"tasks"`
	}
	if json.Unmarshal([]byte(r.Stdout), &out) != nil {
		return nil
	}
	var mine []psTask
	for _, task := range out.Tasks {
		if task.Job == job && task.State == "running" {
			mine = append(mine, task)
		}
	}
	return mine
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

// sampler counts the task's processes every 20 ms until stopped and keeps
// the largest count and every pid seen.
type sampler struct {
	argv []string
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	max     int
	samples int
	pids    map[int]bool
}

func startSampler(argv []string) *sampler {
	s := &sampler{argv: argv, stop: make(chan struct{}), pids: map[int]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			pids := procsRunning(s.argv)
			s.mu.Lock()
			s.samples++
			s.max = max(s.max, len(pids))
			for _, p := range pids {
				s.pids[p] = true
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) halt() (maxCount, samples int, pids []int) {
	close(s.stop)
	s.wg.Wait()
	for p := range s.pids {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	return s.max, s.samples, pids
}

// waitSchedLeader waits until the scheduler leader is someone other than
// old (and running) and returns it.
func waitSchedLeader(t *testing.T, c *Cluster, cli *clientv3.Client, old string) (*Node, time.Duration) {
	t.Helper()
	start := time.Now()
	for deadline := start.Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		l, err := schedLeader(context.Background(), cli)
		if err == nil && l != "" && l != old {
			return c.Node(l), time.Since(start)
		}
	}
	t.Fatalf("no new scheduler leader after %s", old)
	return nil, 0
}

// testSchedulerFailover: T-089 with real processes. First the task runs on
// the leader's node and both die together; then the leader alone dies
// while the task's node lives.
func testSchedulerFailover(t *testing.T, c *Cluster) {
	ctx := context.Background()
	cli, err := c.Etcd(ctx)
	require.NoError(t, err)
	defer cli.Close()
	leaderName, err := schedLeader(ctx, cli)
	require.NoError(t, err)
	require.NotEmpty(t, leaderName, "no scheduler leader")
	leader := c.Node(leaderName)

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
	// placed, then let them take tasks again.
	var drained []*Node
	for _, n := range c.Nodes() {
		if n != leader {
			requireOK(t, c.Unum(t, c.Env(), "node", "drain", n.Name), "drain")
			drained = append(drained, n)
		}
	}
	defer func() {
		c.Unum(t, c.Env(), "job", "stop", "-n", "fault", "failover")
		require.Eventually(t, func() bool { return len(procsRunning(argv)) == 0 }, 60*time.Second, 200*time.Millisecond,
			"the job's task outlived its job")
	}()
	requireOK(t, c.Unum(t, c.Env(), "job", "run", spec), "job run")
	var tasks []psTask
	require.Eventually(t, func() bool { tasks = runningTasks(t, c, "failover"); return len(tasks) == 1 }, 90*time.Second, 250*time.Millisecond)
	require.Equal(t, leader.Name, tasks[0].Node)
	for _, n := range drained {
		requireOK(t, c.Unum(t, c.Env(), "node", "drain", "--undo", n.Name), "undo drain")
	}
	require.Len(t, procsRunning(argv), 1)

	// Phase 1: the leader and the task's node die together.
	etcdWas := etcdLeader(t, c, leader).Name
	s := startSampler(argv)
	c.Kill(leader)
	killed := time.Now()
	newLeader, failover := waitSchedLeader(t, c, cli, leader.Name)
	var moved []psTask
	maxPS := 0
	require.Eventually(t, func() bool {
		moved = runningTasks(t, c, "failover")
		maxPS = max(maxPS, len(moved))
		return len(moved) == 1 && moved[0].Node != leader.Name
	}, 90*time.Second, 250*time.Millisecond, "the task was never re-placed")
	replaced := time.Since(killed)
	// Watch a little longer: a second copy would show up now.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		maxPS = max(maxPS, len(runningTasks(t, c, "failover")))
	}
	maxProcs, samples, pids := s.halt()
	require.LessOrEqual(t, maxProcs, 1, "the task ran twice on this machine (pids %v)", pids)
	require.LessOrEqual(t, maxPS, 1, "unum ps listed the task running twice")
	require.Len(t, procsRunning(argv), 1, "the job must be back at its one replica")
	figure(t, "scheduler failover (leader's node killed with the task; it was the etcd leader: %v): new leader %s elected %s after the kill; task re-placed on %s %s after; at most %d copy in %d samples of /proc",
		etcdWas == leader.Name, newLeader.Name, failover.Round(10*time.Millisecond), moved[0].Node, replaced.Round(10*time.Millisecond), maxProcs, samples)

	c.startNode(leader)
	require.NoError(t, c.WaitReady(leader))

	// Phase 2: only the leader dies; the task's node lives. Its task must
	// keep running as it is: not re-placed, not doubled.
	leader = newLeader
	taskNode := moved[0].Node
	if leader.Name == taskNode {
		// Move the leadership off the task's node: kill and restart.
		c.Restart(leader)
		leaderName, err = schedLeader(ctx, cli)
		require.NoError(t, err)
		leader = c.Node(leaderName)
	}
	if leader.Name == taskNode {
		t.Logf("the scheduler leader is still the task's node %s: phase 2 skipped", taskNode)
		return
	}
	pidsBefore := procsRunning(argv)
	require.Len(t, pidsBefore, 1)
	etcdWas = etcdLeader(t, c, leader).Name
	s = startSampler(argv)
	c.Kill(leader)
	newLeader, failover = waitSchedLeader(t, c, cli, leader.Name)
	// The new leader sees a live node with its task: nothing to do. Watch
	// past the lease and grace, when a wrong re-placement would happen.
	for end := time.Now().Add(nodeLease + downGrace + 2*time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		maxPS = max(maxPS, len(runningTasks(t, c, "failover")))
	}
	maxProcs, samples, pids = s.halt()
	require.Equal(t, pidsBefore, pids, "the task was restarted or doubled although its node lived")
	require.LessOrEqual(t, maxProcs, 1)
	require.LessOrEqual(t, maxPS, 1)
	figure(t, "scheduler failover (leader only; it was the etcd leader: %v): leader %s killed, %s elected %s later; the task on %s kept its one process (pid %d) through %d samples",
		etcdWas == leader.Name, leader.Name, newLeader.Name, failover.Round(10*time.Millisecond), taskNode, pidsBefore[0], samples)
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
func load(t *testing.T, c *Cluster, n *Node, seq *int, mu *sync.Mutex, stop <-chan struct{}, out chan<- acked) {
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
			r := c.Unum(t, c.EnvAt(n), "id", "register", "--spiffe-id", id, "--node", w.Name,
				"--selector", fmt.Sprintf("unix:uid:%d", 30000+i), "--timeout", "10s")
			if r.Code == 0 {
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
		r := c.Unum(t, c.Env(), "exec", "--on", "node="+n.Name, "--timeout", "10s", "--", "/bin/true")
		if m := credRe.FindStringSubmatch(r.Stderr); r.Code == 0 && m != nil {
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
	var acks []acked
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
				load(t, c, n, &seq, &mu, stop, out)
			}()
		}
		// Let the load run, then kill the node under it.
		before := 0
		deadline := time.Now().Add(60 * time.Second)
		for before < 10 && time.Now().Before(deadline) {
			select {
			case a := <-out:
				acks = append(acks, a)
				before++
			case <-time.After(time.Until(deadline)):
			}
		}
		c.Kill(n)
		time.Sleep(time.Second)
		close(stop)
		wg.Wait()
		close(out)
		for a := range out {
			acks = append(acks, a)
		}
		t.Logf("killed %s with %d actions acknowledged so far", n.Name, len(acks))
		c.startNode(n)
		require.NoError(t, c.WaitReady(n))
	}
	require.NotEmpty(t, acks)
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
	figure(t, "audit across SIGKILL of all %d nodes: %d acknowledged actions, %d events checked, events lost: %d; every log verifies",
		len(c.Nodes()), len(acks), events, lost)
	require.Zero(t, lost, "acknowledged audit events were lost")
}

// testSlowLink: the etcd leader on a slow, congested link; the cluster
// keeps serving, through the slow node too, and loses nothing.
func testSlowLink(t *testing.T, c *Cluster) {
	slow := etcdLeader(t, c, c.ControlNodes()[0])
	c.Slow(slow, "256kbit", 400*time.Millisecond)
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
		if ok && s.revisionOf(slow.Name) == st.Latest+1 {
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
