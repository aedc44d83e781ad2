package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/control"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/backup"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
	"github.com/unumos/unum/storage/meta"
)

func TestRestoreWindow(t *testing.T) {
	created := time.Date(2030, 1, 1, 12, 0, 0, 700_000_000, time.UTC)
	restored := created.Add(time.Hour + 300*time.Millisecond)
	w := RestoreWindow(created, restored)
	set := revocation.NewSet(nil, w, 1)
	issued := func(t time.Time) error { return set.Check("spiffe://x/node/n", t.Truncate(time.Second)) }
	// A certificate issued just after the backup time, even by a node whose
	// clock is a few seconds behind, must renew.
	require.ErrorIs(t, issued(created.Add(100*time.Millisecond)), revocation.ErrMustRenew)
	require.ErrorIs(t, issued(created.Add(-revocation.ClockSkewAllowance)), revocation.ErrMustRenew)
	require.ErrorIs(t, issued(restored.Add(-time.Second)), revocation.ErrMustRenew)
	// Long before the backup, or signed by the restore itself: fine.
	require.NoError(t, issued(created.Add(-time.Minute)))
	require.NoError(t, issued(restored))
}

// TestBackupRestoreAfterLosingMajority: three control nodes and a compute
// node; a backup; changes after it; all control nodes lost; a restore into
// a new folder at the old address of the backed-up node brings the cluster
// back with the identities made before the backup intact, while revocations
// made before the backup still hold (T-030) and certificates issued after
// it are refused until they renew against the restored state (T-031).
func TestBackupRestoreAfterLosingMajority(t *testing.T) {
	base, err := os.MkdirTemp("", "unb") // short: unix socket paths
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	c := &cluster{base: base, nodes: map[string]*runningNode{}}
	t.Cleanup(c.stopAll)
	ctx := context.Background()
	ports, err := FreeLoopbackPorts(4)
	require.NoError(t, err)
	dir := func(n string) string { return filepath.Join(base, n) }
	kek := func(n string) string { return filepath.Join(base, "kek-"+n) }
	hb, election := meta.DevTimings()

	require.NoError(t, Init(ctx, InitOptions{TrustDomain: "backup.test", DataDir: dir("c1"), KEKFile: kek("c1"), Name: "c1", Ports: ports[0],
		EtcdHeartbeat: hb, EtcdElection: election, Log: quietLog()}))
	c.admin = Layout{Dir: dir("c1")}.Admin()
	require.NoError(t, c.start("c1", Options{DataDir: dir("c1"), KEKFile: kek("c1"), SVIDTTL: testSVIDTTL}))
	require.NoError(t, c.waitReady(ctx, "c1"))
	for i, name := range []string{"c2", "c3"} {
		tok, err := c.joinToken(ctx, name, "compute", "control")
		require.NoError(t, err)
		require.NoError(t, c.start(name, Options{DataDir: dir(name), KEKFile: kek(name), Ports: ports[i+1], JoinAddr: ports[0].Enroll, Token: tok, SVIDTTL: testSVIDTTL}))
		require.NoError(t, c.waitReady(ctx, name))
	}
	tok, err := c.joinToken(ctx, "w1", "compute")
	require.NoError(t, err)
	require.NoError(t, c.start("w1", Options{DataDir: dir("w1"), Ports: ports[3], JoinAddr: ports[0].Enroll, Token: tok}))
	require.NoError(t, c.waitReady(ctx, "w1"))

	admin, err := c.adminConn()
	require.NoError(t, err)
	before, err := unumv1.NewIdentityClient(admin).CreateEntry(ctxT(t, 10*time.Second), &unumv1.CreateEntryRequest{
		SpiffeId: "spiffe://backup.test/ns/b/job/before", Node: "w1", Selectors: []string{uidSelector()}})
	require.NoError(t, err)
	w1Socket := "unix://" + Layout{Dir: dir("w1")}.Socket()
	require.Equal(t, before.GetSpiffeId(), fetchX509(t, w1Socket).ID.String())

	// mallory, an admin, is revoked before the backup.
	mallory := userCreds(t, dir("c1"), kek("c1"), "mallory")
	etcd := etcdClientOf(t, dir("c1"))
	_, err = etcd.Put(ctxT(t, 5*time.Second), "/unum/users/mallory", mustJSONT(t, control.UserRecord{Name: "mallory", Role: rpc.RoleAdmin, CreatedAt: time.Now()}))
	require.NoError(t, err)
	eventually(t, func() error { _, err := listEntries(t, ports[0].API, mallory); return err })
	now := time.Now()
	_, err = etcd.Put(ctxT(t, 5*time.Second), "/unum/revocations/ids/spiffe://backup.test/user/mallory", mustJSONT(t, struct {
		revocation.Entry
		Expires time.Time `json:"expires"`
	}{revocation.Entry{ID: "spiffe://backup.test/user/mallory", Before: now.Add(revocation.ClockSkewAllowance), Reason: "stolen laptop", RevokedBy: "test", RevokedAt: now}, now.Add(time.Hour)}))
	require.NoError(t, err)
	eventually(t, func() error {
		if _, err := listEntries(t, ports[0].API, mallory); status.Code(err) != codes.Unauthenticated {
			return fmt.Errorf("mallory not refused yet: %v", err)
		}
		return nil
	})

	// The backup, taken on c1 (which holds the root).
	archive := filepath.Join(base, "backup.tar")
	createBackup(t, admin, archive)
	data, err := os.ReadFile(archive)
	require.NoError(t, err)
	m, err := backup.Verify(bytes.NewReader(data))
	require.NoError(t, err)
	require.Equal(t, "c1", m.Node.Name)
	require.True(t, m.Has(backup.RootKey))
	// No plain private key of the node travels in it.
	for _, p := range []string{Layout{Dir: dir("c1")}.NodeKey(), Layout{Dir: dir("c1")}.EtcdMemberKey()} {
		key, err := seal.ReadPrivateKey(p)
		require.NoError(t, err)
		der, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		require.False(t, bytes.Contains(data, der), "%s in the backup", p)
		pem, err := os.ReadFile(p)
		require.NoError(t, err)
		require.False(t, bytes.Contains(data, pem), "%s in the backup", p)
	}

	// After the backup: a new entry, an admin certificate, and w1's node
	// SVID re-issued.
	_, err = unumv1.NewIdentityClient(admin).CreateEntry(ctxT(t, 10*time.Second), &unumv1.CreateEntryRequest{
		SpiffeId: "spiffe://backup.test/ns/b/job/after", Node: "w1", Selectors: []string{uidSelector()}})
	require.NoError(t, err)
	lateAdmin, err := IssueAdminConfig(dir("c1"), kek("c1"), []string{ports[0].API})
	require.NoError(t, err)
	require.NoError(t, c.stop("w1"))
	require.NoError(t, ReissueNodeSVID(dir("c1"), kek("c1"), dir("w1")))
	lateW1, err := Layout{Dir: dir("w1")}.Credentials()
	require.NoError(t, err)
	require.NoError(t, c.start("w1", Options{DataDir: dir("w1")}))
	require.NoError(t, c.waitReady(ctx, "w1"))
	admin.Close()

	// Lose the majority, then the last control node too.
	require.NoError(t, c.stop("c2"))
	require.NoError(t, c.stop("c3"))
	admin, err = c.adminConn()
	require.NoError(t, err)
	_, err = unumv1.NewIdentityClient(admin).CreateEntry(ctxT(t, 4*time.Second), &unumv1.CreateEntryRequest{
		SpiffeId: "spiffe://backup.test/ns/b/job/nope", Node: "w1", Selectors: []string{uidSelector()}})
	require.Error(t, err, "a control node without quorum accepted a write")
	admin.Close()
	require.NoError(t, c.stop("c1"))

	// Refused archives leave nothing behind.
	truncated := filepath.Join(base, "truncated.tar")
	require.NoError(t, os.WriteFile(truncated, data[:len(data)-2000], 0o600))
	_, err = Restore(ctx, RestoreOptions{Archive: truncated, DataDir: dir("bad"), KEKFile: kek("c1"), Log: quietLog()})
	require.ErrorIs(t, err, backup.ErrCorrupt)
	_, err = Restore(ctx, RestoreOptions{Archive: archive, DataDir: dir("bad"), KEKFile: kek("c2"), Log: quietLog()})
	require.ErrorContains(t, err, "does not open under this KEK")
	_, err = Restore(ctx, RestoreOptions{Archive: archive, DataDir: dir("bad"), KEKFile: kek("c1"), TrustDomain: "other.test", Log: quietLog()})
	require.ErrorContains(t, err, `trust domain "backup.test", not "other.test"`)
	_, err = os.Stat(dir("bad"))
	require.True(t, os.IsNotExist(err), "a refused restore wrote %s", dir("bad"))
	entries, err := os.ReadDir(base)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Name(), ".unum-restore-", "staging folder left behind")
	}

	// Restore at c1's addresses, so the compute node finds it.
	res, err := Restore(ctx, RestoreOptions{Archive: archive, DataDir: dir("r1"), KEKFile: kek("c1"), EtcdHeartbeat: hb, EtcdElection: election, Log: quietLog()})
	require.NoError(t, err)
	require.Equal(t, []string{"c2", "c3"}, res.Rewrite.Removed)
	require.Equal(t, []string{"c1", "w1"}, res.Rewrite.Nodes)
	require.Equal(t, ports[0].API, res.Ports.API)
	c.admin = Layout{Dir: dir("r1")}.Admin()
	require.NoError(t, c.start("c1", Options{DataDir: dir("r1"), KEKFile: kek("c1"), SVIDTTL: testSVIDTTL}))
	require.NoError(t, c.waitReady(ctx, "c1"))

	admin, err = c.adminConn()
	require.NoError(t, err)
	defer admin.Close()
	// Identities made before the backup are there; what came after is not.
	ids := map[string]bool{}
	list, err := unumv1.NewIdentityClient(admin).ListEntries(ctxT(t, 10*time.Second), &unumv1.ListEntriesRequest{})
	require.NoError(t, err)
	for _, e := range list.GetEntries() {
		ids[e.GetSpiffeId()] = true
	}
	require.Equal(t, map[string]bool{before.GetSpiffeId(): true}, ids)
	nodes, err := unumv1.NewClusterClient(admin).ListNodes(ctxT(t, 10*time.Second), &unumv1.ListNodesRequest{})
	require.NoError(t, err)
	var names []string
	for _, n := range nodes.GetNodes() {
		names = append(names, n.GetName())
	}
	require.Equal(t, []string{"c1", "w1"}, names)

	// Attack: mallory's certificate, revoked before the backup, stays refused.
	_, err = listEntries(t, ports[0].API, mallory)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "certificate revoked")
	require.False(t, rpc.IsMustRenew(err))

	// Attack: the admin certificate issued after the backup is refused, for
	// reading and for making a backup, until renewed.
	lateCreds, err := lateAdmin.Credentials()
	require.NoError(t, err)
	_, err = listEntries(t, ports[0].API, lateCreds)
	require.True(t, rpc.IsMustRenew(err), "%v", err)
	cc, err := rpc.Dial(lateCreds, []string{ports[0].API})
	require.NoError(t, err)
	defer cc.Close()
	stream, err := unumv1.NewBackupClient(cc).Create(ctxT(t, 10*time.Second), &unumv1.CreateBackupRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	require.True(t, rpc.IsMustRenew(err), "%v", err)

	// Attack: w1's node SVID issued after the backup cannot heartbeat, but
	// it may renew, because w1 is a member in the restored state; the
	// renewed certificate is accepted.
	cc, err = rpc.Dial(lateW1, []string{ports[0].API})
	require.NoError(t, err)
	defer cc.Close()
	_, err = unumv1.NewClusterClient(cc).Heartbeat(ctxT(t, 10*time.Second), &unumv1.HeartbeatRequest{})
	require.True(t, rpc.IsMustRenew(err), "%v", err)
	renewed := renewWith(t, cc, lateW1.Roots(), ports[0].API)
	require.False(t, renewed.Before(res.Window.RestoredAt))

	// The running w1 renews by itself, at once, and serves its workload
	// SVID again, freshly minted by the restored control plane.
	eventually(t, func() error {
		chain, err := readCerts(Layout{Dir: dir("w1")}.NodeCert())
		if err != nil {
			return err
		}
		if revocation.IssuedAt(chain[0]).Before(res.Window.RestoredAt) {
			return fmt.Errorf("w1 has not renewed yet")
		}
		return nil
	})
	require.NoError(t, c.waitReady(ctx, "w1"))
	eventually(t, func() error {
		svids, err := workloadapi.FetchX509SVIDs(ctxT(t, 5*time.Second), workloadapi.WithAddr(w1Socket))
		if err != nil {
			return err
		}
		for _, s := range svids {
			if s.ID.String() == before.GetSpiffeId() && !revocation.IssuedAt(s.Certificates[0]).Before(res.Window.RestoredAt) {
				return nil
			}
		}
		return fmt.Errorf("no workload svid minted after the restore yet")
	})

	// The lost control nodes' etcd certificates open nothing: the restore
	// made a new etcd CA.
	lostEtcd, err := meta.NewClient(ctxT(t, 5*time.Second), []string{"https://" + ports[0].EtcdClient}, Layout{Dir: dir("c2")}.EtcdTLS())
	if err == nil {
		_, err = lostEtcd.Get(ctxT(t, 3*time.Second), "/unum/cluster/info")
		lostEtcd.Close()
	}
	require.Error(t, err, "a lost member's etcd certificate reached the restored etcd")
	// The lost names are free for new joins.
	_, err = c.joinToken(ctx, "c2", "compute", "control")
	require.NoError(t, err)
}

