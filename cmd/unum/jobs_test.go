package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
)

// psTask is one row of `unum ps -o json`.
type psTask struct {
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
}

func ps(t *testing.T, d *devCluster, job string) []psTask {
	t.Helper()
	r := unum(t, d.env, "ps", "-o", "json")
	// 1: a node did not answer (a killed node); the others' tasks are listed.
	require.Contains(t, []int{0, 1}, r.code, r.stderr)
	var out struct {
		Tasks []psTask `json:"tasks"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	var mine []psTask
	for _, task := range out.Tasks {
		if task.Job == job {
			mine = append(mine, task)
		}
	}
	return mine
}

func running(tasks []psTask) []psTask {
	var out []psTask
	for _, t := range tasks {
		if t.State == "running" {
			out = append(out, t)
		}
	}
	return out
}

func writeJob(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job.yaml")
	require.NoError(t, os.WriteFile(p, []byte(yaml), 0o644))
	return p
}

// TestJobsOnADevCluster: jobs become identified, confined processes on a
// 3-node dev cluster: a task fetches its SVID with an unmodified go-spiffe
// client, runs as an unprivileged uid, is restarted when killed, is killed
// when its job stops, and is re-placed when its node dies.
func TestJobsOnADevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("running tasks needs root (cgroups, setuid to a dynamic uid); CI runs as root")
	}
	dir, err := os.MkdirTemp("", "ud")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := startDevWith(t, dir, 3, "--node-lease", "5s", "--down-grace", "10s")

	// The unum binary is the task of the identity job: tasks run as a
	// dynamic uid, which must be able to execute it.
	require.NoError(t, os.Chmod(filepath.Dir(unumBin), 0o755))

	t.Run("a task fetches its own SVID with an unmodified go-spiffe client", func(t *testing.T) {
		job := writeJob(t, fmt.Sprintf(`
name: whoami
type: batch
task:
  command: %s
  args: [id, svid, -o, json]
resources: {cpu: 100, memory: 64}
`, unumBin))
		r := unum(t, d.env, "job", "run", job)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "whoami[0]")
		require.Contains(t, r.stdout, "submitted")
		require.Eventually(t, func() bool {
			r := unum(t, d.env, "job", "status", "whoami")
			return r.code == 0 && strings.Contains(r.stdout, ": complete")
		}, 90*time.Second, 500*time.Millisecond)
		r = unum(t, d.env, "job", "logs", "whoami")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, `"spiffe_id": "spiffe://unum.local/ns/default/job/whoami"`)
		require.Contains(t, r.stdout, "[whoami[0]]")
	})

	hello := writeJob(t, `
name: hello
type: service
count: 3
task:
  command: /bin/sh
  args: ["-c", "echo uid=$(id -u) port=$UNUM_PORT_HTTP; su -c 'echo became root' root </dev/null 2>&1 || echo su refused; exec sleep 1000"]
resources: {cpu: 50, memory: 32}
anti_affinity: node
ports: [http]
`)
	r := unum(t, d.env, "job", "run", hello)
	require.Equal(t, 0, r.code, r.stderr)
	var tasks []psTask
	require.Eventually(t, func() bool { tasks = running(ps(t, d, "hello")); return len(tasks) == 3 }, 90*time.Second, 500*time.Millisecond)

	t.Run("tasks run as distinct unprivileged uids and cannot become root", func(t *testing.T) {
		nodes := map[string]bool{}
		for _, task := range tasks {
			require.NotZero(t, task.UID)
			require.Equal(t, "spiffe://unum.local/ns/default/job/hello", task.SPIFFEID)
			nodes[task.Node] = true
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", task.PID))
			require.NoError(t, err)
			require.Contains(t, string(st), "NoNewPrivs:\t1")
			require.NotContains(t, string(st), "Uid:\t0")
		}
		require.Len(t, nodes, 3, "anti-affinity: one per node")
		require.Eventually(t, func() bool {
			r := unum(t, d.env, "job", "logs", "hello")
			return r.code == 0 && strings.Count(r.stdout, "su refused") == 3
		}, 30*time.Second, 500*time.Millisecond)
		r := unum(t, d.env, "job", "logs", "hello")
		require.NotContains(t, r.stdout, "became root")
		require.NotContains(t, r.stdout, "uid=0 ")
	})

	t.Run("a node cannot get the SVID of a task placed on another node", func(t *testing.T) {
		var onTwo psTask
		for _, task := range tasks {
			if task.Node == "node-2" {
				onTwo = task
			}
		}
		require.NotEmpty(t, onTwo.Alloc)
		// node-3's own SVID, straight from its data folder: what a
		// compromised node holds.
		svid, roots := nodeSVID(t, d, "node-3")
		creds, err := rpc.NewCredentials(svid, roots)
		require.NoError(t, err)
		cc, err := rpc.Dial(creds, []string{nodeAPIAddress(t, d, "node-1")})
		require.NoError(t, err)
		defer cc.Close()
		id := spiffeid.RequireFromString("spiffe://unum.local/ns/default/job/hello")
		key, err := ca.GenerateKey()
		require.NoError(t, err)
		csr, err := ca.CreateCSR(key, id)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err = unumv1.NewIdentityClient(cc).MintX509SVID(ctx, &unumv1.MintX509SVIDRequest{EntryId: "alloc:" + onTwo.Alloc, SpiffeId: id.String(), Csr: csr})
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "not assigned to node node-3")
		r := unum(t, d.env, "audit", "query", "--action", "svid.issue", "--outcome", "deny", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "not assigned to node node-3")
	})

	t.Run("endpoints name each task's node address and port", func(t *testing.T) {
		r := unum(t, d.env, "job", "endpoints", "hello", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var out struct {
			Endpoints []struct {
				Address string `json:"address"`
			} `json:"endpoints"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
		require.Len(t, out.Endpoints, 3)
		for _, ep := range out.Endpoints {
			require.True(t, strings.HasPrefix(ep.Address, "127.0.0.1:"), ep.Address)
		}
	})

	t.Run("a killed task is restarted", func(t *testing.T) {
		victim := tasks[0]
		require.NoError(t, syscall.Kill(int(victim.PID), syscall.SIGKILL))
		require.Eventually(t, func() bool {
			for _, task := range running(ps(t, d, "hello")) {
				if task.Alloc == victim.Alloc && task.PID != victim.PID && task.Restarts >= 1 {
					return true
				}
			}
			return false
		}, 60*time.Second, 500*time.Millisecond)
	})

	// A new version that can live on fewer nodes: spread is soft.
	r = unum(t, d.env, "job", "run", writeJob(t, `
name: hello
type: service
count: 3
task: {command: /bin/sleep, args: ["1000"]}
resources: {cpu: 50, memory: 32}
spread: node
`))
	require.Equal(t, 0, r.code, r.stderr)

	t.Run("a stopped node's tasks die before they are re-placed, and stay dead when it resumes", func(t *testing.T) {
		var onTwo []psTask
		require.Eventually(t, func() bool {
			tasks := running(ps(t, d, "hello"))
			onTwo = nil
			for _, task := range tasks {
				if task.Node == "node-2" {
					onTwo = append(onTwo, task)
				}
			}
			return len(tasks) == 3 && len(onTwo) == 1
		}, 90*time.Second, 500*time.Millisecond, "one task on node-2")
		// While node-2 is stopped, talk to node-1 only: a stopped process
		// still accepts connections and would hang the CLI.
		env := nodeOneEnv(t, d)
		pid := d.pid(t, "node-2")
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
		stopped := time.Now()
		resumed := false
		defer func() {
			if !resumed {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}()
		// Its reaper sees no keepalive for the fencing deadline (lease +
		// grace/2 = 10 s here) and kills its task; the task is re-placed
		// only after lease + grace (15 s).
		// (The killed task stays a zombie until its stopped parent reaps it.)
		require.Eventually(t, func() bool { return gone(int(onTwo[0].PID)) }, 20*time.Second, 100*time.Millisecond,
			"a stopped node's task kept running")
		killedAfter := time.Since(stopped)
		var replacedAfter time.Duration
		require.Eventually(t, func() bool {
			r := unum(t, env, "job", "status", "hello", "-o", "json")
			var st struct {
				Job struct {
					Running int `json:"running"`
				} `json:"job"`
				Allocations []struct {
					Node string `json:"node"`
				} `json:"allocations"`
			}
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
				return false
			}
			for _, a := range st.Allocations {
				if a.Node == "node-2" {
					return false
				}
			}
			replacedAfter = time.Since(stopped)
			return len(st.Allocations) == 3
		}, 60*time.Second, 250*time.Millisecond, "node-2's task re-placed")
		require.Less(t, killedAfter, replacedAfter, "the task was re-placed while it still ran")
		t.Logf("stopped node: task killed after %s, re-placed after %s", killedAfter.Truncate(time.Millisecond), replacedAfter.Truncate(time.Millisecond))

		require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
		resumed = true
		// Resumed: it fences itself, and the fresh view no longer names the
		// task, so it never runs it again.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			for _, task := range running(ps(t, d, "hello")) {
				require.NotEqual(t, "node-2", task.Node, "a resumed node restarted a task placed elsewhere")
			}
			time.Sleep(500 * time.Millisecond)
		}
		r := unum(t, d.env, "audit", "query", "--action", "node.fence", "--node", "node-2", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, `"fenced": true`)
	})

	t.Run("a dead node's tasks are re-placed", func(t *testing.T) {
		var before []psTask
		require.Eventually(t, func() bool {
			before = running(ps(t, d, "hello"))
			if len(before) != 3 {
				return false
			}
			for _, task := range before {
				if task.Node == "node-3" {
					return true
				}
			}
			return false
		}, 90*time.Second, 500*time.Millisecond, "a task on node-3")
		var onThree []psTask
		for _, task := range before {
			if task.Node == "node-3" {
				onThree = append(onThree, task)
			}
		}
		pid := d.pid(t, "node-3")
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		waitGone(t, pid)
		killed := time.Now()
		// The node cannot fence itself any more: its reaper kills its
		// tasks at the fencing deadline of its last keepalive (lease +
		// grace/2 = 10 s here), before they are re-placed (15 s).
		require.Eventually(t, func() bool {
			for _, task := range onThree {
				if !gone(int(task.PID)) {
					return false
				}
			}
			return true
		}, 15*time.Second, 50*time.Millisecond, "node-3's tasks outlived its fencing deadline")
		t.Logf("node-3's tasks killed %s after it died", time.Since(killed).Round(100*time.Millisecond))
		require.Eventually(t, func() bool {
			r := unum(t, d.env, "job", "status", "hello", "-o", "json")
			if r.code != 0 {
				return false
			}
			var st struct {
				Job struct {
					Running int `json:"running"`
				} `json:"job"`
				Allocations []struct {
					Node string `json:"node"`
				} `json:"allocations"`
			}
			if json.Unmarshal([]byte(r.stdout), &st) != nil || st.Job.Running != 3 {
				return false
			}
			for _, a := range st.Allocations {
				if a.Node == "node-3" {
					return false
				}
			}
			return true
		}, 90*time.Second, 500*time.Millisecond, "tasks re-placed off node-3")
		r = unum(t, d.env, "audit", "query", "--action", "node.down")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "node/-/node-3")
	})

	t.Run("exec runs a confined command on every selected node, attributed to its caller", func(t *testing.T) {
		r := unum(t, d.env, "exec", "--on", "node!=node-3", "--", "/bin/sh", "-c", "echo uid=$(id -u); test -n \"$UNUM_DELEGATED_CREDENTIAL\"")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "[node-1] uid=")
		require.Contains(t, r.stdout, "[node-2] uid=")
		require.NotContains(t, r.stdout, "uid=0\n")
		require.Contains(t, r.stderr, "[node-1] exit 0 (credential ")
		r = unum(t, d.env, "exec", "--on", "node=node-1", "--", "/bin/false")
		require.Equal(t, 1, r.code, r.stderr)
		r = unum(t, d.env, "audit", "query", "--action", "exec.run", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var evs struct {
			Events []struct {
				Node    string   `json:"node"`
				Kind    string   `json:"kind"`
				Subject string   `json:"subject"`
				Chain   []string `json:"chain"`
				Creds   []string `json:"creds"`
			} `json:"events"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &evs))
		ran := map[string]bool{}
		for _, ev := range evs.Events {
			if ev.Kind == "job" && len(ev.Chain) > 0 {
				// The node's record of the task it ran: the caller as
				// subject, the exec service as actor, the credential.
				require.Equal(t, "spiffe://unum.local/user/admin", ev.Subject)
				require.Equal(t, []string{"spiffe://unum.local/system/exec"}, ev.Chain)
				require.Len(t, ev.Creds, 1)
				ran[ev.Node] = true
			}
		}
		require.True(t, ran["node-1"] && ran["node-2"], "each node recorded the exec it ran: %v", ran)
	})

	t.Run("a viewer can neither run jobs nor exec", func(t *testing.T) {
		vic := userEnv(t, d, "vic", "viewer")
		r := unum(t, vic, "job", "run", hello)
		require.Equal(t, 3, r.code, r.stderr)
		r = unum(t, vic, "exec", "--", "/bin/true")
		require.Equal(t, 3, r.code, r.stderr)
		r = unum(t, vic, "job", "status", "hello")
		require.Equal(t, 0, r.code, r.stderr)
	})

	t.Run("stopping a job kills its tasks", func(t *testing.T) {
		live := running(ps(t, d, "hello"))
		require.NotEmpty(t, live)
		r := unum(t, d.env, "job", "stop", "hello")
		require.Equal(t, 0, r.code, r.stderr)
		require.Eventually(t, func() bool {
			for _, task := range live {
				if syscall.Kill(int(task.PID), 0) == nil {
					return false
				}
			}
			return len(running(ps(t, d, "hello"))) == 0
		}, 60*time.Second, 500*time.Millisecond)
	})
}

// startDevWith starts `unum dev` with extra flags.
func startDevWith(t *testing.T, dir string, nodes int, extra ...string) *devCluster {
	t.Helper()
	return startDevArgs(t, dir, append([]string{"dev", "--nodes", strconv.Itoa(nodes), "--data-dir", dir}, extra...))
}

// TestExecAttacks: a node runs an exec only when a control node relays it
// with a credential held by the exec service, addressed to and scoped for
// that node, and only once; every refusal is audited on the node.
func TestExecAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("running exec tasks needs root (cgroups, setuid to a dynamic uid); CI runs as root")
	}
	dir, err := os.MkdirTemp("", "ud")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := startDevIn(t, dir, 2)

	// The admin may delegate its own authority to the exec service: a
	// valid exec credential for node-2, minted outside Scheduler.Exec.
	mint := func(node string) string {
		r := unum(t, d.env, "cred", "delegate", "--to", "spiffe://unum.local/system/exec",
			"--scope", "exec.node:node/-/"+node, "--aud", "spiffe://unum.local/node/"+node)
		require.Equal(t, 0, r.code, r.stderr)
		return strings.TrimSpace(r.stdout)
	}
	run := func(relay *rpc.Credentials, target, token string) error {
		cc, err := rpc.DialNode(relay, spiffeid.RequireFromString("spiffe://unum.local/node/"+target), nodeAPIAddress(t, d, target))
		require.NoError(t, err)
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := unumv1.NewTasksClient(cc).Exec(ctx, &unumv1.NodeExecRequest{Command: []string{"/bin/true"}, TimeoutSeconds: 10, Credential: token})
		require.NoError(t, err)
		for {
			ev, err := s.Recv()
			if err != nil {
				return err
			}
			if ev.GetExited() {
				return nil
			}
		}
	}
	svid, roots := nodeSVID(t, d, "node-1")
	control, err := rpc.NewCredentials(svid, roots)
	require.NoError(t, err)

	tok := mint("node-2")
	require.NoError(t, run(control, "node-2", tok), "a control node relaying a valid credential")

	t.Run("a credential runs once per node", func(t *testing.T) {
		err := run(control, "node-2", tok)
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "already used")
	})
	t.Run("a credential for another node is refused", func(t *testing.T) {
		err := run(control, "node-1", mint("node-2"))
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "not addressed")
	})
	t.Run("a credential held by someone else than the exec service is refused", func(t *testing.T) {
		r := unum(t, d.env, "cred", "delegate", "--to", "spiffe://unum.local/ns/default/job/x",
			"--scope", "exec.node:node/-/node-2", "--aud", "spiffe://unum.local/node/node-2")
		require.Equal(t, 0, r.code, r.stderr)
		err := run(control, "node-2", strings.TrimSpace(r.stdout))
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "not the exec service")
	})
	t.Run("only a control node relays", func(t *testing.T) {
		// The admin may do everything the policy grants, but it is not a
		// control node: the node refuses the relay itself.
		admin := adminCreds(t, d)
		err := run(admin, "node-2", mint("node-2"))
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "only control nodes relay exec")
	})
	t.Run("refusals are audited on the node", func(t *testing.T) {
		r := unum(t, d.env, "audit", "query", "--action", "exec.run", "--outcome", "deny", "--node", "node-2")
		require.Equal(t, 0, r.code, r.stderr)
		require.GreaterOrEqual(t, strings.Count(r.stdout, "exec.run"), 3, r.stdout)
	})
}

// adminCreds are the admin's client credentials from the dev cluster.
func adminCreds(t *testing.T, d *devCluster) *rpc.Credentials {
	t.Helper()
	cfg, err := clientconfig.Load(filepath.Join(d.dir, "admin.yaml"))
	require.NoError(t, err)
	creds, err := cfg.Credentials()
	require.NoError(t, err)
	return creds
}

// nodeOneEnv is the admin's environment with a config that talks to
// node-1 only.
func nodeOneEnv(t *testing.T, d *devCluster) []string {
	t.Helper()
	cfg, err := clientconfig.Load(filepath.Join(d.dir, "admin.yaml"))
	require.NoError(t, err)
	cfg.Addresses = []string{nodeAPIAddress(t, d, "node-1")}
	path := filepath.Join(t.TempDir(), "node-1.yaml")
	require.NoError(t, cfg.Save(path))
	return []string{"UNUM_CONFIG=" + path}
}

// gone reports whether pid no longer runs: it does not exist, or it is a
// zombie waiting for its parent.
func gone(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err != nil || strings.Contains(string(st), ") Z ")
}
