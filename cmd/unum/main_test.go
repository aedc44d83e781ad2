package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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

// unumBin is the binary built once for the package's tests: these tests
// drive the real CLI and real node processes, as an operator would.
var unumBin string

// netprobeBin is the enforcement tests' task (testdata/netprobe).
var netprobeBin string

// escapeBin is the attack tests' task (testdata/escape).
var escapeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "unum-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	unumBin = filepath.Join(dir, "unum")
	build := exec.Command("go", "build", "-o", unumBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build unum:", err)
		os.Exit(1)
	}
	netprobeBin = filepath.Join(dir, "netprobe")
	escapeBin = filepath.Join(dir, "escape")
	for bin, pkg := range map[string]string{netprobeBin: "./testdata/netprobe", escapeBin: "./testdata/escape"} {
		build = exec.Command("go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg+":", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func unum(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, unumBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run unum %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func TestUsageExitCodes(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"id", "register"},
		{"id", "register", "--spiffe-id", "spiffe://unum.local/ns/a/job/b", "--node", "n", "--selector", "unix:path:/bin/sh"},
		{"init", "--data-dir", "/tmp/x"},
		{"node", "join-token"},
		{"status", "-o", "xml"},
	} {
		r := unum(t, []string{"UNUM_CONFIG="}, args...)
		require.Equal(t, 2, r.code, "unum %v: %s", args, r.stderr)
	}
	r := unum(t, []string{"UNUM_CONFIG="}, "status")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "UNUM_CONFIG")
}

// TestInitRefusesKEKInsideDataDir: outside `unum dev`, the key-encryption
// key must not sit on the same folder as the keys it seals (T-007).
func TestInitRefusesKEKInsideDataDir(t *testing.T) {
	dir := t.TempDir()
	r := unum(t, nil, "init", "--trust-domain", "kek.test", "--data-dir", dir, "--kek-file", filepath.Join(dir, "kek"))
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "inside the data folder")
	_, err := os.Stat(filepath.Join(dir, "node.yaml"))
	require.True(t, os.IsNotExist(err))
	_, err = os.Stat(filepath.Join(dir, "kek"))
	require.True(t, os.IsNotExist(err), "no KEK may be created inside the data folder")
}

// devCluster runs `unum dev` until the test ends.
type devCluster struct {
	dir string
	cmd *exec.Cmd
	env []string
}

func startDev(t *testing.T, nodes int) *devCluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "ud")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return startDevIn(t, dir, nodes)
}

func startDevIn(t *testing.T, dir string, nodes int) *devCluster {
	t.Helper()
	return startDevArgs(t, dir, []string{"dev", "--nodes", strconv.Itoa(nodes), "--data-dir", dir})
}

