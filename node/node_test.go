package node

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func register(t *testing.T, id, nodeName string, sels ...string) *unumv1.Entry {
	t.Helper()
	cc, err := cl.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	e, err := unumv1.NewIdentityClient(cc).CreateEntry(ctxT(t, 10*time.Second), &unumv1.CreateEntryRequest{SpiffeId: id, Node: nodeName, Selectors: sels})
	require.NoError(t, err)
	// Tests share the cluster and most register for this process's uid:
	// leave no entry behind for the next test's agent to serve first.
	t.Cleanup(func() {
		cc, err := cl.adminConn()
		if err != nil {
			return
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = unumv1.NewIdentityClient(cc).DeleteEntry(ctx, &unumv1.DeleteEntryRequest{Id: e.GetId()})
	})
	return e
}

func socketOf(name string) string {
	return "unix://" + Layout{Dir: cl.nodes[name].dir}.Socket()
}

// fetchX509 retries until the entry has reached the node's agent (the
// agent answers PermissionDenied until then).
func fetchX509(t *testing.T, socket string) *x509svid.SVID {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	for {
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(socket))
		if err == nil {
			return svid
		}
		select {
		case <-ctx.Done():
			t.Fatalf("fetch x509-svid from %s: %v", socket, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func uidSelector() string { return "unix:uid:" + strconv.Itoa(os.Getuid()) }

// TestWorkloadAPIEndToEnd: an unmodified go-spiffe client fetches X.509 and
// JWT SVIDs from a real node and validates them against the served bundles.
func TestWorkloadAPIEndToEnd(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	id := "spiffe://unum.test/ns/e2e/job/client"
	register(t, id, "node-2", uidSelector(), "unix:path:"+exe)
	socket := socketOf("node-2")

	svid := fetchX509(t, socket)
	require.Equal(t, id, svid.ID.String())
	bundles, err := workloadapi.FetchX509Bundles(ctxT(t, 10*time.Second), workloadapi.WithAddr(socket))
	require.NoError(t, err)
	gotID, _, err := x509svid.Verify(svid.Certificates, bundles)
	require.NoError(t, err)
	require.Equal(t, id, gotID.String())
	require.WithinDuration(t, time.Now().Add(testSVIDTTL), svid.Certificates[0].NotAfter, testSVIDTTL)
	require.Empty(t, svid.Certificates[0].Subject.CommonName)

	jwt, err := workloadapi.FetchJWTSVID(ctxT(t, 10*time.Second), jwtsvid.Params{Audience: "db"}, workloadapi.WithAddr(socket))
	require.NoError(t, err)
	require.Equal(t, id, jwt.ID.String())
	jwtBundles, err := workloadapi.FetchJWTBundles(ctxT(t, 10*time.Second), workloadapi.WithAddr(socket))
	require.NoError(t, err)
	parsed, err := jwtsvid.ParseAndValidate(jwt.Marshal(), jwtBundles, []string{"db"})
	require.NoError(t, err)
	require.Equal(t, id, parsed.ID.String())
	_, err = jwtsvid.ParseAndValidate(jwt.Marshal(), jwtBundles, []string{"other"})
	require.Error(t, err, "a JWT-SVID for another audience must not validate")
	validated, err := workloadapi.ValidateJWTSVID(ctxT(t, 10*time.Second), jwt.Marshal(), "db", workloadapi.WithAddr(socket))
	require.NoError(t, err)
	require.Equal(t, id, validated.ID.String())
}

// TestNoEntryNoSVID: the agent serves a process only the identities whose
// selectors it matches. Entries for another uid and for another binary are
// registered first and one that matches last; once the last is served, the
// agent holds all three (the sync stream carries the whole set), and only
// the matching one may be served.
func TestNoEntryNoSVID(t *testing.T) {
	otherUID := register(t, "spiffe://unum.test/ns/sel/job/other-uid", "node-1", "unix:uid:54321")
	otherBin := register(t, "spiffe://unum.test/ns/sel/job/other-bin", "node-1", uidSelector(), "unix:path:/usr/bin/true")
	mine := register(t, "spiffe://unum.test/ns/sel/job/mine", "node-1", uidSelector())
	socket := socketOf("node-1")
	fetchX509(t, socket)
	svids, err := workloadapi.FetchX509SVIDs(ctxT(t, 10*time.Second), workloadapi.WithAddr(socket))
	require.NoError(t, err)
	var got []string
	for _, s := range svids {
		got = append(got, s.ID.String())
	}
	require.Contains(t, got, mine.GetSpiffeId())
	require.NotContains(t, got, otherUID.GetSpiffeId(), "served an entry for another uid")
	require.NotContains(t, got, otherBin.GetSpiffeId(), "served an entry for another binary")

	// And with no matching entry at all, PermissionDenied: delete ours.
	cc, err := cl.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	_, err = unumv1.NewIdentityClient(cc).DeleteEntry(ctxT(t, 10*time.Second), &unumv1.DeleteEntryRequest{Id: mine.GetId()})
	require.NoError(t, err)
	ctx := ctxT(t, 30*time.Second)
	for {
		_, err = workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(socket))
		if status.Code(err) == codes.PermissionDenied {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still served after its only entry was deleted: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestRotationOnOpenStream: with a short SVID TTL the agent rotates at
// half-life and the open stream delivers the new SVID.
func TestRotationOnOpenStream(t *testing.T) {
	id := "spiffe://unum.test/ns/e2e/job/rotate"
	register(t, id, "node-1", uidSelector())
	socket := socketOf("node-1")
	fetchX509(t, socket) // wait for the entry to reach the agent
	ctx := ctxT(t, 60*time.Second)
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(socket))
	require.NoError(t, err)
	defer client.Close()
	serials := map[string]bool{}
	w := &watcher{onUpdate: func(c *workloadapi.X509Context) {
		for _, s := range c.SVIDs {
			if s.ID.String() == id {
				serials[s.Certificates[0].SerialNumber.String()] = true
			}
		}
	}}
	wctx, cancel := context.WithCancel(ctx)
	w.stop = func() bool {
		if len(serials) >= 2 {
			cancel()
			return true
		}
		return false
	}
	err = client.WatchX509Context(wctx, w)
	require.GreaterOrEqual(t, len(serials), 2, "no rotated SVID delivered on the open stream: %v", err)
}

type watcher struct {
	onUpdate func(*workloadapi.X509Context)
	stop     func() bool
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	w.onUpdate(c)
	w.stop()
}
func (w *watcher) OnX509ContextWatchError(error) {}

// TestKeysOnDiskSealedAndPrivate: signing keys are sealed, every key file
// is 0600, folders have their documented modes.
func TestKeysOnDiskSealedAndPrivate(t *testing.T) {
	l := Layout{Dir: cl.nodes["node-1"].dir}
	for _, p := range []string{l.RootKey(), l.IntermediateKey(), l.JWTKey(), l.EtcdCAKey()} {
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NotContains(t, string(data), "PRIVATE KEY", "%s must be sealed", p)
		require.True(t, strings.HasPrefix(string(data), "unum-sealed-key v1"), p)
	}
	var keyFiles int
	require.NoError(t, filepath.WalkDir(l.Keys(), func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		info, err := d.Info()
		require.NoError(t, err)
		if d.IsDir() {
			require.Equal(t, os.FileMode(0o700), info.Mode().Perm(), p)
			return nil
		}
		if strings.HasSuffix(p, ".key") || strings.HasSuffix(p, ".key.sealed") {
			keyFiles++
			require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), p)
		}
		return nil
	}))
	// node, etcd member, 4 sealed CA keys, audit checkpoint and witness keys
	require.Equal(t, 8, keyFiles)
	for p, mode := range map[string]os.FileMode{l.Dir: 0o711, l.Public(): 0o755, l.Admin(): 0o600, l.AuditDir(): 0o700, l.AuditInbox(): 0o700} {
		info, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, mode, info.Mode().Perm(), p)
	}
	info, err := os.Stat(l.Socket())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o666), info.Mode().Perm(), "the socket is open to all; attestation decides")
	// The KEK is not in the data folder, and the CA keys do not open without it.
	_, err = os.Stat(filepath.Join(l.Dir, "kek"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	otherPath := filepath.Join(t.TempDir(), "other-kek")
	require.NoError(t, seal.CreateKEKFile(otherPath))
	other, err := seal.LoadKEK(otherPath)
	require.NoError(t, err)
	_, err = seal.ReadSealedKey(other, l.RootKey(), labelRoot)
	require.Error(t, err, "another KEK must not unseal the root key")
	right, err := seal.LoadKEK(cl.kek)
	require.NoError(t, err)
	_, err = seal.ReadSealedKey(right, l.RootKey(), labelIntermediate)
	require.Error(t, err, "a sealed key must not open under another purpose label")
	_, err = seal.ReadSealedKey(right, l.RootKey(), labelRoot)
	require.NoError(t, err)
}

// TestRestartKeepsIdentity also checks that a node refuses to start with a
// loose key file.
func TestRestartKeepsIdentity(t *testing.T) {
	rn := cl.nodes["node-2"]
	dir := rn.dir
	before, err := readCerts(Layout{Dir: dir}.NodeCert())
	require.NoError(t, err)
	kept := register(t, "spiffe://unum.test/ns/restart/job/kept", "node-2", uidSelector())
	fetchX509(t, socketOf("node-2"))
	require.NoError(t, cl.stop("node-2"))

	l := Layout{Dir: dir}
	require.NoError(t, os.Chmod(l.NodeKey(), 0o640))
	err = Run(ctxT(t, 10*time.Second), Options{DataDir: dir, Log: quietLog()})
	require.Error(t, err)
	require.Contains(t, err.Error(), "group- or world-readable")
	require.NoError(t, os.Chmod(l.NodeKey(), 0o600))

	require.NoError(t, cl.start("node-2", Options{DataDir: dir}))
	require.NoError(t, cl.waitReady(context.Background(), "node-2"))
	after, err := readCerts(l.NodeCert())
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/node/node-2", after[0].URIs[0].String())
	require.Equal(t, before[0].SerialNumber, after[0].SerialNumber, "the restarted node must resume its SVID, not enrol again")
	require.True(t, before[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(after[0].PublicKey))
	// Its registrations are served again, without a new join.
	deadline := time.Now().Add(30 * time.Second)
	for {
		svids, err := workloadapi.FetchX509SVIDs(ctxT(t, 10*time.Second), workloadapi.WithAddr(socketOf("node-2")))
		if err == nil && hasID(svids, kept.GetSpiffeId()) {
			return
		}
		require.True(t, time.Now().Before(deadline), "entry not served after restart: %v", err)
		time.Sleep(100 * time.Millisecond)
	}
}

func hasID(svids []*x509svid.SVID, id string) bool {
	for _, s := range svids {
		if s.ID.String() == id {
			return true
		}
	}
	return false
}

// TestExpiredComputeNode: a compute node down longer than its SVID lifetime
// refuses to start with a clear message, and a node SVID re-issued from
// local CA material (what `unum dev` does on resume) brings it back.
func TestExpiredComputeNode(t *testing.T) {
	tok, err := cl.joinToken(context.Background(), "expiring", "compute")
	require.NoError(t, err)
	p, err := freePorts()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, cl.start("expiring", Options{DataDir: dir, Ports: p, JoinAddr: cl.enroll, Token: tok}))
	require.NoError(t, cl.waitReady(context.Background(), "expiring"))
	require.NoError(t, cl.stop("expiring"))

	// Replace its SVID with one that expires in a second.
	authority, td, _, err := localAuthority(cl.nodes["node-1"].dir, cl.kek)
	require.NoError(t, err)
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	chain, err := authority.SignX509SVIDForKey(key.Public(), spiffeid.RequireFromPath(td, "/node/expiring"), time.Second)
	require.NoError(t, err)
	l := Layout{Dir: dir}
	require.NoError(t, seal.WritePrivateKey(l.NodeKey(), key))
	require.NoError(t, seal.WriteFileAtomic(l.NodeCert(), ca.EncodeCertsPEM(chain), 0o644))
	time.Sleep(time.Until(chain[0].NotAfter) + 100*time.Millisecond)

	expired, err := NodeSVIDExpired(dir, time.Now())
	require.NoError(t, err)
	require.True(t, expired)
	err = Run(ctxT(t, 10*time.Second), Options{DataDir: dir, Log: quietLog()})
	require.ErrorContains(t, err, "must join again")

	require.NoError(t, ReissueNodeSVID(cl.nodes["node-1"].dir, cl.kek, dir))
	require.NoError(t, cl.start("expiring", Options{DataDir: dir}))
	require.NoError(t, cl.waitReady(context.Background(), "expiring"))
	require.NoError(t, cl.stop("expiring"))
}

// TestComputeSVIDCannotReachEtcd: no SVID (compute node, control node,
// workload) opens etcd; only the etcd PKI's role certificate does.
func TestComputeSVIDCannotReachEtcd(t *testing.T) {
	l1 := Layout{Dir: cl.nodes["node-1"].dir}
	cfg, err := loadConfig(l1)
	require.NoError(t, err)
	etcdCA, err := readCerts(l1.EtcdCACert())
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(etcdCA[0])

	try := func(cert tls.Certificate) error {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{cfg.Etcd.ClientURL},
			DialTimeout: 2 * time.Second,
			TLS:         &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
			Logger:      nil,
		})
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := c.Put(ctx, "/unum/attack", "x"); err != nil {
			return err
		}
		_, err = c.Get(ctx, "/unum/", clientv3.WithPrefix())
		return err
	}
	svidCert := func(dir string) tls.Certificate {
		l := Layout{Dir: dir}
		cert, err := tls.LoadX509KeyPair(l.NodeCert(), l.NodeKey())
		require.NoError(t, err)
		return cert
	}
	require.Error(t, try(svidCert(cl.nodes["node-2"].dir)), "a compute node's SVID reached etcd")
	require.Error(t, try(svidCert(cl.nodes["node-1"].dir)), "a control node's SVID reached etcd")
	// Control: the role certificate works, so the refusals above are real.
	role, err := tls.LoadX509KeyPair(l1.EtcdMemberCert(), l1.EtcdMemberKey())
	require.NoError(t, err)
	require.NoError(t, try(role))
}

