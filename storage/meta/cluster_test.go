package meta

import (
	"context"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type testMember struct {
	name               string
	clientURL, peerURL string
	srv                *Server
}

func newTestMember(t *testing.T, name string) *testMember {
	t.Helper()
	ports, err := freePorts(2)
	require.NoError(t, err)
	return &testMember{name: name, clientURL: localURL(ports[0]), peerURL: localURL(ports[1])}
}

func (m *testMember) start(ctx context.Context, t *testing.T, dir string, files TLSFiles, initial, state string) {
	t.Helper()
	hb, el := DevTimings()
	srv, err := Start(ctx, Config{
		Name:              m.name,
		DataDir:           filepath.Join(dir, m.name),
		ClientURL:         m.clientURL,
		PeerURL:           m.peerURL,
		InitialCluster:    initial,
		ClusterState:      state,
		TLS:               files,
		HeartbeatInterval: hb,
		ElectionTimeout:   el,
	})
	require.NoError(t, err)
	m.srv = srv
	t.Cleanup(func() { m.srv.Close() })
}

// TestMinorityCannotRead (threat T-008) grows a three-member cluster the way
// control nodes join (learner, then promotion), then takes members away: two
// of three still confirm reads, one of three confirms nothing, batched or
// not. A control node cut off from the quorum therefore cannot mint from a
// stale view.
func TestMinorityCannotRead(t *testing.T) {
	ctx := testContext(t, 50*time.Second)
	dir := t.TempDir()
	// Each member gets its own certificate from the shared etcd CA.
	var files []TLSFiles
	for i := range 3 {
		f, err := writeMemberTLS(filepath.Join(dir, "keys", strconv.Itoa(i)), shared.caCert, shared.caKey)
		require.NoError(t, err)
		files = append(files, f)
	}
	members := []*testMember{newTestMember(t, "node-1"), newTestMember(t, "node-2"), newTestMember(t, "node-3")}
	m1 := members[0]
	m1.start(ctx, t, dir, files[0], m1.name+"="+m1.peerURL, ClusterStateNew)
	admin := m1.srv.Client()

	join := func(m *testMember, files TLSFiles) {
		t.Helper()
		learner, err := AddLearner(ctx, admin, m.name, m.peerURL)
		require.NoError(t, err)
		id, initial := learner.ID, learner.InitialCluster
		require.NotEmpty(t, learner.VoterClientURLs)
		require.Contains(t, initial, m.name+"="+m.peerURL)
		require.Contains(t, initial, m1.name+"="+m1.peerURL)
		m.start(ctx, t, dir, files, initial, ClusterStateExisting)
		require.Equal(t, id, m.srv.ID())
		require.NoError(t, PromoteWhenReady(ctx, admin, id))
		require.NoError(t, PromoteWhenReady(ctx, admin, id), "promoting a voter again is a no-op")
	}
	join(members[1], files[1])

	// Checked here because the next AddLearner waits anyway: etcd accepts
	// a change only once the voters have been connected for five seconds.
	t.Run("membership errors", func(t *testing.T) {
		_, err := AddLearner(ctx, admin, "node-2", "https://127.0.0.1:1")
		require.ErrorContains(t, err, "a member with that name exists")
		_, err = AddLearner(ctx, admin, "node-4", "http://127.0.0.1:1")
		require.ErrorContains(t, err, "scheme must be https")
		_, err = AddLearner(ctx, admin, "node=4", "https://127.0.0.1:1")
		require.ErrorContains(t, err, "must not contain")

		// A learner that was added but never started blocks further
		// additions until it is removed.
		ports, err := freePorts(1)
		require.NoError(t, err)
		pending, err := AddLearner(ctx, admin, "node-4", localURL(ports[0]))
		require.NoError(t, err)
		id := pending.ID
		_, err = AddLearner(ctx, admin, "node-5", "https://127.0.0.1:1")
		require.ErrorContains(t, err, "has not started")
		require.NoError(t, RemoveMember(ctx, admin, id))
		require.Error(t, RemoveMember(ctx, admin, id))
		require.Error(t, PromoteWhenReady(ctx, admin, id))
	})
	join(members[2], files[2])

	list, err := admin.MemberList(ctx)
	require.NoError(t, err)
	var names []string
	for _, m := range list.Members {
		require.False(t, m.IsLearner, "member %s", m.Name)
		names = append(names, m.Name)
	}
	sort.Strings(names)
	require.Equal(t, []string{"node-1", "node-2", "node-3"}, names)

	// Writes through one member are seen by linearizable reads through
	// another, batched or not.
	b3 := NewBatchReader(members[2].srv.Client())
	defer b3.Close()
	for i := range 20 {
		_, err := members[0].srv.Client().Put(ctx, "/test/cluster", strconv.Itoa(i))
		require.NoError(t, err)
		got, err := b3.Get(ctx, "/test/cluster")
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(i), string(got["/test/cluster"].Value))
	}

	// Lose one member (the first, most likely the leader): the other two
	// keep a quorum.
	require.NoError(t, members[0].srv.Close())
	c2 := members[1].srv.Client()
	readCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err = c2.Put(readCtx, "/test/cluster", "after-one-down")
	require.NoError(t, err)
	resp, err := members[2].srv.Client().Get(readCtx, "/test/cluster")
	require.NoError(t, err)
	require.Equal(t, "after-one-down", string(resp.Kvs[0].Value))
	got, err := b3.Get(readCtx, "/test/cluster")
	require.NoError(t, err)
	require.Equal(t, "after-one-down", string(got["/test/cluster"].Value))

	// Lose a second: the last member is a minority and confirms nothing.
	require.NoError(t, members[1].srv.Close())
	c3 := members[2].srv.Client()
	// Both reads run at once: each waits out its whole deadline.
	reads := map[string]func(context.Context) error{
		"linearizable get": func(ctx context.Context) error {
			_, err := c3.Get(ctx, "/test/cluster")
			return err
		},
		"batch reader": func(ctx context.Context) error {
			_, err := b3.Get(ctx, "/test/cluster")
			return err
		},
	}
	errs := make(map[string]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, read := range reads {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			err := read(rctx)
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	for name := range reads {
		require.Error(t, errs[name], "%s: a minority member confirmed a read", name)
		require.ErrorIs(t, errs[name], context.DeadlineExceeded, "%s", name)
	}
	// The data is still there, only unconfirmed.
	sresp, err := c3.Get(ctx, "/test/cluster", clientv3.WithSerializable())
	require.NoError(t, err)
	require.Equal(t, "after-one-down", string(sresp.Kvs[0].Value))
}
