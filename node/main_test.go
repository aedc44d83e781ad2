package node

import (
	"github.com/unumos/unum/scheduler/executor/reaper"
	"github.com/unumos/unum/scheduler/executor/shim"

	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
)

// The package's tests share one cluster: node-1 (control+compute, created by
// Init) and node-2 (compute, joined with a token), both running in-process
// with real etcd, real mTLS listeners on 127.0.0.1 and real Workload API
// sockets.
var cl *cluster

// testSVIDTTL is short so that rotation happens during the tests.
const testSVIDTTL = 8 * time.Second

type runningNode struct {
	dir    string
	opts   Options
	cancel context.CancelFunc
	done   chan error
	// node is the running node (set before it runs).
	node atomic.Pointer[node]
}

type cluster struct {
	base   string
	kek    string
	nodes  map[string]*runningNode
	admin  string
	enroll string
}

func TestMain(m *testing.M) {
	// Compute nodes started by these tests run their tasks through this
	// binary (os.Executable), as the unum binary does.
	if len(os.Args) > 1 && os.Args[1] == shim.Arg {
		shim.Main()
	}
	if len(os.Args) > 1 && os.Args[1] == reaper.Arg {
		reaper.Main()
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "node tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func quietLog() *slog.Logger {
	if os.Getenv("UNUM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func freePorts() (Ports, error) {
	p, err := FreeLoopbackPorts(1)
	if err != nil {
		return Ports{}, err
	}
	return p[0], nil
}

func setup(m *testing.M) (int, error) {
	// Short base path: unix socket paths must stay under 108 bytes.
	base, err := os.MkdirTemp("", "unt")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(base)
	c := &cluster{base: base, kek: filepath.Join(base, "kek"), nodes: map[string]*runningNode{}}
	ctx := context.Background()
	p1, err := freePorts()
	if err != nil {
		return 0, err
	}
	dir1 := filepath.Join(base, "n1")
	if err := Init(ctx, InitOptions{TrustDomain: "unum.test", DataDir: dir1, KEKFile: c.kek, Name: "node-1", Ports: p1,
		EtcdHeartbeat: 250 * time.Millisecond, EtcdElection: 2500 * time.Millisecond, Log: quietLog()}); err != nil {
		return 0, fmt.Errorf("init: %w", err)
	}
	c.admin = Layout{Dir: dir1}.Admin()
	c.enroll = p1.Enroll
	if err := c.start("node-1", Options{DataDir: dir1, KEKFile: c.kek, SVIDTTL: testSVIDTTL}); err != nil {
		return 0, err
	}
	defer c.stopAll()
	if err := c.waitReady(ctx, "node-1"); err != nil {
		return 0, err
	}
	tok, err := c.joinToken(ctx, "node-2", "compute")
	if err != nil {
		return 0, err
	}
	p2, err := freePorts()
	if err != nil {
		return 0, err
	}
	if err := c.start("node-2", Options{DataDir: filepath.Join(base, "n2"), Ports: p2, JoinAddr: p1.Enroll, Token: tok}); err != nil {
		return 0, err
	}
	if err := c.waitReady(ctx, "node-2"); err != nil {
		return 0, err
	}
	cl = c
	return m.Run(), nil
}

func (c *cluster) start(name string, o Options) error {
	o.Log = quietLog()
	o.EtcdHeartbeat, o.EtcdElection = 250*time.Millisecond, 2500*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	rn := &runningNode{dir: o.DataDir, opts: o, cancel: cancel, done: make(chan error, 1)}
	o.started = func(n *node) { rn.node.Store(n) }
	go func() { rn.done <- Run(ctx, o) }()
	c.nodes[name] = rn
	return nil
}

func (c *cluster) stop(name string) error {
	rn := c.nodes[name]
	rn.cancel()
	select {
	case err := <-rn.done:
		delete(c.nodes, name)
		return err
	case <-time.After(30 * time.Second):
		return errors.New(name + " did not stop within 30s")
	}
}

func (c *cluster) stopAll() {
	for name := range c.nodes {
		_ = c.stop(name)
	}
}

func (c *cluster) adminConn() (*grpc.ClientConn, error) {
	cfg, err := clientconfig.Load(c.admin)
	if err != nil {
		return nil, err
	}
	creds, err := cfg.Credentials()
	if err != nil {
		return nil, err
	}
	return rpc.Dial(creds, cfg.Addresses)
}

func (c *cluster) joinToken(ctx context.Context, name string, roles ...string) (string, error) {
	cc, err := c.adminConn()
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := unumv1.NewClusterClient(cc).CreateJoinToken(ctx, &unumv1.CreateJoinTokenRequest{Name: name, Roles: roles})
	if err != nil {
		return "", err
	}
	return resp.GetToken(), nil
}

// waitReady waits until the cluster reports name ready, or its Run fails.
func (c *cluster) waitReady(ctx context.Context, name string) error {
	cc, err := c.adminConn()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case err := <-c.nodes[name].done:
			return fmt.Errorf("%s exited: %v", name, err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v", name, last)
		case <-time.After(200 * time.Millisecond):
		}
		sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := unumv1.NewClusterClient(cc).ListNodes(sctx, &unumv1.ListNodesRequest{})
		scancel()
		if err != nil {
			last = err
			continue
		}
		for _, n := range resp.GetNodes() {
			if n.GetName() == name && n.GetReady() {
				return nil
			}
		}
		last = errors.New("not reported ready yet")
	}
}
