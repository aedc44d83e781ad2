package control

import (
	"context"
	"crypto/x509"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/rpc"
)

// stateCache is a watched, eventually consistent copy of the slowly changing
// cluster state: entries, nodes, roots and JWT keys. It feeds the agent sync
// streams and listings; it never answers a security check on its own (those
// use linearizable reads).
type stateCache struct {
	cli *clientv3.Client
	log *slog.Logger

	mu struct {
		sync.RWMutex
		loaded  bool
		entries map[string]EntryRecord
		nodes   map[string]NodeRecord
		jwtKeys map[string]JWTKeyRecord
		// credKeys are the control nodes' credential key sets, by node.
		credKeys map[string]CredKeyRecord
		users    map[string]UserRecord
		// allocs are the allocations by node, then id.
		allocs map[string]map[string]AllocRecord
		// jobs are the job records by NS/NAME (for their identity numbers
		// and declared egress).
		jobs map[string]JobRecord
		// enforcement is the cluster's enforcement settings (nil: absent,
		// the defaults).
		enforcement *EnforcementSettings
		roots       []*x509.Certificate
		// audit is the cluster's audit settings, handed to nodes in
		// heartbeat answers (nil: the defaults).
		audit *audit.Settings
		// changed is closed and replaced on every change.
		changed chan struct{}
		// rev is the etcd revision the cache is at (every watched event
		// under /unum/ advances it, interesting or not).
		rev int64
	}
}

func newStateCache(cli *clientv3.Client, log *slog.Logger) *stateCache {
	s := &stateCache{cli: cli, log: log}
	s.mu.changed = make(chan struct{})
	return s
}

type snapshot struct {
	entries  []EntryRecord
	nodes    []NodeRecord
	jwtKeys  []JWTKeyRecord
	credKeys []CredKeyRecord
	roots    []*x509.Certificate
	changed  <-chan struct{}
	loaded   bool
	rev      int64
}

func (s *stateCache) snapshot() snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := snapshot{roots: s.mu.roots, changed: s.mu.changed, loaded: s.mu.loaded, rev: s.mu.rev}
	for _, e := range s.mu.entries {
		snap.entries = append(snap.entries, e)
	}
	for _, n := range s.mu.nodes {
		snap.nodes = append(snap.nodes, n)
	}
	for _, k := range s.mu.jwtKeys {
		snap.jwtKeys = append(snap.jwtKeys, k)
	}
	for _, k := range s.mu.credKeys {
		snap.credKeys = append(snap.credKeys, k)
	}
	sort.Slice(snap.credKeys, func(i, j int) bool { return snap.credKeys[i].Node < snap.credKeys[j].Node })
	sort.Slice(snap.entries, func(i, j int) bool { return snap.entries[i].ID < snap.entries[j].ID })
	sort.Slice(snap.nodes, func(i, j int) bool { return snap.nodes[i].Name < snap.nodes[j].Name })
	sort.Slice(snap.jwtKeys, func(i, j int) bool { return snap.jwtKeys[i].KeyID < snap.jwtKeys[j].KeyID })
	return snap
}

func interesting(key string) bool {
	return strings.HasPrefix(key, prefixEntries) || strings.HasPrefix(key, prefixNodes) ||
		strings.HasPrefix(key, prefixJWTKeys) || strings.HasPrefix(key, prefixUsers) || key == keyRoots ||
		strings.HasPrefix(key, prefixCredKeys) || strings.HasPrefix(key, prefixAllocs) ||
		key == keyAuditConfig || strings.HasPrefix(key, prefixJobs) || key == keyEnforcementSettings
}

// run loads and then watches the state until ctx ends, reloading after any
// watch failure (compaction, leader loss).
func (s *stateCache) run(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := s.load(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("state cache load failed", "err", err)
			}
			sleep(ctx, time.Second)
			continue
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range s.cli.Watch(wctx, watchPrefixAll, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if err := wr.Err(); err != nil {
				s.log.Debug("state cache watch ended", "err", err)
				break
			}
			changed := false
			s.mu.Lock()
			s.mu.rev = wr.Header.Revision
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if !interesting(k) {
					continue
				}
				changed = true
				s.applyLocked(k, ev.Kv.Value, ev.Type == clientv3.EventTypeDelete)
			}
			if changed {
				close(s.mu.changed)
				s.mu.changed = make(chan struct{})
			}
			s.mu.Unlock()
		}
		cancel()
	}
}

func (s *stateCache) load(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, watchPrefixAll, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.entries = map[string]EntryRecord{}
	s.mu.nodes = map[string]NodeRecord{}
	s.mu.jwtKeys = map[string]JWTKeyRecord{}
	s.mu.credKeys = map[string]CredKeyRecord{}
	s.mu.users = map[string]UserRecord{}
	s.mu.allocs = map[string]map[string]AllocRecord{}
	s.mu.jobs = map[string]JobRecord{}
	s.mu.enforcement = nil
	s.mu.audit = nil
	for _, kv := range resp.Kvs {
		if interesting(string(kv.Key)) {
			s.applyLocked(string(kv.Key), kv.Value, false)
		}
	}
	s.mu.loaded = true
	s.mu.rev = resp.Header.Revision
	close(s.mu.changed)
	s.mu.changed = make(chan struct{})
	return resp.Header.Revision, nil
}

