package agent

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Environment of the "task" helper mode.
const (
	envJoin  = "AGENT_TEST_JOIN"  // a cgroup.procs file to write our pid to before fetching
	envTwice = "AGENT_TEST_TWICE" // fetch again, on the same client, after a line on stdin
)

// taskResult is one line of the task helper's output.
type taskResult struct {
	Join  string   `json:"join,omitempty"` // "ok", "EACCES" or another error
	Code  string   `json:"code"`
	IDs   []string `json:"ids,omitempty"`
	Error string   `json:"error,omitempty"`
}

// taskHelper plays a task's process: optionally try to move itself into a
// cgroup, then fetch every X509-SVID it is given with the unmodified
// go-spiffe client, and optionally fetch again, over the same client, when
// told to.
func taskHelper() {
	enc := json.NewEncoder(os.Stdout)
	var join string
	if procs := os.Getenv(envJoin); procs != "" {
		err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0)
		switch {
		case err == nil:
			join = "ok"
		case errors.Is(err, syscall.EACCES):
			join = "EACCES"
		default:
			join = err.Error()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+os.Getenv(envSock)))
	if err != nil {
		_ = enc.Encode(taskResult{Join: join, Code: "helper-error", Error: err.Error()})
		os.Exit(0)
	}
	defer client.Close()
	fetch := func() taskResult {
		svids, err := client.FetchX509SVIDs(ctx)
		if err != nil {
			return taskResult{Join: join, Code: status.Code(err).String(), Error: err.Error()}
		}
		out := taskResult{Join: join, Code: "OK"}
		for _, s := range svids {
			out.IDs = append(out.IDs, s.ID.String())
		}
		return out
	}
	_ = enc.Encode(fetch())
	if os.Getenv(envTwice) != "" {
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			os.Exit(0)
		}
		_ = enc.Encode(fetch())
	}
	os.Exit(0)
}

// taskProc is a running task helper.
type taskProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *json.Decoder
}

// startTask runs bin in task helper mode, started directly inside the cgroup
// at dir ("" for no particular group) as uid/gid 65534 (nobody): tasks never
// run as root.
func startTask(t *testing.T, bin, sock, dir string, env ...string) *taskProc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envHelper+"=task", envSock+"="+sock, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if dir != "" {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fd) // the child holds its group once started
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return &taskProc{cmd: cmd, stdin: stdin, out: json.NewDecoder(stdout)}
}

func (p *taskProc) next(t *testing.T) taskResult {
	t.Helper()
	var r taskResult
	require.NoError(t, p.out.Decode(&r))
	return r
}

// runTask runs one task helper to completion and returns its single result.
func runTask(t *testing.T, bin, sock, dir string, env ...string) taskResult {
	t.Helper()
	return startTask(t, bin, sock, dir, env...).next(t)
}

// cgroupTree is a real cgroup v2 group made for one test. It is removed, with
// anything still running in it, when the test ends.
type cgroupTree struct {
	dir string // directory in the v2 mount
	rel string // cgroup v2 path, as /proc/PID/cgroup names it
}

func newCgroupTree(t *testing.T) *cgroupTree {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups and run tasks under another uid")
	}
	mount, mountRoot := "", ""
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 {
			mount, mountRoot = f[4], f[3]
			break
		}
	}
	require.NotEmpty(t, mount, "no cgroup v2 hierarchy is mounted")
	name := fmt.Sprintf("unum-agent-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	c := &cgroupTree{dir: filepath.Join(mount, name), rel: path.Join(mountRoot, name)}
	require.NoError(t, os.Mkdir(c.dir, 0o755))
	t.Cleanup(func() { c.remove(t) })
	return c
}

func (c *cgroupTree) mkdir(t *testing.T, sub string) string {
	t.Helper()
	dir := filepath.Join(c.dir, sub)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// remove kills whatever still runs in the tree and removes its groups,
// deepest first.
func (c *cgroupTree) remove(t *testing.T) {
	if err := os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		t.Errorf("kill cgroup %s: %v", c.dir, err)
	}
	var dirs []string
	_ = filepath.WalkDir(c.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for _, d := range slices.Backward(dirs) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				t.Errorf("remove cgroup %s: %v", d, err)
				break
			}
			time.Sleep(10 * time.Millisecond) // killed processes are still exiting
		}
	}
}

// taskCluster is an agent serving two tasks' identities, with the task
// groups the node's executor would have made.
type taskCluster struct {
	*testAgent
	tree            *cgroupTree
	bin             string
	webDir, dbDir   string
	webID, dbID     string
	rootDir, subDir string
}

