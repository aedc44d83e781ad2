package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/backup"
)

// backupChunkSize is the payload of one BackupChunk: well under gRPC's
// default 4 MiB message limit.
const backupChunkSize = 1 << 20

// BackupSource is what Backup.Create needs from the node besides etcd.
// Implementations must be safe for concurrent use.
type BackupSource interface {
	// Material describes the serving node and returns its CA files by
	// archive member name (backup.Files): certificates, and keys exactly
	// as sealed on its disk. Never a plain key.
	Material() (backup.Node, map[string][]byte, error)
	// Seal seals under the node's KEK (the manifest tag).
	backup.Sealer
}

// Create implements unumv1.BackupServer: it streams an archive (see package
// backup) of this node's sealed CA material and a snapshot of its etcd
// member, taken after the backup time is read.
func (s *Server) Create(_ *unumv1.CreateBackupRequest, stream unumv1.Backup_CreateServer) error {
	ctx := stream.Context()
	c, err := callerOf(ctx)
	if err != nil {
		return err
	}
	if s.cfg.Backup == nil {
		return status.Error(codes.FailedPrecondition, "this control node cannot make backups")
	}
	node, files, err := s.cfg.Backup.Material()
	if err != nil {
		return status.Errorf(codes.Internal, "read CA material: %v", err)
	}
	// Read the clock, then the revision, then snapshot: the snapshot holds
	// everything committed before createdAt, which is what a restore's
	// window relies on.
	createdAt := s.cfg.Clock().UTC()
	info, err := s.cfg.Etcd.Get(ctx, keyClusterInfo)
	if err != nil {
		return status.Errorf(codes.Unavailable, "read cluster info (no etcd quorum?): %v", err)
	}
	if len(info.Kvs) != 1 {
		return status.Error(codes.FailedPrecondition, "etcd holds no cluster info")
	}
	ci, err := decode[ClusterInfo](info.Kvs[0].Value)
	if err != nil || ci.TrustDomain != s.cfg.TrustDomain.Name() {
		return status.Errorf(codes.FailedPrecondition, "etcd holds cluster info for %q, this node serves %q", ci.TrustDomain, s.cfg.TrustDomain.Name())
	}
	snap, err := s.cfg.Etcd.Snapshot(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "etcd snapshot: %v", err)
	}
	defer snap.Close()

	out := bufio.NewWriterSize(chunkSender{stream}, backupChunkSize)
	w := backup.NewWriter(out, createdAt)
	for _, name := range backup.Files {
		if data, ok := files[name]; ok {
			if err := w.AddFile(name, data); err != nil {
				return status.Errorf(codes.Internal, "%v", err)
			}
		}
	}
	size, err := w.AddSnapshot(snap)
	if err != nil {
		return status.Errorf(codes.Unavailable, "%v", err)
	}
	m, err := w.Finish(backup.Manifest{TrustDomain: ci.TrustDomain, CreatedAt: createdAt, Node: node, EtcdRevision: info.Header.Revision}, s.cfg.Backup)
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	if err := out.Flush(); err != nil {
		return err
	}
	s.cfg.Log.Info("backup created", "by", c.ID.String(), "created_at", createdAt, "etcd_revision", m.EtcdRevision, "snapshot_bytes", size, "members", len(m.Members))
	return nil
}

// chunkSender is an io.Writer sending each write as one BackupChunk.
type chunkSender struct{ stream unumv1.Backup_CreateServer }

