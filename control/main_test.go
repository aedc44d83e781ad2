package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/metrics"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
	"github.com/unumos/unum/storage/meta"
)

// harness is one control node shared by the package's tests: a real etcd,
// a real CA and the real services on mutual-TLS listeners on 127.0.0.1.
type harness struct {
	td         spiffeid.TrustDomain
	root       *x509.Certificate
	rootKey    *ecdsa.PrivateKey
	authority  *ca.Authority
	etcd       *meta.Server
	srv        *Server
	metrics    *metrics.Metrics
	apiAddr    string
	enrollAddr string
	// authoritySkew shifts the CA's clock (not the server's): a test that
	// sets it to -(ttl-3s) gets a certificate of the real minimum lifetime
	// that expires 3 s later in real time. Only non-parallel tests set it.
	authoritySkew *atomic.Int64
	// decider and decisions are the node's policy decider and the
	// decisions it made (served by Explain and ShadowReport).
	decider   *policy.Decider
	decisions *policy.Ring
	// events is node-1's audit log, which the server records in;
	// auditSigner is node-1's audit checkpoint key (registered by
	// Bootstrap).
	events      *audit.Log
	auditSigner *audit.Signer
	// audit is events, by the name the event tests use.
	audit *audit.Log
}

// events are the server's audit events (kind and action), read back from
// the harness node's real audit log, that match.
func (hh *harness) findEvents(t *testing.T, action string, match func(*audit.Event) bool) []*audit.Event {
	t.Helper()
	var out []*audit.Event
	require.NoError(t, hh.events.Scan(context.Background(), hh.events.Pruned(), func(_ uint64, raw []byte) bool {
		e, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		if e.Action == action && (match == nil || match(e)) {
			out = append(out, e)
		}
		return true
	}))
	return out
}

func newAuditSigner(name string) (*audit.Signer, error) {
	h, err := audit.NewSigningKeyset()
	if err != nil {
		return nil, err
	}
	return audit.NewSigner(name, h)
}

var h *harness

