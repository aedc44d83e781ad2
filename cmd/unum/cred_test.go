package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/rpc"
)

// workloadConn fetches the SVID of id from node's Workload API (as a
// workload on that node does) and dials the cluster's API with it.
func workloadConn(t *testing.T, d *devCluster, node, id string) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var svid *x509svid.SVID
	for svid == nil {
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+d.socket(node)))
		if err == nil {
			for _, s := range svids {
				if s.ID.String() == id {
					svid = s
				}
			}
		}
		if svid == nil {
			require.NoError(t, ctx.Err(), "no SVID for %s from the Workload API: %v", id, err)
			time.Sleep(200 * time.Millisecond)
		}
	}
	_, roots := nodeSVID(t, d, node)
	creds, err := rpc.NewCredentials(svid, roots)
	require.NoError(t, err)
	cc, err := rpc.Dial(creds, []string{nodeAPIAddress(t, d, node)})
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestCredentialsThreeHops is the three-hop chain on a dev cluster: the
// user alice (a viewer) delegates to service A; A exchanges its credential
// for a narrower one held by service B; B calls the unum API on alice's
// behalf. Each hop narrows; B's decision is in the audit log with the whole
// chain; the confused-deputy, replay, widening and revocation attacks fail
// and are recorded.
func TestCredentialsThreeHops(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node process")
	}
	d := startDev(t, 1)
	const (
		svcA = "spiffe://unum.local/ns/default/job/a"
		svcB = "spiffe://unum.local/ns/default/job/b"
		api  = "spiffe://unum.local/system/api"
	)
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	for _, id := range []string{svcA, svcB} {
		r := unum(t, d.env, "id", "register", "--spiffe-id", id, "--node", "node-1", "--selector", uid)
		require.Equal(t, 0, r.code, r.stderr)
	}
	// The services' own rights: A is a viewer, B an operator (it may
	// register identities itself; alice may not).
	dir := t.TempDir()
	r := unum(t, d.env, "policy", "get", "--out", dir)
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "data.json"), []byte(`{"bindings": {"`+svcA+`": "viewer", "`+svcB+`": "operator"}}`), 0o644))
	r = unum(t, d.env, "policy", "apply", dir, "-m", "services A and B")
	require.Equal(t, 0, r.code, r.stderr)

	alice := userEnv(t, d, "alice", "viewer")

	// Hop 1: alice delegates to A. Only the token is on stdout.
	r = unum(t, alice, "cred", "delegate", "--to", svcA, "--aud", api,
		"--scope", "cluster.status:cluster/-/status", "--scope", "id.register:id/default/*", "--scope", "cred.delegate:cred/default/*")
	require.Equal(t, 0, r.code, r.stderr)
	tok1 := strings.TrimSpace(r.stdout)
	require.Equal(t, 2, strings.Count(tok1, "."), "stdout is the token alone: %q", r.stdout)
	c1 := inspect(t, d, tok1)
	require.Equal(t, "spiffe://unum.local/user/alice", c1.Subject)

	a := workloadConn(t, d, "node-1", svcA)
	b := workloadConn(t, d, "node-1", svcB)
	ctx := context.Background()

	// A uses it.
	_, err := unumv1.NewClusterClient(a).Status(rpc.WithDelegation(ctx, tok1), &unumv1.StatusRequest{})
	require.NoError(t, err)

	// Scope widening in the exchange is refused (attenuation only).
	_, err = unumv1.NewCredentialsClient(a).Delegate(rpc.WithDelegation(ctx, tok1), &unumv1.DelegateRequest{To: svcB, Scopes: []string{"node.ls:node/-/*"}})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "not within")

	// Hop 2: A exchanges for B, narrower, asking for longer than its own
	// credential lives: capped at its expiry.
	resp, err := unumv1.NewCredentialsClient(a).Delegate(rpc.WithDelegation(ctx, tok1), &unumv1.DelegateRequest{
		To: svcB, Scopes: []string{"cluster.status:cluster/-/status", "id.register:id/default/*"}, TtlSeconds: 3000})
	require.NoError(t, err)
	tok2 := resp.GetToken()
	require.False(t, resp.GetCertificateBound(), "B did not obtain it itself")
	c2 := inspect(t, d, tok2)
	require.Equal(t, "spiffe://unum.local/user/alice", c2.Subject)
	require.Equal(t, []string{svcA, svcB}, []string{c2.Chain[0].Actor, c2.Chain[1].Actor})
	require.False(t, c2.Expiry.After(c1.Expiry), "a child never outlives its parent")

	// Hop 3: B acts for alice.
	_, err = unumv1.NewClusterClient(b).Status(rpc.WithDelegation(ctx, tok2), &unumv1.StatusRequest{})
	require.NoError(t, err)

	// Replay by a non-holder: A presents B's credential.
	_, err = unumv1.NewClusterClient(a).Status(rpc.WithDelegation(ctx, tok2), &unumv1.StatusRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "someone other than its holder")

	// Confused deputy: B may register identities itself, alice may not.
	// Acting for her, B gets her rights (intersected with A's and its
	// own), not its own.
	reg := &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.local/ns/default/job/x", Node: "node-1", Selectors: []string{"unix:uid:4242"}}
	_, err = unumv1.NewIdentityClient(b).CreateEntry(rpc.WithDelegation(ctx, tok2), reg)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "spiffe://unum.local/user/alice")
	_, err = unumv1.NewIdentityClient(b).CreateEntry(ctx, reg)
	require.NoError(t, err, "B's own right, without the credential")
	// ... nor anything outside the credential's scopes, although B and
	// alice both may list nodes.
	_, err = unumv1.NewClusterClient(b).ListNodes(rpc.WithDelegation(ctx, tok2), &unumv1.ListNodesRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "does not allow node.ls")

	// B's decision is in the audit log with the whole chain.
	evs := auditQuery(t, d, "--cred", c1.JTI)
	var use, mint2 *auditEventJSON
	for i, e := range evs {
		if e.Action == "cluster.status" && e.Outcome == "allow" && len(e.Chain) == 2 {
			use = &evs[i]
		}
		if e.Action == "cred.mint" && e.Outcome == "allow" && len(e.Creds) == 2 {
			mint2 = &evs[i]
		}
	}
	require.NotNil(t, use, "B's use of its credential: %+v", evs)
	require.Equal(t, "spiffe://unum.local/user/alice", use.Subject)
	require.Equal(t, []string{svcA, svcB}, use.Chain)
	require.Equal(t, []string{c2.JTI, c1.JTI}, use.Creds)
	// Explain shows each principal's own evaluation.
	r = unum(t, d.env, "policy", "explain", use.Decision, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var ex struct {
		Allow      bool `json:"allow"`
		Principals []struct {
			SPIFFEID string `json:"spiffe_id"`
			Allow    bool   `json:"allow"`
			Fired    []struct {
				Rule string `json:"rule"`
			} `json:"rules_fired"`
		} `json:"principals"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ex), r.stdout)
	require.True(t, ex.Allow)
	require.Len(t, ex.Principals, 3)
	for i, want := range []string{"spiffe://unum.local/user/alice", svcA, svcB} {
		require.Equal(t, want, ex.Principals[i].SPIFFEID)
		require.True(t, ex.Principals[i].Allow)
		require.NotEmpty(t, ex.Principals[i].Fired, "rules traced for %s", want)
	}
	require.NotNil(t, mint2, "the exchange's issuance: %+v", evs)
	require.Equal(t, []string{svcA, svcB}, mint2.Chain)
	require.NotEmpty(t, mint2.Decision, "the mint names its deciding decision")

	// Revoking alice's credential revokes B's, minted from it.
	r = unum(t, alice, "cred", "list", "-o", "json")
	require.Equal(t, 3, r.code, "a viewer may not list credentials: %s", r.stderr)
	r = unum(t, d.env, "cred", "list", "--subject", "spiffe://unum.local/user/alice", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, c1.JTI)
	require.Contains(t, r.stdout, c2.JTI)
	r = unum(t, d.env, "cred", "revoke", c1.JTI, "--reason", "alice's laptop was stolen")
	require.Equal(t, 0, r.code, r.stderr)
	start := time.Now()
	for {
		_, err = unumv1.NewClusterClient(b).Status(rpc.WithDelegation(ctx, tok2), &unumv1.StatusRequest{})
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		require.NoError(t, err)
		require.Less(t, time.Since(start), 10*time.Second, "revocation never observed")
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revocation observed by the verifier %s after the revoke command returned", time.Since(start))
	require.Contains(t, err.Error(), "revoked")
	r = unum(t, d.env, "cred", "inspect", tok2)
	require.Equal(t, 1, r.code, "a revoked credential inspects as invalid: %s", r.stdout)
	require.Contains(t, r.stderr, "revoked")

	evs = auditQuery(t, d, "--cred", c2.JTI, "--action", "cred.verify")
	require.NotEmpty(t, evs, "refused presentations are recorded")
	require.Equal(t, "deny", evs[0].Outcome)

	// Inspect tells malformed and forged tokens apart, exit 1 with why.
	r = unum(t, d.env, "cred", "inspect", "x.y.z")
	require.Equal(t, 1, r.code, r.stdout)
	require.Contains(t, r.stderr, "malformed")
	parts := strings.Split(tok1, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	r = unum(t, d.env, "cred", "inspect", forged)
	require.Equal(t, 1, r.code, r.stdout)
	require.Contains(t, r.stderr, "forged")

	// Impersonation is its own privileged action: alice may not, the admin
	// may, and stays in the chain as the real issuer.
	r = unum(t, alice, "cred", "delegate", "--to", svcA, "--aud", api, "--scope", "cluster.status:cluster/-/status", "--on-behalf-of", "spiffe://unum.local/user/admin")
	require.Equal(t, 3, r.code, "a viewer may not impersonate: %s", r.stderr)
	require.Contains(t, r.stderr, "cred.impersonate")
	r = unum(t, d.env, "cred", "delegate", "--to", svcA, "--aud", api, "--scope", "cluster.status:cluster/-/status", "--on-behalf-of", "spiffe://unum.local/user/alice")
	require.Equal(t, 0, r.code, r.stderr)
	c3 := inspect(t, d, strings.TrimSpace(r.stdout))
	require.Equal(t, "spiffe://unum.local/user/alice", c3.Subject)
	require.Equal(t, "spiffe://unum.local/user/admin", c3.Chain[0].Actor, "the real issuer stays in act")
	require.Equal(t, svcA, c3.Chain[1].Actor)

	// What a service does on someone's behalf is recorded as theirs,
	// through it: otto (an operator) lets B register an identity for him.
	otto := userEnv(t, d, "otto", "operator")
	r = unum(t, otto, "cred", "delegate", "--to", svcB, "--aud", api, "--scope", "id.register:id/default/*")
	require.Equal(t, 0, r.code, r.stderr)
	c4 := inspect(t, d, strings.TrimSpace(r.stdout))
	reg.SpiffeId = "spiffe://unum.local/ns/default/job/for-otto"
	_, err = unumv1.NewIdentityClient(b).CreateEntry(rpc.WithDelegation(ctx, strings.TrimSpace(r.stdout)), reg)
	require.NoError(t, err)
	evs = auditQuery(t, d, "--cred", c4.JTI, "--action", "entry.create")
	require.Len(t, evs, 1)
	require.Equal(t, "spiffe://unum.local/user/otto", evs[0].Subject)
	require.Equal(t, []string{svcB}, evs[0].Chain)
}

// userEnv adds a user with role and logs in as them; the env runs the CLI
// as that user.
func userEnv(t *testing.T, d *devCluster, name, role string) []string {
	t.Helper()
	r := unum(t, d.env, "user", "add", name, "--role", role)
	require.Equal(t, 0, r.code, r.stderr)
	token := strings.TrimSpace(r.stdout)
	xdg := t.TempDir()
	env := []string{"UNUM_CONFIG=", "XDG_CONFIG_HOME=" + xdg, "UNUM_LOGIN_TOKEN="}
	r = unum(t, d.env, "node", "ls", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var nodes struct {
		Nodes []struct {
			EnrollmentAddress string `json:"enrollment_address"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &nodes))
	r = unum(t, append(env, "UNUM_LOGIN_TOKEN="+token), "login", "--addr", nodes.Nodes[0].EnrollmentAddress)
	require.Equal(t, 0, r.code, r.stderr)
	return env
}

type inspected struct {
	Valid   bool   `json:"valid"`
	Reason  string `json:"reason"`
	JTI     string `json:"jti"`
	Subject string `json:"sub"`
	Chain   []struct {
		Actor string `json:"actor"`
	} `json:"chain"`
	Expiry time.Time `json:"exp"`
}

func inspect(t *testing.T, d *devCluster, tok string) inspected {
	t.Helper()
	r := unum(t, d.env, "cred", "inspect", tok, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var c inspected
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &c), r.stdout)
	require.True(t, c.Valid)
	return c
}
