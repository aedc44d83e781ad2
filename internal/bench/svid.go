package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/node"
)

// Result names of the svid component.
const (
	ResultIssuanceE2E   = "x509_svid_issuance_e2e"
	ResultCoreSingle    = "x509_svid_sign_core_1"
	ResultCoreParallel  = "x509_svid_sign_core_gomaxprocs"
	ResultFetchX509     = "workload_api_x509_fetch_new_conn"
	ResultFetchJWTFresh = "workload_api_jwt_fetch_new_audience"
	ResultPropagation   = "registration_to_svid"
)

const (
	svidComponent   = "svid"
	svidTrustDomain = "bench.local"
	svidNodeName    = "node-1"
	svidWorkloadID  = "spiffe://bench.local/ns/bench/job/svid"

	// Relaxed etcd timings, as unum dev uses: the benchmark saturates both
	// cores, and a starved heartbeat must not cause an election mid-run.
	svidEtcdHeartbeat = 250 * time.Millisecond
	svidEtcdElection  = 2500 * time.Millisecond

	issuanceTargetOps = 3000
	fetchP99Target    = 2 * time.Millisecond
	// A registration takes effect on its node within 1 s.
	propagationTarget = time.Second

	readyTimeout  = 60 * time.Second
	warmupTimeout = 30 * time.Second
	callTimeout   = 10 * time.Second
	stopTimeout   = 30 * time.Second
)

// svidWindows split the run: by default (7 s issuance) about 3 s of setup,
// 7 s of end-to-end issuance, 1.75 s of bare signing core (half with one
// goroutine, half with GOMAXPROCS), 3.5 s of fetches and 1 s of
// registration-to-SVID measurements: under 20 s in all.
type svidWindows struct {
	issuance, coreEach, fetch, propagation time.Duration
}

// minWindow keeps every measurement long enough to complete an operation.
const minWindow = 20 * time.Millisecond

func svidWindowsFor(d time.Duration) svidWindows {
	return svidWindows{issuance: max(d, minWindow), coreEach: max(d/8, minWindow), fetch: max(d/2, minWindow), propagation: max(d/7, minWindow)}
}

// RunSVID benchmarks X509-SVID issuance and the Workload API.
//
// Without o.Cluster it measures, on a one-node cluster it starts in a
// temporary folder: end-to-end issuance (o.Concurrency mutual-TLS clients
// acting as node agents, each calling Identity.MintX509SVID in a loop: the
// server checks the CSR, confirms the entry with a linearizable batched
// etcd read and signs), the bare signing core beside it (VerifyCSR +
// SignX509SVID, no I/O, 1 and GOMAXPROCS goroutines), and Workload API fetch
// latency over a new connection with an unmodified go-spiffe client.
//
// With o.Cluster it registers an entry for this process's uid on the named
// node of the running cluster, measures fetch latency through that node's
// agent and JWT-SVID fetches per second with a fresh audience per call, and
// deletes the entry.
func RunSVID(ctx context.Context, o Options) (Report, error) {
	if o.Cluster != nil {
		return runSVIDCluster(ctx, o)
	}
	return runSVIDLocal(ctx, o)
}

