package control

import (
	"crypto/x509"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
)

// TestWarnings is the status thresholds as a table: state in, sorted
// warnings out.
func TestWarnings(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	// NewRoot backdates NotBefore; NotAfter is now+ttl.
	root := func(ttl time.Duration) *x509.Certificate {
		key, err := ca.GenerateKey()
		require.NoError(t, err)
		c, err := ca.NewRoot(td, key, now.Add(-ttl/2), ttl/2+ttl)
		require.NoError(t, err)
		return c
	}
	rootOK := root(365 * 24 * time.Hour)
	rootSoon := root(6 * 24 * time.Hour)  // within 7 days
	interSoon := root(3 * 24 * time.Hour) // stands in for an intermediate
	rootAtEdge := root(7*24*time.Hour + time.Minute)
	fp := func(c *x509.Certificate) string { return shortFingerprint(ca.Fingerprint(c)) }

	healthy := func(name string) *unumv1.Node {
		return &unumv1.Node{Name: name, LastSeenUnix: now.Add(-time.Second).Unix(), SvidExpiresAtUnix: now.Add(40 * time.Minute).Unix(), RevocationAgeMs: 900, PolicyRevision: 4, PolicyAgeMs: 800}
	}
	with := func(n *unumv1.Node, f func(*unumv1.Node)) *unumv1.Node { f(n); return n }
	members := []*unumv1.EtcdMember{{Name: "node-1", Leader: true}}
	base := func() HealthInput {
		return HealthInput{Now: now, Roots: []*x509.Certificate{rootOK}, ServedBy: "node-1", Quorum: true,
			EtcdMembers: members, EtcdLeader: "node-1", RevocationBound: 10 * time.Second, LatestPolicy: 4, PolicyBound: 10 * time.Second,
			Nodes: []*unumv1.Node{healthy("node-1"), healthy("node-2")}}
	}
	for _, tc := range []struct {
		name   string
		change func(*HealthInput)
		want   []string
	}{
		{name: "healthy", change: func(*HealthInput) {}},
		{name: "root expiring", change: func(in *HealthInput) { in.Roots = append(in.Roots, rootSoon) },
			want: []string{"ca: root " + fp(rootSoon) + " expires in 6d (" + now.Add(6*24*time.Hour).Format(time.RFC3339) + ")"}},
		{name: "root just outside the threshold", change: func(in *HealthInput) { in.Roots = []*x509.Certificate{rootAtEdge} }},
		{name: "own intermediate expiring", change: func(in *HealthInput) { in.Intermediate = interSoon },
			want: []string{"ca: intermediate " + fp(interSoon) + " of node-1 expires in 3d (" + now.Add(3*24*time.Hour).Format(time.RFC3339) + ")"}},
		{name: "root expired", change: func(in *HealthInput) {
			in.Now = now.Add(400 * 24 * time.Hour)
			in.Nodes = nil
		}, want: []string{"ca: root " + fp(rootOK) + " expired at " + rootOK.NotAfter.UTC().Format(time.RFC3339)}},
		{name: "intermediates from heartbeats, each once", change: func(in *HealthInput) {
			in.Intermediate = interSoon
			in.Nodes = append(in.Nodes,
				with(healthy("node-3"), func(n *unumv1.Node) {
					n.IntermediateFingerprint, n.IntermediateExpiresAtUnix = "sha256:00112233445566778899", now.Add(time.Hour).Unix()
				}),
				with(healthy("node-4"), func(n *unumv1.Node) { // reports the same as node-1's own
					n.IntermediateFingerprint, n.IntermediateExpiresAtUnix = ca.Fingerprint(interSoon), interSoon.NotAfter.Unix()
				}),
				with(healthy("node-5"), func(n *unumv1.Node) {
					n.IntermediateFingerprint, n.IntermediateExpiresAtUnix = "sha256:ffff", now.Add(30*24*time.Hour).Unix()
				}))
		}, want: []string{
			"ca: intermediate " + fp(interSoon) + " of node-1 expires in 3d (" + now.Add(3*24*time.Hour).Format(time.RFC3339) + ")",
			"ca: intermediate sha256:0011223344556677 of node-3 expires in 60m (" + now.Add(time.Hour).Format(time.RFC3339) + ")",
		}},
		{name: "node svid expiring", change: func(in *HealthInput) {
			in.Nodes[1].SvidExpiresAtUnix = now.Add(9 * time.Minute).Unix()
		}, want: []string{"node node-2: node SVID expires in 9m (" + now.Add(9*time.Minute).Format(time.RFC3339) + ")"}},
		{name: "node svid at 10 minutes is fine", change: func(in *HealthInput) {
			in.Nodes[1].SvidExpiresAtUnix = now.Add(10 * time.Minute).Unix()
		}},
		{name: "node svid expired", change: func(in *HealthInput) {
			in.Nodes[1].SvidExpiresAtUnix = now.Add(-time.Minute).Unix()
		}, want: []string{"node node-2: node SVID expired at " + now.Add(-time.Minute).Format(time.RFC3339)}},
		{name: "stale revocation view", change: func(in *HealthInput) { in.Nodes[0].RevocationAgeMs = 12_340 },
			want: []string{"node node-1: revocation view is 12.3s old (bound 10s): it refuses privileged actions until it catches up"}},
		{name: "revocation view at the bound is fine", change: func(in *HealthInput) { in.Nodes[0].RevocationAgeMs = 10_000 }},
		{name: "no revocation view", change: func(in *HealthInput) { in.Nodes[1].RevocationAgeMs = -1 },
			want: []string{"node node-2: has no revocation view yet: it refuses privileged actions"}},
		{name: "node behind on policy", change: func(in *HealthInput) { in.LatestPolicy = 5 },
			want: []string{
				"node node-1: serves policy revision 4, the latest is 5: it refuses privileged actions until it catches up",
				"node node-2: serves policy revision 4, the latest is 5: it refuses privileged actions until it catches up",
			}},
		{name: "policy not confirmed", change: func(in *HealthInput) { in.Nodes[0].PolicyAgeMs = 11_000 },
			want: []string{"node node-1: has not confirmed policy revision 4 as the latest within 10s: it refuses privileged actions"}},
		{name: "latest policy unknown (no quorum read)", change: func(in *HealthInput) { in.LatestPolicy = 0 }},
		{name: "no policy", change: func(in *HealthInput) { in.Nodes[1].PolicyRevision = 0 },
			want: []string{"node node-2: has no policy loaded yet: it refuses every call"}},
		{name: "silent node: no claims about its view", change: func(in *HealthInput) {
			in.Nodes[1].LastSeenUnix = now.Add(-5 * time.Minute).Unix()
			in.Nodes[1].RevocationAgeMs = 99_000
		}, want: []string{"node node-2: last heartbeat 5m ago (" + now.Add(-5*time.Minute).Format(time.RFC3339) + ")"}},
		{name: "never reported", change: func(in *HealthInput) {
			in.Nodes = append(in.Nodes, &unumv1.Node{Name: "node-0"})
		}, want: []string{"node node-0: has never reported a heartbeat"}},
		{name: "no quorum", change: func(in *HealthInput) {
			in.Quorum, in.Nodes, in.EtcdLeader = false, nil, ""
		}, want: []string{"etcd: no quorum: the control plane can neither confirm nor change anything (no SVIDs are minted)"}},
		{name: "no leader", change: func(in *HealthInput) { in.EtcdLeader = "" }, want: []string{"etcd: no leader"}},
		{name: "learner", change: func(in *HealthInput) {
			in.EtcdMembers = append(in.EtcdMembers, &unumv1.EtcdMember{Id: "8e9e05c52164694d", Learner: true})
		}, want: []string{"etcd: member 8e9e05c52164694d is still a learner (joining; it does not vote yet)"}},
		{name: "several, sorted by subject", change: func(in *HealthInput) {
			in.EtcdLeader = ""
			in.Roots = append(in.Roots, rootSoon)
			in.Nodes[1].RevocationAgeMs = -1
			in.Nodes[0].SvidExpiresAtUnix = now.Add(time.Minute).Unix()
		}, want: []string{
			"ca: root " + fp(rootSoon) + " expires in 6d (" + now.Add(6*24*time.Hour).Format(time.RFC3339) + ")",
			"etcd: no leader",
			"node node-1: node SVID expires in 60s (" + now.Add(time.Minute).Format(time.RFC3339) + ")",
			"node node-2: has no revocation view yet: it refuses privileged actions",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := base()
			tc.change(&in)
			got := Warnings(in)
			if len(tc.want) == 0 {
				require.Empty(t, got)
				return
			}
			// Fingerprints are random, so the order among CA lines is
			// checked as sortedness, not position.
			require.ElementsMatch(t, tc.want, got)
			require.True(t, sort.StringsAreSorted(got), "%q", got)
		})
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Second: "5s", 119 * time.Second: "119s", 2 * time.Minute: "2m",
		119 * time.Minute: "119m", 2 * time.Hour: "2h", 47 * time.Hour: "47h", 48 * time.Hour: "2d",
	} {
		require.Equal(t, want, humanDuration(d))
	}
	require.True(t, strings.HasPrefix(shortFingerprint("sha256:0123456789abcdef0123"), "sha256:0123456789abcdef"))
	require.Equal(t, "sha256:ab", shortFingerprint("sha256:ab"))
}