// startDevArgs runs unum with args (a dev command) and waits until the
// cluster is ready.
func startDevArgs(t *testing.T, dir string, args []string) *devCluster {
	t.Helper()
	cmd := exec.Command(unumBin, args...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	logf, err := os.OpenFile(filepath.Join(dir, "dev.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	cmd.Stderr = logf
	require.NoError(t, cmd.Start())
	d := &devCluster{dir: dir, cmd: cmd, env: []string{"UNUM_CONFIG=" + filepath.Join(dir, "admin.yaml")}}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "export UNUM_CONFIG=") {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			log, _ := os.ReadFile(filepath.Join(dir, "dev.log"))
			t.Fatalf("unum dev exited before it was ready:\n%s", log)
		}
	case <-time.After(4 * time.Minute):
		log, _ := os.ReadFile(filepath.Join(dir, "dev.log"))
		t.Fatalf("unum dev not ready in time:\n%s", log)
	}
	return d
}

func (d *devCluster) pid(t *testing.T, node string) int {
	data, err := os.ReadFile(filepath.Join(d.dir, node, "pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	return pid
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func waitGone(t *testing.T, pid int) {
	t.Helper()
	waitGoneWithin(t, pid, 20*time.Second)
}

// waitGoneWithin waits for pid to exit, failing the test after limit.
func waitGoneWithin(t *testing.T, pid int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for alive(pid) {
		// A zombie still answers kill(0): check its state.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *devCluster) socket(node string) string {
	return filepath.Join(d.dir, node, "public", "agent.sock")
}

// fetchSVID retries `unum id svid` until the entry reached the agent.
func (d *devCluster) fetchSVID(t *testing.T, node, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := unum(t, d.env, "id", "svid", "--socket", d.socket(node), "-o", "json")
		if r.code == 0 {
			var out struct {
				SVIDs []struct {
					SPIFFEID string `json:"spiffe_id"`
				} `json:"svids"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
			for _, s := range out.SVIDs {
				if s.SPIFFEID == want {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no svid %s from %s: %s %s", want, node, r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type statusJSON struct {
	Healthy     bool     `json:"healthy"`
	Warnings    []string `json:"warnings"`
	Quorum      bool     `json:"quorum"`
	EtcdLeader  string
	EtcdMembers []struct {
		Name    string `json:"name"`
		Learner bool   `json:"learner"`
	} `json:"etcd_members"`
	Nodes []struct {
		Name              string   `json:"name"`
		Roles             []string `json:"roles"`
		Ready             bool     `json:"ready"`
		EnrollmentAddress string   `json:"enrollment_address"`
		Enforcement       string   `json:"enforcement"`
	} `json:"nodes"`
}

// TestDevCluster brings up `unum dev --nodes 3`, uses it like an operator,
// kills a node with SIGKILL and checks the cluster keeps serving, then
// kills a second one and checks the minority refuses to mint (T-008).
func TestDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three node processes")
	}
	d := startDev(t, 3)

	r := unum(t, d.env, "status", "-o", "json")
	require.Equal(t, 0, r.code, "status: %s %s", r.stdout, r.stderr)
	var st statusJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	require.True(t, st.Healthy)
	require.Len(t, st.Nodes, 3)
	require.Len(t, st.EtcdMembers, 3)
	for _, m := range st.EtcdMembers {
		require.False(t, m.Learner, m.Name)
	}
	// Every dev node computes: as root on a kernel with cgroup BPF it
	// enforces, elsewhere it says it is degraded.
	wantMode := "degraded"
	if os.Geteuid() == 0 && kernel.Probe().CgroupBPF {
		wantMode = "enforce"
	}
	for _, n := range st.Nodes {
		require.NotEmpty(t, n.EnrollmentAddress, n.Name)
		require.Equal(t, wantMode, n.Enforcement, n.Name)
	}
	require.Empty(t, st.Warnings, "a fresh cluster crosses no threshold")
	d.scrapeMetrics(t)

	// Join tokens never appear on a command line (readable by every local
	// user in /proc/PID/cmdline): unum dev hands them over in the environment.
	for _, n := range []string{"node-2", "node-3"} {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", d.pid(t, n)))
		require.NoError(t, err)
		require.Contains(t, string(cmdline), "--join")
		require.NotContains(t, string(cmdline), "unum1.", "a join token is on the command line of %s", n)
	}

	r = unum(t, d.env, "id", "show", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"spiffe_id": "spiffe://unum.local/user/admin"`)

	uid := strconv.Itoa(os.Getuid())
	r = unum(t, d.env, "id", "register", "--spiffe-id", "spiffe://unum.local/ns/default/job/a", "--node", "node-3", "--selector", "unix:uid:"+uid, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	d.fetchSVID(t, "node-3", "spiffe://unum.local/ns/default/job/a")

	t.Run("a node identity is denied admin actions", func(t *testing.T) {
		cfg := nodeClientConfig(t, d, "node-3")
		r := unum(t, []string{"UNUM_CONFIG=" + cfg}, "node", "join-token", "--name", "evil")
		require.Equal(t, 3, r.code, r.stderr)
		require.Contains(t, r.stderr, "denied")
		r = unum(t, []string{"UNUM_CONFIG=" + cfg}, "id", "show", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "spiffe://unum.local/node/node-3")
	})

	// SIGKILL one control node, the first one the CLI would try: the
	// cluster keeps serving and the CLI fails over.
	victim := d.pid(t, "node-1")
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
	waitGone(t, victim)
	// node-1 led etcd: writes fail until the survivors elect a new leader
	// (a few election timeouts), as they would for an operator.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = unum(t, d.env, "id", "register", "--spiffe-id", "spiffe://unum.local/ns/default/job/b", "--node", "node-3", "--selector", "unix:uid:"+uid)
		if r.code == 0 || time.Now().After(deadline) {
			break
		}
		require.Equal(t, 1, r.code, r.stderr)
		time.Sleep(time.Second)
	}
	require.Equal(t, 0, r.code, r.stderr)
	d.fetchSVID(t, "node-3", "spiffe://unum.local/ns/default/job/b")
	r = unum(t, d.env, "status", "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stderr)
	require.True(t, st.Quorum)

	t.Run("minority control node cannot mint", func(t *testing.T) {
		first := d.pid(t, "node-2")
		require.NoError(t, syscall.Kill(first, syscall.SIGKILL))
		waitGone(t, first)
		requireMintRefused(t, d, "node-3")
		requireStaleViewRefuses(t, d, "node-3")
		// The agent keeps serving what it already holds.
		r := unum(t, d.env, "id", "svid", "--socket", d.socket("node-3"), "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "spiffe://unum.local/ns/default/job/a")
	})

	// SIGTERM: unum dev stops and its nodes with it.
	last := d.pid(t, "node-3")
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("unum dev did not stop on SIGTERM")
	}
	waitGone(t, last)

	// Started again on the same folder, the dev cluster resumes: same
	// trust domain, same identities, registrations intact.
	d = startDevIn(t, d.dir, 3)
	r = unum(t, d.env, "status", "-o", "json")
	require.Equal(t, 0, r.code, "status after resume: %s %s", r.stdout, r.stderr)
	d.fetchSVID(t, "node-3", "spiffe://unum.local/ns/default/job/b")
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, d.cmd.Wait())
}

// TestDevNodesDieWithDev: the nodes never outlive `unum dev`, even when it
// is killed with SIGKILL and cannot clean up.
func TestDevNodesDieWithDev(t *testing.T) {
	d := startDev(t, 1)
	pid := d.pid(t, "node-1")
	require.True(t, alive(pid))
	require.NoError(t, d.cmd.Process.Kill())
	_ = d.cmd.Wait()
	waitGone(t, pid)
}

// scrapeMetrics fetches every dev node's /metrics from the loopback address
// unum dev gave it (kept in dev.json, printed at start).
func (d *devCluster) scrapeMetrics(t *testing.T) {
	t.Helper()
	for name, p := range devPorts(t, d) {
		require.NotEmpty(t, p.Metrics, name)
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + p.Metrics + "/metrics")
		require.NoError(t, err, name)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, name)
		require.Contains(t, string(body), "unum_etcd_healthy 1", name)
		require.Contains(t, string(body), `unum_enrollment_attempts_total{kind="node",outcome="ok"}`, name)
	}
}