func TestMain(m *testing.M) {
	code, err := runMain(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "control tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runMain(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "control-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	hh, stop, err := newHarness(dir)
	if err != nil {
		return 0, err
	}
	defer stop()
	h = hh
	return m.Run(), nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func newHarness(dir string) (*harness, func(), error) {
	ctx := context.Background()
	now := time.Now()
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	rootKey, _ := ca.GenerateKey()
	// The CA was made an hour ago, so that its clock may be set back
	// (authoritySkew) and still be within its certificates' validity.
	caBorn := now.Add(-time.Hour)
	root, err := ca.NewRoot(td, rootKey, caBorn, 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	interKey, _ := ca.GenerateKey()
	inter, err := ca.NewIntermediate(td, "node-1", interKey.Public(), root, rootKey, caBorn, 12*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	skew := new(atomic.Int64)
	authority, err := ca.New(td, inter, interKey, nil, func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	if err != nil {
		return nil, nil, err
	}
	jwtKey, _ := ca.GenerateKey()
	jwtSigner, err := ca.NewJWTSigner(td, jwtKey, time.Now)
	if err != nil {
		return nil, nil, err
	}
	etcdCA, etcdCAKey, err := meta.NewCA(now, 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	memberKey, _ := ca.GenerateKey()
	memberCert, err := meta.IssueMemberCert(etcdCA, etcdCAKey, memberKey.Public(), []string{"127.0.0.1", "localhost"}, now, 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	tlsFiles, err := meta.WriteTLSFiles(filepath.Join(dir, "etcd-tls"), etcdCA, memberCert, memberKey)
	if err != nil {
		return nil, nil, err
	}
	clientAddr, _ := freeAddr()
	peerAddr, _ := freeAddr()
	hb, election := meta.DevTimings()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	etcd, err := meta.Start(ctx, meta.Config{
		Name: "node-1", DataDir: filepath.Join(dir, "etcd"),
		ClientURL: "https://" + clientAddr, PeerURL: "https://" + peerAddr,
		InitialCluster: "node-1=https://" + peerAddr, ClusterState: "new",
		TLS: tlsFiles, HeartbeatInterval: hb, ElectionTimeout: election, Logger: quiet,
	})
	if err != nil {
		return nil, nil, err
	}
	apiAddr, _ := freeAddr()
	enrollAddr, _ := freeAddr()
	nodeID := spiffeid.RequireFromPath(td, "/node/node-1")
	pub, _ := x509.MarshalPKIXPublicKey(jwtSigner.PublicKey())
	auditSigner, err := newAuditSigner("node-1")
	if err != nil {
		return nil, nil, err
	}
	witness, err := newAuditSigner("node-1")
	if err != nil {
		return nil, nil, err
	}
	if err := Bootstrap(ctx, etcd.Client(), ClusterInfo{TrustDomain: td.Name(), CreatedAt: now},
		[]*x509.Certificate{root},
		NodeRecord{Name: "node-1", SPIFFEID: nodeID.String(), Roles: []string{"compute", "control"}, APIAddress: apiAddr, EnrollmentAddress: enrollAddr},
		JWTKeyRecord{KeyID: jwtSigner.KeyID(), Node: "node-1", PublicKey: pub}, auditSigner.PublicKeyset(),
		// The test nodes report no kernel enforcement; TestEnforcementRequired
		// turns the requirement on.
		EnforcementSettings{}); err != nil {
		etcd.Close()
		return nil, nil, err
	}
	m := metrics.New(metrics.Sources{})
	events, err := audit.Open(audit.Config{Dir: filepath.Join(dir, "audit"), Node: "node-1", Signer: auditSigner, Logger: quiet})
	if err != nil {
		etcd.Close()
		return nil, nil, err
	}
	pv, ring := policy.NewView(0), policy.NewRing(10000)
	decider := policy.NewDecider(policy.DeciderConfig{Node: "node-1", View: pv, Log: auditDecisions{log: events, shadows: ring}})
	engines := policy.NewEngineCache(8)
	srv, err := New(Config{
		Policy: pv, Engines: engines, OnShadow: decider.SetShadow, CurrentShadow: decider.CurrentShadow,
		TrustDomain: td, NodeName: "node-1", Authority: authority, JWT: jwtSigner,
		Root: &Signer{Cert: root, Key: rootKey}, EtcdCA: &Signer{Cert: etcdCA, Key: etcdCAKey},
		Roots: []*x509.Certificate{root}, Etcd: etcd.Client(), Metrics: m, Log: quiet,
		Audit: events, Witness: witness, WitnessRound: 50 * time.Millisecond,
		// Short leases so the scheduler tests see nodes go down and their
		// tasks re-placed in seconds.
		NodeLease: 2 * time.Second, DownGrace: 2 * time.Second, SchedInterval: 200 * time.Millisecond,
	})
	if err != nil {
		events.Close()
		etcd.Close()
		return nil, nil, err
	}
	// Privileged calls wait for the revocation and policy feeds' first load.
	for deadline := time.Now().Add(30 * time.Second); srv.Revocations().Fresh() != nil || pv.Fresh(time.Now()) != nil; {
		if time.Now().After(deadline) {
			etcd.Close()
			return nil, nil, fmt.Errorf("revocation or policy view never loaded: %v, %v", srv.Revocations().Fresh(), pv.Fresh(time.Now()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	hh := &harness{events: events, audit: events, auditSigner: auditSigner, td: td, root: root, rootKey: rootKey, authority: authority, etcd: etcd, srv: srv, metrics: m, apiAddr: apiAddr, enrollAddr: enrollAddr, authoritySkew: skew, decider: decider, decisions: ring}
	serverCreds, err := hh.creds(nodeID)
	if err != nil {
		return nil, nil, err
	}
	api := rpc.NewServer(serverCreds, rpc.ServerConfig{Authorizer: &rpc.PolicyAuthorizer{Decider: decider, Roles: srv, Entries: srv}, Revocations: srv.Revocations(), Log: quiet})
	unumv1.RegisterPolicyServer(api, &PolicyService{Local: LocalDecisions{Node: "node-1", Decisions: events, Shadows: ring, Engines: engines, View: pv}, S: srv})
	unumv1.RegisterIdentityServer(api, srv)
	unumv1.RegisterClusterServer(api, srv)
	unumv1.RegisterUsersServer(api, srv)
	unumv1.RegisterAuditServer(api, srv.AuditWitness())
	unumv1.RegisterSchedulerServer(api, &SchedulerService{Server: srv})
	unumv1.RegisterEnforcementServer(api, EnforcementService{Server: srv})
	enroll := grpc.NewServer(grpc.Creds(credentials.NewTLS(rpc.EnrollmentServerTLS(serverCreds))))
	unumv1.RegisterEnrollmentServer(enroll, srv)
	apiLis, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return nil, nil, err
	}
	enrollLis, err := net.Listen("tcp", enrollAddr)
	if err != nil {
		return nil, nil, err
	}
	go api.Serve(apiLis)
	go enroll.Serve(enrollLis)
	stop := func() {
		api.Stop()
		enroll.Stop()
		srv.Close()
		etcd.Close()
		events.Close()
	}
	return hh, stop, nil
}

// auditDecisions records every decision in the audit log, as the node
// does, and keeps those a shadow would change.
type auditDecisions struct {
	log     *audit.Log
	shadows *policy.Ring
}

func (d auditDecisions) Record(ctx context.Context, r *policy.Record) error {
	if r.Shadow != nil && r.Shadow.Changed() {
		_ = d.shadows.Record(ctx, r)
	}
	e := DecisionEvent(r)
	return d.log.Record(ctx, &e)
}

// creds issues an SVID for id from the harness CA (as init and joins do).
func (hh *harness) creds(id spiffeid.ID) (*rpc.Credentials, error) {
	key, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	chain, err := hh.authority.SignX509SVIDForKey(key.Public(), id, time.Hour)
	if err != nil {
		return nil, err
	}
	return rpc.NewCredentials(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, []*x509.Certificate{hh.root})
}

// conn dials the API as principal path (e.g. "/user/admin").
func conn(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	creds, err := h.creds(spiffeid.RequireFromPath(h.td, path))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := rpc.Dial(creds, []string{h.apiAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var _ = identity.KindNode