// TestInitRefusesExistingState: init never overwrites a node's keys.
func TestInitRefusesExistingState(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "keys", "ca"), 0o700))
	sentinel := filepath.Join(dir, "keys", "ca", "root.key.sealed")
	require.NoError(t, os.WriteFile(sentinel, []byte("old root"), 0o600))
	err := Init(context.Background(), InitOptions{TrustDomain: "x.test", DataDir: dir, KEKFile: filepath.Join(t.TempDir(), "kek"), Log: quietLog()})
	require.ErrorContains(t, err, "already holds node state")
	data, err := os.ReadFile(sentinel)
	require.NoError(t, err)
	require.Equal(t, "old root", string(data))
}

func TestKEKOutside(t *testing.T) {
	dir := t.TempDir()
	// The data folder reached through a symlink, with a KEK path below it
	// whose folder does not exist yet.
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(dir, link))
	for kek, ok := range map[string]bool{
		filepath.Join(dir, "kek"):         false,
		filepath.Join(dir, "sub", "kek"):  false,
		filepath.Join(dir, "..", "kek"):   true,
		dir + "-kek":                      true,
		filepath.Join(dir, "..kek"):       false,
		filepath.Join(t.TempDir(), "kek"): true,
	} {
		err := checkKEKOutside(dir, kek)
		require.Equal(t, ok, err == nil, "%s: %v", kek, err)
	}
	require.Error(t, checkKEKOutside(dir, ""))
}

