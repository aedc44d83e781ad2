package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/identity/selector"
)

// CreateEntry implements unumv1.IdentityServer. A registration may only name
// a workload ID of this trust domain, on a known node (or all nodes), with a
// selector set that selector.ValidateSet accepts.
func (s *Server) CreateEntry(ctx context.Context, req *unumv1.CreateEntryRequest) (*unumv1.Entry, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	id, err := s.parseWorkloadID(req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	switch {
	case req.GetAllNodes() && req.GetNode() != "":
		return nil, status.Error(codes.InvalidArgument, "give either --node or --all-nodes, not both")
	case !req.GetAllNodes() && req.GetNode() == "":
		return nil, status.Error(codes.InvalidArgument, "--node NAME or --all-nodes is required")
	}
	if !req.GetAllNodes() {
		if err := jointoken.ValidateNodeName(req.GetNode()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "node: %v", err)
		}
	}
	if len(req.GetSelectors()) > maxEntrySelectors {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d selectors", maxEntrySelectors)
	}
	sels := make([]selector.Selector, 0, len(req.GetSelectors()))
	for _, raw := range req.GetSelectors() {
		sel, err := selector.Parse(raw)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		sels = append(sels, sel)
	}
	if err := selector.ValidateSet(sels); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	canonical := make([]string, len(sels))
	for i, sel := range sels {
		canonical[i] = sel.String()
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, status.Errorf(codes.Internal, "entry id: %v", err)
	}
	e := EntryRecord{
		ID:        hex.EncodeToString(raw[:]),
		SPIFFEID:  id.String(),
		Node:      req.GetNode(),
		AllNodes:  req.GetAllNodes(),
		Selectors: canonical,
		CreatedAt: s.cfg.Clock().UTC(),
		CreatedBy: c.ID.String(),
	}
	var conds []clientv3.Cmp
	conds = append(conds, clientv3.Compare(clientv3.CreateRevision(entryKey(e.ID)), "=", 0))
	if !e.AllNodes {
		// The node must exist at the moment the entry is written.
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(nodeKey(e.Node)), ">", 0))
	}
	resp, err := s.cfg.Etcd.Txn(ctx).If(conds...).Then(clientv3.OpPut(entryKey(e.ID), mustJSON(e))).Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store entry: %v", err)
	}
	if !resp.Succeeded {
		if !e.AllNodes {
			return nil, status.Errorf(codes.NotFound, "unknown node %q (see unum node ls)", e.Node)
		}
		return nil, status.Error(codes.Aborted, "entry id collision, try again")
	}
	s.cfg.Log.Info("registration entry created", "entry", e.ID, "spiffe_id", e.SPIFFEID, "node", e.Node, "all_nodes", e.AllNodes, "by", c.ID.String())
	return entryToProto(e, resp.Header.Revision), nil
}

// ListEntries implements unumv1.IdentityServer (linearizable).
func (s *Server) ListEntries(ctx context.Context, _ *unumv1.ListEntriesRequest) (*unumv1.ListEntriesResponse, error) {
	resp, err := s.cfg.Etcd.Get(ctx, prefixEntries, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list entries: %v", err)
	}
	out := &unumv1.ListEntriesResponse{}
	for _, kv := range resp.Kvs {
		e, err := decode[EntryRecord](kv.Value)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%s: %v", kv.Key, err)
		}
		out.Entries = append(out.Entries, entryToProto(e, kv.ModRevision))
	}
	return out, nil
}

// DeleteEntry implements unumv1.IdentityServer.
func (s *Server) DeleteEntry(ctx context.Context, req *unumv1.DeleteEntryRequest) (*unumv1.DeleteEntryResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "entry id is required")
	}
	key := entryKey(req.GetId())
	got, err := s.cfg.Etcd.Get(ctx, key)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read entry: %v", err)
	}
	if len(got.Kvs) == 0 {
		return nil, status.Errorf(codes.NotFound, "no registration entry %q", req.GetId())
	}
	e, err := decode[EntryRecord](got.Kvs[0].Value)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "entry %s: %v", req.GetId(), err)
	}
	// The entry's SVIDs stop working now, not at expiry: revoke its SPIFFE
	// ID, unless another entry still grants it (revocation is per ID, and
	// would refuse that entry's workloads too).
	shared, err := s.otherEntryGrants(ctx, e)
	if err != nil {
		return nil, err
	}
	guard := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", got.Kvs[0].ModRevision)}
	del := clientv3.OpDelete(key)
	if shared {
		resp, err := s.cfg.Etcd.Txn(ctx).If(guard...).Then(del).Commit()
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "delete entry: %v", err)
		}
		if !resp.Succeeded {
			return nil, status.Errorf(codes.Aborted, "delete entry %s: %v", req.GetId(), errGuardFailed)
		}
	} else {
		id, err := spiffeid.FromString(e.SPIFFEID)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "entry %s: %v", req.GetId(), err)
		}
		if _, err := s.revokeIf(ctx, id, "registration entry "+e.ID+" deleted", c.ID.String(), guard, []clientv3.Op{del}); err != nil {
			if errors.Is(err, errGuardFailed) {
				return nil, status.Errorf(codes.Aborted, "delete entry %s: %v", req.GetId(), err)
			}
			return nil, status.Errorf(codes.Unavailable, "delete entry: %v", err)
		}
	}
	s.cfg.Log.Info("registration entry deleted", "entry", req.GetId(), "spiffe_id", e.SPIFFEID, "revoked", !shared, "by", c.ID.String())
	return &unumv1.DeleteEntryResponse{}, nil
}

// otherEntryGrants reports whether an entry other than e names e's SPIFFE ID.
func (s *Server) otherEntryGrants(ctx context.Context, e EntryRecord) (bool, error) {
	resp, err := s.cfg.Etcd.Get(ctx, prefixEntries, clientv3.WithPrefix())
	if err != nil {
		return false, status.Errorf(codes.Unavailable, "read entries: %v", err)
	}
	for _, kv := range resp.Kvs {
		o, err := decode[EntryRecord](kv.Value)
		if err == nil && o.ID != e.ID && o.SPIFFEID == e.SPIFFEID {
			return true, nil
		}
	}
	return false, nil
}
