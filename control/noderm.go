package control

import (
	"context"
	"crypto/x509"
	"errors"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/storage/meta"
)

// entryBatch is how many registrations deleteNodeEntries deletes (and
// revokes) per etcd transaction.
const entryBatch = 32

// deleteNodeEntries deletes the registrations specific to node and revokes
// their SPIFFE IDs (unless an entry that stays still grants one), batch by
// batch, so that the workload SVIDs minted for a removed (perhaps
// compromised) node stop working now, as a deleted registration's do. It
// runs before the node's own record goes: if it fails half-way, `node rm`
// can simply be run again.
func (s *Server) deleteNodeEntries(ctx context.Context, node, by string) (int, error) {
	resp, err := s.cfg.Etcd.Get(ctx, prefixEntries, clientv3.WithPrefix())
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "read entries: %v", err)
	}
	type doomed struct {
		key string
		rev int64
		id  string
	}
	var victims []doomed
	staying := map[string]bool{}
	for _, kv := range resp.Kvs {
		e, err := decode[EntryRecord](kv.Value)
		if err != nil {
			continue
		}
		if !e.AllNodes && e.Node == node {
			victims = append(victims, doomed{string(kv.Key), kv.ModRevision, e.SPIFFEID})
		} else {
			staying[e.SPIFFEID] = true
		}
	}
	deleted := 0
	for len(victims) > 0 {
		batch := victims[:min(entryBatch, len(victims))]
		victims = victims[len(batch):]
		var guard []clientv3.Cmp
		var dels []clientv3.Op
		var ids []spiffeid.ID
		seen := map[string]bool{}
		for _, v := range batch {
			guard = append(guard, clientv3.Compare(clientv3.ModRevision(v.key), "=", v.rev))
			dels = append(dels, clientv3.OpDelete(v.key))
			if id, err := spiffeid.FromString(v.id); err == nil && !staying[v.id] && !seen[v.id] {
				ids = append(ids, id)
				seen[v.id] = true
			}
		}
		if _, err := s.revokeManyIf(ctx, ids, "registration on removed node "+node, by, guard, dels); err != nil {
			return deleted, revocationStatus("delete registrations of "+node, err)
		}
		deleted += len(batch)
	}
	return deleted, nil
}

// memberRemoveWait bounds how long RemoveNode waits for etcd to consider
// the remaining members healthy enough to lose one.
const memberRemoveWait = 20 * time.Second