// TestJoinRefusedNodeExits: a node whose join is refused returns
// ErrJoinRefused with the reason, writes no identity, and does not retry.
func TestJoinRefusedNodeExits(t *testing.T) {
	tok, err := cl.joinToken(context.Background(), "refused-1", "compute")
	require.NoError(t, err)
	p, err := freePorts()
	require.NoError(t, err)
	first := t.TempDir()
	require.NoError(t, cl.start("refused-1", Options{DataDir: first, Ports: p, JoinAddr: cl.enroll, Token: tok}))
	require.NoError(t, cl.waitReady(context.Background(), "refused-1"))
	require.NoError(t, cl.stop("refused-1"))

	// Reuse of the same token from another node.
	p2, err := freePorts()
	require.NoError(t, err)
	dir := t.TempDir()
	err = Run(ctxT(t, 20*time.Second), Options{DataDir: dir, Ports: p2, JoinAddr: cl.enroll, Token: tok, Log: quietLog()})
	require.ErrorIs(t, err, ErrJoinRefused)
	require.Contains(t, err.Error(), "already been used")
	_, err = os.Stat(Layout{Dir: dir}.NodeConfig())
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(Layout{Dir: dir}.NodeKey())
	require.ErrorIs(t, err, fs.ErrNotExist, "a refused node keeps no key")
}

