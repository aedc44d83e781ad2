package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/control"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
)

// Short lifetimes so that a whole root rotation, with SVID rollover and the
// old root's retirement, takes seconds.
const (
	rotSVIDTTL       = 3 * time.Second
	rotNodeSVIDTTL   = 5 * time.Second
	rotLeafRetention = 6 * time.Second
)

// rotCluster is a cluster of its own for CA rotation: node-1 (control +
// compute, made by Init), node-c2 (control, joined) and node-w (compute,
// joined, runs the workload).
type rotCluster struct {
	*cluster
	admin *rpc.Credentials
	addrs []string
}

func startRotCluster(tb testing.TB) *rotCluster {
	tb.Helper()
	base, err := os.MkdirTemp("", "unca")
	require.NoError(tb, err)
	c := &cluster{base: base, kek: filepath.Join(base, "kek"), nodes: map[string]*runningNode{}}
	tb.Cleanup(func() {
		c.stopAll()
		os.RemoveAll(base)
	})
	ctx := context.Background()
	p1, err := freePorts()
	require.NoError(tb, err)
	dir1 := filepath.Join(base, "n1")
	require.NoError(tb, Init(ctx, InitOptions{TrustDomain: "unum.test", DataDir: dir1, KEKFile: c.kek, Name: "node-1", Ports: p1,
		EtcdHeartbeat: 250 * time.Millisecond, EtcdElection: 2500 * time.Millisecond, Log: quietLog()}))
	c.admin = Layout{Dir: dir1}.Admin()
	c.enroll = p1.Enroll
	short := func(o Options) Options {
		o.SVIDTTL, o.NodeSVIDTTL, o.LeafRetention = rotSVIDTTL, rotNodeSVIDTTL, rotLeafRetention
		return o
	}
	require.NoError(tb, c.start("node-1", short(Options{DataDir: dir1, KEKFile: c.kek})))
	require.NoError(tb, c.waitReady(ctx, "node-1"))
	for _, n := range []struct{ name, role string }{{"node-c2", "control"}, {"node-w", "compute"}} {
		tok, err := c.joinToken(ctx, n.name, n.role)
		require.NoError(tb, err)
		p, err := freePorts()
		require.NoError(tb, err)
		o := Options{DataDir: filepath.Join(base, n.name), Ports: p, JoinAddr: p1.Enroll, Token: tok}
		if n.role == "control" {
			o.KEKFile = c.kek
		}
		require.NoError(tb, c.start(n.name, short(o)))
		require.NoError(tb, c.waitReady(ctx, n.name))
	}
	cfg, err := clientconfig.Load(c.admin)
	require.NoError(tb, err)
	creds, err := cfg.Credentials()
	require.NoError(tb, err)
	return &rotCluster{cluster: c, admin: creds, addrs: cfg.Addresses}
}

// caStatus asks for the CA status on a fresh connection and, like the CLI,
// refreshes the client's bundle from the answer.
func (rc *rotCluster) caStatus(ctx context.Context) (*unumv1.CAStatusResponse, error) {
	cc, err := rpc.Dial(rc.admin, rc.addrs)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := unumv1.NewCAClient(cc).Status(sctx, &unumv1.CAStatusRequest{})
	if err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for _, r := range st.GetRoots() {
		if c, err := x509.ParseCertificate(r.GetCertificateDer()); err == nil {
			roots = append(roots, c)
		}
	}
	rc.admin.SetRoots(roots)
	return st, nil
}

// renewAdmin gives the admin a certificate from node-1's current
// intermediate, keeping the bundle it has learnt.
func (rc *rotCluster) renewAdmin(tb testing.TB) {
	cfg, err := IssueAdminConfig(rc.nodes["node-1"].dir, rc.kek, rc.addrs)
	require.NoError(tb, err)
	svid, err := cfg.SVID()
	require.NoError(tb, err)
	require.NoError(tb, rc.admin.SetSVID(svid))
}

// rotationTimes is what a root rotation took.
type rotationTimes struct {
	switched, retired time.Duration
}

