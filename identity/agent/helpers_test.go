package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/selector"
)

var td = spiffeid.RequireTrustDomainFromString("unum.local")

const (
	envHelper = "AGENT_TEST_HELPER"
	envSock   = "AGENT_TEST_SOCK"
	envExec   = "AGENT_TEST_EXEC"
	envFD     = "AGENT_TEST_FD"
)

// TestMain lets the test binary play a workload: in helper mode it fetches an
// X509-SVID with the unmodified go-spiffe client and reports the outcome as
// JSON on stdout.
func TestMain(m *testing.M) {
	switch os.Getenv(envHelper) {
	case "":
		os.Exit(m.Run())
	case "fetch":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var out fetchResult
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+os.Getenv(envSock)))
		if err != nil {
			out.Code = status.Code(err).String()
			out.Error = err.Error()
		} else {
			out.Code = "OK"
			out.ID = svid.ID.String()
		}
		_ = json.NewEncoder(os.Stdout).Encode(out)
		os.Exit(0)
	case "connect-exec":
		connectThenExec()
	case "fetch-fd":
		_ = json.NewEncoder(os.Stdout).Encode(fetchOverInheritedFD())
		os.Exit(0)
	case "task":
		taskHelper()
	case "bench":
		_ = json.NewEncoder(os.Stdout).Encode(benchHelper())
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", os.Getenv(envHelper))
		os.Exit(2)
	}
}

type fetchResult struct {
	Code  string `json:"code"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error,omitempty"`
}

// testCA is a real unum CA: a root, one control node's intermediate and a JWT
// signer.
type testCA struct {
	root      *x509.Certificate
	authority *ca.Authority
	jwt       *ca.JWTSigner
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	now := time.Now()
	rootKey, err := ca.GenerateKey()
	require.NoError(t, err)
	root, err := ca.NewRoot(td, rootKey, now.Add(-time.Minute), 24*time.Hour)
	require.NoError(t, err)
	interKey, err := ca.GenerateKey()
	require.NoError(t, err)
	inter, err := ca.NewIntermediate(td, "cp1", interKey.Public(), root, rootKey, now.Add(-time.Minute), 12*time.Hour)
	require.NoError(t, err)
	authority, err := ca.New(td, inter, interKey, nil, nil)
	require.NoError(t, err)
	jwtKey, err := ca.GenerateKey()
	require.NoError(t, err)
	signer, err := ca.NewJWTSigner(td, jwtKey, nil)
	require.NoError(t, err)
	return &testCA{root: root, authority: authority, jwt: signer}
}

func (c *testCA) jwtKeys() map[string]crypto.PublicKey {
	return map[string]crypto.PublicKey{c.jwt.KeyID(): c.jwt.PublicKey()}
}

// caUpstream adapts the in-process CA to Upstream. It is the real CA with
// real crypto; the only addition is a switch to make it fail, standing in for
// an unreachable control plane.
type caUpstream struct {
	ca      *testCA
	ttl     time.Duration
	jwtTTL  time.Duration
	fail    atomic.Bool
	x509N   atomic.Int64
	jwtN    atomic.Int64
	tamper  func(csrDER []byte, id spiffeid.ID) ([]*x509.Certificate, error) // nil: sign the CSR
	tamperM sync.Mutex
}

var errUpstreamDown = errors.New("control plane unreachable")

func (u *caUpstream) MintX509SVID(ctx context.Context, entryID string, id spiffeid.ID, csrDER []byte) ([]*x509.Certificate, error) {
	u.x509N.Add(1)
	if u.fail.Load() {
		return nil, errUpstreamDown
	}
	u.tamperM.Lock()
	tamper := u.tamper
	u.tamperM.Unlock()
	if tamper != nil {
		return tamper(csrDER, id)
	}
	return u.ca.authority.SignX509SVID(csrDER, id, u.ttl)
}

func (u *caUpstream) MintJWTSVID(ctx context.Context, entryID string, id spiffeid.ID, audience []string) (string, error) {
	u.jwtN.Add(1)
	if u.fail.Load() {
		return "", errUpstreamDown
	}
	return u.ca.jwt.SignJWTSVID(id, audience, u.jwtTTL)
}

type testAgent struct {
	*Agent
	ca       *testCA
	upstream *caUpstream
	dir      string
	sock     string
}

type agentOpts struct {
	ttl         time.Duration
	noBundle    bool
	backoffBase time.Duration
	taskRoot    string // Config.TaskCgroupRoot
	refused     func(context.Context, Refusal)
}