// TestJoinMITM: an enrolment server that presents another CA never sees
// the token: the joining node refuses during the handshake.
func TestJoinMITM(t *testing.T) {
	// The attacker: a real gRPC Enrollment server with its own CA.
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	rootKey, _ := ca.GenerateKey()
	root, err := ca.NewRoot(td, rootKey, time.Now(), time.Hour)
	require.NoError(t, err)
	interKey, _ := ca.GenerateKey()
	inter, err := ca.NewIntermediate(td, "evil", interKey.Public(), root, rootKey, time.Now(), time.Hour)
	require.NoError(t, err)
	auth, err := ca.New(td, inter, interKey, nil, time.Now)
	require.NoError(t, err)
	key, _ := ca.GenerateKey()
	id := spiffeid.RequireFromPath(td, "/node/evil")
	chain, err := auth.SignX509SVIDForKey(key.Public(), id, time.Hour)
	require.NoError(t, err)
	creds, err := rpc.NewCredentials(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, []*x509.Certificate{root})
	require.NoError(t, err)
	fake := &recordingEnrollment{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(rpc.EnrollmentServerTLS(creds))))
	unumv1.RegisterEnrollmentServer(srv, fake)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	defer srv.Stop()

	tok, err := cl.joinToken(context.Background(), "mitm-victim", "compute")
	require.NoError(t, err)
	p, err := freePorts()
	require.NoError(t, err)
	err = Run(ctxT(t, 20*time.Second), Options{DataDir: t.TempDir(), Ports: p, JoinAddr: lis.Addr().String(), Token: tok, Log: quietLog()})
	require.ErrorIs(t, err, ErrJoinRefused)
	require.Contains(t, err.Error(), "does not match the CA fingerprint")
	require.Zero(t, fake.calls, "the impostor received a join request")

	// The insider: a compromised compute node of the same cluster, whose
	// SVID chains to the real root, poses as the enrolment server.
	l2 := Layout{Dir: cl.nodes["node-2"].dir}
	key2, err := seal.ReadPrivateKey(l2.NodeKey())
	require.NoError(t, err)
	chain2, err := readCerts(l2.NodeCert())
	require.NoError(t, err)
	roots, err := readCerts(l2.Bundle())
	require.NoError(t, err)
	insiderCreds, err := rpc.NewCredentials(&x509svid.SVID{ID: spiffeid.RequireFromString("spiffe://unum.test/node/node-2"), Certificates: chain2, PrivateKey: key2}, roots)
	require.NoError(t, err)
	insider := &recordingEnrollment{}
	isrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(rpc.EnrollmentServerTLS(insiderCreds))))
	unumv1.RegisterEnrollmentServer(isrv, insider)
	ilis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go isrv.Serve(ilis)
	defer isrv.Stop()
	err = Run(ctxT(t, 20*time.Second), Options{DataDir: t.TempDir(), Ports: p, JoinAddr: ilis.Addr().String(), Token: tok, Log: quietLog()})
	require.ErrorIs(t, err, ErrJoinRefused)
	require.Contains(t, err.Error(), "not a control node")
	require.Zero(t, insider.calls, "a compute node captured a join token")
}

type recordingEnrollment struct {
	unumv1.UnimplementedEnrollmentServer
	calls int
}

func (r *recordingEnrollment) Join(context.Context, *unumv1.JoinRequest) (*unumv1.JoinResponse, error) {
	r.calls++
	return nil, errors.New("impostor")
}