func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within 30s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustJSONT(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// userCreds signs a user certificate from the control node's intermediate.
func userCreds(t *testing.T, controlDir, kekFile, name string) *rpc.Credentials {
	t.Helper()
	authority, td, roots, err := localAuthority(controlDir, kekFile)
	require.NoError(t, err)
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(td, "/user/"+name)
	chain, err := authority.SignX509SVIDForKey(key.Public(), id, time.Hour)
	require.NoError(t, err)
	creds, err := rpc.NewCredentials(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, roots)
	require.NoError(t, err)
	return creds
}

func etcdClientOf(t *testing.T, controlDir string) *clientv3.Client {
	t.Helper()
	l := Layout{Dir: controlDir}
	cfg, err := loadConfig(l)
	require.NoError(t, err)
	cli, err := meta.NewClient(ctxT(t, 10*time.Second), []string{cfg.Etcd.ClientURL}, l.EtcdTLS())
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func listEntries(t *testing.T, addr string, creds *rpc.Credentials) (*unumv1.ListEntriesResponse, error) {
	t.Helper()
	cc, err := rpc.Dial(creds, []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	return unumv1.NewIdentityClient(cc).ListEntries(ctxT(t, 10*time.Second), &unumv1.ListEntriesRequest{})
}

func createBackup(t *testing.T, admin *grpc.ClientConn, path string) {
	t.Helper()
	stream, err := unumv1.NewBackupClient(admin).Create(ctxT(t, 30*time.Second), &unumv1.CreateBackupRequest{})
	require.NoError(t, err)
	var buf bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		buf.Write(chunk.GetData())
	}
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
}

// renewWith renews w1's node SVID over cc and checks that the renewed
// certificate is accepted; it returns when that certificate was issued.
func renewWith(t *testing.T, cc *grpc.ClientConn, roots []*x509.Certificate, addr string) time.Time {
	t.Helper()
	id := spiffeid.RequireFromString("spiffe://backup.test/node/w1")
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	csr, err := ca.CreateCSR(key, id)
	require.NoError(t, err)
	resp, err := unumv1.NewIdentityClient(cc).RenewNodeSVID(ctxT(t, 10*time.Second), &unumv1.RenewNodeSVIDRequest{Csr: csr})
	require.NoError(t, err)
	chain, err := parseDERs(resp.GetChain())
	require.NoError(t, err)
	creds, err := rpc.NewCredentials(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, roots)
	require.NoError(t, err)
	renewed, err := rpc.Dial(creds, []string{addr})
	require.NoError(t, err)
	defer renewed.Close()
	_, err = unumv1.NewClusterClient(renewed).Heartbeat(ctxT(t, 10*time.Second), &unumv1.HeartbeatRequest{})
	require.NoError(t, err, "the renewed certificate is refused")
	return revocation.IssuedAt(chain[0])
}