func runSVIDLocal(ctx context.Context, o Options) (rep Report, err error) {
	w := svidWindowsFor(o.duration())
	conc := o.concurrency()
	log := o.logger()
	progress := o.progressFunc(svidComponent)

	rep = Report{Component: svidComponent, Mode: "local", Settings: baseSettings(conc)}
	rep.Settings.Windows[ResultIssuanceE2E] = w.issuance.String()
	rep.Settings.Windows[ResultCoreSingle] = w.coreEach.String()
	rep.Settings.Windows[ResultCoreParallel] = w.coreEach.String()
	rep.Settings.Windows[ResultFetchX509] = w.fetch.String()
	rep.Settings.Extra["trust_domain"] = svidTrustDomain
	rep.Settings.Extra["etcd_heartbeat"] = svidEtcdHeartbeat.String()
	rep.Settings.Extra["etcd_election"] = svidEtcdElection.String()
	rep.Settings.Extra["svid_ttl"] = time.Hour.String()

	// The bare core runs first, before the node adds its background work,
	// with an Authority of its own: it needs nothing from the node.
	progress("bare signing core: 1 goroutine, then %d, %s each", runtime.GOMAXPROCS(0), w.coreEach)
	single, parallel, err := benchSignCore(ctx, w.coreEach)
	if err != nil {
		return rep, err
	}

	setupStart := time.Now()
	ln, err := startLocalNode(ctx, o.TempDir, log, progress)
	if err != nil {
		return rep, err
	}
	defer func() {
		progress("stopping the node")
		if serr := ln.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	rep.Filesystem = ln.fs
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	entry, err := unumv1.NewIdentityClient(ln.admin).CreateEntry(cctx, &unumv1.CreateEntryRequest{
		SpiffeId: svidWorkloadID, Node: svidNodeName, Selectors: []string{uidSelector()},
	})
	cancel()
	if err != nil {
		return rep, fmt.Errorf("register entry: %w", err)
	}
	progress("node ready in %.1fs; entry %s registered for %s", time.Since(setupStart).Seconds(), entry.GetId(), uidSelector())

	issuance, err := benchIssuance(ctx, o, ln.layout, ln.ports.API, entry, w.issuance, progress)
	if err != nil {
		return rep, err
	}
	issuance.setTarget(fmt.Sprintf(">= %d/s", issuanceTargetOps), issuance.OpsPerSec >= issuanceTargetOps)

	want, err := spiffeid.FromString(svidWorkloadID)
	if err != nil {
		return rep, err
	}
	fetch, err := benchFetchX509(ctx, "unix://"+ln.layout.Socket(), want, w.fetch, progress)
	if err != nil {
		return rep, err
	}
	rep.Settings.Windows[ResultPropagation] = w.propagation.String()
	prop, err := benchPropagation(ctx, ln.admin, "unix://"+ln.layout.Socket(), w.propagation, progress)
	if err != nil {
		return rep, err
	}
	rep.Results = []Result{issuance, single, parallel, fetch, prop}
	rep.Settings.LoadAverageEnd = loadAverage()
	return rep, nil
}

// benchPropagation measures how long a new registration takes to become an
// SVID a workload can fetch on its node: from the start of the admin's
// CreateEntry call until a go-spiffe fetch over a new connection returns the
// new identity (etcd write, watch, sync stream, agent minting through the
// CA). One registration after another; the entries are deleted afterwards.
func benchPropagation(ctx context.Context, admin *grpc.ClientConn, addr string, window time.Duration, progress func(string, ...any)) (Result, error) {
	progress("measuring registration -> fetchable svid for %s", window)
	ic := unumv1.NewIdentityClient(admin)
	var created []string
	defer func() {
		for _, id := range created {
			dctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			_, _ = ic.DeleteEntry(dctx, &unumv1.DeleteEntryRequest{Id: id})
			cancel()
		}
	}()
	seq := 0
	op := func(ctx context.Context, _ int) error {
		seq++
		id, err := spiffeid.FromString(fmt.Sprintf("spiffe://%s/ns/bench/job/prop-%d", svidTrustDomain, seq))
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		e, err := ic.CreateEntry(cctx, &unumv1.CreateEntryRequest{SpiffeId: id.String(), Node: svidNodeName, Selectors: []string{uidSelector()}})
		if err != nil {
			return err
		}
		created = append(created, e.GetId())
		for {
			if err := fetchHas(cctx, addr, id); err == nil {
				return nil
			}
			select {
			case <-cctx.Done():
				return fmt.Errorf("%s not served within %s", id, callTimeout)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	s := measure(ctx, 1, window, true, op)
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	r, err := s.result(ResultPropagation,
		"registration to fetchable SVID on its node: CreateEntry, then go-spiffe fetches (new connection, 5 ms apart) until the new ID is served",
		1, true)
	if err != nil {
		return r, err
	}
	r.setTarget(fmt.Sprintf("p99 <= %s", propagationTarget), r.P99us <= micros(propagationTarget))
	return r, nil
}

func runSVIDCluster(ctx context.Context, o Options) (rep Report, err error) {
	t := o.Cluster
	if t.Socket == "" || t.Node == "" {
		return rep, errors.New("measuring a cluster needs the socket of a local agent and the name of its node")
	}
	w := svidWindowsFor(o.duration())
	conc := o.concurrency()
	progress := o.progressFunc(svidComponent)
	rep = Report{Component: svidComponent, Mode: "cluster", Settings: baseSettings(conc)}
	rep.Settings.Windows[ResultFetchX509] = w.fetch.String()
	rep.Settings.Windows[ResultFetchJWTFresh] = w.fetch.String()
	rep.Settings.Extra["node"] = t.Node

	socketPath := strings.TrimPrefix(t.Socket, "unix://")
	// The agent socket sits in the node's data folder (DIR/public), so its
	// filesystem is the node's.
	if rep.Filesystem, err = DescribeFilesystem(filepath.Dir(socketPath)); err != nil {
		return rep, err
	}
	cfg, err := clientconfig.Load(t.ConfigPath)
	if err != nil {
		return rep, err
	}
	admin, closeAdmin, err := adminClient(cfg, cfg.Addresses)
	if err != nil {
		return rep, err
	}
	defer closeAdmin()
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return rep, fmt.Errorf("client config: %w", err)
	}
	rep.Settings.Extra["trust_domain"] = td.Name()
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return rep, err
	}
	// A name of its own, so that concurrent runs and leftovers never collide.
	want, err := spiffeid.FromSegments(td, "ns", "bench", "job", "svid-"+hex.EncodeToString(suffix[:]))
	if err != nil {
		return rep, err
	}
	idc := unumv1.NewIdentityClient(admin)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	entry, err := idc.CreateEntry(cctx, &unumv1.CreateEntryRequest{SpiffeId: want.String(), Node: t.Node, Selectors: []string{uidSelector()}})
	cancel()
	if err != nil {
		return rep, fmt.Errorf("register entry on node %s: %w", t.Node, err)
	}
	progress("registered entry %s (%s) on node %s for %s", entry.GetId(), want, t.Node, uidSelector())
	defer func() {
		// Delete even when ctx was cancelled (Ctrl-C): leave nothing behind.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
		defer cancel()
		if _, derr := idc.DeleteEntry(dctx, &unumv1.DeleteEntryRequest{Id: entry.GetId()}); derr != nil {
			if err == nil {
				err = fmt.Errorf("delete registration entry %s: %w", entry.GetId(), derr)
			}
			return
		}
		progress("deleted entry %s", entry.GetId())
	}()

	addr := "unix://" + socketPath
	stopProfile := startProfile(o, progress)
	defer stopProfile()
	fetch, err := benchFetchX509(ctx, addr, want, w.fetch, progress)
	if err != nil {
		return rep, err
	}
	jwt, err := benchFetchJWT(ctx, addr, conc, w.fetch, progress)
	if err != nil {
		return rep, err
	}
	rep.Results = []Result{fetch, jwt}
	rep.Settings.LoadAverageEnd = loadAverage()
	return rep, nil
}

// benchSignCore measures what the Identity service does per X509-SVID
// without any I/O: ca.VerifyCSR, then Authority.SignX509SVID (which checks
// the CSR again, as the server's MintX509SVID does), with one goroutine and
// with GOMAXPROCS goroutines.
func benchSignCore(ctx context.Context, window time.Duration) (single, parallel Result, err error) {
	td, err := spiffeid.TrustDomainFromString(svidTrustDomain)
	if err != nil {
		return single, parallel, err
	}
	id, err := spiffeid.FromString(svidWorkloadID)
	if err != nil {
		return single, parallel, err
	}
	auth, err := newAuthority(td)
	if err != nil {
		return single, parallel, err
	}
	procs := runtime.GOMAXPROCS(0)
	csrs, err := makeCSRs(id, procs)
	if err != nil {
		return single, parallel, err
	}
	op := func(_ context.Context, w int) error {
		if _, err := ca.VerifyCSR(csrs[w], id); err != nil {
			return err
		}
		_, err := auth.SignX509SVID(csrs[w], id, time.Hour)
		return err
	}
	const desc = "bare signing core, not end to end: ca.VerifyCSR + Authority.SignX509SVID in a loop, no I/O"
	single, err = measure(ctx, 1, window, false, op).result(ResultCoreSingle, desc+", 1 goroutine", 1, false)
	if err != nil {
		return single, parallel, err
	}
	parallel, err = measure(ctx, procs, window, false, op).result(ResultCoreParallel, desc+fmt.Sprintf(", %d goroutines (GOMAXPROCS)", procs), procs, false)
	return single, parallel, err
}

// newAuthority is a CA of its own for in-process measurements: a root and
// a node's intermediate, as node.Init makes them.
func newAuthority(td spiffeid.TrustDomain) (*ca.Authority, error) {
	now := time.Now()
	rootKey, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	root, err := ca.NewRoot(td, rootKey, now, node.RootTTL)
	if err != nil {
		return nil, err
	}
	interKey, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	inter, err := ca.NewIntermediate(td, svidNodeName, interKey.Public(), root, rootKey, now, node.IntermediateTTL)
	if err != nil {
		return nil, err
	}
	return ca.New(td, inter, interKey, nil, time.Now)
}

func makeCSRs(id spiffeid.ID, n int) ([][]byte, error) {
	out := make([][]byte, n)
	for i := range out {
		key, err := ca.GenerateKey()
		if err != nil {
			return nil, err
		}
		if out[i], err = ca.CreateCSR(key, id); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// benchIssuance acts as conc node agents: each has its own mutual-TLS
// connection with the node's SVID and calls MintX509SVID in a loop with a
// CSR made beforehand, so client-side key generation is not measured.
func benchIssuance(ctx context.Context, o Options, l node.Layout, api string, entry *unumv1.Entry, window time.Duration, progress func(string, ...any)) (Result, error) {
	conc := o.concurrency()
	creds, err := nodeCredentials(l)
	if err != nil {
		return Result{}, err
	}
	id, err := spiffeid.FromString(entry.GetSpiffeId())
	if err != nil {
		return Result{}, err
	}
	csrs, err := makeCSRs(id, conc)
	if err != nil {
		return Result{}, err
	}
	conns := make([]*grpc.ClientConn, 0, conc)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	clients := make([]unumv1.IdentityClient, conc)
	reqs := make([]*unumv1.MintX509SVIDRequest, conc)
	for i := range conc {
		cc, err := rpc.Dial(creds, []string{api})
		if err != nil {
			return Result{}, err
		}
		conns = append(conns, cc)
		clients[i] = unumv1.NewIdentityClient(cc)
		reqs[i] = &unumv1.MintX509SVIDRequest{EntryId: entry.GetId(), SpiffeId: entry.GetSpiffeId(), Csr: csrs[i]}
	}
	mint := func(ctx context.Context, w int) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := clients[w].MintX509SVID(cctx, reqs[w])
		if err != nil {
			return err
		}
		if len(resp.GetChain()) == 0 {
			return errors.New("empty certificate chain")
		}
		return nil
	}
	// One call per connection first: the mutual-TLS handshakes are not
	// what is measured, and a refusal shows here with its reason.
	for i := range conc {
		if err := mint(ctx, i); err != nil {
			return Result{}, fmt.Errorf("mint x509-svid (warm-up): %w", err)
		}
	}
	progress("end-to-end issuance: %d mutual-TLS clients for %s", conc, window)
	stopProfile := startProfile(o, progress)
	s := measure(ctx, conc, window, true, mint)
	stopProfile()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	return s.result(ResultIssuanceE2E,
		fmt.Sprintf("X509-SVIDs issued per second end to end: %d node-agent clients, each its own mutual-TLS gRPC connection, calling Identity.MintX509SVID (CSR check, linearizable batched etcd entry read, signing) on a 1-node cluster in this process", conc),
		conc, true)
}

// startProfile starts the CPU profile o asks for and returns what stops
// it (idempotent).
func startProfile(o Options, progress func(string, ...any)) func() {
	if o.CPUProfile == nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(o.CPUProfile); err != nil {
		progress("cpu profile not taken: %v", err)
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(pprof.StopCPUProfile) }
}

// benchFetchX509 waits until the agent at addr serves want to this process,
// then measures sequential fetches, each over a new connection: what a
// workload starting up does with an unmodified go-spiffe client.
func benchFetchX509(ctx context.Context, addr string, want spiffeid.ID, window time.Duration, progress func(string, ...any)) (Result, error) {
	progress("waiting for the agent at %s to serve %s", addr, want)
	start := time.Now()
	if err := waitForSVID(ctx, addr, want); err != nil {
		return Result{}, err
	}
	progress("agent served %s after %.1fs; measuring fetches over new connections for %s", want, time.Since(start).Seconds(), window)
	fetch := func(ctx context.Context, _ int) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		c, err := workloadapi.New(cctx, workloadapi.WithAddr(addr))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.FetchX509SVID(cctx)
		return err
	}
	s := measure(ctx, 1, window, true, fetch)
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	r, err := s.result(ResultFetchX509,
		"Workload API X509-SVID fetch over a new connection, sequential: workloadapi.New + FetchX509SVID + Close with go-spiffe v2, latency of all three",
		1, true)
	if err != nil {
		return r, err
	}
	r.setTarget(fmt.Sprintf("p99 <= %s", fetchP99Target), r.P99us <= micros(fetchP99Target))
	return r, nil
}

// waitForSVID polls until a fetch from addr returns want: the agent mints
// in the background once the entry has reached it.
func waitForSVID(ctx context.Context, addr string, want spiffeid.ID) error {
	ctx, cancel := context.WithTimeout(ctx, warmupTimeout)
	defer cancel()
	var last error
	for {
		last = fetchHas(ctx, addr, want)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the agent at %s did not serve %s within %s: %w", addr, want, warmupTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func fetchHas(ctx context.Context, addr string, want spiffeid.ID) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(cctx, workloadapi.WithAddr(addr))
	if err != nil {
		return err
	}
	for _, s := range svids {
		if s.ID == want {
			return nil
		}
	}
	return fmt.Errorf("served %d svids, none is %s yet", len(svids), want)
}

// benchFetchJWT measures JWT-SVIDs per second through the agent: conc
// go-spiffe clients (one connection each, as a running workload keeps)
// each asking for a JWT-SVID with an audience never used before, so no
// call can be answered from the agent's cache.
func benchFetchJWT(ctx context.Context, addr string, conc int, window time.Duration, progress func(string, ...any)) (Result, error) {
	clients := make([]*workloadapi.Client, 0, conc)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range conc {
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
		if err != nil {
			return Result{}, err
		}
		clients = append(clients, c)
	}
	var run [8]byte
	if _, err := rand.Read(run[:]); err != nil {
		return Result{}, err
	}
	prefix := "bench-" + hex.EncodeToString(run[:])
	seq := make([]int, conc)
	fetch := func(ctx context.Context, w int) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		seq[w]++
		_, err := clients[w].FetchJWTSVID(cctx, jwtsvid.Params{Audience: fmt.Sprintf("%s-%d-%d", prefix, w, seq[w])})
		return err
	}
	if err := fetch(ctx, 0); err != nil {
		return Result{}, fmt.Errorf("fetch jwt-svid (warm-up): %w", err)
	}
	progress("JWT-SVID fetches with a fresh audience: %d clients for %s", conc, window)
	s := measure(ctx, conc, window, true, fetch)
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	return s.result(ResultFetchJWTFresh,
		fmt.Sprintf("JWT-SVIDs per second through the agent: %d go-spiffe clients, FetchJWTSVID with a fresh audience per call (signed by the CA every time)", conc),
		conc, true)
}

// nodeCredentials loads the node's SVID and trust bundle, as its agent
// does, so that the benchmark's clients are node agents to the server.
func nodeCredentials(l node.Layout) (*rpc.Credentials, error) { return l.Credentials() }

func uidSelector() string { return fmt.Sprintf("unix:uid:%d", os.Getuid()) }
