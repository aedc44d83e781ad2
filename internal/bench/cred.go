package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
)

// Result names of the cred component.
const (
	ResultCredMint       = "cred_mint_e2e"
	ResultCredVerifyWarm = "cred_verify_warm"
	ResultCredVerifyCold = "cred_verify_cold"
	ResultCredRevocation = "cred_revocation_propagation"
)

const (
	credComponent = "cred"
	// The delegation issue's targets on the 2-core machine.
	credMintTarget       = 5000
	credVerifyTarget     = 20000
	credRevocationTarget = 2 * time.Second

	// credHolder is the workload every benchmark credential is delegated
	// to, by the admin user, for the unum API, with credScope: the one
	// action every principal may do (Identity.WhoAmI), so that the holder
	// needs no binding of its own and the delegated call is decided as the
	// intersection of the admin's and the workload's rights.
	credHolder = "spiffe://bench.local/ns/bench/job/cred"
	credScope  = "id.show:id/-/self"
	// credComputeNode is the compute-only node joined for the revocation
	// measurement: it has no etcd and learns revocations and credential
	// keys through its agent's streams from the control plane.
	credComputeNode = "node-2"

	// credRevocations is how many credentials the revocation measurement
	// mints, uses and revokes, one after another.
	credRevocations = 20
	// credVerifyBatch is how many verifications one timed operation of the
	// verify measurements makes: a warm verification takes about a
	// microsecond, so timing each would measure the clock.
	credVerifyBatch = 64
	// credColdTokens distinct tokens are cycled through by the cold
	// verification, and credRevokedOthers unrelated credentials are in the
	// revocation set both verifications check against.
	credColdTokens    = 1024
	credRevokedOthers = 1000
)