func startTaskCluster(t *testing.T) *taskCluster {
	t.Helper()
	tree := newCgroupTree(t)
	root := tree.rel + "/node1"
	web := mustID(t, "spiffe://unum.local/ns/default/job/web")
	db := mustID(t, "spiffe://unum.local/ns/default/job/db")
	ta := startAgent(t, []Entry{
		{ID: "web-0", SPIFFEID: web, Selectors: sel(t, "unum:task:web-0")},
		{ID: "db-1", SPIFFEID: db, Selectors: sel(t, "unum:task:db-1")},
	}, agentOpts{taskRoot: root})
	tc := &taskCluster{
		testAgent: ta,
		tree:      tree,
		bin:       copyTestBinary(t, ta.dir),
		rootDir:   tree.mkdir(t, "node1"),
		webDir:    tree.mkdir(t, "node1/web-0"),
		subDir:    tree.mkdir(t, "node1/web-0/worker"),
		dbDir:     tree.mkdir(t, "node1/db-1"),
		webID:     web.String(),
		dbID:      db.String(),
	}
	// As the executor does before it execs a task.
	require.NoError(t, ta.WaitSVID(testCtx(t), "web-0"))
	require.NoError(t, ta.WaitSVID(testCtx(t), "db-1"))
	return tc
}

// A task's process, started in its cgroup, gets exactly its task's identity
// from an unmodified go-spiffe client on its first fetch, as does a process
// in a group below it; a process in another task's group gets that task's
// identity and never this one's (T-096); processes in no task's group, the
// node's task root itself or outside it, get nothing.
func TestTaskSVID(t *testing.T) {
	tc := startTaskCluster(t)

	got := runTask(t, tc.bin, tc.sock, tc.webDir)
	require.Equal(t, "OK", got.Code, got.Error)
	require.Equal(t, []string{tc.webID}, got.IDs)

	got = runTask(t, tc.bin, tc.sock, tc.subDir)
	require.Equal(t, "OK", got.Code, got.Error)
	require.Equal(t, []string{tc.webID}, got.IDs)

	got = runTask(t, tc.bin, tc.sock, tc.dbDir)
	require.Equal(t, "OK", got.Code, got.Error)
	require.Equal(t, []string{tc.dbID}, got.IDs, "another task's process")

	for name, dir := range map[string]string{"task root": tc.rootDir, "test tree": tc.tree.dir, "no task group": ""} {
		got = runTask(t, tc.bin, tc.sock, dir)
		require.Equal(t, codes.PermissionDenied.String(), got.Code, "%s: %s", name, got.Error)
		require.Contains(t, got.Error, "no identity issued", name)
	}

	// The test itself, root and in no task's group.
	_, err := workloadapi.FetchX509SVID(testCtx(t), tc.addr())
	requireCode(t, err, codes.PermissionDenied, "no identity issued")
}

// T-097: a task cannot move itself, or any process, into another task's
// group: cgroup.procs is root's, so the write fails with EACCES and the
// process stays with whatever identity (if any) it had.
func TestTaskCannotJoinAnotherTask(t *testing.T) {
	tc := startTaskCluster(t)
	join := envJoin + "=" + filepath.Join(tc.webDir, "cgroup.procs")

	got := runTask(t, tc.bin, tc.sock, "", join)
	require.Equal(t, "EACCES", got.Join)
	require.Equal(t, codes.PermissionDenied.String(), got.Code, got.Error)

	got = runTask(t, tc.bin, tc.sock, tc.dbDir, join)
	require.Equal(t, "EACCES", got.Join)
	require.Equal(t, "OK", got.Code, got.Error)
	require.Equal(t, []string{tc.dbID}, got.IDs, "still only its own task's identity")

	// Control: root can move a process (that is what the executor does),
	// and the moved process then has the task's identity. EACCES above is
	// the barrier, not a mistake in the test.
	rootJoin := startTask(t, tc.bin, tc.sock, tc.dbDir, envTwice+"=1")
	require.Equal(t, []string{tc.dbID}, rootJoin.next(t).IDs)
	require.NoError(t, os.WriteFile(filepath.Join(tc.webDir, "cgroup.procs"), []byte(strconv.Itoa(rootJoin.cmd.Process.Pid)), 0))
	_, err := io.WriteString(rootJoin.stdin, "again\n")
	require.NoError(t, err)
	got = rootJoin.next(t)
	require.Equal(t, "OK", got.Code, got.Error)
	require.Equal(t, []string{tc.webID}, got.IDs)
}

