package node

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/metrics"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
	"github.com/unumos/unum/storage/meta"
)

// walWrites fails every write and sync of Pebble's write-ahead log: what a
// full or failing audit disk does to a record. (Only the WAL: a failure in
// one of Pebble's background goroutines ends the process, which is fail
// closed too, but not a test.)
var walWrites = errorfs.InjectorFunc(func(op errorfs.Op) error {
	if !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	switch op.Kind {
	case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync, errorfs.OpFileSyncData,
		errorfs.OpFileSyncTo, errorfs.OpFileFlush, errorfs.OpFilePreallocate:
		return errorfs.ErrInjected
	}
	return nil
})

// TestAuditFailClosed (T-060): with the audit disk failing, a privileged
// action is refused before it runs, with an error naming the audit log,
// and nothing of it reaches etcd; an unprivileged one is refused under
// audit.on_failure deny and let through under allow-and-alert, counted,
// and recorded as one audit.unavailable event once the log works again
// (here: after a restart, the log's failure being sticky).
func TestAuditFailClosed(t *testing.T) {
	c, dir := initSingleNode(t, "unaf")
	ctx := ctxT(t, 3*time.Minute)
	disk := &errorfs.Toggle{Injector: walWrites}
	opts := Options{DataDir: dir, KEKFile: c.kek, AuditFS: errorfs.Wrap(vfs.Default, disk)}
	require.NoError(t, c.start("node-1", opts))
	require.NoError(t, c.waitReady(ctx, "node-1"))

	cc, err := c.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	ic, pc, cl := unumv1.NewIdentityClient(cc), unumv1.NewPolicyClient(cc), unumv1.NewClusterClient(cc)
	entry := &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/af/job/api", AllNodes: true, Selectors: []string{"unix:uid:1"}}
	_, err = ic.CreateEntry(ctx, entry)
	require.NoError(t, err, "works while the disk does")

	n := c.nodes["node-1"].node.Load()
	etcd, err := meta.NewClient(ctx, []string{n.cfg.Etcd.ClientURL}, Layout{Dir: dir}.EtcdTLS())
	require.NoError(t, err)
	defer etcd.Close()
	state := func() map[string]string {
		out := map[string]string{}
		for _, prefix := range []string{"/unum/entries/", "/unum/policy/"} {
			resp, err := etcd.Get(ctx, prefix, clientv3.WithPrefix())
			require.NoError(t, err)
			for _, kv := range resp.Kvs {
				out[string(kv.Key)] = string(kv.Value)
			}
		}
		return out
	}
	// A join token minted while the disk works, used after it failed.
	jt, err := cl.CreateJoinToken(ctx, &unumv1.CreateJoinTokenRequest{Name: "late", Roles: []string{"compute"}, TtlSeconds: 600})
	require.NoError(t, err)
	tok, err := jointoken.Parse(jt.GetToken())
	require.NoError(t, err)
	tokens := func() string {
		resp, err := etcd.Get(ctx, "/unum/tokens/join/"+tok.ID)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1)
		return string(resp.Kvs[0].Value)
	}
	tokensBefore := tokens()
	before := state()

	disk.On()
	requireAuditRefusal := func(err error, what string) {
		t.Helper()
		require.Error(t, err, what)
		require.Equal(t, codes.Unavailable, status.Code(err), "%s: %v", what, err)
		require.Contains(t, status.Convert(err).Message(), "audit log unavailable", what)
	}
	// Privileged: refused, and nothing half-applied.
	_, err = ic.CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/af/job/other", AllNodes: true, Selectors: []string{"unix:uid:2"}})
	requireAuditRefusal(err, "id register")
	t.Logf("refused: %v", err)
	_, err = pc.Apply(ctx, &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{Files: policy.Builtin().Files}, Message: "while the audit disk fails"})
	requireAuditRefusal(err, "policy apply")
	// Unprivileged, under deny (the default): refused too.
	require.Equal(t, audit.OnFailureDeny, n.auditOnFailure())
	_, err = cl.ListNodes(ctx, &unumv1.ListNodesRequest{})
	requireAuditRefusal(err, "node ls under deny")
	require.Error(t, n.audit.Err(), "the log knows it failed")
	// Enrolment has no decision record; it checks the log itself, before
	// the token is consumed.
	ecc, err := rpc.DialEnrollment(n.cfg.EnrollListen, tok.CAFingerprint)
	require.NoError(t, err)
	defer ecc.Close()
	_, err = unumv1.NewEnrollmentClient(ecc).Join(ctx, &unumv1.JoinRequest{Token: jt.GetToken(), ApiAddress: "127.0.0.1:1"})
	requireAuditRefusal(err, "join")
	require.Equal(t, tokensBefore, tokens(), "the refused join consumed its token")

	require.Equal(t, before, state(), "a refused action changed etcd")

	// allow-and-alert lets unprivileged calls through, never privileged.
	// The log's failure is sticky until the node restarts; the setting is
	// the cluster's, reaching the node with heartbeat answers.
	disk.Off()
	require.NoError(t, c.stop("node-1"))
	require.NoError(t, c.start("node-1", opts))
	require.NoError(t, c.waitReady(ctx, "node-1"))
	n = c.nodes["node-1"].node.Load()
	cc2, err := c.adminConn()
	require.NoError(t, err)
	defer cc2.Close()
	ic, cl = unumv1.NewIdentityClient(cc2), unumv1.NewClusterClient(cc2)
	_, err = unumv1.NewAuditClient(cc2).Configure(ctx, &unumv1.AuditConfigureRequest{Config: &unumv1.AuditConfig{OnFailure: audit.OnFailureAllowAndAlert}})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return n.auditOnFailure() == audit.OnFailureAllowAndAlert }, 20*time.Second, 50*time.Millisecond)
	disk.On()
	for i := 0; i < 3; i++ {
		_, err = cl.ListNodes(ctx, &unumv1.ListNodesRequest{})
		require.NoError(t, err, "node ls under allow-and-alert")
	}
	_, err = ic.CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/af/job/other", AllNodes: true, Selectors: []string{"unix:uid:2"}})
	requireAuditRefusal(err, "id register under allow-and-alert")
	require.Equal(t, before, state(), "a refused action changed etcd")
	vals, err := n.obs.m.Values()
	require.NoError(t, err)
	unrecorded := vals[metrics.NameAuditUnrecorded]
	require.GreaterOrEqual(t, unrecorded, 3.0)

	// The disk recovers; the log's failure is sticky until the node
	// restarts, which records what was let through.
	disk.Off()
	require.NoError(t, c.stop("node-1"))

	// Break-glass on the stopped node (T-063): recover opens its log
	// itself; and when the log can be neither opened nor handed to a
	// running node, it refuses.
	_, err = RecoverAdmin(ctx, dir, c.kek, 10*time.Minute, "uid 0 (tester)")
	require.NoError(t, err)
	held, err := audit.Open(audit.Config{Dir: Layout{Dir: dir}.AuditDir(), Node: "node-1", Signer: mustSigner(t, dir)})
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, time.Second)
	_, err = RecoverAdmin(short, dir, c.kek, 10*time.Minute, "uid 0 (tester)")
	cancel()
	require.ErrorContains(t, err, "refused, the recovery could not be recorded in the audit log")
	require.NoError(t, held.Close())
	inbox, err := os.ReadDir(Layout{Dir: dir}.AuditInbox())
	require.NoError(t, err)
	require.Empty(t, inbox, "a refused recovery leaves nothing for the node to record later")

	require.NoError(t, c.start("node-1", opts))
	require.NoError(t, c.waitReady(ctx, "node-1"))
	n = c.nodes["node-1"].node.Load()
	e := findEvent(t, n.audit, 0, audit.ActionAuditUnavailable)
	require.NotNil(t, e, "no audit.unavailable event after the restart")
	require.Equal(t, audit.Error, e.Outcome)
	var d UnavailableDetails
	require.NoError(t, json.Unmarshal(e.Details, &d))
	require.EqualValues(t, unrecorded, d.Unrecorded)
	require.True(t, d.AfterRestart)
	require.NoFileExists(t, Layout{Dir: dir}.unrecordedFile())
	var recoveries int
	for _, e := range events(t, n.audit, 0) {
		if e.Action == audit.ActionRecover {
			recoveries++
		}
	}
	require.Equal(t, 1, recoveries, "the recovery made while the node was stopped, and not the refused one")
	_, err = ic.CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/af/job/other", AllNodes: true, Selectors: []string{"unix:uid:2"}})
	require.NoError(t, err, "works again")
	// The log that lived through the failure verifies.
	rep := n.audit.Verify(ctx, &audit.Keys{Nodes: map[string][]byte{"node-1": mustSigner(t, dir).PublicKeyset()}, Witnesses: map[string][]byte{}})
	require.True(t, rep.OK, rep.String())
}

func mustSigner(t *testing.T, dir string) *audit.Signer {
	t.Helper()
	s, err := audit.LoadOrCreateSigner("node-1", Layout{Dir: dir}.AuditKey())
	require.NoError(t, err)
	return s
}
