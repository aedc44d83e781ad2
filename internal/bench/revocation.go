package bench

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/node"
)

const (
	revocationComponent = "revocation"
	// ResultRevocationPropagation is the name of the revocation result.
	ResultRevocationPropagation = "revocation_propagation"
	// revocationCount is how many revocations one run makes.
	revocationCount = 100
	// revocationTarget is issue 3's bound: a revoked identity's existing
	// certificates stop working on every node within this.
	revocationTarget = 2 * time.Second
	revocationNodes  = 3
)

// RunRevocation measures revocation propagation: for each of
// revocationCount registration entries, a workload SVID fetched from a real
// agent is shown to every node's API over an open connection; the entry is
// deleted (which revokes its SPIFFE ID); the time from the start of the
// DeleteEntry call until every node refuses the SVID on that connection is
// one sample. Locally it starts a 3-node cluster (three control nodes, as
// `unum dev` runs); with Cluster it measures the running cluster.
func RunRevocation(ctx context.Context, o Options) (rep Report, err error) {
	progress := o.progressFunc(revocationComponent)
	rep = Report{Component: revocationComponent, Mode: "local", Settings: baseSettings(1)}
	var admin *grpc.ClientConn
	var socket, nodeName string
	var td spiffeid.TrustDomain
	if o.Cluster != nil {
		rep.Mode = "cluster"
		t := o.Cluster
		if t.Socket == "" || t.Node == "" {
			return rep, errors.New("measuring a cluster needs the socket of a local agent and the name of its node")
		}
		socketPath := strings.TrimPrefix(t.Socket, "unix://")
		socket, nodeName = "unix://"+socketPath, t.Node
		if rep.Filesystem, err = DescribeFilesystem(filepath.Dir(socketPath)); err != nil {
			return rep, err
		}
		cfg, err := clientconfig.Load(t.ConfigPath)
		if err != nil {
			return rep, err
		}
		var closeAdmin func()
		if admin, closeAdmin, err = adminClient(cfg, cfg.Addresses); err != nil {
			return rep, err
		}
		defer closeAdmin()
		if td, err = spiffeid.TrustDomainFromString(cfg.TrustDomain); err != nil {
			return rep, err
		}
	} else {
		lc, err := startLocalCluster(ctx, o, revocationNodes, progress)
		if err != nil {
			return rep, err
		}
		defer func() {
			progress("stopping the cluster")
			if serr := lc.stop(); serr != nil && err == nil {
				err = serr
			}
		}()
		rep.Filesystem = lc.first.fs
		admin, socket, nodeName = lc.first.admin, "unix://"+lc.first.layout.Socket(), svidNodeName
		td = spiffeid.RequireTrustDomainFromString(svidTrustDomain)
		rep.Settings.Extra["etcd_heartbeat"] = svidEtcdHeartbeat.String()
		rep.Settings.Extra["etcd_election"] = svidEtcdElection.String()
	}
	rep.Settings.Extra["trust_domain"] = td.Name()
	rep.Settings.Extra["revocations"] = fmt.Sprint(revocationCount)
	res, err := measureRevocations(ctx, admin, socket, nodeName, td, progress)
	if err != nil {
		return rep, err
	}
	rep.Results = []Result{res}
	rep.Settings.LoadAverageEnd = loadAverage()
	return rep, nil
}