// TestErrors: a node reporting an audit error makes an error (status is
// unhealthy), unless its report is too old to say anything about it now.
func TestErrors(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	node := func(name, auditErr string, seen time.Duration) *unumv1.Node {
		return &unumv1.Node{Name: name, LastSeenUnix: now.Add(-seen).Unix(), AuditError: auditErr}
	}
	require.Empty(t, Errors(HealthInput{Now: now, Nodes: []*unumv1.Node{node("a", "", time.Second)}}))
	require.Equal(t, []string{
		"node a: audit log cannot record: disk full (privileged actions are refused)",
		"node b: audit log cannot record: i/o error (privileged actions are refused)",
	}, Errors(HealthInput{Now: now, Nodes: []*unumv1.Node{
		node("b", "i/o error", time.Second), node("a", "disk full", 2*time.Second),
		node("c", "stale report", time.Hour), {Name: "d", AuditError: "never seen"},
	}}))
}

// TestTruncateAuditError: a reported error is bounded and stays valid
// UTF-8 (proto strings must be).
func TestTruncateAuditError(t *testing.T) {
	require.Equal(t, "abc", truncate("abc", 5))
	require.Equal(t, "ab", truncate("abc", 2))
	require.Equal(t, "a", truncate("aé", 2), "never half a rune")
	require.Equal(t, "a?b", truncate("a\xffb", 5))
}