func (s *stateCache) applyLocked(key string, value []byte, deleted bool) {
	switch {
	case strings.HasPrefix(key, prefixEntries):
		id := strings.TrimPrefix(key, prefixEntries)
		if deleted {
			delete(s.mu.entries, id)
			return
		}
		if e, err := decode[EntryRecord](value); err == nil {
			s.mu.entries[id] = e
		}
	case strings.HasPrefix(key, prefixNodes):
		name := strings.TrimPrefix(key, prefixNodes)
		if deleted {
			delete(s.mu.nodes, name)
			return
		}
		if n, err := decode[NodeRecord](value); err == nil {
			s.mu.nodes[name] = n
		}
	case strings.HasPrefix(key, prefixJWTKeys):
		kid := strings.TrimPrefix(key, prefixJWTKeys)
		if deleted {
			delete(s.mu.jwtKeys, kid)
			return
		}
		if k, err := decode[JWTKeyRecord](value); err == nil {
			s.mu.jwtKeys[kid] = k
		}
	case strings.HasPrefix(key, prefixCredKeys):
		node := strings.TrimPrefix(key, prefixCredKeys)
		if deleted {
			delete(s.mu.credKeys, node)
			return
		}
		if k, err := decode[CredKeyRecord](value); err == nil {
			s.mu.credKeys[node] = k
		}
	case strings.HasPrefix(key, prefixAllocs):
		node, id, ok := strings.Cut(strings.TrimPrefix(key, prefixAllocs), "/")
		if !ok {
			return
		}
		m := s.mu.allocs[node]
		if m == nil {
			m = map[string]AllocRecord{}
			s.mu.allocs[node] = m
		}
		if deleted {
			delete(m, id)
		} else if a, err := decode[AllocRecord](value); err == nil {
			m[id] = a
		}
	case strings.HasPrefix(key, prefixUsers):
		name := strings.TrimPrefix(key, prefixUsers)
		if deleted {
			delete(s.mu.users, name)
			return
		}
		if u, err := decode[UserRecord](value); err == nil {
			s.mu.users[name] = u
		}
	case strings.HasPrefix(key, prefixJobs):
		k := strings.TrimPrefix(key, prefixJobs)
		if deleted {
			delete(s.mu.jobs, k)
		} else if j, err := decode[JobRecord](value); err == nil {
			s.mu.jobs[k] = j
		}
	case key == keyEnforcementSettings:
		s.mu.enforcement = nil
		if !deleted {
			e := decodeEnforcementSettings(value)
			s.mu.enforcement = &e
		}
	case key == keyAuditConfig:
		s.mu.audit = nil
		if !deleted {
			if cfg, err := decodeSettings(value); err == nil {
				s.mu.audit = &cfg
			}
		}
	case key == keyRoots:
		if !deleted {
			if roots, err := ca.ParseCertsPEM(value); err == nil {
				s.mu.roots = roots
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// auditSettings are the cluster's audit settings as last watched.
func (s *stateCache) auditSettings() audit.Settings {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mu.audit == nil {
		return audit.DefaultSettings()
	}
	return *s.mu.audit
}

// user returns the cached record of user name.
func (s *stateCache) user(name string) (UserRecord, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u, ok := s.mu.users[name]
	return u, ok
}

// userRoles is every user's role, by name (the admin user included).
func (s *stateCache) userRoles() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]string, len(s.mu.users)+1)
	for name, u := range s.mu.users {
		out[name] = u.Role
	}
	out[identity.AdminUser] = rpc.RoleAdmin
	return out
}

// entrySPIFFEID is the SPIFFE ID entry id registers, if cached.
func (s *stateCache) entrySPIFFEID(id string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.mu.entries[id]
	return e.SPIFFEID, ok
}

// networkState is what the network of a node's tasks is compiled from.
type networkState struct {
	// allocs are every allocation that still runs, on every node.
	allocs []AllocRecord
	// jobs by NS/NAME.
	jobs map[string]JobRecord
	// addresses are the nodes' API addresses, by node name.
	addresses map[string]string
	settings  EnforcementSettings
}

func (s *stateCache) networkState() networkState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := networkState{jobs: maps.Clone(s.mu.jobs), addresses: map[string]string{}, settings: defaultEnforcementSettings()}
	if s.mu.enforcement != nil {
		st.settings = *s.mu.enforcement
	}
	for _, m := range s.mu.allocs {
		for _, a := range m {
			if !a.Done {
				st.allocs = append(st.allocs, a)
			}
		}
	}
	sort.Slice(st.allocs, func(i, j int) bool { return st.allocs[i].ID < st.allocs[j].ID })
	for name, n := range s.mu.nodes {
		st.addresses[name] = n.APIAddress
	}
	return st
}

// allocsOf returns node's allocations that still run (not Done), sorted
// by id.
func (s *stateCache) allocsOf(node string) []AllocRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]AllocRecord, 0, len(s.mu.allocs[node]))
	for _, a := range s.mu.allocs[node] {
		if !a.Done {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
