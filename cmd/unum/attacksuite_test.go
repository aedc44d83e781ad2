package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/pidsteer"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
	unumnode "github.com/unumos/unum/node"
)

// TestAttackSuite attempts the control-plane attacks of the threat model
// (issue 9) against one real dev cluster (three control nodes and a
// compute-only node-4, whose agent serves the attacking workloads). Each
// subtest asserts that the attack fails with the refusal of the check
// meant to stop it, and that the refusal can be found with `unum audit
// query` (or, for tampering with the log itself, that `unum audit verify`
// reports it and the witness raises an alert).
func TestAttackSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four node processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("the Workload API attacks run a caller as another uid and recycle pids (ns_last_pid); CI runs as root")
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", "ua")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The attacking Workload API callers run as nobody: they must reach
	// the agent's socket and execute netprobe.
	require.NoError(t, os.Chmod(dir, 0o711))
	require.NoError(t, os.Chmod(filepath.Dir(netprobeBin), 0o755))
	d := startDevWith(t, dir, 4)
	t.Logf("figure: attack suite cluster ready in %s", time.Since(start).Round(100*time.Millisecond))

	const (
		td     = "spiffe://unum.local"
		svcA   = td + "/ns/default/job/a"
		svcB   = td + "/ns/default/job/b"
		svcW   = td + "/ns/default/job/w"
		api    = td + "/system/api"
		victim = "node-4"
	)
	// Three workloads on node-4, matched by the test's own uid: A (a
	// viewer), B (an operator), W (no rights of its own).
	for _, id := range []string{svcA, svcB, svcW} {
		r := unum(t, d.env, "id", "register", "--spiffe-id", id, "--node", victim, "--selector", "unix:uid:0")
		require.Equal(t, 0, r.code, r.stderr)
	}
	pol := t.TempDir()
	r := unum(t, d.env, "policy", "get", "--out", pol)
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, os.WriteFile(filepath.Join(pol, "data.json"), []byte(`{"bindings": {"`+svcA+`": "viewer", "`+svcB+`": "operator"}}`), 0o644))
	r = unum(t, d.env, "policy", "apply", pol, "-m", "attack suite services")
	require.Equal(t, 0, r.code, r.stderr)
	revision := latestRevision(t, d)
	waitConverged(t, d, revision)

	control := []string{nodeAPIAddress(t, d, "node-1")}
	a := dialAs(t, workloadSVID(t, d, victim, svcA), d, control)
	b := dialAs(t, workloadSVID(t, d, victim, svcB), d, control)
	wSVID := workloadSVID(t, d, victim, svcW)
	w := dialAs(t, wSVID, d, control)
	ctx := context.Background()

	t.Run("a compromised node cannot mint for foreign workloads", func(t *testing.T) {
		// node-4's own SVID, straight from its data folder.
		svid, roots := nodeSVID(t, d, victim)
		creds, err := rpc.NewCredentials(svid, roots)
		require.NoError(t, err)
		cc, err := rpc.Dial(creds, control)
		require.NoError(t, err)
		defer cc.Close()
		r := unum(t, d.env, "id", "register", "--spiffe-id", td+"/ns/default/job/elsewhere", "--node", "node-2", "--selector", "unix:uid:0", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var entry struct {
			ID string `json:"id"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &entry), r.stdout)
		mint := func(entryID, id string) error {
			key, err := ca.GenerateKey()
			require.NoError(t, err)
			csr, err := ca.CreateCSR(key, spiffeid.RequireFromString(id))
			require.NoError(t, err)
			_, err = unumv1.NewIdentityClient(cc).MintX509SVID(ctx, &unumv1.MintX509SVIDRequest{EntryId: entryID, SpiffeId: id, Csr: csr})
			return err
		}
		// Another node's entry.
		requireStatus(t, mint(entry.ID, td+"/ns/default/job/elsewhere"), codes.PermissionDenied, "does not apply to node "+victim)
		// An ID no entry names.
		requireStatus(t, mint("no-such-entry", td+"/ns/default/job/nobody"), codes.PermissionDenied, "no registration entry no-such-entry")
		for _, want := range []string{"does not apply to node " + victim, "no registration entry no-such-entry"} {
			requireAudited(t, d, want, "--action", "svid.issue", "--outcome", "deny", "--subject", td+"/node/"+victim)
		}
		// Another node's identity, or the API's: the policy grants nodes
		// svid.mint for workload identities only.
		for _, id := range []string{td + "/node/node-1", api} {
			requireStatus(t, mint("any", id), codes.PermissionDenied, "no rule allows "+td+"/node/"+victim+" to svid.mint")
			requireAudited(t, d, "svid.mint svid/-/"+id, "--action", "svid.mint", "--outcome", "deny", "--subject", td+"/node/"+victim)
		}
	})

	t.Run("a recycled pid does not inherit a workload api connection", func(t *testing.T) {
		// nobody connects and is refused (no entry matches it); it exits
		// and its pid goes to a root process that matches svcA's entry.
		// Attested by pid, the held connection would now be served as
		// that process.
		held := heldConnection(t, d.socket(victim), nil)
		requireStatus(t, held.fetch(), codes.PermissionDenied, "no registration entry matches this process")
		held.release()
		require.NoError(t, held.cmd.Wait())
		sleeper := pidsteer.Start(t, held.pid, func() *exec.Cmd { return exec.Command("sleep", "60") })
		t.Logf("pid %d exited and was reused by a root process matching %s", held.pid, svcA)
		err := held.fetch()
		requireStatus(t, err, codes.PermissionDenied, "peer process is gone")
		ev := requireAudited(t, d, "peer process is gone", "--action", "workload.attest", "--node", victim)
		require.Equal(t, "deny", ev.Outcome)
		// The pid now names a root process, which svcA's entry matches:
		// attested by pid, the held connection would get svcA.
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", sleeper.Process.Pid))
		require.NoError(t, err)
		require.Contains(t, string(st), "\nUid:\t0\t")
		require.Equal(t, svcA, workloadSVID(t, d, victim, svcA).ID.String(), "a root process is served svcA")
	})

	t.Run("a process that execs after connecting is not served as the new binary", func(t *testing.T) {
		sleep, err := exec.LookPath("sleep")
		require.NoError(t, err)
		sleep, err = filepath.EvalSymlinks(sleep)
		require.NoError(t, err)
		const sleeper = td + "/ns/default/job/sleeper"
		r := unum(t, d.env, "id", "register", "--spiffe-id", sleeper, "--node", victim, "--selector", "unix:uid:65534", "--selector", "unix:path:"+sleep)
		require.Equal(t, 0, r.code, r.stderr)
		// nobody connects with netprobe (no entry), then execs sleep,
		// which nobody's entry names.
		held := heldConnection(t, d.socket(victim), []string{sleep, "60"})
		requireStatus(t, held.fetch(), codes.PermissionDenied, "no registration entry matches this process")
		held.release()
		require.Eventually(t, func() bool {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", held.pid))
			return err == nil && exe == sleep
		}, 10*time.Second, 10*time.Millisecond)
		requireStatus(t, held.fetch(), codes.PermissionDenied, "executed a different binary after connecting")
		requireAudited(t, d, "executed a different binary after connecting", "--action", "workload.attest", "--node", victim)
	})

	fp := clusterFingerprint(t, d)
	enroll := func(t *testing.T) unumv1.EnrollmentClient {
		cc, err := rpc.DialEnrollment(devPorts(t, d)["node-1"].Enroll, fp)
		require.NoError(t, err)
		t.Cleanup(func() { cc.Close() })
		return unumv1.NewEnrollmentClient(cc)
	}
	joinToken := func(t *testing.T, name string, extra ...string) string {
		r := unum(t, d.env, append([]string{"node", "join-token", "--name", name, "--roles", "compute"}, extra...)...)
		require.Equal(t, 0, r.code, r.stderr)
		return strings.TrimSpace(r.stdout)
	}
	tokenID := func(t *testing.T, tok string) string {
		p, err := jointoken.Parse(tok)
		require.NoError(t, err)
		return p.ID
	}

	t.Run("a used join token cannot be replayed", func(t *testing.T) {
		tok := joinToken(t, "replayed")
		ec := enroll(t)
		_, err := ec.Join(ctx, &unumv1.JoinRequest{Token: tok, Csr: csrFor(t, nil, nil), ApiAddress: "127.0.0.1:1"})
		require.NoError(t, err, "the first use enrols")
		_, err = ec.Join(ctx, &unumv1.JoinRequest{Token: tok, Csr: csrFor(t, nil, nil), ApiAddress: "127.0.0.1:1"})
		requireStatus(t, err, codes.PermissionDenied, "already been used")
		requireAuditedDetail(t, d, "already been used", "token_id", tokenID(t, tok), "--action", "token.use", "--outcome", "deny")
	})

	t.Run("an expired join token is refused", func(t *testing.T) {
		tok := joinToken(t, "late", "--ttl", "1s")
		time.Sleep(1100 * time.Millisecond) // the token's lifetime: no leeway on join tokens
		_, err := enroll(t).Join(ctx, &unumv1.JoinRequest{Token: tok, Csr: csrFor(t, nil, nil), ApiAddress: "127.0.0.1:1"})
		requireStatus(t, err, codes.PermissionDenied, "token expired at")
		requireAuditedDetail(t, d, "token expired at", "token_id", tokenID(t, tok), "--action", "token.use", "--outcome", "deny")
	})

	t.Run("a join csr cannot smuggle extra names", func(t *testing.T) {
		tok := joinToken(t, "smuggler")
		ec := enroll(t)
		for _, c := range []struct{ uris, dns []string }{
			{uris: []string{td + "/node/node-1"}},
			{uris: []string{td + "/node/smuggler", td + "/user/admin"}},
			{uris: []string{td + "/node/smuggler"}, dns: []string{"etcd.unum.local"}},
		} {
			_, err := ec.Join(ctx, &unumv1.JoinRequest{Token: tok, Csr: csrFor(t, c.uris, c.dns), ApiAddress: "127.0.0.1:1"})
			requireStatus(t, err, codes.InvalidArgument, "csr")
		}
		// Each smuggling join is recorded, under the token it presented.
		id := tokenID(t, tok)
		awaitAudited(t, d, 3, "three refused joins with token "+id, func(e auditEventJSON) bool {
			return reasonsContain(e, "csr") && fmt.Sprint(e.Details["token_id"]) == id
		}, "--action", "token.use", "--outcome", "deny")
	})

	t.Run("a renewal csr cannot smuggle another identity", func(t *testing.T) {
		svid, roots := nodeSVID(t, d, victim)
		creds, err := rpc.NewCredentials(svid, roots)
		require.NoError(t, err)
		cc, err := rpc.Dial(creds, control)
		require.NoError(t, err)
		defer cc.Close()
		for _, uris := range [][]string{
			{td + "/node/node-1"},
			{td + "/node/" + victim, td + "/system/api"},
		} {
			_, err := unumv1.NewIdentityClient(cc).RenewNodeSVID(ctx, &unumv1.RenewNodeSVIDRequest{Csr: csrFor(t, uris, nil)})
			requireStatus(t, err, codes.InvalidArgument, "csr")
		}
		requireAudited(t, d, "csr", "--action", "svid.rotate", "--outcome", "deny", "--subject", td+"/node/"+victim)
	})

	alice := userEnv(t, d, "alice", "viewer")
	r = unum(t, alice, "cred", "delegate", "--to", svcA, "--aud", api,
		"--scope", "cluster.status:cluster/-/status", "--scope", "id.register:id/default/*", "--scope", "cred.delegate:cred/default/*")
	require.Equal(t, 0, r.code, r.stderr)
	tok1 := strings.TrimSpace(r.stdout)
	c1 := inspect(t, d, tok1)
	_, err = unumv1.NewClusterClient(a).Status(rpc.WithDelegation(ctx, tok1), &unumv1.StatusRequest{})
	require.NoError(t, err, "the holder uses its credential")

	t.Run("a delegated credential is refused from anyone but its holder", func(t *testing.T) {
		_, err := unumv1.NewClusterClient(b).Status(rpc.WithDelegation(ctx, tok1), &unumv1.StatusRequest{})
		requireStatus(t, err, codes.Unauthenticated, "someone other than its holder")
		requireAudited(t, d, "held by "+svcA, "--action", "cred.verify", "--cred", c1.JTI)
	})

	t.Run("an exchange cannot widen a delegated credential", func(t *testing.T) {
		cred := unumv1.NewCredentialsClient(a)
		_, err := cred.Delegate(rpc.WithDelegation(ctx, tok1), &unumv1.DelegateRequest{To: svcB, Scopes: []string{"node.ls:node/-/*"}})
		requireStatus(t, err, codes.PermissionDenied, "not within")
		requireAudited(t, d, "scope node.ls:node/-/* is not within", "--action", "cred.mint", "--outcome", "deny", "--cred", c1.JTI)
		_, err = cred.Delegate(rpc.WithDelegation(ctx, tok1), &unumv1.DelegateRequest{To: svcB, Audience: []string{td + "/node/node-1"}})
		requireStatus(t, err, codes.PermissionDenied, "audience "+td+"/node/node-1 is not within")
		requireAudited(t, d, "audience "+td+"/node/node-1 is not within", "--action", "cred.mint", "--outcome", "deny", "--cred", c1.JTI)
		// Asking for a longer life is cut to the parent's, never beyond.
		resp, err := cred.Delegate(rpc.WithDelegation(ctx, tok1), &unumv1.DelegateRequest{To: svcB, Scopes: []string{"id.register:id/default/*"}, TtlSeconds: 3000})
		require.NoError(t, err)
		c2 := inspect(t, d, resp.GetToken())
		require.False(t, c2.Expiry.After(c1.Expiry), "a child never outlives its parent")
	})

	t.Run("a deputy acting for a principal has only the rights of that principal", func(t *testing.T) {
		// B, an operator, may register identities itself; alice, a viewer,
		// may not. Acting with her credential, B gets her rights.
		resp, err := unumv1.NewCredentialsClient(a).Delegate(rpc.WithDelegation(ctx, tok1), &unumv1.DelegateRequest{To: svcB, Scopes: []string{"id.register:id/default/*"}})
		require.NoError(t, err)
		c2 := inspect(t, d, resp.GetToken())
		reg := &unumv1.CreateEntryRequest{SpiffeId: td + "/ns/default/job/deputy", Node: victim, Selectors: []string{"unix:uid:4242"}}
		_, err = unumv1.NewIdentityClient(b).CreateEntry(rpc.WithDelegation(ctx, resp.GetToken()), reg)
		requireStatus(t, err, codes.PermissionDenied, td+"/user/alice")
		// The refused call on alice's behalf is recorded as hers, through
		// A and B.
		ev := awaitAudited(t, d, 1, "the refused call on alice's behalf", func(e auditEventJSON) bool {
			return e.Subject == td+"/user/alice"
		}, "--cred", c2.JTI, "--action", "id.register", "--outcome", "deny")[0]
		require.Equal(t, []string{svcA, svcB}, ev.Chain)
	})

	t.Run("a workload cannot apply policy or register identities", func(t *testing.T) {
		bundle := &unumv1.PolicyBundle{Files: map[string][]byte{"authz.rego": []byte("package unum.authz\n\nimport rego.v1\n\ndecision := {\"allow\": true, \"privileged\": true, \"reasons\": [\"all\"]}\n")}}
		_, err := unumv1.NewPolicyClient(w).Apply(ctx, &unumv1.ApplyPolicyRequest{Bundle: bundle, Message: "mine now"})
		requireStatus(t, err, codes.PermissionDenied, "denied by policy")
		_, err = unumv1.NewIdentityClient(w).CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: td + "/ns/default/job/mine", Node: victim, Selectors: []string{"unix:uid:0"}})
		requireStatus(t, err, codes.PermissionDenied, "denied by policy")
		requireAudited(t, d, "", "--action", "policy.apply", "--outcome", "deny", "--subject", svcW)
		requireAudited(t, d, "", "--action", "id.register", "--outcome", "deny", "--subject", svcW)
	})

	t.Run("a workload cannot reach etcd directly", func(t *testing.T) {
		etcdAddr := devPorts(t, d)["node-1"].EtcdClient
		// The attacker does not know etcd's CA and does not care: it only
		// wants its certificate (or none) accepted.
		for _, cert := range []*tls.Certificate{svidCert(wSVID), nil} {
			cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} //nolint:gosec // the attacker's side
			if cert != nil {
				// Sent whatever CAs the server says it accepts.
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
			}
			c, err := tls.Dial("tcp", etcdAddr, cfg)
			if err == nil {
				// TLS 1.3: the server refuses the client's certificate
				// after the client's side of the handshake completed.
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "certificate", "refused at the handshake for its certificate: %v", err)
		}
		requireAudited(t, d, "signed by unknown authority", "--action", "authn.etcd", "--node", "node-1")
		requireAudited(t, d, "didn't provide a certificate", "--action", "authn.etcd", "--node", "node-1")
	})

	t.Run("a workload cannot run commands through the api of another node", func(t *testing.T) {
		cc, err := rpc.DialNode(mustCreds(t, wSVID, d), spiffeid.RequireFromString(td+"/node/node-2"), nodeAPIAddress(t, d, "node-2"))
		require.NoError(t, err)
		defer cc.Close()
		s, err := unumv1.NewTasksClient(cc).Exec(ctx, &unumv1.NodeExecRequest{Command: []string{"/bin/true"}, TimeoutSeconds: 10, Credential: tok1})
		if err == nil {
			_, err = s.Recv()
		}
		// node-2 decides the call itself: only control nodes relay exec.
		requireStatus(t, err, codes.PermissionDenied, "no rule allows "+svcW+" to exec.node")
		requireAudited(t, d, "to exec.node", "--action", "exec.node", "--outcome", "deny", "--node", "node-2", "--subject", svcW)
	})

	t.Run("a bundle that locks out the admin or lowers a privilege is refused", func(t *testing.T) {
		lock := t.TempDir()
		for name, rego := range map[string]string{
			"lockout":      `decision := {"allow": false, "privileged": true, "reasons": ["nobody"]}`,
			"unprivileged": `decision := {"allow": true, "privileged": input.action != "policy.apply", "reasons": ["everybody"]}`,
		} {
			require.NoError(t, os.WriteFile(filepath.Join(lock, "authz.rego"), []byte("package unum.authz\n\nimport rego.v1\n\n"+rego+"\n"), 0o644))
			r := unum(t, d.env, "policy", "apply", lock, "-m", name)
			require.Equal(t, 1, r.code, "%s: %s", name, r.stderr)
			require.Contains(t, r.stderr, "lockout guard", name)
		}
		requireAudited(t, d, "lockout: "+td+"/user/admin may not policy.apply", "--action", "policy.apply", "--outcome", "deny", "--subject", td+"/user/admin")
		requireAudited(t, d, "privilege: the bundle marks policy.apply unprivileged", "--action", "policy.apply", "--outcome", "deny", "--subject", td+"/user/admin")
		require.Equal(t, revision, latestRevision(t, d), "nothing was stored")
	})

	t.Run("a credential from a skewed clock is refused beyond the leeway", func(t *testing.T) {
		// A control node whose clock is off signs with its real keys:
		// node-1's keyring, opened with the dev cluster's KEK.
		issue := func(skew time.Duration) (string, string) {
			kek, err := seal.LoadKEK(filepath.Join(d.dir, "kek"))
			require.NoError(t, err)
			sealed, err := os.ReadFile(unumnode.Layout{Dir: filepath.Join(d.dir, "node-1")}.CredKeyring())
			require.NoError(t, err)
			k, err := delegation.UnmarshalKeyring(sealed, kek.AEAD())
			require.NoError(t, err)
			iss, err := delegation.NewIssuer(spiffeid.RequireTrustDomainFromString("unum.local"), k, func() time.Time { return time.Now().Add(skew) })
			require.NoError(t, err)
			scopes, err := delegation.ParseScopes([]string{"cluster.status:cluster/-/status"})
			require.NoError(t, err)
			c, err := iss.Plan(delegation.Request{Caller: spiffeid.RequireFromString(td + "/user/admin"), Holder: spiffeid.RequireFromString(svcA),
				Audience: []spiffeid.ID{spiffeid.RequireFromString(api)}, Scopes: scopes, TTL: 5 * time.Minute})
			require.NoError(t, err)
			tok, err := iss.Sign(c)
			require.NoError(t, err)
			return tok, c.ID
		}
		status := func(tok string) error {
			_, err := unumv1.NewClusterClient(a).Status(rpc.WithDelegation(ctx, tok), &unumv1.StatusRequest{})
			return err
		}
		// Inside the leeway (30 s) either way: accepted.
		for _, skew := range []time.Duration{10 * time.Second, -5*time.Minute - 10*time.Second} {
			tok, _ := issue(skew)
			require.NoError(t, status(tok), "skew %s is inside the leeway", skew)
		}
		ahead, jti := issue(2 * time.Minute)
		requireStatus(t, status(ahead), codes.Unauthenticated, "not yet valid")
		requireAudited(t, d, "not yet valid", "--action", "cred.verify", "--cred", jti)
		behind, jti := issue(-10 * time.Minute)
		requireStatus(t, status(behind), codes.Unauthenticated, "expired")
		requireAudited(t, d, "expired", "--action", "cred.verify", "--cred", jti)
	})

	t.Run("audit tampering and truncation are detected", func(t *testing.T) {
		keys := filepath.Join(t.TempDir(), "keys.json")
		r := unum(t, d.env, "audit", "keys", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		require.NoError(t, os.WriteFile(keys, []byte(r.stdout), 0o644))
		witnessed := waitWitnessed(t, d, victim, 30)

		// Stop node-4 cleanly; the rest of the cluster runs on.
		pid := d.pid(t, victim)
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		require.NoError(t, err)
		require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
		waitGone(t, pid)
		nodeDir := filepath.Join(d.dir, victim)
		db, err := pebble.Open(unumnode.Layout{Dir: nodeDir}.AuditDir(), &pebble.Options{Logger: quietPebble{}})
		require.NoError(t, err)
		entryKey := func(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'e'}, i) }

		// One flipped byte in entry 5's event.
		orig, closer, err := db.Get(entryKey(5))
		require.NoError(t, err)
		orig = bytes.Clone(orig)
		closer.Close()
		flipped := bytes.Clone(orig)
		flipped[len(flipped)-3] ^= 0x01
		require.NoError(t, db.Set(entryKey(5), flipped, pebble.Sync))
		require.NoError(t, db.Close())
		r = unum(t, []string{"UNUM_CONFIG="}, "audit", "verify", "--offline", nodeDir, "--keys", keys, "-o", "json")
		require.Equal(t, 1, r.code, r.stdout+r.stderr)
		var broken auditVerifyJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &broken), r.stdout)
		require.Len(t, broken.Nodes, 1)
		require.False(t, broken.Nodes[0].OK)
		require.NotNil(t, broken.Nodes[0].BadIndex, r.stdout)
		require.EqualValues(t, 5, *broken.Nodes[0].BadIndex, "the flipped entry")
		require.Equal(t, "hash chain broken at entry 5: the entry was altered", broken.Nodes[0].Problem)

		// Put it back (the check is of the bytes, not of a flag the
		// edit set), then cut the tail below the witnessed size.
		db, err = pebble.Open(unumnode.Layout{Dir: nodeDir}.AuditDir(), &pebble.Options{Logger: quietPebble{}})
		require.NoError(t, err)
		require.NoError(t, db.Set(entryKey(5), orig, pebble.Sync))
		require.NoError(t, db.Close())
		r = unum(t, []string{"UNUM_CONFIG="}, "audit", "verify", "--offline", nodeDir, "--keys", keys)
		require.Equal(t, 0, r.code, r.stdout+r.stderr)
		cut := witnessed - 5
		db, err = pebble.Open(unumnode.Layout{Dir: nodeDir}.AuditDir(), &pebble.Options{Logger: quietPebble{}})
		require.NoError(t, err)
		require.NoError(t, db.DeleteRange(entryKey(cut), []byte{'f'}, pebble.Sync))
		require.NoError(t, db.DeleteRange(binary.BigEndian.AppendUint64([]byte{'c'}, cut+1), []byte{'d'}, pebble.Sync))
		require.NoError(t, db.Close())

		// Started again, the node serves its cut log; verify compares it
		// with what the witness countersigned.
		restartNode(t, d, victim, cmdline)
		var v auditVerifyJSON
		require.Eventually(t, func() bool {
			r := unum(t, d.env, "audit", "verify", "--node", victim, "-o", "json")
			if json.Unmarshal([]byte(r.stdout), &v) != nil || len(v.Nodes) != 1 {
				return false
			}
			return r.code == 1 && !v.Nodes[0].OK && !strings.HasPrefix(v.Nodes[0].Problem, "no answer")
		}, 60*time.Second, 500*time.Millisecond, "verify never failed: %+v\n%s", &v, nodeLog(t, d, victim))
		require.Contains(t, v.Nodes[0].Problem, "witnessed checkpoint at size")
		// The witness refuses the cut log's checkpoints once it signs past
		// the witnessed size: an alert on the control plane.
		// node-4 submits them (the alert's subject); the reason names its
		// log and the witnessed checkpoint the cut one does not extend.
		ev := requireAudited(t, d, "checkpoint of "+victim, "--action", "audit.alert", "--outcome", "deny", "--subject", td+"/node/"+victim)
		require.Equal(t, "node/-/"+victim, ev.Resource)
		require.Contains(t, strings.Join(ev.Reasons, "\n"), "witnessed")
		t.Logf("witness alert: %v", ev.Reasons)
	})
	t.Logf("figure: attack suite ran in %s", time.Since(start).Round(100*time.Millisecond))
}

// requireStatus checks that err is the gRPC status code whose message
// contains want: the refusal of the check meant to stop the attack.
func requireStatus(t *testing.T, err error, code codes.Code, want string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), want)
}

// requireAudited waits until `unum audit query args` returns an event one
// of whose reasons contains want, and returns it.
func requireAudited(t *testing.T, d *devCluster, want string, args ...string) auditEventJSON {
	t.Helper()
	return awaitAudited(t, d, 1, fmt.Sprintf("an event with a reason containing %q", want), func(e auditEventJSON) bool {
		return reasonsContain(e, want)
	}, args...)[0]
}

// requireAuditedDetail is requireAudited for an event whose details hold
// key: value too.
func requireAuditedDetail(t *testing.T, d *devCluster, want, key, value string, args ...string) {
	t.Helper()
	awaitAudited(t, d, 1, fmt.Sprintf("an event with a reason containing %q and %s %s", want, key, value), func(e auditEventJSON) bool {
		return reasonsContain(e, want) && fmt.Sprint(e.Details[key]) == value
	}, args...)
}

// awaitAudited polls `unum audit query args` until at least n of the
// events it returns match (events are recorded after the call returns,
// on the node that decided), and returns those; what names them for the
// failure message.
func awaitAudited(t *testing.T, d *devCluster, n int, what string, match func(auditEventJSON) bool, args ...string) []auditEventJSON {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs := auditQuery(t, d, args...)
		var got []auditEventJSON
		for _, e := range evs {
			if match(e) {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit query %v: want %d of %s, got %d: %+v", args, n, what, len(got), evs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func reasonsContain(e auditEventJSON, want string) bool {
	return strings.Contains(strings.Join(e.Reasons, "\n"), want)
}

// workloadSVID is id's SVID from node's Workload API, as a workload there
// gets it.
func workloadSVID(t *testing.T, d *devCluster, node, id string) *x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+d.socket(node)))
		for _, s := range svids {
			if s.ID.String() == id {
				return s
			}
		}
		require.NoError(t, ctx.Err(), "no SVID for %s from the Workload API: %v", id, err)
		time.Sleep(200 * time.Millisecond)
	}
}

func mustCreds(t *testing.T, svid *x509svid.SVID, d *devCluster) *rpc.Credentials {
	t.Helper()
	_, roots := nodeSVID(t, d, "node-1")
	creds, err := rpc.NewCredentials(svid, roots)
	require.NoError(t, err)
	return creds
}

// dialAs dials the cluster's API at addrs with svid.
func dialAs(t *testing.T, svid *x509svid.SVID, d *devCluster, addrs []string) *grpc.ClientConn {
	t.Helper()
	cc, err := rpc.Dial(mustCreds(t, svid, d), addrs)
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

// svidCert is svid as a TLS client certificate.
func svidCert(svid *x509svid.SVID) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, cert := range svid.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c
}

// csrFor is a CSR with the given URI and DNS SANs.
func csrFor(t *testing.T, uris, dns []string) []byte {
	t.Helper()
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	tmpl := &x509.CertificateRequest{DNSNames: dns, Subject: pkix.Name{CommonName: "unum-control"}}
	for _, u := range uris {
		pu, err := url.Parse(u)
		require.NoError(t, err)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, crypto.Signer(key))
	require.NoError(t, err)
	return der
}

// clusterFingerprint is the root CA's fingerprint, as a join token
// carries it.
func clusterFingerprint(t *testing.T, d *devCluster) string {
	t.Helper()
	_, roots := nodeSVID(t, d, "node-1")
	require.NotEmpty(t, roots)
	return ca.Fingerprint(roots[0])
}

// latestRevision is the cluster's latest policy revision.
func latestRevision(t *testing.T, d *devCluster) int64 {
	t.Helper()
	r := unum(t, d.env, "policy", "status", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var st policyStatusJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	return st.Latest
}

// quietPebble keeps Pebble's recovery chatter out of test output. Its
// twin is node/audittamper_test.go's: test files of two packages, and
// Pebble exports no quiet logger.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// heldConn is a Workload API connection made by a netprobe child running
// as nobody, whose socket this test keeps: it outlives the child, or is
// served to the binary the child execs.
type heldConn struct {
	cmd   *exec.Cmd
	pid   int
	stdin interface{ Close() error }
	cc    *grpc.ClientConn
}

func heldConnection(t *testing.T, socket string, execArgs []string) *heldConn {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "held")
	defer f.Close()
	cmd := exec.Command(netprobeBin, append([]string{"connect", socket}, execArgs...)...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	b := make([]byte, 1)
	_, err = stdout.Read(b)
	require.NoError(t, err, "netprobe connect: %s", stderr.String())
	conn, err := net.FileConn(f)
	require.NoError(t, err)
	used := false
	cc, err := grpc.NewClient("passthrough:///held", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used {
				return nil, fmt.Errorf("the held connection is gone")
			}
			used = true
			return conn, nil
		}))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return &heldConn{cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, cc: cc}
}

// release lets the child exit (or exec).
func (h *heldConn) release() { _ = h.stdin.Close() }

// fetch asks for X509-SVIDs on the held connection.
func (h *heldConn) fetch() error {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"), 20*time.Second)
	defer cancel()
	s, err := workload.NewSpiffeWorkloadAPIClient(h.cc).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

// waitWitnessed waits until node's log is witnessed at a size above min,
// and returns that size.
func waitWitnessed(t *testing.T, d *devCluster, node string, min uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := unum(t, d.env, "audit", "verify", "--node", node, "-o", "json")
		var v auditVerifyJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), r.stdout+r.stderr)
		require.Len(t, v.Nodes, 1)
		require.True(t, v.Nodes[0].OK, v.Nodes[0].Problem)
		if v.Nodes[0].WitnessedSize > min {
			return v.Nodes[0].WitnessedSize
		}
		require.True(t, time.Now().Before(deadline), "%s never witnessed above %d: %s", node, min, r.stdout)
		// Reading the log is a recorded decision: the log grows.
		auditQuery(t, d, "--node", node, "--limit", "1")
		time.Sleep(500 * time.Millisecond)
	}
}

// restartNode starts node again with the command line it ran with (unum
// dev does not restart nodes), until the test ends, and waits until the
// cluster reports it ready.
//
// The node is a child of this test process that dies with it: started
// with PR_SET_PDEATHSIG from a goroutine locked to its OS thread (the
// signal follows the thread that forked, not the process, so that thread
// lives, waiting for the child, as long as the child does), in its own
// process group, as internal/devcluster starts nodes. A killed test
// binary therefore leaves no node holding ports, BPF pins or cgroups. When
// the test ends the node is stopped cleanly (SIGTERM, which removes its
// pins), and killed only if it does not stop.
func restartNode(t *testing.T, d *devCluster, node string, cmdline []byte) {
	t.Helper()
	var args []string
	all := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for i := 0; i < len(all); i++ {
		// Joined already: unum dev restarts its nodes without --join.
		if all[i] == "--join" {
			i++
			continue
		}
		args = append(args, all[i])
	}
	logf, err := os.OpenFile(filepath.Join(d.dir, node, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "UNUM_CONFIG=", "UNUM_ADDR=", "UNUM_JOIN_TOKEN=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	started, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread ends with this goroutine, once the
		// child is gone.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	require.NoError(t, <-started)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Logf("%s did not stop on SIGTERM within 30s: killed, its BPF pins may remain", node)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	require.Eventually(t, func() bool {
		r := unum(t, d.env, "node", "ls", "-o", "json")
		var out struct {
			Nodes []struct {
				Name  string `json:"name"`
				Ready bool   `json:"ready"`
			} `json:"nodes"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
			return false
		}
		for _, n := range out.Nodes {
			if n.Name == node {
				return n.Ready
			}
		}
		return false
	}, 60*time.Second, 500*time.Millisecond, "%s never ready again", node)
}

// nodeLog is the tail of node's log, for failure messages.
func nodeLog(t *testing.T, d *devCluster, node string) string {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(d.dir, node, "node.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