// RemoveNode implements unumv1.ClusterServer: a node leaves for good.
//
// Order: the etcd membership goes first (a control node), then the node's
// registrations are deleted and their IDs revoked (deleteNodeEntries), then
// one transaction revokes the node's SPIFFE ID, deletes its membership
// record and status, and keeps a RemovedNodeRecord. If a step fails,
// running the command again finishes the job (a missing member is not an
// error). Revoking the node ID refuses its node SVIDs and, for a control
// node, its intermediate and everything that intermediate signed before the
// removal (revocation.Set.CheckChain); what it signed stays verifiable
// because its intermediate is kept in the RemovedNodeRecord.
//
// Without force the node must be alive (heartbeating): it then sees its
// revocation at its next heartbeat and stops. A node that is down is only
// removed with force, so that a typo does not quietly remove a node that is
// merely unreachable from the operator's side.
func (s *Server) RemoveNode(ctx context.Context, req *unumv1.RemoveNodeRequest) (*unumv1.RemoveNodeResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	if err := jointoken.ValidateNodeName(name); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "node name: %v", err)
	}
	if name == s.cfg.NodeName {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is serving this request: run `unum node rm %s` against another control node (--addr)", name, name)
	}
	resp, err := s.cfg.Etcd.Get(ctx, prefixNodes, clientv3.WithPrefix())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read nodes: %v", err)
	}
	var rec NodeRecord
	var recRev int64
	controls := 0
	for _, kv := range resp.Kvs {
		n, err := decode[NodeRecord](kv.Value)
		if err != nil {
			continue
		}
		if n.HasRole("control") {
			controls++
		}
		if n.Name == name {
			rec, recRev = n, kv.ModRevision
		}
	}
	if recRev == 0 {
		return s.revokeRemovedNode(ctx, c.ID.String(), name, req.GetForce())
	}
	st, seen, err := s.nodeStatus(ctx, name)
	if err != nil {
		return nil, err
	}
	alive := seen && s.cfg.Clock().Sub(st.LastSeen) < nodeReadyAfter
	if !alive && !req.GetForce() {
		when := "never"
		if seen {
			when = st.LastSeen.UTC().Format(time.RFC3339)
		}
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is not heartbeating (last seen: %s); if it is down for good, remove it with --force", name, when)
	}
	out := &unumv1.RemoveNodeResponse{}
	removed := RemovedNodeRecord{Node: rec, RemovedAt: s.cfg.Clock().UTC(), RemovedBy: c.ID.String(), Forced: req.GetForce()}
	if rec.HasRole("control") {
		if controls <= 1 {
			return nil, status.Errorf(codes.FailedPrecondition, "node %s is the last control node", name)
		}
		// The root key would leave with the node (and could sign new
		// intermediates that its revocation does not cover): move it off
		// first. A dead holder can only be removed with --force; its root
		// is then lost, and if its disk may be in other hands the trust
		// domain's root is compromised.
		got, err := s.cfg.Etcd.Get(ctx, intermediateKey(name))
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "read intermediate of %s: %v", name, err)
		}
		if len(got.Kvs) == 1 {
			ir, err := decode[IntermediateRecord](got.Kvs[0].Value)
			if err != nil {
				return nil, status.Errorf(codes.Internal, "intermediate of %s: %v", name, err)
			}
			if ir.RootKey != "" {
				if !req.GetForce() {
					return nil, status.Errorf(codes.FailedPrecondition, "node %s holds the root CA key: move it off first (`unum ca export-root --out FILE`, then `unum ca import-root FILE` against another control node), or --force if the node is lost", name)
				}
				s.cfg.Log.Error("removing the node that holds the root CA key: the root key is lost with it", "node", name, "root", ir.RootKey)
			}
			if cert, err := x509.ParseCertificate(ir.Certificate); err == nil {
				removed.Certificates = ca.EncodeCertsPEM([]*x509.Certificate{cert})
			}
		}
		removed, err := s.removeEtcdMember(ctx, rec)
		if err != nil {
			return nil, err
		}
		out.RemovedEtcdMember = removed
	}

	id, err := identity.NodeID(s.cfg.TrustDomain, name)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "node id: %v", err)
	}
	ops := []clientv3.Op{
		clientv3.OpDelete(nodeKey(name)),
		clientv3.OpDelete(nodeStatusKey(name)),
		clientv3.OpPut(removedNodeKey(name), mustJSON(removed)),
		// Credentials it signed stop verifying everywhere: a removed
		// control node may have been removed for being compromised.
		clientv3.OpDelete(prefixCredKeys + name),
	}
	deleted, err := s.deleteNodeEntries(ctx, name, c.ID.String())
	if err != nil {
		return nil, err
	}
	out.DeletedEntries = int32(deleted)
	guard := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(nodeKey(name)), "=", recRev)}
	reason := "node removed"
	if req.GetForce() {
		reason = "node removed (forced)"
	}
	if _, err := s.revokeIf(ctx, id, reason, c.ID.String(), guard, ops); err != nil {
		return nil, revocationStatus("remove node "+name, err)
	}
	out.RevokedSpiffeId = id.String()
	s.record(ctx, audit.Event{Kind: audit.KindNode, Action: audit.ActionNodeRemove, Outcome: audit.Allow, Resource: "node/-/" + name}.
		WithDetails(NodeDetails{Name: name, Roles: rec.Roles, Forced: req.GetForce(), RemovedEtcdMember: out.RemovedEtcdMember,
			DeletedEntries: out.DeletedEntries, RevokedSPIFFEID: out.RevokedSpiffeId}))
	s.cfg.Log.Warn("node removed", "node", name, "roles", rec.Roles, "forced", req.GetForce(),
		"etcd_member_removed", out.RemovedEtcdMember, "entries_deleted", out.DeletedEntries, "by", c.ID.String())
	return out, nil
}

