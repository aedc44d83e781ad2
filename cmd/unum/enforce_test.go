package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/enforcement/kernel"
)

// eperm is how a refused connect reads in netprobe's log.
var eperm = syscall.EPERM.Error()

// probeResult is the newest result in a netprobe log for target among
// attempts made after since ("" when there is none yet).
func probeResult(t *testing.T, path, target string, since time.Time) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	res := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		at, rest, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		tgt, r, ok := strings.Cut(rest, " ")
		ns, err := strconv.ParseInt(at, 10, 64)
		if !ok || err != nil || tgt != target || time.Unix(0, ns).Before(since) {
			continue
		}
		res = r
	}
	return res
}

// firstResult is when the first attempt at target with result res after
// since was made.
func firstResult(t *testing.T, path, target, res string, since time.Time) time.Time {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[1] != target || strings.Join(f[2:], " ") != res {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err == nil && !time.Unix(0, ns).Before(since) {
			return time.Unix(0, ns)
		}
	}
	t.Fatalf("no %q for %s after %s in %s", res, target, since, path)
	return time.Time{}
}

// endpointOf is the address of a running job's first port.
func endpointOf(t *testing.T, d *devCluster, ns, job string) string {
	t.Helper()
	var addr string
	require.Eventually(t, func() bool {
		r := unum(t, d.env, "job", "endpoints", job, "-n", ns, "-o", "json")
		var out struct {
			Endpoints []struct {
				Address string `json:"address"`
			} `json:"endpoints"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || len(out.Endpoints) == 0 {
			return false
		}
		addr = out.Endpoints[0].Address
		return true
	}, 90*time.Second, 300*time.Millisecond, "job %s/%s never ran", ns, job)
	return addr
}

// enforcementOf is node's line of `unum enforcement status -o json`.
type nodeEnforcement struct {
	Node     string           `json:"node"`
	Mode     string           `json:"mode"`
	Layers   []string         `json:"layers"`
	Programs []string         `json:"programs"`
	Maps     map[string]int64 `json:"maps"`
	Error    string           `json:"error"`
}

func enforcementOf(t *testing.T, d *devCluster, node string) nodeEnforcement {
	t.Helper()
	r := unum(t, d.env, "enforcement", "status", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var st struct {
		Nodes []nodeEnforcement `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	for _, n := range st.Nodes {
		if n.Node == node {
			return n
		}
	}
	t.Fatalf("no enforcement status for %s: %s", node, r.stdout)
	return nodeEnforcement{}
}

// TestKernelEnforcementOnADevCluster: a task reaches exactly what the
// policy lets its identity reach, in the kernel: allowed connections work,
// others get EPERM and an audit event naming the task's identity; a policy
// change opens and closes a path without restarting the task; audit-only
// records and allows; a job's rules go with it; a process in the task
// subtree without an identity reaches nothing; and after the node agent is
// SIGKILLed the programs keep refusing.
func TestKernelEnforcementOnADevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("running tasks and loading BPF programs needs root; CI runs as root")
	}
	if caps := kernel.Probe(); !caps.CgroupBPF {
		t.Skipf("this kernel cannot load cgroup BPF programs (%s): nodes run degraded, which node's TestDegradedEnforcementIsReported covers", caps.Reason)
	}
	dir, err := os.MkdirTemp("", "ue")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := startDevWith(t, dir, 3, "--node-lease", "5s", "--down-grace", "10s")
	// Tasks run as a dynamic uid, which must be able to execute netprobe.
	require.NoError(t, os.Chmod(filepath.Dir(netprobeBin), 0o755))

	listen := func(ns, name string) string {
		job := writeJob(t, fmt.Sprintf(`
name: %s
namespace: %s
type: service
task: {command: %s, args: [listen, UNUM_PORT_SVC]}
resources: {cpu: 50, memory: 32}
ports: [svc]
constraints: [{label: node, op: "=", value: node-3}]
`, name, ns, netprobeBin))
		r := unum(t, d.env, "job", "run", job)
		require.Equal(t, 0, r.code, r.stderr)
		return endpointOf(t, d, ns, name)
	}
	dbAddr := listen("shop", "db")
	vaultAddr := listen("bank", "vault")
	etcdAddr := devPorts(t, d)["node-1"].EtcdClient
	require.NotEmpty(t, etcdAddr, "node-1's etcd client address")

	web := writeJob(t, fmt.Sprintf(`
name: web
namespace: shop
type: service
task: {command: %s, args: [probe, probe.log, %q, %q, %q]}
resources: {cpu: 50, memory: 32}
egress: [spiffe://unum.local/ns/shop/job/db, spiffe://unum.local/ns/bank/job/vault]
constraints: [{label: node, op: "=", value: node-3}]
`, netprobeBin, dbAddr, vaultAddr, etcdAddr))
	r := unum(t, d.env, "job", "run", web)
	require.Equal(t, 0, r.code, r.stderr)
	var task psTask
	require.Eventually(t, func() bool {
		tasks := running(ps(t, d, "web"))
		if len(tasks) != 1 {
			return false
		}
		task = tasks[0]
		return true
	}, 90*time.Second, 300*time.Millisecond)
	logPath := filepath.Join(dir, "node-3", "tasks", task.Alloc, "work", "probe.log")
	expect := func(since time.Time, want map[string]string, msg string) {
		t.Helper()
		require.Eventually(t, func() bool {
			for target, res := range want {
				if probeResult(t, logPath, target, since) != res {
					return false
				}
			}
			return true
		}, 20*time.Second, 200*time.Millisecond, "%s (log %s)", msg, logPath)
	}

	t.Run("allowed connections work, the rest get EPERM", func(t *testing.T) {
		expect(time.Now(), map[string]string{dbAddr: "ok", vaultAddr: eperm, etcdAddr: eperm},
			"web reaches db (same namespace, declared) and neither vault (another namespace) nor etcd")
	})

	t.Run("denials are audited with the task's identity", func(t *testing.T) {
		require.Eventually(t, func() bool {
			r := unum(t, d.env, "audit", "query", "--action", "enforcement.deny", "--node", "node-3", "-o", "json")
			return r.code == 0 && strings.Contains(r.stdout, "spiffe://unum.local/ns/shop/job/web") &&
				strings.Contains(r.stdout, vaultAddr) && strings.Contains(r.stdout, "connect4")
		}, 20*time.Second, 500*time.Millisecond)
	})

	t.Run("a policy change opens and closes the path without restarting the task", func(t *testing.T) {
		bundle := filepath.Join(t.TempDir(), "bundle")
		r := unum(t, d.env, "policy", "get", "--out", bundle)
		require.Equal(t, 0, r.code, r.stderr)
		data := `{"bindings": {}, "namespace_bindings": {}, "network_egress": {"spiffe://unum.local/ns/shop/job/web": [{"namespace": "bank"}]}}`
		require.NoError(t, os.WriteFile(filepath.Join(bundle, "data.json"), []byte(data), 0o644))
		applied := time.Now()
		r = unum(t, d.env, "policy", "apply", bundle, "-m", "web may reach bank")
		require.Equal(t, 0, r.code, r.stdout+r.stderr)
		expect(applied, map[string]string{vaultAddr: "ok", dbAddr: "ok", etcdAddr: eperm}, "the new policy opened web -> vault")
		t.Logf("policy apply to the first allowed connect: %s (the CLI's apply included)", firstResult(t, logPath, vaultAddr, "ok", applied).Sub(applied).Round(time.Millisecond))
		rolled := time.Now()
		r = unum(t, d.env, "policy", "rollback", "1")
		require.Equal(t, 0, r.code, r.stdout+r.stderr)
		expect(rolled, map[string]string{vaultAddr: eperm, dbAddr: "ok"}, "the rollback closed web -> vault")
		now := running(ps(t, d, "web"))
		require.Len(t, now, 1)
		require.Equal(t, task.PID, now[0].PID, "the task was restarted")
	})

	t.Run("audit-only records and allows", func(t *testing.T) {
		r := unum(t, d.env, "enforcement", "mode", "audit-only", "-n", "shop")
		require.Equal(t, 0, r.code, r.stderr)
		since := time.Now()
		expect(since, map[string]string{vaultAddr: "ok", etcdAddr: "ok"}, "audit-only allowed what enforce refuses")
		require.Eventually(t, func() bool {
			r := unum(t, d.env, "audit", "query", "--action", "enforcement.deny", "--node", "node-3", "--outcome", "allow", "-o", "json")
			return r.code == 0 && strings.Contains(r.stdout, "audit-only") && strings.Contains(r.stdout, "spiffe://unum.local/ns/shop/job/web")
		}, 20*time.Second, 500*time.Millisecond, "audit-only denials are recorded")
		r = unum(t, d.env, "enforcement", "mode", "enforce", "-n", "shop")
		require.Equal(t, 0, r.code, r.stderr)
		expect(time.Now(), map[string]string{vaultAddr: eperm, etcdAddr: eperm}, "enforce again")

		// The whole cluster: the node reports it, and records the change.
		r = unum(t, d.env, "enforcement", "mode", "audit-only")
		require.Equal(t, 0, r.code, r.stderr)
		expect(time.Now(), map[string]string{vaultAddr: "ok"}, "cluster-wide audit-only allows")
		require.Eventually(t, func() bool { return enforcementOf(t, d, "node-3").Mode == "audit-only" }, 20*time.Second, 500*time.Millisecond)
		r = unum(t, d.env, "enforcement", "mode", "enforce")
		require.Equal(t, 0, r.code, r.stderr)
		expect(time.Now(), map[string]string{vaultAddr: eperm}, "enforce again")
		require.Eventually(t, func() bool { return enforcementOf(t, d, "node-3").Mode == "enforce" }, 20*time.Second, 500*time.Millisecond)
		r = unum(t, d.env, "audit", "query", "--action", "enforcement.mode", "--node", "node-3", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, `"before": "audit-only"`, "the return to enforce was recorded")
	})

	t.Run("enforcement status shows the node's programs and maps", func(t *testing.T) {
		st := enforcementOf(t, d, "node-3")
		require.Equal(t, "enforce", st.Mode)
		require.Contains(t, st.Layers, "bpf-cgroup-net")
		require.Contains(t, st.Programs, "connect4")
		require.Contains(t, st.Programs, "sendmsg6")
		require.Positive(t, st.Maps["rules"], "web's rules")
		require.Empty(t, st.Error)
	})

	t.Run("removing a job removes its map entries", func(t *testing.T) {
		// node-3's rules map holds web's one rule (db) now: the policy
		// change above was rolled back (heartbeats report it within 2 s).
		rules := func(want int64) func() bool {
			return func() bool { return enforcementOf(t, d, "node-3").Maps["rules"] == want }
		}
		require.Eventually(t, rules(1), 30*time.Second, 500*time.Millisecond, "web's one rule")
		web2 := writeJob(t, fmt.Sprintf(`
name: web2
namespace: shop
type: service
task: {command: %s, args: [probe, probe.log, %q]}
resources: {cpu: 50, memory: 32}
egress: [spiffe://unum.local/ns/shop/job/db]
constraints: [{label: node, op: "=", value: node-3}]
`, netprobeBin, dbAddr))
		r := unum(t, d.env, "job", "run", web2)
		require.Equal(t, 0, r.code, r.stderr)
		require.Eventually(t, rules(2), 60*time.Second, 500*time.Millisecond, "web2's rule never arrived")
		r = unum(t, d.env, "job", "stop", "web2", "-n", "shop")
		require.Equal(t, 0, r.code, r.stderr)
		require.Eventually(t, rules(1), 30*time.Second, 500*time.Millisecond, "web2's rule stayed after it was stopped")
	})

	t.Run("a process in the task subtree without an identity reaches nothing", func(t *testing.T) {
		// Started by root straight into the subtree, bypassing the shim:
		// the cgroup, not the uid or the shim, decides.
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", task.PID))
		require.NoError(t, err)
		var taskGroup string
		for _, l := range strings.Split(string(cg), "\n") {
			if rest, ok := strings.CutPrefix(l, "0::"); ok {
				taskGroup = rest
			}
		}
		require.NotEmpty(t, taskGroup)
		caps := kernel.Probe()
		rogue := filepath.Join(caps.CgroupV2, filepath.Dir(taskGroup), "rogue-process")
		require.NoError(t, os.Mkdir(rogue, 0o755))
		t.Cleanup(func() { _ = os.Remove(rogue) })
		fd, err := syscall.Open(rogue, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		require.NoError(t, err)
		defer syscall.Close(fd)
		cmd := exec.Command("bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(dbAddr, ":", "/", 1))
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		out, err := cmd.CombinedOutput()
		require.Error(t, err, "a process without an identity reached db")
		require.Contains(t, string(out), "Operation not permitted")
	})

	t.Run("after SIGKILL of the node agent the kernel keeps refusing", func(t *testing.T) {
		pid := d.pid(t, "node-3")
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		waitGone(t, pid)
		killed := time.Now()
		// The task runs on until the fencing deadline (lease + grace/2 =
		// 10 s); meanwhile nothing in user space enforces anything: the
		// attempts logged after the agent was gone were decided by the
		// pinned programs alone.
		expect(killed.Add(500*time.Millisecond), map[string]string{vaultAddr: eperm, etcdAddr: eperm, dbAddr: "ok"},
			"with the agent dead, the pinned programs still decide")
	})
}
