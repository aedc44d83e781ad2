package control

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
)

// netGrants caches each identity's network grants (data.unum.network.egress)
// for one policy revision: a sync stream recompiles on every change of the
// jobs or allocations, the policy only on a new revision. A network policy
// that reads the clock (input.context.time) is therefore evaluated when a
// revision is first served, not again as time passes: write time-bound
// grants as a new revision.
type netGrants struct {
	mu       sync.Mutex
	revision int64
	grants   map[string]grantResult
}

type grantResult struct {
	grants []enforcement.Grant
	err    error
}

// get returns id's grants under eng, evaluating them once per revision.
func (g *netGrants) get(ctx context.Context, s *Server, eng *policy.Engine, id string) ([]enforcement.Grant, error) {
	g.mu.Lock()
	if g.revision != eng.Revision() || g.grants == nil {
		g.revision, g.grants = eng.Revision(), map[string]grantResult{}
	}
	r, ok := g.grants[id]
	g.mu.Unlock()
	if ok {
		return r.grants, r.err
	}
	r.grants, r.err = s.evalNetGrants(ctx, eng, id)
	g.mu.Lock()
	if g.revision == eng.Revision() {
		g.grants[id] = r
	}
	g.mu.Unlock()
	return r.grants, r.err
}

// evalNetGrants asks the policy what workload id may reach.
func (s *Server) evalNetGrants(ctx context.Context, eng *policy.Engine, id string) ([]enforcement.Grant, error) {
	sub, err := identity.ParseWorkloadID(s.cfg.TrustDomain, id)
	if err != nil {
		return nil, err
	}
	in := policy.NetworkInput(rpc.SubjectOf(identity.Classify(sub), s),
		policy.Context{Node: s.cfg.NodeName, Time: s.cfg.Clock(), RequestID: "network-compile"})
	raw, err := eng.NetworkGrants(ctx, in)
	if err != nil {
		return nil, err
	}
	out := make([]enforcement.Grant, 0, len(raw))
	for _, g := range raw {
		eg := enforcement.Grant{ID: g.ID, Namespace: g.Namespace, Prefix: g.CIDR, Ports: g.Ports, Proto: enforcement.ProtoAny}
		if g.CIDR.IsValid() {
			p, err := enforcement.ParseProto(g.Protocol)
			if err != nil {
				return nil, fmt.Errorf("grant %s: %w", g, err)
			}
			eg.Proto = p
		}
		out = append(out, eg)
	}
	return out, nil
}

// networkOf compiles the network identities of the jobs that have tasks on
// node: their identity numbers and allow rules, from the policy and where
// every task listens. ok is false while it cannot be known (no policy
// yet): the node then keeps what it has.
func (s *Server) networkOf(ctx context.Context, st networkState, node string) (out []*unumv1.NetworkIdentity, ok bool) {
	eng := s.cfg.Policy.Engine()
	if eng == nil {
		return nil, false
	}
	var listeners []enforcement.Listener
	local := map[string]bool{}
	for _, a := range st.allocs {
		if a.Node == node {
			local[a.Namespace+"/"+a.Job] = true
		}
		addr, ok := hostAddr(st.addresses[a.Node])
		if !ok {
			continue
		}
		for _, p := range a.Ports {
			if p > 0 && p <= 65535 {
				listeners = append(listeners, enforcement.Listener{SPIFFEID: a.SPIFFEID, Addr: addr, Port: uint16(p)})
			}
		}
	}
	var ids []enforcement.Identity
	errs := map[enforcement.IdentityNum]string{}
	for _, key := range slices.Sorted(maps.Keys(local)) {
		rec, found := st.jobs[key]
		if !found || rec.NetID == 0 {
			// A task whose job has no number cannot be bound: its cgroup
			// stays unmapped, which the kernel denies everything.
			continue
		}
		id := enforcement.Identity{Num: enforcement.IdentityNum(rec.NetID), SPIFFEID: rec.SPIFFEID, Namespace: rec.Namespace}
		for _, e := range rec.Egress {
			id.Egress = append(id.Egress, e.Target)
		}
		grants, err := s.grants.get(ctx, s, eng, rec.SPIFFEID)
		if err != nil {
			errs[id.Num] = truncate(err.Error(), maxEnforcementText)
		} else {
			id.Grants = grants
		}
		ids = append(ids, id)
	}
	plan := enforcement.Compile(ids, listeners)
	for _, id := range ids {
		ni := &unumv1.NetworkIdentity{Number: uint32(id.Num), SpiffeId: id.SPIFFEID, AuditOnly: st.settings.namespaceAuditOnly(id.Namespace), Error: errs[id.Num]}
		for _, r := range plan[id.Num] {
			ni.Rules = append(ni.Rules, r.String())
		}
		out = append(out, ni)
	}
	return out, true
}

// hostAddr is the IP of a HOST:PORT address (hostnames are not resolved:
// a listener behind one is not reachable through the kernel's rules).
func hostAddr(hostport string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
