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
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/identity/selector"
	"github.com/unumos/unum/internal/rpc"
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
		if sel.Type == selector.TypeTask {
			// Task identities come only from the scheduler's allocations,
			// which the CA confirms per node (confirmAlloc); an entry
			// naming a task would mint a task's identity without one.
			return nil, status.Errorf(codes.InvalidArgument, "selector %q: task selectors are the scheduler's: submit a job instead", raw)
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
	s.record(ctx, audit.Event{Kind: audit.KindEntry, Action: audit.ActionEntryCreate, Outcome: audit.Allow, Resource: rpc.WorkloadResource("id", e.SPIFFEID).String()}.
		WithDetails(EntryDetails{EntryID: e.ID, SPIFFEID: e.SPIFFEID, Node: e.Node, AllNodes: e.AllNodes, Selectors: e.Selectors}))
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
	// A concurrent delete of another entry for the same ID moves the guard;
	// try again with fresh reads.
	for attempt := 0; ; attempt++ {
		e, revoked, err := s.deleteEntryOnce(ctx, req.GetId(), c.ID.String())
		if errors.Is(err, errGuardFailed) && attempt < 4 {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.record(ctx, audit.Event{Kind: audit.KindEntry, Action: audit.ActionEntryDelete, Outcome: audit.Allow, Resource: rpc.WorkloadResource("id", e.SPIFFEID).String()}.
			WithDetails(EntryDetails{EntryID: e.ID, SPIFFEID: e.SPIFFEID, Node: e.Node, AllNodes: e.AllNodes, Selectors: e.Selectors, Revoked: revoked}))
		s.cfg.Log.Info("registration entry deleted", "entry", req.GetId(), "spiffe_id", e.SPIFFEID, "revoked", revoked, "by", c.ID.String())
		return &unumv1.DeleteEntryResponse{}, nil
	}
}

// deleteEntryOnce deletes entry id and, unless another entry still grants
// its SPIFFE ID, revokes the ID, in one transaction guarded by every entry
// it read for that ID: of two concurrent deletes of the last two entries
// for an ID, one sees the other gone and revokes. It returns errGuardFailed
// when the guard moved.
func (s *Server) deleteEntryOnce(ctx context.Context, entryID, by string) (EntryRecord, bool, error) {
	key := entryKey(entryID)
	got, err := s.cfg.Etcd.Get(ctx, key)
	if err != nil {
		return EntryRecord{}, false, status.Errorf(codes.Unavailable, "read entry: %v", err)
	}
	if len(got.Kvs) == 0 {
		return EntryRecord{}, false, status.Errorf(codes.NotFound, "no registration entry %q", entryID)
	}
	e, err := decode[EntryRecord](got.Kvs[0].Value)
	if err != nil {
		return e, false, status.Errorf(codes.Internal, "entry %s: %v", entryID, err)
	}
	// The entry's SVIDs stop working now, not at expiry: revoke its SPIFFE
	// ID, unless another entry still grants it (revocation is per ID, and
	// would refuse that entry's workloads too).
	others, err := s.otherEntryGrants(ctx, e)
	if err != nil {
		return e, false, err
	}
	guard := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", got.Kvs[0].ModRevision)}, others...)
	var ids []spiffeid.ID
	if len(others) == 0 {
		id, err := spiffeid.FromString(e.SPIFFEID)
		if err != nil {
			return e, false, status.Errorf(codes.Internal, "entry %s: %v", entryID, err)
		}
		ids = append(ids, id)
	}
	if _, err := s.revokeManyIf(ctx, ids, "registration entry "+e.ID+" deleted", by, guard, []clientv3.Op{clientv3.OpDelete(key)}); err != nil {
		if errors.Is(err, errGuardFailed) {
			return e, false, err // retried by DeleteEntry
		}
		return e, false, revocationStatus("delete entry", err)
	}
	return e, len(ids) > 0, nil
}

// otherEntryGrants returns, for every entry other than e that names e's
// SPIFFE ID, a comparison that holds while that entry is unchanged.
func (s *Server) otherEntryGrants(ctx context.Context, e EntryRecord) ([]clientv3.Cmp, error) {
	resp, err := s.cfg.Etcd.Get(ctx, prefixEntries, clientv3.WithPrefix())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read entries: %v", err)
	}
	var out []clientv3.Cmp
	for _, kv := range resp.Kvs {
		o, err := decode[EntryRecord](kv.Value)
		if err == nil && o.ID != e.ID && o.SPIFFEID == e.SPIFFEID {
			out = append(out, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
		}
	}
	return out, nil
}