func (s *Server) nodeStatus(ctx context.Context, name string) (NodeStatus, bool, error) {
	resp, err := s.cfg.Etcd.Get(ctx, nodeStatusKey(name))
	if err != nil {
		return NodeStatus{}, false, status.Errorf(codes.Unavailable, "read node status: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return NodeStatus{}, false, nil
	}
	st, err := decode[NodeStatus](resp.Kvs[0].Value)
	if err != nil {
		return NodeStatus{}, false, nil
	}
	return st, true, nil
}

// removeEtcdMember removes rec's etcd member, found by the ID in its record
// or else by name. It reports false when the member was already gone.
// etcd's strict reconfiguration check refuses a removal that would leave
// the started members without quorum; that refusal is returned as is.
func (s *Server) removeEtcdMember(ctx context.Context, rec NodeRecord) (bool, error) {
	members, err := s.cfg.Etcd.MemberList(ctx)
	if err != nil {
		return false, status.Errorf(codes.Unavailable, "list etcd members: %v", err)
	}
	var memberID uint64
	for _, m := range members.Members {
		if (rec.EtcdMemberID != 0 && m.ID == rec.EtcdMemberID) || m.Name == rec.Name {
			memberID = m.ID
			break
		}
	}
	if memberID == 0 {
		return false, nil
	}
	// etcd answers "unhealthy cluster" until its leader has been connected
	// to the remaining members for a few seconds (its health interval):
	// transient right after a membership change, so retry for a while.
	deadline := s.cfg.Clock().Add(memberRemoveWait)
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := meta.RemoveMember(rctx, s.cfg.Etcd, memberID)
		cancel()
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, rpctypes.ErrUnhealthy) || s.cfg.Clock().After(deadline) {
			return false, status.Errorf(codes.FailedPrecondition, "remove %s from etcd: %v", rec.Name, err)
		}
		sleep(ctx, 500*time.Millisecond)
		if ctx.Err() != nil {
			return false, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// revokeRemovedNode handles `node rm` of a name that is no member. With a
// removal record it is a control node a restore from backup moved aside
// (its identity and intermediate deliberately left valid so that what it
// signed can renew), or a node removed before (then already revoked).
// Without one it is a name this cluster never knew, such as a node that
// joined after the backup it was restored from. Only force revokes.
func (s *Server) revokeRemovedNode(ctx context.Context, by, name string, force bool) (*unumv1.RemoveNodeResponse, error) {
	id, err := identity.NodeID(s.cfg.TrustDomain, name)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "node id: %v", err)
	}
	got, err := s.cfg.Etcd.Get(ctx, removedNodeKey(name))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read removed nodes: %v", err)
	}
	reason := "unknown node revoked"
	if len(got.Kvs) == 0 && !force {
		return nil, status.Errorf(codes.NotFound, "no node named %q (--force revokes the identity anyway, e.g. of a node that joined after the backup this cluster was restored from)", name)
	}
	if len(got.Kvs) == 1 {
		removed, err := decode[RemovedNodeRecord](got.Kvs[0].Value)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "removed node %s: %v", name, err)
		}
		rev, err := s.cfg.Etcd.Get(ctx, revocationKey(id.String()))
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "read revocation: %v", err)
		}
		if len(rev.Kvs) == 1 {
			if e, err := decode[revocationRecord](rev.Kvs[0].Value); err == nil && !e.Before.Before(removed.RemovedAt) {
				return nil, status.Errorf(codes.NotFound, "node %s was already removed at %s (by %s) and its identity revoked",
					name, removed.RemovedAt.UTC().Format(time.RFC3339), removed.RemovedBy)
			}
		}
		if !force {
			return nil, status.Errorf(codes.FailedPrecondition, "node %s is no member (removed at %s by %s) but its identity is still valid; --force revokes it and everything its intermediate signed",
				name, removed.RemovedAt.UTC().Format(time.RFC3339), removed.RemovedBy)
		}
		reason = "removed node revoked"
	}
	if _, err := s.revoke(ctx, id, reason, by); err != nil {
		return nil, status.Errorf(codes.Unavailable, "revoke node %s: %v", name, err)
	}
	s.record(ctx, audit.Event{Kind: audit.KindNode, Action: audit.ActionNodeRemove, Outcome: audit.Allow, Resource: "node/-/" + name,
		Reasons: []string{reason}}.WithDetails(NodeDetails{Name: name, Forced: force, RevokedSPIFFEID: id.String()}))
	s.cfg.Log.Warn("identity of a node that is no member revoked", "node", name, "reason", reason, "by", by)
	return &unumv1.RemoveNodeResponse{RevokedSpiffeId: id.String()}, nil
}