// rotateRoot runs `ca rotate --root` to its end, following the status.
func (rc *rotCluster) rotateRoot(ctx context.Context, tb testing.TB) rotationTimes {
	cc, err := rpc.Dial(rc.admin, rc.addrs)
	require.NoError(tb, err)
	defer cc.Close()
	start := time.Now()
	resp, err := unumv1.NewCAClient(cc).Rotate(ctx, &unumv1.CARotateRequest{Root: true})
	require.NoError(tb, err)
	var times rotationTimes
	deadline := time.Now().Add(90 * time.Second)
	last := ""
	for {
		st, err := rc.caStatus(ctx)
		if err == nil {
			require.Equal(tb, resp.GetRotationId(), st.GetRotationId())
			if st.GetRotationPhase() != last {
				tb.Logf("%6.2fs rotation %s phase %s waiting for %v", time.Since(start).Seconds(), st.GetRotationId(), st.GetRotationPhase(), st.GetWaitingFor())
				last = st.GetRotationPhase()
			}
			if times.switched == 0 && (last == "retiring" || last == "done") {
				times.switched = time.Since(start)
				// The admin's certificate chains to the old root, which
				// is about to go: renew it, as a user would.
				rc.renewAdmin(tb)
			}
			if last == "done" {
				times.retired = time.Since(start)
				return times
			}
		}
		require.True(tb, time.Now().Before(deadline), "rotation not done: phase %s, err %v", last, err)
		time.Sleep(100 * time.Millisecond)
	}
}

// handshaker is a workload doing mutual-TLS handshakes with itself, both
// sides from its Workload API X509Source, in a loop.
type handshaker struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []error
}

func (h *handshaker) fail(err error) {
	h.failed.Add(1)
	h.mu.Lock()
	if len(h.errs) < 5 {
		h.errs = append(h.errs, err)
	}
	h.mu.Unlock()
}

func (h *handshaker) run(ctx context.Context, src *workloadapi.X509Source) error {
	serverCfg := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeAny())
	serverCfg.SessionTicketsDisabled = true
	clientCfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeAny())
	lis, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		return err
	}
	defer lis.Close()
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if err := conn.(*tls.Conn).Handshake(); err != nil {
					if ctx.Err() == nil {
						h.fail(fmt.Errorf("server side: %w", err))
					}
					return
				}
				io.Copy(conn, conn)
			}()
		}
	}()
	for ctx.Err() == nil {
		d := tls.Dialer{Config: clientCfg}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := d.DialContext(dctx, "tcp", lis.Addr().String())
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				h.fail(fmt.Errorf("client side: %w", err))
			}
			continue
		}
		_, err = conn.Write([]byte{1})
		if err == nil {
			_, err = io.ReadFull(conn, make([]byte, 1))
		}
		conn.Close()
		if err != nil && ctx.Err() == nil {
			h.fail(fmt.Errorf("echo: %w", err))
			continue
		}
		h.ok.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func chainsTo(chain []*x509.Certificate, root *x509.Certificate) error {
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	_, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, []*x509.Certificate{root}))
	return err
}