// RunCred benchmarks delegated credentials (issue 6): minting end to end
// through a one-node cluster started in a temporary folder, verification
// in this process (warm: the verifier's cache of verified signatures hit;
// cold: every signature checked), and revocation propagation to a control
// node and to a compute-only node.
func RunCred(ctx context.Context, o Options) (rep Report, err error) {
	conc := o.concurrency()
	progress := o.progressFunc(credComponent)
	rep = Report{Component: credComponent, Mode: "local", Settings: baseSettings(conc)}
	if o.Cluster != nil {
		return rep, errors.New("cred starts the cluster it measures; a cluster target does not apply")
	}
	mintWindow := max(o.duration(), minWindow)
	verifyWindow := max(o.duration()/4, minWindow)
	rep.Settings.Windows[ResultCredMint] = mintWindow.String()
	rep.Settings.Windows[ResultCredVerifyWarm] = verifyWindow.String()
	rep.Settings.Windows[ResultCredVerifyCold] = verifyWindow.String()
	x := rep.Settings.Extra
	x["trust_domain"] = svidTrustDomain
	x["etcd_heartbeat"] = svidEtcdHeartbeat.String()
	x["etcd_election"] = svidEtcdElection.String()
	x["holder"] = credHolder
	x["scope"] = credScope
	x["verify_batch"] = fmt.Sprint(credVerifyBatch)
	x["verify_revocation_set"] = fmt.Sprintf("%d entries", credRevokedOthers)
	x["revocations"] = fmt.Sprint(credRevocations)

	td := spiffeid.RequireTrustDomainFromString(svidTrustDomain)
	holder := spiffeid.RequireFromString(credHolder)

	// Verification runs first, before the node adds its background work:
	// it needs nothing from the node.
	procs := runtime.GOMAXPROCS(0)
	progress("verification in process: warm, then cold, %d goroutines, %s each", procs, verifyWindow)
	warm, cold, err := benchCredVerify(ctx, td, holder, verifyWindow)
	if err != nil {
		return rep, err
	}

	ln, err := startLocalNode(ctx, o.TempDir, o.logger(), progress)
	if err != nil {
		return rep, err
	}
	lc := &localCluster{first: ln}
	defer func() {
		progress("stopping the cluster")
		if serr := lc.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	rep.Filesystem = ln.fs
	adminCfg, err := clientconfig.Load(ln.layout.Admin())
	if err != nil {
		return rep, err
	}
	mint, checked, err := benchCredMint(ctx, o, adminCfg, ln, td, mintWindow, progress)
	if err != nil {
		return rep, err
	}
	x["issuance_records_checked"] = checked

	// The compute node joins after the mint window, which therefore
	// measures a one-node cluster as the svid benchmark does.
	if err := lc.join(ctx, o, credComputeNode, []string{"compute"}, progress); err != nil {
		return rep, err
	}
	rev, err := benchCredRevocation(ctx, ln, td, holder, progress)
	if err != nil {
		return rep, err
	}
	rep.Settings.Windows[ResultCredRevocation] = fmt.Sprintf("%.1fs", rev.Seconds)
	rep.Results = []Result{mint, warm, cold, rev}
	rep.Settings.LoadAverageEnd = loadAverage()
	return rep, nil
}

// delegateRequest is what the admin asks for in every measurement.
func delegateRequest(td spiffeid.TrustDomain) *unumv1.DelegateRequest {
	return &unumv1.DelegateRequest{To: credHolder, Audience: []string{identity.APIID(td).String()}, Scopes: []string{credScope}}
}

// benchCredMint has conc admin clients, each with its own mutual-TLS
// connection, call Credentials.Delegate in a loop. Each call is decided by
// the policy (a privileged decision, recorded durably in the audit log
// before the handler runs), signed, and its issuance recorded durably
// before the token is returned: two durable audit records per mint. After
// the window each client's last issuance record is read back from the log
// with an inclusion proof, and the decision it names found there too.
func benchCredMint(ctx context.Context, o Options, cfg *clientconfig.Config, ln *localNode, td spiffeid.TrustDomain, window time.Duration, progress func(string, ...any)) (Result, string, error) {
	conc := o.concurrency()
	conns := make([]*grpc.ClientConn, 0, conc)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	clients := make([]unumv1.CredentialsClient, conc)
	reqs := make([]*unumv1.DelegateRequest, conc)
	last := make([]*unumv1.DelegateResponse, conc)
	for i := range conc {
		creds, err := cfg.Credentials()
		if err != nil {
			return Result{}, "", err
		}
		cc, err := rpc.Dial(creds, []string{ln.ports.API})
		if err != nil {
			return Result{}, "", err
		}
		conns = append(conns, cc)
		clients[i] = unumv1.NewCredentialsClient(cc)
		reqs[i] = delegateRequest(td)
	}
	mint := func(ctx context.Context, w int) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := clients[w].Delegate(cctx, reqs[w])
		if err != nil {
			return err
		}
		if resp.GetToken() == "" || resp.GetEventId() == "" {
			return errors.New("delegate returned no token or no issuance record")
		}
		last[w] = resp
		return nil
	}
	// One call per connection first: the mutual-TLS handshakes are not
	// what is measured, and a refusal shows here with its reason. A
	// control node answers Unavailable until its credential keys are
	// published (the first second of its life): wait for that.
	for i := range conc {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := mint(ctx, i)
			if err == nil {
				break
			}
			if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
				return Result{}, "", fmt.Errorf("delegate (warm-up): %w", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	progress("minting: %d mutual-TLS admin clients for %s", conc, window)
	stopProfile := startProfile(o, progress)
	s := measure(ctx, conc, window, true, mint)
	stopProfile()
	if err := ctx.Err(); err != nil {
		return Result{}, "", err
	}
	r, err := s.result(ResultCredMint,
		fmt.Sprintf("delegated credentials minted per second end to end: %d admin clients, each its own mutual-TLS gRPC connection, calling Credentials.Delegate (to %s, one scope, audience the unum API) on a 1-node cluster in this process; each mint is a privileged policy decision recorded durably in the audit log, then signed, then its issuance recorded durably, before the token returns", conc, credHolder),
		conc, true)
	if err != nil {
		return r, "", err
	}
	r.setTarget(fmt.Sprintf(">= %d/s", credMintTarget), r.OpsPerSec >= credMintTarget)
	progress("reading back %d issuance records and their decisions from the audit log", conc)
	if err := checkIssuances(ctx, ln.admin, last); err != nil {
		return r, "", err
	}
	return r, fmt.Sprintf("%d of %d (each client's last mint: issuance record with inclusion proof, and its decision)", conc, conc), nil
}

// checkIssuances reads each response's issuance record back from the audit
// log with its inclusion proof, checks it is the allowed mint of that
// credential, and finds the decision it names: the benchmark's mints were
// recorded, not just answered.
func checkIssuances(ctx context.Context, admin *grpc.ClientConn, resps []*unumv1.DelegateResponse) error {
	ac := unumv1.NewAuditClient(admin)
	for _, resp := range resps {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		proof, err := ac.Proof(cctx, &unumv1.AuditProofRequest{EventId: resp.GetEventId()})
		cancel()
		if err != nil {
			return fmt.Errorf("issuance record %s of credential %s: %w", resp.GetEventId(), resp.GetJti(), err)
		}
		e, err := audit.DecodeEvent(proof.GetEvent())
		if err != nil {
			return fmt.Errorf("issuance record %s: %w", resp.GetEventId(), err)
		}
		if e.Action != audit.ActionCredMint || e.Outcome != audit.Allow || len(e.Creds) == 0 || e.Creds[0] != resp.GetJti() || e.DecisionID == "" {
			return fmt.Errorf("issuance record %s is not the mint of credential %s: %s %s, creds %v, decision %q", e.ID, resp.GetJti(), e.Action, e.Outcome, e.Creds, e.DecisionID)
		}
		if err := findDecision(ctx, ac, e); err != nil {
			return err
		}
	}
	return nil
}

// findDecision finds the allowed cred.delegate decision that an issuance
// record names, in the audit log around the issuance.
func findDecision(ctx context.Context, ac unumv1.AuditClient, mint *audit.Event) error {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// The newest match, scanning back from the end: the decision was
	// recorded just before the issuance, near the end of the log.
	stream, err := ac.Query(cctx, &unumv1.AuditQueryRequest{Limit: 1, Tail: true, Filter: &unumv1.AuditFilter{
		DecisionId:    mint.DecisionID,
		Kind:          string(audit.KindAuthz),
		SinceUnixNano: mint.Time.Add(-time.Minute).UnixNano(),
		UntilUnixNano: mint.Time.Add(time.Minute).UnixNano(),
	}})
	if err != nil {
		return fmt.Errorf("query decision %s: %w", mint.DecisionID, err)
	}
	for {
		batch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("decision %s of issuance %s is not in the audit log", mint.DecisionID, mint.ID)
		}
		if err != nil {
			return fmt.Errorf("query decision %s: %w", mint.DecisionID, err)
		}
		for _, raw := range batch.GetEvents() {
			d, err := audit.DecodeEvent(raw)
			if err != nil {
				return err
			}
			if d.Action != "cred.delegate" || d.Outcome != audit.Allow || !d.Privileged {
				return fmt.Errorf("decision %s of issuance %s is %s %s (privileged %t), want an allowed privileged cred.delegate", d.DecisionID, mint.ID, d.Action, d.Outcome, d.Privileged)
			}
			return nil
		}
	}
}

// benchCredVerify measures delegation.Verifier.Verify as a node's API calls
// it (the node's audience, its bound on actors), in this process with a real
// keyring, its published keys and a loaded revocation view holding
// credRevokedOthers unrelated revocations, on GOMAXPROCS goroutines. Warm:
// the same token every time, so its signature and structure come from the
// verifier's cache and time, revocation, audience and holder are checked.
// Cold: credColdTokens distinct tokens in turn with the cache disabled, so
// every verification also checks the ES256 signature and parses the token.
func benchCredVerify(ctx context.Context, td spiffeid.TrustDomain, holder spiffeid.ID, window time.Duration) (warm, cold Result, err error) {
	now := time.Now()
	ring, err := delegation.NewKeyring(now)
	if err != nil {
		return warm, cold, err
	}
	iss, err := delegation.NewIssuer(td, ring, nil)
	if err != nil {
		return warm, cold, err
	}
	jwks, err := ring.PublicJWKS()
	if err != nil {
		return warm, cold, err
	}
	keys, err := delegation.ParsePublicKeys(map[string][]byte{svidNodeName: jwks})
	if err != nil {
		return warm, cold, err
	}
	view := revocation.NewView(revocation.DefaultBound, time.Now)
	revoked := make([]revocation.Entry, credRevokedOthers)
	for i := range revoked {
		revoked[i] = revocation.Entry{ID: delegation.RevocationKeyJTI(delegation.NewJTI()), Before: now.Add(revocation.ClockSkewAllowance), RevokedAt: now}
	}
	view.Update(revocation.NewSet(revoked, revocation.Window{}, 1), now)

	// The holder's certificate, from a CA as a node's agent gets it.
	auth, err := newAuthority(td)
	if err != nil {
		return warm, cold, err
	}
	key, err := ca.GenerateKey()
	if err != nil {
		return warm, cold, err
	}
	csr, err := ca.CreateCSR(key, holder)
	if err != nil {
		return warm, cold, err
	}
	chain, err := auth.SignX509SVID(csr, holder, time.Hour)
	if err != nil {
		return warm, cold, err
	}
	admin, err := identity.UserID(td, "admin")
	if err != nil {
		return warm, cold, err
	}
	nodeID, err := identity.NodeID(td, svidNodeName)
	if err != nil {
		return warm, cold, err
	}
	scopes, err := delegation.ParseScopes([]string{credScope})
	if err != nil {
		return warm, cold, err
	}
	tokens := make([]string, credColdTokens)
	for i := range tokens {
		c, err := iss.Plan(delegation.Request{Caller: admin, Holder: holder, Audience: []spiffeid.ID{identity.APIID(td)}, Scopes: scopes})
		if err != nil {
			return warm, cold, err
		}
		if tokens[i], err = iss.Sign(c); err != nil {
			return warm, cold, err
		}
	}
	audience := []spiffeid.ID{identity.APIID(td), nodeID}
	present := func(tok string) delegation.Presentation {
		return delegation.Presentation{Token: tok, Peer: chain[0], Audience: audience, MaxDepth: delegation.MaxDepth}
	}
	warmV, err := delegation.NewVerifier(delegation.VerifierConfig{TrustDomain: td, Keys: keys, Revocations: view})
	if err != nil {
		return warm, cold, err
	}
	coldV, err := delegation.NewVerifier(delegation.VerifierConfig{TrustDomain: td, Keys: keys, Revocations: view, CacheSize: -1})
	if err != nil {
		return warm, cold, err
	}
	// Prime the warm cache, and make sure a verification succeeds at all.
	if _, err := warmV.Verify(present(tokens[0])); err != nil {
		return warm, cold, fmt.Errorf("verify the benchmark's own credential: %w", err)
	}
	procs := runtime.GOMAXPROCS(0)
	warmOp := func(_ context.Context, _ int) error {
		p := present(tokens[0])
		for range credVerifyBatch {
			if _, err := warmV.Verify(p); err != nil {
				return err
			}
		}
		return nil
	}
	next := make([]int, procs)
	coldOp := func(_ context.Context, w int) error {
		for range credVerifyBatch {
			// Each goroutine walks its own stride of the tokens.
			i := (w + next[w]*procs) % len(tokens)
			next[w]++
			if _, err := coldV.Verify(present(tokens[i])); err != nil {
				return err
			}
		}
		return nil
	}
	const desc = "delegation.Verifier.Verify in process (real keyring and published keys, a loaded revocation view, the node API's audience and holder check), %d goroutines (GOMAXPROCS), %d verifications per timed batch; "
	ws := measure(ctx, procs, window, false, warmOp)
	ws.ops *= credVerifyBatch
	if warm, err = ws.result(ResultCredVerifyWarm, fmt.Sprintf(desc, procs, credVerifyBatch)+"warm: the same token each time, its signature and structure from the verifier's cache; time, revocation, audience and holder checked every time", procs, false); err != nil {
		return warm, cold, err
	}
	warm.setTarget(fmt.Sprintf(">= %d/s", credVerifyTarget), warm.OpsPerSec >= credVerifyTarget)
	cs := measure(ctx, procs, window, false, coldOp)
	cs.ops *= credVerifyBatch
	if cold, err = cs.result(ResultCredVerifyCold, fmt.Sprintf(desc, procs, credVerifyBatch)+fmt.Sprintf("cold: %d distinct tokens in turn, cache disabled, so every one is parsed and its ES256 signature checked", credColdTokens), procs, false); err != nil {
		return warm, cold, err
	}
	cold.setTarget(fmt.Sprintf(">= %d/s (every signature checked)", credVerifyTarget), cold.OpsPerSec >= credVerifyTarget)
	return warm, cold, ctx.Err()
}

// benchCredRevocation measures, credRevocations times one after another,
// how long a revoked credential keeps working: the admin mints a credential
// for the holder workload, the workload uses it (a delegated WhoAmI) on
// every node's API over open mutual-TLS connections with its SVID from the
// agent, the admin revokes it (Credentials.Revoke, by jti), and every node
// is polled on its connection until it refuses the call as revoked. A
// sample is from the start of the Revoke call until the last node refused.
func benchCredRevocation(ctx context.Context, ln *localNode, td spiffeid.TrustDomain, holder spiffeid.ID, progress func(string, ...any)) (Result, error) {
	idc := unumv1.NewIdentityClient(ln.admin)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	entry, err := idc.CreateEntry(cctx, &unumv1.CreateEntryRequest{SpiffeId: holder.String(), Node: svidNodeName, Selectors: []string{uidSelector()}})
	cancel()
	if err != nil {
		return Result{}, fmt.Errorf("register the holder: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
		defer cancel()
		_, _ = idc.DeleteEntry(dctx, &unumv1.DeleteEntryRequest{Id: entry.GetId()})
	}()
	socket := "unix://" + ln.layout.Socket()
	svids, err := waitSVIDs(ctx, socket, []string{holder.String()})
	if err != nil {
		return Result{}, err
	}
	bundles, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(socket))
	if err != nil {
		return Result{}, err
	}
	bundle, err := bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		return Result{}, err
	}
	creds, err := rpc.NewCredentials(svids[holder.String()], bundle.X509Authorities())
	if err != nil {
		return Result{}, err
	}
	nodes, err := unumv1.NewClusterClient(ln.admin).ListNodes(ctx, &unumv1.ListNodesRequest{})
	if err != nil {
		return Result{}, err
	}
	var names []string
	var conns []unumv1.IdentityClient
	for _, n := range nodes.GetNodes() {
		// Each node's own API, authorized by its exact identity: a
		// compute node is not a control node to rpc.Dial.
		id, err := identity.NodeID(td, n.GetName())
		if err != nil {
			return Result{}, err
		}
		cc, err := rpc.DialNode(creds, id, n.GetApiAddress())
		if err != nil {
			return Result{}, err
		}
		defer cc.Close()
		names = append(names, fmt.Sprintf("%s (%s)", n.GetName(), strings.Join(n.GetRoles(), "+")))
		conns = append(conns, unumv1.NewIdentityClient(cc))
	}
	progress("minting, using and revoking %d credentials one by one; each checked on %s", credRevocations, strings.Join(names, ", "))
	cc := unumv1.NewCredentialsClient(ln.admin)
	lat := make([]time.Duration, 0, credRevocations)
	start := time.Now()
	for i := range credRevocations {
		d, err := revokeCredential(ctx, cc, td, conns, names)
		if err != nil {
			return Result{}, fmt.Errorf("revocation %d: %w", i, err)
		}
		lat = append(lat, d)
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	r := Result{
		Name: ResultCredRevocation,
		Description: fmt.Sprintf("Credentials.Revoke call start -> every one of %d nodes (%s) refuses the revoked credential, presented by its holder in a delegated WhoAmI over an open mutual-TLS connection; the control node learns it from its etcd watch, the compute node from the control plane's revocation stream",
			len(conns), strings.Join(names, ", ")),
		Clients: 1, Seconds: math.Round(elapsed.Seconds()*100) / 100, Ops: int64(len(lat)), OpsPerSec: math.Round(float64(len(lat))/elapsed.Seconds()*10) / 10,
		P50us: micros(percentile(lat, 0.50)), P90us: micros(percentile(lat, 0.90)),
		P99us: micros(percentile(lat, 0.99)), MaxUs: micros(percentile(lat, 1)),
	}
	r.setTarget(fmt.Sprintf("max <= %s", credRevocationTarget), percentile(lat, 1) <= credRevocationTarget)
	progress("p50 %s, max %s", percentile(lat, 0.50), percentile(lat, 1))
	return r, nil
}

// revokeCredential mints one credential for the holder, waits until every
// connection's node accepts it, revokes it, and returns how long until the
// last node refused it as revoked.
func revokeCredential(ctx context.Context, cc unumv1.CredentialsClient, td spiffeid.TrustDomain, conns []unumv1.IdentityClient, names []string) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	resp, err := cc.Delegate(cctx, delegateRequest(td))
	cancel()
	if err != nil {
		return 0, fmt.Errorf("delegate: %w", err)
	}
	use := rpc.WithDelegation(ctx, resp.GetToken())
	for i, c := range conns {
		// A node that has not yet got the signing keys (a compute node
		// just joined) refuses at first: wait until every node accepts.
		wctx, cancel := context.WithTimeout(use, warmupTimeout)
		accepted, last := false, errors.New("no answer")
		for !accepted && wctx.Err() == nil {
			_, err := c.WhoAmI(wctx, &unumv1.WhoAmIRequest{})
			if accepted = err == nil; !accepted && wctx.Err() == nil {
				last = err // the reason, not the deadline's
				time.Sleep(10 * time.Millisecond)
			}
		}
		cancel()
		if !accepted {
			return 0, fmt.Errorf("credential %s not accepted by %s within %s before its revocation: %w", resp.GetJti(), names[i], warmupTimeout, last)
		}
	}
	start := time.Now()
	cctx, cancel = context.WithTimeout(ctx, callTimeout)
	_, err = cc.Revoke(cctx, &unumv1.RevokeCredentialsRequest{Jti: resp.GetJti(), Reason: "unum bench cred"})
	cancel()
	if err != nil {
		return 0, fmt.Errorf("revoke %s: %w", resp.GetJti(), err)
	}
	pctx, pcancel := context.WithTimeout(use, 30*time.Second)
	defer pcancel()
	var mu sync.Mutex
	var worst time.Duration
	var errs []error
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			for {
				_, err := c.WhoAmI(pctx, &unumv1.WhoAmIRequest{})
				if err == nil {
					continue
				}
				d := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case status.Code(err) == codes.Unauthenticated && strings.Contains(err.Error(), "revoked"):
					worst = max(worst, d)
				case pctx.Err() != nil:
					errs = append(errs, fmt.Errorf("credential %s still accepted %s after its revocation", resp.GetJti(), d.Round(time.Millisecond)))
				default:
					errs = append(errs, fmt.Errorf("credential %s: a call failed otherwise than as revoked: %w", resp.GetJti(), err))
				}
				return
			}
		})
	}
	wg.Wait()
	return worst, errors.Join(errs...)
}
