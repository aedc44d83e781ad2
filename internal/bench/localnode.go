package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/node"
)

// localNode is a one-node cluster (control and compute) running in this
// process on a temporary folder, with an admin connection to it.
type localNode struct {
	base, kekDir string
	layout       node.Layout
	ports        node.Ports
	fs           Filesystem
	admin        *grpc.ClientConn

	stopNode   context.CancelFunc
	runErr     chan error
	closeAdmin func()
}

// startLocalNode creates a trust domain in a new folder under tempDir
// (node.Init, with the KEK in a folder of its own), runs the node in a
// goroutine, and returns once the control services answer. The caller must
// call stop, which also removes the folders.
func startLocalNode(ctx context.Context, tempDir string, log *slog.Logger, progress func(string, ...any)) (_ *localNode, err error) {
	ln := &localNode{}
	defer func() {
		if err != nil {
			err = errors.Join(err, ln.stop())
		}
	}()
	if ln.base, err = os.MkdirTemp(tempDir, "unum-bench-"); err != nil {
		return nil, fmt.Errorf("temporary folder: %w", err)
	}
	// The KEK lives outside the data folder, as node.Init insists.
	if ln.kekDir, err = os.MkdirTemp(tempDir, "unum-bench-kek-"); err != nil {
		return nil, fmt.Errorf("temporary folder: %w", err)
	}
	kek := filepath.Join(ln.kekDir, "kek")
	ln.layout = node.Layout{Dir: filepath.Join(ln.base, svidNodeName)}
	if ln.fs, err = DescribeFilesystem(ln.base); err != nil {
		return nil, err
	}
	ports, err := node.FreeLoopbackPorts(1)
	if err != nil {
		return nil, err
	}
	ln.ports = ports[0]
	progress("starting a 1-node cluster in %s (%s)", ln.layout.Dir, ln.fs.Type)
	err = node.Init(ctx, node.InitOptions{
		TrustDomain: svidTrustDomain, DataDir: ln.layout.Dir, KEKFile: kek, Name: svidNodeName, Ports: ln.ports,
		EtcdHeartbeat: svidEtcdHeartbeat, EtcdElection: svidEtcdElection, Log: log,
	})
	if err != nil {
		return nil, fmt.Errorf("init node: %w", err)
	}

	nodeCtx, stopNode := context.WithCancel(ctx)
	ln.stopNode = stopNode
	ln.runErr = make(chan error, 1)
	go func() {
		ln.runErr <- node.Run(nodeCtx, node.Options{
			DataDir: ln.layout.Dir, KEKFile: kek,
			EtcdHeartbeat: svidEtcdHeartbeat, EtcdElection: svidEtcdElection, Log: log,
		})
	}()

	adminCfg, err := clientconfig.Load(ln.layout.Admin())
	if err != nil {
		return nil, err
	}
	// The address is given explicitly: a local run must reach its own node
	// whatever UNUM_ADDR says.
	if ln.admin, ln.closeAdmin, err = adminClient(adminCfg, []string{ln.ports.API}); err != nil {
		return nil, err
	}
	if err := waitControlReady(ctx, ln.admin, ln.runErr); err != nil {
		return nil, err
	}
	return ln, nil
}

// stop stops the node, waits for it, and removes the folders. It reports a
// node that failed or did not stop in time.
func (ln *localNode) stop() error {
	var err error
	if ln.closeAdmin != nil {
		ln.closeAdmin()
		ln.closeAdmin = nil
	}
	if ln.stopNode != nil {
		ln.stopNode()
		ln.stopNode = nil
		select {
		case rerr := <-ln.runErr:
			if rerr != nil {
				err = fmt.Errorf("node: %w", rerr)
			}
		case <-time.After(stopTimeout):
			// Leave the folders: the node may still be writing to them.
			return fmt.Errorf("node did not stop within %s", stopTimeout)
		}
	}
	for _, d := range []string{ln.base, ln.kekDir} {
		if d != "" {
			if rerr := os.RemoveAll(d); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}
	ln.base, ln.kekDir = "", ""
	return err
}

// adminClient dials addrs with the client config cfg.
func adminClient(cfg *clientconfig.Config, addrs []string) (*grpc.ClientConn, func(), error) {
	creds, err := cfg.Credentials()
	if err != nil {
		return nil, nil, err
	}
	cc, err := rpc.Dial(creds, addrs)
	if err != nil {
		return nil, nil, err
	}
	return cc, func() { cc.Close() }, nil
}

// waitControlReady polls Cluster.Status until etcd has quorum and the node
// is listed: from then on the control services answer. The agent need not
// be ready yet (its first SVID is awaited before the fetch measurement).
func waitControlReady(ctx context.Context, cc *grpc.ClientConn, runErr <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cl := unumv1.NewClusterClient(cc)
	last := "no answer yet"
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cl.Status(sctx, &unumv1.StatusRequest{})
		scancel()
		switch {
		case err != nil:
			last = err.Error()
		case !st.GetQuorum():
			last = "etcd has no quorum yet"
		default:
			for _, n := range st.GetNodes() {
				if n.GetName() == svidNodeName {
					return nil
				}
			}
			last = "node not listed yet"
		}
		select {
		case err := <-runErr:
			return fmt.Errorf("node exited before it was ready: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("node not ready within %s: %s", readyTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