// TestCARotationUnderWorkloadStream: a full root rotation while a workload
// following the Workload API stream does mutual-TLS handshakes with its own
// SVID in a loop: not one handshake fails, every SVID rolls over to the new
// root, the old root leaves every bundle, and a leaf made with a stolen old
// intermediate is refused afterwards.
func TestCARotationUnderWorkloadStream(t *testing.T) {
	rc := startRotCluster(t)
	ctx := ctxT(t, 3*time.Minute)

	// The workload.
	id := "spiffe://unum.test/ns/rot/job/echo"
	cc, err := rpc.Dial(rc.admin, rc.addrs)
	require.NoError(t, err)
	_, err = unumv1.NewIdentityClient(cc).CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: id, Node: "node-w", Selectors: []string{uidSelector()}})
	require.NoError(t, err)
	cc.Close()
	socket := "unix://" + Layout{Dir: rc.nodes["node-w"].dir}.Socket()
	srcCtx, srcCancel := context.WithTimeout(ctx, 30*time.Second)
	var src *workloadapi.X509Source
	for {
		src, err = workloadapi.NewX509Source(srcCtx, workloadapi.WithClientOptions(workloadapi.WithAddr(socket)))
		if err == nil || srcCtx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	srcCancel()
	require.NoError(t, err)
	defer src.Close()

	// What a thief of node-1's disk and KEK holds before the rotation.
	l1 := Layout{Dir: rc.nodes["node-1"].dir}
	kek, err := seal.LoadKEK(rc.kek)
	require.NoError(t, err)
	oldInter, err := readCerts(l1.IntermediateCert())
	require.NoError(t, err)
	oldInterKey, err := seal.ReadSealedKey(kek, l1.IntermediateKey(), labelIntermediate)
	require.NoError(t, err)
	oldRoot, err := readCerts(l1.RootCert())
	require.NoError(t, err)

	hs := &handshaker{}
	hctx, hcancel := context.WithCancel(ctx)
	hdone := make(chan error, 1)
	go func() { hdone <- hs.run(hctx, src) }()
	defer hcancel()
	require.Eventually(t, func() bool { return hs.ok.Load() > 5 }, 20*time.Second, 50*time.Millisecond, "the workload's handshakes never worked: %v", hs.errs)

	times := rc.rotateRoot(ctx, t)
	t.Logf("rotation: all control nodes switched after %s, old root retired after %s", times.switched.Round(10*time.Millisecond), times.retired.Round(10*time.Millisecond))

	// The rotation's steps are in the audit logs: started and driven by
	// the root holder, which signed node-c2's intermediate; each control
	// node switched.
	caSteps := func(node string) map[string]int {
		steps := map[string]int{}
		for _, e := range events(t, rc.nodes[node].node.Load().audit, 0) {
			if e.Action == audit.ActionCARotate {
				var d control.CADetails
				require.NoError(t, json.Unmarshal(e.Details, &d))
				steps[d.Step]++
			}
		}
		return steps
	}
	s1, s2 := caSteps("node-1"), caSteps("node-c2")
	require.Equal(t, 1, s1["start"], "%v", s1)
	require.Positive(t, s1["advance"], "%v", s1)
	require.Equal(t, 1, s1["sign-intermediate"], "%v", s1)
	require.Equal(t, 1, s1["switch-intermediate"], "%v", s1)
	require.Equal(t, 1, s2["switch-intermediate"], "%v", s2)

	st, err := rc.caStatus(ctx)
	require.NoError(t, err)
	require.Len(t, st.GetRoots(), 1, "the old root must be gone from the bundle")
	newRoot, err := x509.ParseCertificate(st.GetRoots()[0].GetCertificateDer())
	require.NoError(t, err)
	require.NotEqual(t, ca.Fingerprint(oldRoot[0]), ca.Fingerprint(newRoot))
	require.True(t, st.GetRoots()[0].GetKeyOnline())
	require.Len(t, st.GetIntermediates(), 2)
	for _, in := range st.GetIntermediates() {
		require.Equal(t, ca.Fingerprint(newRoot), in.GetIssuerFingerprint(), in.GetNode())
	}

	// The workload's bundle drops the old root, and its SVID chains to the
	// new one; handshakes go on throughout.
	require.Eventually(t, func() bool {
		b, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("unum.test"))
		if err != nil || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(newRoot) {
			return false
		}
		svid, err := src.GetX509SVID()
		return err == nil && chainsTo(svid.Certificates, newRoot) == nil
	}, 20*time.Second, 100*time.Millisecond, "workload still trusts the old root or holds an SVID under it")
	okAt := hs.ok.Load()
	require.Eventually(t, func() bool { return hs.ok.Load() > okAt+20 }, 20*time.Second, 50*time.Millisecond)
	hcancel()
	require.NoError(t, <-hdone)
	t.Logf("handshakes: %d ok, %d failed", hs.ok.Load(), hs.failed.Load())
	require.Zero(t, hs.failed.Load(), "failed handshakes during the rotation: %v", hs.errs)

	// Every node's SVID chains to the new root.
	for name, rn := range rc.nodes {
		require.Eventually(t, func() bool {
			chain, err := readCerts(Layout{Dir: rn.dir}.NodeCert())
			return err == nil && chainsTo(chain, newRoot) == nil
		}, 20*time.Second, 100*time.Millisecond, "%s's node SVID does not chain to the new root", name)
	}

	// A stolen old intermediate is worth nothing now: a node SVID it signs
	// is refused by the control plane.
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	stolen, err := ca.New(td, oldInter[0], oldInterKey, nil, time.Now)
	require.NoError(t, err)
	forgedKey, err := ca.GenerateKey()
	require.NoError(t, err)
	forged, err := stolen.SignX509SVIDForKey(forgedKey.Public(), spiffeid.RequireFromPath(td, "/node/node-w"), time.Hour)
	require.NoError(t, err)
	thief, err := rpc.NewCredentials(&x509svid.SVID{ID: spiffeid.RequireFromPath(td, "/node/node-w"), Certificates: forged, PrivateKey: forgedKey}, []*x509.Certificate{newRoot})
	require.NoError(t, err)
	tcc, err := rpc.Dial(thief, rc.addrs)
	require.NoError(t, err)
	defer tcc.Close()
	_, err = unumv1.NewIdentityClient(tcc).WhoAmI(ctxT(t, 10*time.Second), &unumv1.WhoAmIRequest{})
	require.Error(t, err, "a leaf from the old intermediate was accepted after the rotation")
}