func measureRevocations(ctx context.Context, admin *grpc.ClientConn, socket, nodeName string, td spiffeid.TrustDomain, progress func(string, ...any)) (Result, error) {
	idc := unumv1.NewIdentityClient(admin)
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return Result{}, err
	}
	entries := map[string]string{} // SPIFFE ID -> entry ID
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*callTimeout)
		defer cancel()
		for _, e := range entries {
			_, _ = idc.DeleteEntry(dctx, &unumv1.DeleteEntryRequest{Id: e})
		}
	}()
	var ids []string
	for i := range revocationCount {
		id, err := spiffeid.FromSegments(td, "ns", "bench", "job", fmt.Sprintf("rev-%s-%03d", hex.EncodeToString(suffix[:]), i))
		if err != nil {
			return Result{}, err
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		e, err := idc.CreateEntry(cctx, &unumv1.CreateEntryRequest{SpiffeId: id.String(), Node: nodeName, Selectors: []string{uidSelector()}})
		cancel()
		if err != nil {
			return Result{}, fmt.Errorf("register entry: %w", err)
		}
		entries[id.String()] = e.GetId()
		ids = append(ids, id.String())
	}
	progress("registered %d entries on %s; waiting for their SVIDs", revocationCount, nodeName)
	svids, err := waitSVIDs(ctx, socket, ids)
	if err != nil {
		return Result{}, err
	}
	nodes, err := unumv1.NewClusterClient(admin).ListNodes(ctx, &unumv1.ListNodesRequest{})
	if err != nil {
		return Result{}, err
	}
	var addrs []string
	for _, n := range nodes.GetNodes() {
		addrs = append(addrs, n.GetApiAddress())
	}
	bundle, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(socket))
	if err != nil {
		return Result{}, err
	}
	roots := bundle.Bundles()[0].X509Authorities()
	progress("revoking %d identities one by one; each checked on %d nodes over open connections", revocationCount, len(addrs))

	lat := make([]time.Duration, 0, revocationCount)
	start := time.Now()
	for i, id := range ids {
		d, err := revokeOne(ctx, idc, entries[id], svids[id], roots, addrs)
		if err != nil {
			return Result{}, fmt.Errorf("revocation %d (%s): %w", i, id, err)
		}
		delete(entries, id)
		lat = append(lat, d)
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	res := Result{
		Name:        ResultRevocationPropagation,
		Description: fmt.Sprintf("DeleteEntry call start -> every one of %d nodes refuses the revoked SVID on an open connection", len(addrs)),
		Clients:     1, Seconds: elapsed.Seconds(), Ops: int64(len(lat)),
		OpsPerSec: float64(len(lat)) / elapsed.Seconds(),
		P50us:     micros(percentile(lat, 0.50)), P90us: micros(percentile(lat, 0.90)),
		P99us: micros(percentile(lat, 0.99)), MaxUs: micros(percentile(lat, 1)),
	}
	res.setTarget(fmt.Sprintf("p99 <= %s", revocationTarget), percentile(lat, 0.99) <= revocationTarget)
	progress("p50 %s, p99 %s, max %s", percentile(lat, 0.50), percentile(lat, 0.99), lat[len(lat)-1])
	return res, nil
}