// T-096: a task's process that is moved out of the task's group (by root)
// loses the identity on its next fetch, over the same client connection:
// the cgroup is attested on every call, not remembered from connect.
func TestTaskMovedOutLosesIdentity(t *testing.T) {
	tc := startTaskCluster(t)
	p := startTask(t, tc.bin, tc.sock, tc.webDir, envTwice+"=1")
	got := p.next(t)
	require.Equal(t, "OK", got.Code, got.Error)
	require.Equal(t, []string{tc.webID}, got.IDs)

	require.NoError(t, os.WriteFile(filepath.Join(tc.tree.dir, "cgroup.procs"), []byte(strconv.Itoa(p.cmd.Process.Pid)), 0))
	_, err := io.WriteString(p.stdin, "again\n")
	require.NoError(t, err)
	got = p.next(t)
	require.Equal(t, codes.PermissionDenied.String(), got.Code, got.Error)
	require.Empty(t, got.IDs)
}

// Serve refuses a task root the attestor would refuse, before listening.
func TestServeRefusesBadTaskRoot(t *testing.T) {
	dir, err := os.MkdirTemp("", "ua")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	a := New(Config{TrustDomain: td, Upstream: &caUpstream{}, Logger: quietLogger(), TaskCgroupRoot: "/"})
	err = a.Serve(testCtx(t), filepath.Join(dir, "agent.sock"))
	require.ErrorContains(t, err, "must not be the cgroup v2 root")
	_, err = os.Stat(filepath.Join(dir, "agent.sock"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestWaitSVID(t *testing.T) {
	id := mustID(t, "spiffe://unum.local/ns/default/job/web")
	entry := Entry{ID: "e", SPIFFEID: id, Selectors: sel(t, "unum:task:web-0")}
	short := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	// wait runs WaitSVID in the background and returns once it has looked
	// at the state and waits; the returned function waits for its result.
	wait := func(a *Agent, ctx context.Context) func() error {
		var (
			wg     sync.WaitGroup
			err    error
			once   sync.Once
			waits  = make(chan struct{})
			looked = func() { once.Do(func() { close(waits) }) }
		)
		wg.Go(func() { err = a.waitSVID(ctx, "e", looked); looked() })
		<-waits
		return func() error { wg.Wait(); return err }
	}

	t.Run("already cached", func(t *testing.T) {
		ta := startAgent(t, []Entry{entry}, agentOpts{})
		require.NoError(t, ta.WaitSVID(testCtx(t), "e"))
		require.NoError(t, ta.WaitSVID(short(t), "e"), "a cached svid answers at once")
		require.Equal(t, int64(1), ta.upstream.x509N.Load())
	})
	t.Run("entry arrives later", func(t *testing.T) {
		ta := startAgent(t, nil, agentOpts{})
		done := wait(ta.Agent, testCtx(t))
		ta.SetEntries([]Entry{entry})
		require.NoError(t, done())
		resp, _, ok := ta.x509Response([]Entry{entry})
		require.True(t, ok, "a fetch is answered from the cache")
		require.Equal(t, id.String(), resp.Svids[0].SpiffeId)
	})
	t.Run("bundle arrives later", func(t *testing.T) {
		ta := startAgent(t, []Entry{entry}, agentOpts{noBundle: true})
		ctx := short(t)
		err := ta.WaitSVID(ctx, "e")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "no trust bundle yet")
		done := wait(ta.Agent, testCtx(t))
		ta.SetBundles([]*x509.Certificate{ta.ca.root}, ta.ca.jwtKeys())
		require.NoError(t, done())
	})
	t.Run("upstream refuses", func(t *testing.T) {
		ta := startAgent(t, nil, agentOpts{backoffBase: 10 * time.Millisecond})
		ta.upstream.fail.Store(true)
		ta.SetEntries([]Entry{entry})
		err := ta.WaitSVID(short(t), "e")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, errUpstreamDown.Error())
	})
	t.Run("entry removed while waiting", func(t *testing.T) {
		ta := startAgent(t, nil, agentOpts{backoffBase: time.Hour})
		ta.upstream.fail.Store(true)
		ta.SetEntries([]Entry{entry})
		done := wait(ta.Agent, testCtx(t))
		ta.SetEntries(nil)
		require.ErrorIs(t, done(), ErrEntryRemoved)
	})
	t.Run("unknown entry", func(t *testing.T) {
		ta := startAgent(t, nil, agentOpts{})
		err := ta.WaitSVID(short(t), "e")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "no such entry")
	})
}