// TestCARootOffline: after export-root the root key is gone from the
// cluster; control joins and rotations are refused and say how to bring it
// back; a key that is not a current root is refused on import; the right
// key restores it. It runs on the package's shared cluster and leaves it as
// it found it.
func TestCARootOffline(t *testing.T) {
	cc, err := cl.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	cac := unumv1.NewCAClient(cc)
	ctx := ctxT(t, 2*time.Minute)
	l1 := Layout{Dir: cl.nodes["node-1"].dir}

	exp, err := cac.ExportRoot(ctx, &unumv1.ExportRootRequest{})
	require.NoError(t, err)
	// Nothing is deleted before the confirmation.
	_, err = os.Stat(l1.RootKey())
	require.NoError(t, err)
	_, err = cac.ConfirmExportRoot(ctx, &unumv1.ConfirmExportRootRequest{Fingerprint: "sha256:00"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = cac.ConfirmExportRoot(ctx, &unumv1.ConfirmExportRootRequest{Fingerprint: exp.GetFingerprint()})
	require.NoError(t, err)
	restored := false
	defer func() {
		if !restored {
			_, _ = cac.ImportRoot(context.Background(), &unumv1.ImportRootRequest{RootKeyPem: exp.GetRootKeyPem()})
		}
	}()
	_, err = os.Stat(l1.RootKey())
	require.True(t, errors.Is(err, os.ErrNotExist), "the sealed root key is still on disk")
	require.Eventually(t, func() bool {
		st, err := cac.Status(ctx, &unumv1.CAStatusRequest{})
		return err == nil && len(st.GetRoots()) == 1 && !st.GetRoots()[0].GetKeyOnline()
	}, 10*time.Second, 100*time.Millisecond, "ca status does not show the root key offline")

	// A control join is refused, says why, and does not burn the token.
	tok, err := cl.joinToken(ctx, "ctl-offline", "control")
	require.NoError(t, err)
	p, err := freePorts()
	require.NoError(t, err)
	err = Run(ctxT(t, 30*time.Second), Options{DataDir: t.TempDir(), KEKFile: filepath.Join(t.TempDir(), "kek"), Ports: p, JoinAddr: cl.enroll, Token: tok, Log: quietLog()})
	require.ErrorIs(t, err, ErrJoinRefused)
	require.ErrorContains(t, err, "root CA key is offline")
	require.ErrorContains(t, err, "unum ca import-root")
	// So is a rotation.
	_, err = cac.Rotate(ctx, &unumv1.CARotateRequest{})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.ErrorContains(t, err, "import-root")

	// Import refuses a key that is no root of the bundle, and garbage.
	otherKey, err := ca.GenerateKey()
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(otherKey)
	require.NoError(t, err)
	_, err = cac.ImportRoot(ctx, &unumv1.ImportRootRequest{RootKeyPem: pemBlock("PRIVATE KEY", der)})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.ErrorContains(t, err, "does not belong to any root")
	_, err = cac.ImportRoot(ctx, &unumv1.ImportRootRequest{RootKeyPem: []byte("not a key")})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = os.Stat(l1.RootKey())
	require.True(t, errors.Is(err, os.ErrNotExist), "a refused import wrote a key")

	// The right key comes back, sealed.
	imp, err := cac.ImportRoot(ctx, &unumv1.ImportRootRequest{RootKeyPem: exp.GetRootKeyPem()})
	require.NoError(t, err)
	restored = true
	// Each step is in the node's audit log; the key never is.
	var steps []string
	log1 := cl.nodes["node-1"].node.Load().audit
	for _, e := range events(t, log1, 0) {
		if e.Action == audit.ActionCARoot {
			var d control.CADetails
			require.NoError(t, json.Unmarshal(e.Details, &d))
			require.Equal(t, exp.GetFingerprint(), d.Fingerprint)
			steps = append(steps, d.Step)
		}
	}
	require.Equal(t, []string{"export", "confirm-export", "import"}, steps)
	requireNotInLog(t, log1, exp.GetRootKeyPem())
	require.Equal(t, exp.GetFingerprint(), imp.GetFingerprint())
	kek, err := seal.LoadKEK(cl.kek)
	require.NoError(t, err)
	_, err = seal.ReadSealedKey(kek, l1.RootKey(), labelRoot)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := cac.Status(ctx, &unumv1.CAStatusRequest{})
		return err == nil && st.GetRoots()[0].GetKeyOnline()
	}, 10*time.Second, 100*time.Millisecond)
}