// startAgent runs a real agent (Run and Serve) on a real unix socket. The
// socket directory is short (sun_path is 108 bytes) and traversable by other
// uids.
func startAgent(t testing.TB, entries []Entry, o agentOpts) *testAgent {
	t.Helper()
	if o.ttl == 0 {
		o.ttl = time.Hour
	}
	dir, err := os.MkdirTemp("", "ua")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })

	c := newTestCA(t)
	up := &caUpstream{ca: c, ttl: o.ttl, jwtTTL: 5 * time.Minute}
	a := New(Config{
		TrustDomain:    td,
		Upstream:       up,
		Logger:         quietLogger(),
		TaskCgroupRoot: o.taskRoot,
		Refused:        o.refused,
	})
	if o.backoffBase != 0 {
		a.backoffBase = o.backoffBase
		a.backoffMax = 4 * o.backoffBase
	}
	if !o.noBundle {
		a.SetBundles([]*x509.Certificate{c.root}, c.jwtKeys())
	}
	a.SetEntries(entries)

	ta := &testAgent{Agent: a, ca: c, upstream: up, dir: dir, sock: filepath.Join(dir, "public", "agent.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); assert.NoError(t, a.Run(ctx)) }()
	go func() { defer wg.Done(); assert.NoError(t, a.Serve(ctx, ta.sock)) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitForSocket(t, ta.sock)
	return ta
}

// waitForSocket waits until path accepts connections (the socket file exists
// from bind(2), a moment before listen(2)).
func waitForSocket(t testing.TB, path string) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", path)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, 5*time.Second, time.Millisecond)
}

func (ta *testAgent) addr() workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + ta.sock)
}

// rawClient is a plain gRPC client, for what the go-spiffe client will not
// do (omit the security header) or hides (stream boundaries, status codes).
func (ta *testAgent) rawClient(t testing.TB) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+ta.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func mustID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	require.NoError(t, err)
	return id
}

func sel(t testing.TB, ss ...string) []selector.Selector {
	t.Helper()
	out := make([]selector.Selector, 0, len(ss))
	for _, s := range ss {
		x, err := selector.Parse(s)
		require.NoError(t, err)
		out = append(out, x)
	}
	return out
}

// selfUID is the selector that matches this test process.
func selfUID() string { return fmt.Sprintf("unix:uid:%d", os.Geteuid()) }

// copyTestBinary copies the test binary where another uid can execute it
// (go test's build directory is private to its owner).
func copyTestBinary(t testing.TB, dir string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	src, err := os.Open(self)
	require.NoError(t, err)
	defer src.Close()
	path := filepath.Join(dir, "workload")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	return path
}

// fetchAs runs the test binary as uid/gid and returns what its go-spiffe
// client got from the agent.
func fetchAs(t testing.TB, bin, sock string, uid, gid uint32) fetchResult {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envHelper+"=fetch", envSock+"="+sock, "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	require.NoError(t, err)
	var res fetchResult
	require.NoError(t, json.Unmarshal(out, &res), "helper output: %s", out)
	return res
}

func leafKeyMatches(t testing.TB, leaf *x509.Certificate, key crypto.Signer) {
	t.Helper()
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	require.True(t, ok)
	require.True(t, pub.Equal(key.Public()), "private key does not match the leaf")
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// connectThenExec plays the exec-after-connect attack: connect to the agent,
// wait until the agent has captured this process (its HTTP/2 SETTINGS frame,
// sent right after the handshake, is readable: peek, do not consume), then
// exec another binary that speaks the Workload API over the inherited socket.
func connectThenExec() {
	fail := func(err error) {
		_ = json.NewEncoder(os.Stdout).Encode(fetchResult{Code: "helper-error", Error: err.Error()})
		os.Exit(0)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fail(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: os.Getenv(envSock)}); err != nil {
		fail(err)
	}
	var b [1]byte
	if _, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK); err != nil {
		fail(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		fail(err)
	}
	// syscall.Exec does not de-duplicate the environment and Go reads the
	// first of duplicate keys: drop the helper mode before setting it.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envHelper+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, envHelper+"=fetch-fd", envFD+"="+strconv.Itoa(fd))
	bin := os.Getenv(envExec)
	fail(syscall.Exec(bin, []string{bin}, env))
}

// fetchOverInheritedFD calls FetchX509SVID over the inherited connection.
func fetchOverInheritedFD() fetchResult {
	fd, err := strconv.Atoi(os.Getenv(envFD))
	if err != nil {
		return fetchResult{Code: "helper-error", Error: err.Error()}
	}
	nc, err := net.FileConn(os.NewFile(uintptr(fd), "inherited"))
	if err != nil {
		return fetchResult{Code: "helper-error", Error: err.Error()}
	}
	var once sync.Once
	dial := func(context.Context, string) (net.Conn, error) {
		var c net.Conn
		once.Do(func() { c = nc })
		if c == nil {
			return nil, errors.New("the inherited connection was already used")
		}
		return c, nil
	}
	conn, err := grpc.NewClient("passthrough:///inherited", grpc.WithContextDialer(dial), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fetchResult{Code: "helper-error", Error: err.Error()}
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	if err == nil {
		var resp *workload.X509SVIDResponse
		if resp, err = stream.Recv(); err == nil {
			return fetchResult{Code: "OK", ID: resp.Svids[0].SpiffeId}
		}
	}
	return fetchResult{Code: status.Code(err).String(), Error: err.Error()}
}

// runHelper runs bin in a helper mode and decodes its JSON result.
func runHelper(t testing.TB, bin string, env ...string) fetchResult {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	require.NoError(t, err)
	var res fetchResult
	require.NoError(t, json.Unmarshal(out, &res), "helper output: %s", out)
	return res
}