func (c chunkSender) Write(p []byte) (int, error) {
	if err := c.stream.Send(&unumv1.BackupChunk{Data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RestorePlan is how a restore rewrites the state it restored, before the
// restored node serves: it is now the only control node and the only etcd
// member.
type RestorePlan struct {
	TrustDomain string
	// Name is the restored node, which must be a control node in the
	// restored state; its record gets the addresses it now listens on and
	// its new etcd member ID.
	Name                          string
	APIAddress, EnrollmentAddress string
	EtcdMemberID                  uint64
	// Window makes every certificate issued between the backup and the
	// restore renew before it is accepted again.
	Window revocation.Window
	Now    time.Time
}

// RestoreRewrite is what RewriteAfterRestore changed.
type RestoreRewrite struct {
	// Removed are the other control nodes: they are no etcd members of the
	// restored cluster, so they are moved to the removed nodes and may
	// join again with new tokens under the same names.
	Removed []string
	// Nodes are the members left.
	Nodes []string
	// Tokens is how many unused join and user tokens were voided.
	Tokens int
}

// RewriteAfterRestore rewrites restored cluster state in one transaction:
// the restored node's record (addresses, etcd member ID), every other
// control node moved to the removed nodes with its JWT and credential keys
// dropped, every
// unused join and user token voided (a token used after the backup would
// otherwise be usable a second time), and the restore window. Compute nodes
// stay members; they renew against the restored state.
func RewriteAfterRestore(ctx context.Context, cli *clientv3.Client, plan RestorePlan) (RestoreRewrite, error) {
	var out RestoreRewrite
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(keyClusterInfo),
		clientv3.OpGet(prefixNodes, clientv3.WithPrefix()),
		clientv3.OpGet(prefixJWTKeys, clientv3.WithPrefix()),
		clientv3.OpGet(prefixJoinTokens, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(prefixUserTokens, clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return out, fmt.Errorf("read restored state: %w", err)
	}
	r := func(i int) *clientv3.GetResponse {
		return (*clientv3.GetResponse)(resp.Responses[i].GetResponseRange())
	}
	if len(r(0).Kvs) != 1 {
		return out, errors.New("the restored etcd holds no cluster info: not a unum snapshot")
	}
	ci, err := decode[ClusterInfo](r(0).Kvs[0].Value)
	if err != nil {
		return out, fmt.Errorf("restored cluster info: %w", err)
	}
	if ci.TrustDomain != plan.TrustDomain {
		return out, fmt.Errorf("the snapshot is of trust domain %q, the manifest says %q", ci.TrustDomain, plan.TrustDomain)
	}
	var ops []clientv3.Op
	found := false
	lost := map[string]bool{}
	for _, kv := range r(1).Kvs {
		n, err := decode[NodeRecord](kv.Value)
		if err != nil {
			return out, fmt.Errorf("restored %s: %w", kv.Key, err)
		}
		switch {
		case n.Name == plan.Name:
			if !n.HasRole("control") {
				return out, fmt.Errorf("node %s is no control node in the restored state", n.Name)
			}
			found = true
			out.Nodes = append(out.Nodes, n.Name)
			n.APIAddress, n.EnrollmentAddress, n.EtcdMemberID = plan.APIAddress, plan.EnrollmentAddress, plan.EtcdMemberID
			ops = append(ops, clientv3.OpPut(nodeKey(n.Name), mustJSON(n)))
		case n.HasRole("control"):
			lost[n.Name] = true
			out.Removed = append(out.Removed, n.Name)
			ops = append(ops,
				clientv3.OpDelete(nodeKey(n.Name)),
				clientv3.OpDelete(nodeStatusKey(n.Name)),
				clientv3.OpDelete(prefixCredKeys+n.Name),
				clientv3.OpPut(removedNodeKey(n.Name), mustJSON(RemovedNodeRecord{Node: n, RemovedAt: plan.Now.UTC(), RemovedBy: "unum backup restore", Forced: true})))
		default:
			out.Nodes = append(out.Nodes, n.Name)
		}
	}
	if !found {
		return out, fmt.Errorf("the snapshot holds no node %s: the backup was not taken on that node", plan.Name)
	}
	for _, kv := range r(2).Kvs {
		if k, err := decode[JWTKeyRecord](kv.Value); err == nil && lost[k.Node] {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	out.Tokens = int(r(3).Count + r(4).Count)
	ops = append(ops,
		clientv3.OpDelete(prefixJoinTokens, clientv3.WithPrefix()),
		clientv3.OpDelete(prefixUserTokens, clientv3.WithPrefix()),
		clientv3.OpPut(keyRestoreWindow, mustJSON(plan.Window)),
	)
	if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return out, fmt.Errorf("rewrite restored state: %w", err)
	}
	sort.Strings(out.Removed)
	slices.Sort(out.Nodes)
	return out, nil
}