// TestSignIntermediateRefusesNonControl: a compute node (valid node SVID)
// asking the root holder for an intermediate, or starting a rotation, is
// refused; so is a control node outside a rotation.
func TestSignIntermediateRefusesNonControl(t *testing.T) {
	creds, err := Layout{Dir: cl.nodes["node-2"].dir}.Credentials()
	require.NoError(t, err)
	cfg, err := clientconfig.Load(cl.admin)
	require.NoError(t, err)
	cc, err := rpc.Dial(creds, cfg.Addresses)
	require.NoError(t, err)
	defer cc.Close()
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	csr, err := ca.CreateCSR(key, spiffeid.RequireFromString("spiffe://unum.test/node/node-2"))
	require.NoError(t, err)
	ctx := ctxT(t, 30*time.Second)
	_, err = unumv1.NewCAClient(cc).SignIntermediate(ctx, &unumv1.SignIntermediateRequest{Csr: csr})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.ErrorContains(t, err, "not a control node")
	_, err = unumv1.NewCAClient(cc).Rotate(ctx, &unumv1.CARotateRequest{Root: true})
	require.Equal(t, codes.PermissionDenied, status.Code(err))

	// node-1 is a control node, but no rotation waits for intermediates.
	l1 := Layout{Dir: cl.nodes["node-1"].dir}
	c1, err := l1.Credentials()
	require.NoError(t, err)
	cc1, err := rpc.Dial(c1, cfg.Addresses)
	require.NoError(t, err)
	defer cc1.Close()
	csr1, err := ca.CreateCSR(key, spiffeid.RequireFromString("spiffe://unum.test/node/node-1"))
	require.NoError(t, err)
	_, err = unumv1.NewCAClient(cc1).SignIntermediate(ctx, &unumv1.SignIntermediateRequest{RotationId: "rot-forged", Csr: csr1})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// BenchmarkCARotation measures a full root rotation on a three-node cluster
// (two control nodes, one compute node) with the test lifetimes: from the
// Rotate call to every control node switched, and to the old root retired
// (which waits rotLeafRetention after the last switch by design).
//
//	go test -run '^$' -bench BenchmarkCARotation -benchtime 3x ./node/
func BenchmarkCARotation(b *testing.B) {
	rc := startRotCluster(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var switched, retired time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		times := rc.rotateRoot(ctx, b)
		switched += times.switched
		retired += times.retired
	}
	b.ReportMetric(switched.Seconds()/float64(b.N), "s-to-switched")
	b.ReportMetric(retired.Seconds()/float64(b.N), "s-to-retired")
}
