package node

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
)

// TestAuditTamperDetectedOnline damages a stopped node's log on disk, starts
// the node again and asks it, over its API, to verify: the running node
// names the damaged index. Then it cuts the tail of the log: the witness
// refuses the shorter log's checkpoints and verify says it was truncated.
func TestAuditTamperDetectedOnline(t *testing.T) {
	c, dir := initSingleNode(t, "unat")
	ctx := ctxT(t, 3*time.Minute)
	opts := Options{DataDir: dir, KEKFile: c.kek}
	require.NoError(t, c.start("node-1", opts))
	require.NoError(t, c.waitReady(ctx, "node-1"))

	verify := func(fromSize uint64) *unumv1.AuditVerifyResponse {
		t.Helper()
		cc, err := c.adminConn()
		require.NoError(t, err)
		defer cc.Close()
		resp, err := unumv1.NewAuditClient(cc).Verify(ctx, &unumv1.AuditVerifyRequest{FromSize: fromSize})
		require.NoError(t, err)
		return resp
	}
	// Wait until a witnessed checkpoint covers more than 20 entries.
	var witnessed *audit.SignedCheckpoint
	require.Eventually(t, func() bool {
		require.True(t, verify(0).GetOk())
		witnessed = c.nodes["node-1"].node.Load().audit.LatestWitnessed()
		return witnessed != nil && witnessed.Size > 20
	}, time.Minute, 200*time.Millisecond)

	tamper := func(f func(db *pebble.DB)) {
		t.Helper()
		require.NoError(t, c.stop("node-1"))
		db, err := pebble.Open(Layout{Dir: dir}.AuditDir(), &pebble.Options{Logger: quietPebble{}})
		require.NoError(t, err)
		f(db)
		require.NoError(t, db.Close())
		require.NoError(t, c.start("node-1", opts))
		require.NoError(t, c.waitReady(ctx, "node-1"))
	}
	entryKey := func(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'e'}, i) }

	// A flipped byte inside entry 5's event.
	tamper(func(db *pebble.DB) {
		v, closer, err := db.Get(entryKey(5))
		require.NoError(t, err)
		b := append([]byte(nil), v...)
		closer.Close()
		b[len(b)-3] ^= 0x01
		require.NoError(t, db.Set(entryKey(5), b, pebble.Sync))
	})
	resp := verify(witnessed.Size)
	require.False(t, resp.GetOk())
	require.Equal(t, uint64(5), resp.GetBadIndex(), resp.GetProblem())
	require.Contains(t, resp.GetProblem(), "hash chain broken")

	// Then cut the log back to 10 entries (and its checkpoints).
	n := c.nodes["node-1"].node.Load()
	witnessed = n.audit.LatestWitnessed()
	tamper(func(db *pebble.DB) {
		require.NoError(t, db.DeleteRange(entryKey(10), []byte{'f'}, pebble.Sync))
		require.NoError(t, db.DeleteRange(binary.BigEndian.AppendUint64([]byte{'c'}, 11), []byte{'d'}, pebble.Sync))
	})
	resp = verify(witnessed.Size)
	require.False(t, resp.GetOk())
	require.Contains(t, resp.GetProblem(), "witnessed checkpoint at size", resp.GetProblem())
	// The witness refuses what the cut log signs once it grows past the
	// witnessed size again (every call is a recorded decision).
	cc, err := c.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	for i := uint64(0); i < witnessed.Size; i++ {
		_, err := unumv1.NewClusterClient(cc).ListNodes(ctx, &unumv1.ListNodesRequest{})
		require.NoError(t, err)
	}
	n = c.nodes["node-1"].node.Load()
	// (From entry 10 on: entry 5 no longer decodes.)
	require.Eventually(t, func() bool {
		return findEvent(t, n.audit, 10, audit.ActionAuditAlert) != nil
	}, time.Minute, 200*time.Millisecond, "the witness raised no alert")
}

// quietPebble keeps Pebble's recovery chatter out of test output. Its
// twin is cmd/unum/attacksuite_test.go's: test files of two packages, and
// Pebble exports no quiet logger.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// initSingleNode makes a one-node cluster's data folder (node-1, `unum
// init`) under a fresh temporary folder; the caller starts it with its
// own Options.
func initSingleNode(t *testing.T, prefix string) (*cluster, string) {
	t.Helper()
	base, err := os.MkdirTemp("", prefix)
	require.NoError(t, err)
	c := &cluster{base: base, kek: filepath.Join(base, "kek"), nodes: map[string]*runningNode{}}
	t.Cleanup(func() {
		c.stopAll()
		os.RemoveAll(base)
	})
	p, err := freePorts()
	require.NoError(t, err)
	dir := filepath.Join(base, "n1")
	require.NoError(t, Init(ctxT(t, time.Minute), InitOptions{TrustDomain: "unum.test", DataDir: dir, KEKFile: c.kek, Name: "node-1", Ports: p,
		EtcdHeartbeat: 250 * time.Millisecond, EtcdElection: 2500 * time.Millisecond, Log: quietLog()}))
	c.admin = Layout{Dir: dir}.Admin()
	return c, dir
}