// waitSVIDs fetches from the agent until it serves every ID in ids.
func waitSVIDs(ctx context.Context, socket string, ids []string) (map[string]*x509svid.SVID, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		got, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(socket))
		if err == nil {
			m := map[string]*x509svid.SVID{}
			for _, s := range got {
				m[s.ID.String()] = s
			}
			missing := 0
			for _, id := range ids {
				if m[id] == nil {
					missing++
				}
			}
			if missing == 0 {
				return m, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent did not serve all %d SVIDs: %v", len(ids), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// revokeOne opens a connection to every node with svid (checking each
// accepts it), deletes the entry, and returns how long until the last node
// refused the SVID as revoked.
func revokeOne(ctx context.Context, idc unumv1.IdentityClient, entryID string, svid *x509svid.SVID, roots []*x509.Certificate, addrs []string) (time.Duration, error) {
	creds, err := rpc.NewCredentials(svid, roots)
	if err != nil {
		return 0, err
	}
	tlsCfg := tlsconfig.MTLSClientConfig(creds, creds, tlsconfig.AuthorizeMemberOf(creds.TrustDomain()))
	conns := make([]unumv1.IdentityClient, 0, len(addrs))
	for _, a := range addrs {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
		if err != nil {
			return 0, err
		}
		defer cc.Close()
		c := unumv1.NewIdentityClient(cc)
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err = c.WhoAmI(cctx, &unumv1.WhoAmIRequest{})
		cancel()
		if err != nil {
			return 0, fmt.Errorf("node %s does not accept the SVID before its revocation: %w", a, err)
		}
		conns = append(conns, c)
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	_, err = idc.DeleteEntry(cctx, &unumv1.DeleteEntryRequest{Id: entryID})
	cancel()
	if err != nil {
		return 0, fmt.Errorf("delete entry: %w", err)
	}
	var mu sync.Mutex
	var worst time.Duration
	var firstErr error
	var wg sync.WaitGroup
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, err := c.WhoAmI(pctx, &unumv1.WhoAmIRequest{})
				if status.Code(err) == codes.Unauthenticated {
					d := time.Since(start)
					mu.Lock()
					worst = max(worst, d)
					mu.Unlock()
					return
				}
				if pctx.Err() != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("node %s still accepts the revoked SVID after 30s", addrs[i])
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return worst, firstErr
}

// localCluster is startLocalNode's node plus nodes that joined it as
// control nodes, all in this process.
type localCluster struct {
	first  *localNode
	others []*joinedNode
}

type joinedNode struct {
	dir, kekDir string
	stop        context.CancelFunc
	runErr      chan error
}

func startLocalCluster(ctx context.Context, o Options, n int, progress func(string, ...any)) (_ *localCluster, err error) {
	first, err := startLocalNode(ctx, o.TempDir, o.logger(), progress)
	if err != nil {
		return nil, err
	}
	lc := &localCluster{first: first}
	defer func() {
		if err != nil {
			err = errors.Join(err, lc.stop())
		}
	}()
	for i := 2; i <= n; i++ {
		if err := lc.join(ctx, o, fmt.Sprintf("node-%d", i), []string{"control", "compute"}, progress); err != nil {
			return nil, err
		}
	}
	return lc, nil
}

// join starts a node called name with roles in this process, joined to the
// first node with a join token, and waits until it is ready. A control
// node gets a KEK of its own; a compute node has none (it holds no sealed
// keys) and follows the control plane through its agent's streams.
func (lc *localCluster) join(ctx context.Context, o Options, name string, roles []string, progress func(string, ...any)) error {
	first := lc.first
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	tok, err := unumv1.NewClusterClient(first.admin).CreateJoinToken(cctx, &unumv1.CreateJoinTokenRequest{Name: name, Roles: roles})
	cancel()
	if err != nil {
		return fmt.Errorf("join token for %s: %w", name, err)
	}
	ports, err := node.FreeLoopbackPorts(1)
	if err != nil {
		return err
	}
	jn := &joinedNode{dir: filepath.Join(first.base, name), runErr: make(chan error, 1)}
	opts := node.Options{
		DataDir: jn.dir, Ports: ports[0], JoinAddr: first.ports.Enroll, Token: tok.GetToken(),
		EtcdHeartbeat: svidEtcdHeartbeat, EtcdElection: svidEtcdElection, Log: o.logger(),
	}
	if slices.Contains(roles, "control") {
		if jn.kekDir, err = os.MkdirTemp(o.TempDir, "unum-bench-kek-"); err != nil {
			return err
		}
		opts.KEKFile = filepath.Join(jn.kekDir, "kek")
	}
	var nctx context.Context
	nctx, jn.stop = context.WithCancel(ctx)
	lc.others = append(lc.others, jn)
	progress("joining %s as a %s node", name, strings.Join(roles, "+"))
	go func() { jn.runErr <- node.Run(nctx, opts) }()
	return waitNodeReady(ctx, first.admin, name, jn.runErr)
}

func (lc *localCluster) stop() error {
	var err error
	for _, jn := range lc.others {
		jn.stop()
		select {
		case rerr := <-jn.runErr:
			if rerr != nil {
				err = errors.Join(err, rerr)
			}
		case <-time.After(stopTimeout):
			err = errors.Join(err, fmt.Errorf("%s did not stop within %s", jn.dir, stopTimeout))
		}
		if jn.kekDir != "" {
			os.RemoveAll(jn.kekDir)
		}
	}
	return errors.Join(err, lc.first.stop())
}

// waitNodeReady polls ListNodes until name is ready (its agent synced).
func waitNodeReady(ctx context.Context, cc *grpc.ClientConn, name string, runErr <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := unumv1.NewClusterClient(cc).ListNodes(sctx, &unumv1.ListNodesRequest{})
		scancel()
		if err == nil {
			for _, n := range resp.GetNodes() {
				if n.GetName() == name && n.GetReady() {
					return nil
				}
			}
		}
		select {
		case err := <-runErr:
			return fmt.Errorf("%s exited before it was ready: %v", name, err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s", name, readyTimeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
