package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/selector"
)

// Entry is a registration entry: processes matching every selector may
// obtain SVIDs for SPIFFEID.
type Entry struct {
	ID        string
	SPIFFEID  spiffeid.ID
	Selectors []selector.Selector
	Revision  int64
}

// Upstream gets SVIDs signed. In production it is an RPC client to the
// control plane, which checks that entryID is assigned to this node before it
// signs. Implementations must be safe for concurrent use and honour ctx.
type Upstream interface {
	// MintX509SVID signs csrDER (a CSR for id) and returns the leaf first,
	// then intermediates up to but excluding the root.
	MintX509SVID(ctx context.Context, entryID string, id spiffeid.ID, csrDER []byte) ([]*x509.Certificate, error)
	// MintJWTSVID returns a compact JWT-SVID for id and audience.
	MintJWTSVID(ctx context.Context, entryID string, id spiffeid.ID, audience []string) (string, error)
}

// Config configures an Agent. It must not be modified after New.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Upstream    Upstream
	Clock       func() time.Time // nil means time.Now
	Logger      *slog.Logger     // nil means slog.Default()
	// TaskCgroupRoot is the cgroup v2 path under which the node's executor
	// creates one group per task, named by task id (see
	// attest.WithTaskCgroups). It is what unum:task selectors are evaluated
	// against; "" turns task attestation off, so no process matches a task
	// selector. Serve refuses a root attest.CheckTaskCgroupRoot refuses.
	TaskCgroupRoot string
	// Refused, when set, is told of every Workload API call refused
	// because its caller failed attestation or matched no entry (the node
	// records them in its audit log, rate-limited: any local process can
	// cause them). It runs on the call's goroutine, with the call's
	// context (cancelled when the caller hangs up, which a refused caller
	// may do at once: a recorder must not give up because of it), and must
	// not block long.
	Refused func(context.Context, Refusal)
}

// Refusal is a Workload API call the agent refused to a caller it could
// not attest, or whose process matched no entry. PID and UID are the
// caller's at connect (SO_PEERCRED); Path is the executable attestation
// read, "" when attestation failed before.
type Refusal struct {
	Method string
	PID    int
	UID    uint32
	Path   string
	// Reason is why: the attestation error (a process gone since it
	// connected, one that exec'd another binary) or that no entry matched.
	Reason string
	// Attestation is true when attestation itself failed (the caller is
	// not who it was at connect, or could not be read), false when it
	// succeeded and matched no entry.
	Attestation bool
}

// Tunables. Variables of the Agent rather than constants so tests of
// failure paths need not wait for production timings.
const (
	defaultMintTimeout    = 30 * time.Second
	defaultBackoffBase    = 500 * time.Millisecond
	defaultBackoffMax     = 30 * time.Second
	defaultMaxIdle        = 5 * time.Second
	mintParallelism       = 8
	minSVIDLifetime       = time.Second
	maxJWTCachePerEntry   = 64
	jwtAudienceSeparator  = "\x00"
	shutdownGracePeriod   = 5 * time.Second
	maxRequestMessageSize = 256 << 10
	connBufferSize        = 8 << 10
)

// Agent caches and rotates the SVIDs of this node's registration entries and
// serves them over the Workload API. Its methods are safe for concurrent use.
type Agent struct {
	td       spiffeid.TrustDomain
	upstream Upstream
	clock    func() time.Time
	log      *slog.Logger
	taskRoot string // Config.TaskCgroupRoot
	refused  func(context.Context, Refusal)

	// Test seams, set in New.
	mintTimeout time.Duration
	backoffBase time.Duration
	backoffMax  time.Duration
	maxIdle     time.Duration

	// wake pokes Run: new entries to mint, or a mint finished elsewhere.
	wake chan struct{}

	// mu guards everything below. It is never held across an upstream call,
	// a key generation or an attestation.
	mu struct {
		sync.Mutex
		// entries by entry ID; an entryState is replaced (not updated) when
		// its SPIFFE ID changes, so a mint that finishes for a replaced state
		// is discarded.
		entries map[string]*entryState
		// snapshot is the entries sorted by ID, rebuilt by SetEntries and
		// never modified afterwards: callers match against it unlocked.
		snapshot []Entry
		bundle   *bundleState
		// changed is closed, and replaced, on every change that could alter
		// what a Workload API stream would send.
		changed chan struct{}
	}
}

type entryState struct {
	entry   Entry
	svid    *x509SVID     // nil until minted, or once expired
	minting chan struct{} // non-nil while a mint is in flight; closed when it ends
	// failures counts consecutive mint failures; retryAt is when the next
	// attempt may start.
	failures int
	retryAt  time.Time
	lastErr  error
	jwts     map[string]*jwtSVID // by audience list
}

// x509SVID is immutable once built.
type x509SVID struct {
	id        spiffeid.ID
	chain     []*x509.Certificate
	chainDER  []byte // concatenated DER, leaf first
	keyDER    []byte // PKCS#8
	rotateAt  time.Time
	expiresAt time.Time
}

type jwtSVID struct {
	token     string
	refreshAt time.Time
	expiresAt time.Time
}

// bundleState is immutable once built; SetBundles swaps the pointer.
type bundleState struct {
	roots    []*x509.Certificate
	rootsDER []byte
	x509     *x509bundle.Bundle
	jwt      *jwtbundle.Bundle
	jwks     []byte
}

// New returns an Agent with no entries and no trust bundle.
func New(cfg Config) *Agent {
	a := &Agent{
		td:          cfg.TrustDomain,
		upstream:    cfg.Upstream,
		clock:       cfg.Clock,
		log:         cfg.Logger,
		taskRoot:    cfg.TaskCgroupRoot,
		refused:     cfg.Refused,
		mintTimeout: defaultMintTimeout,
		backoffBase: defaultBackoffBase,
		backoffMax:  defaultBackoffMax,
		maxIdle:     defaultMaxIdle,
		wake:        make(chan struct{}, 1),
	}
	if a.clock == nil {
		a.clock = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.refused == nil {
		a.refused = func(context.Context, Refusal) {}
	}
	a.mu.entries = make(map[string]*entryState)
	a.mu.changed = make(chan struct{})
	return a
}

// SetEntries replaces the registration entries. Invalid entries (empty or
// duplicate ID, SPIFFE ID outside the trust domain, invalid selector set) are
// logged and skipped: an entry the agent cannot trust grants nothing. An
// entry whose SPIFFE ID is unchanged keeps its cached SVID; new entries are
// minted promptly by Run; removed entries are dropped and every open stream
// re-evaluates what its caller may have.
func (a *Agent) SetEntries(entries []Entry) {
	valid := make([]Entry, 0, len(entries))
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if err := a.checkEntry(e); err != nil {
			a.log.Warn("skipping invalid registration entry", "entry_id", e.ID, "error", err)
			continue
		}
		if seen[e.ID] {
			a.log.Warn("skipping duplicate registration entry", "entry_id", e.ID)
			continue
		}
		seen[e.ID] = true
		e.Selectors = slices.Clone(e.Selectors)
		valid = append(valid, e)
	}
	slices.SortFunc(valid, func(x, y Entry) int { return strings.Compare(x.ID, y.ID) })

	a.mu.Lock()
	if slices.EqualFunc(valid, a.mu.snapshot, sameEntry) {
		// The control plane resends unchanged state (its sync stream's
		// keepalive): waking every open stream to re-attest and resend
		// would be work for nothing.
		a.mu.Unlock()
		return
	}
	next := make(map[string]*entryState, len(valid))
	for _, e := range valid {
		if st, ok := a.mu.entries[e.ID]; ok && st.entry.SPIFFEID == e.SPIFFEID {
			st.entry = e
			next[e.ID] = st
			continue
		}
		next[e.ID] = &entryState{entry: e}
	}
	a.mu.entries = next
	a.mu.snapshot = valid
	a.notifyLocked()
	a.mu.Unlock()
	a.poke()
}

func sameEntry(x, y Entry) bool {
	return x.ID == y.ID && x.SPIFFEID == y.SPIFFEID && x.Revision == y.Revision && slices.Equal(x.Selectors, y.Selectors)
}

func (a *Agent) checkEntry(e Entry) error {
	if e.ID == "" {
		return errors.New("empty entry id")
	}
	if e.SPIFFEID.IsZero() {
		return errors.New("empty SPIFFE ID")
	}
	if e.SPIFFEID.TrustDomain() != a.td {
		return fmt.Errorf("SPIFFE ID %s is not in trust domain %q", e.SPIFFEID, a.td.Name())
	}
	if err := selector.ValidateSet(e.Selectors); err != nil {
		return fmt.Errorf("selectors: %w", err)
	}
	return nil
}

// SetBundles replaces the trust bundle of the agent's trust domain: the X.509
// roots and the JWT signing keys by key ID. JWT keys the JWKS encoding does
// not support are logged and left out.
func (a *Agent) SetBundles(x509Roots []*x509.Certificate, jwtKeys map[string]crypto.PublicKey) {
	b := &bundleState{roots: slices.Clone(x509Roots)}
	for _, c := range b.roots {
		b.rootsDER = append(b.rootsDER, c.Raw...)
	}
	b.x509 = x509bundle.FromX509Authorities(a.td, b.roots)
	b.jwt = jwtbundle.New(a.td)
	for kid, key := range jwtKeys {
		one := jwtbundle.FromJWTAuthorities(a.td, map[string]crypto.PublicKey{kid: key})
		if _, err := one.Marshal(); err != nil {
			a.log.Error("leaving an unsupported key out of the JWT bundle", "kid", kid, "error", err)
			continue
		}
		if err := b.jwt.AddJWTAuthority(kid, key); err != nil {
			a.log.Error("leaving a key out of the JWT bundle", "kid", kid, "error", err)
		}
	}
	jwks, err := b.jwt.Marshal()
	if err != nil {
		// Every key marshalled on its own above; this cannot happen.
		panic(fmt.Sprintf("agent: marshal JWT bundle: %v", err))
	}
	b.jwks = jwks

	a.mu.Lock()
	if cur := a.mu.bundle; cur != nil && cur.x509.Equal(b.x509) && cur.jwt.Equal(b.jwt) {
		// Unchanged (a resend): keep the current state, so streams keyed on
		// it send nothing new.
		a.mu.Unlock()
		return
	}
	a.mu.bundle = b
	a.notifyLocked()
	a.mu.Unlock()
	a.poke() // mints that waited for a bundle to verify against can proceed
}

// WaitSVID returns nil once the agent holds an unexpired X509-SVID for entry
// entryID and a trust bundle, that is once a Workload API fetch by a process
// matching the entry is answered from the cache; at once if that is already
// so. The executor calls it before it execs a task, so the task's first
// fetch succeeds.
//
// An entry the agent does not know yet is waited for: entries and the
// assignments that lead the executor to call WaitSVID reach the node by
// different paths, in either order. An entry that was present during the
// wait and is then removed ends it with an error wrapping ErrEntryRemoved
// (the task is no longer meant to have that identity). Otherwise WaitSVID
// waits until ctx is done and returns an error wrapping ctx.Err() that also
// names the last mint failure, if any (say, the CA refused because the
// entry's task is not assigned to this node). It never mints itself: Run
// does, promptly for a new entry, so Run must be running.
func (a *Agent) WaitSVID(ctx context.Context, entryID string) error {
	return a.waitSVID(ctx, entryID, nil)
}

// waitSVID is WaitSVID; looked, if not nil, is called each time it has
// looked at the entry and is about to wait (a test seam: a test can then
// change state knowing the waiter saw the state before).
func (a *Agent) waitSVID(ctx context.Context, entryID string, looked func()) error {
	present := false
	for {
		now := a.clock()
		a.mu.Lock()
		changed := a.mu.changed
		st, ok := a.mu.entries[entryID]
		ready := ok && st.svid != nil && now.Before(st.svid.expiresAt) && a.mu.bundle != nil
		a.mu.Unlock()
		switch {
		case ready:
			return nil
		case ok:
			present = true
		case present:
			return fmt.Errorf("wait for x509-svid of entry %s: %w", entryID, ErrEntryRemoved)
		}
		if looked != nil {
			looked()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return a.waitFailed(entryID, ctx.Err())
		}
	}
}

// waitFailed explains why WaitSVID gave up: a failed mint does not wake
// waiters (only successes change what a stream could send), so its error is
// read now.
func (a *Agent) waitFailed(entryID string, ctxErr error) error {
	a.mu.Lock()
	st, ok := a.mu.entries[entryID]
	var lastErr error
	if ok {
		lastErr = st.lastErr
	}
	haveBundle := a.mu.bundle != nil
	a.mu.Unlock()
	switch {
	case !ok:
		return fmt.Errorf("wait for x509-svid of entry %s: no such entry on this node: %w", entryID, ctxErr)
	case lastErr != nil:
		return fmt.Errorf("wait for x509-svid of entry %s (last mint error: %v): %w", entryID, lastErr, ctxErr)
	case !haveBundle:
		return fmt.Errorf("wait for x509-svid of entry %s: no trust bundle yet: %w", entryID, ctxErr)
	}
	return fmt.Errorf("wait for x509-svid of entry %s: %w", entryID, ctxErr)
}

// notifyLocked wakes every stream waiting on the current changed channel.
func (a *Agent) notifyLocked() {
	close(a.mu.changed)
	a.mu.changed = make(chan struct{})
}

// changes returns a channel closed at the next change. Take it before reading
// state, so a change between the read and the wait is not missed.
func (a *Agent) changes() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mu.changed
}

func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run mints missing SVIDs, rotates each at half its lifetime, drops expired
// ones and retries failures with backoff, until ctx is done. It returns nil
// when ctx is cancelled.
func (a *Agent) Run(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		due, next := a.plan(a.clock())
		if len(due) > 0 {
			a.mintAll(ctx, due)
			continue // minting took time: plan again from a fresh clock
		}
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-a.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// plan drops expired SVIDs and returns the entries due for minting now and
// how long to sleep when none is.
func (a *Agent) plan(now time.Time) (due []string, sleep time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	wakeAt := now.Add(a.maxIdle)
	changed := false
	for id, st := range a.mu.entries {
		if st.svid != nil && !now.Before(st.svid.expiresAt) {
			a.log.Warn("x509-svid expired before it could be rotated", "entry_id", id, "spiffe_id", st.svid.id.String(), "last_error", errString(st.lastErr))
			st.svid = nil
			changed = true
		}
		for aud, j := range st.jwts {
			if !now.Before(j.expiresAt) {
				delete(st.jwts, aud)
			}
		}
		if st.minting != nil {
			continue // its end pokes us
		}
		at := st.retryAt
		if st.svid != nil && st.svid.rotateAt.After(at) {
			at = st.svid.rotateAt
		}
		if !now.Before(at) {
			due = append(due, id)
			continue
		}
		if at.Before(wakeAt) {
			wakeAt = at
		}
		if st.svid != nil && st.svid.expiresAt.Before(wakeAt) {
			wakeAt = st.svid.expiresAt
		}
	}
	if changed {
		a.notifyLocked()
	}
	slices.Sort(due)
	return due, max(wakeAt.Sub(now), time.Millisecond)
}

func (a *Agent) mintAll(ctx context.Context, ids []string) {
	sem := make(chan struct{}, mintParallelism)
	var wg sync.WaitGroup
	for _, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := a.mint(ctx, id, true); err != nil && ctx.Err() == nil {
				a.log.Warn("minting x509-svid failed", "entry_id", id, "error", err)
			}
		}()
	}
	wg.Wait()
}

// ErrEntryRemoved is returned (wrapped) when the registration entry an
// operation was about went away while it ran.
var ErrEntryRemoved = errors.New("registration entry was removed")

// mint gets a fresh X509-SVID for entry id, or waits for a mint already in
// flight. force mints even if a valid SVID is cached (rotation); otherwise a
// valid cached SVID, or an entry in backoff, returns at once.
func (a *Agent) mint(ctx context.Context, id string, force bool) error {
	a.mu.Lock()
	st, ok := a.mu.entries[id]
	if !ok {
		a.mu.Unlock()
		return ErrEntryRemoved
	}
	now := a.clock()
	if !force && st.svid != nil && now.Before(st.svid.expiresAt) {
		a.mu.Unlock()
		return nil
	}
	if ch := st.minting; ch != nil {
		a.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if st.svid == nil {
			return fmt.Errorf("mint for entry %s: %w", id, errOr(st.lastErr, errors.New("no x509-svid")))
		}
		return nil
	}
	if !force && now.Before(st.retryAt) {
		err, retryAt := st.lastErr, st.retryAt
		a.mu.Unlock()
		return fmt.Errorf("entry %s in backoff until %s: %w", id, retryAt.Format(time.RFC3339Nano), errOr(err, errors.New("earlier mint failed")))
	}
	done := make(chan struct{})
	st.minting = done
	entry := st.entry
	a.mu.Unlock()

	mctx, cancel := context.WithTimeout(ctx, a.mintTimeout)
	svid, err := a.mintX509(mctx, entry)
	cancel()

	a.mu.Lock()
	close(done)
	st.minting = nil
	current := a.mu.entries[id] == st
	switch {
	case err != nil && ctx.Err() != nil:
		// Our caller gave up (shutdown, or a client went away): not the
		// upstream's fault, so no backoff.
	case err != nil:
		st.failures++
		st.lastErr = err
		st.retryAt = a.clock().Add(a.backoff(st.failures))
	case current:
		st.svid = svid
		st.failures, st.lastErr, st.retryAt = 0, nil, time.Time{}
		a.notifyLocked()
	}
	a.mu.Unlock()
	a.poke()
	if err != nil {
		return fmt.Errorf("mint for entry %s: %w", id, err)
	}
	if !current {
		return ErrEntryRemoved
	}
	a.log.Debug("minted x509-svid", "entry_id", id, "spiffe_id", entry.SPIFFEID.String(), "expires_at", svid.expiresAt)
	return nil
}

func (a *Agent) backoff(failures int) time.Duration {
	d := a.backoffBase << min(failures-1, 16)
	if d <= 0 || d > a.backoffMax {
		d = a.backoffMax
	}
	// ±25% jitter so that nodes do not retry against the control plane in
	// lockstep after an outage.
	return d*3/4 + rand.N(d/2+1)
}

// mintX509 generates a key, has the CSR signed upstream and checks the
// result before it may be cached.
func (a *Agent) mintX509(ctx context.Context, e Entry) (*x509SVID, error) {
	key, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := ca.CreateCSR(key, e.SPIFFEID)
	if err != nil {
		return nil, err
	}
	chain, err := a.upstream.MintX509SVID(ctx, e.ID, e.SPIFFEID, csr)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	now := a.clock()
	if err := a.checkMinted(chain, key, e.SPIFFEID, now); err != nil {
		return nil, fmt.Errorf("upstream returned an unusable x509-svid: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	s := &x509SVID{
		id:        e.SPIFFEID,
		chain:     chain,
		keyDER:    keyDER,
		expiresAt: chain[0].NotAfter,
		rotateAt:  now.Add(chain[0].NotAfter.Sub(now) / 2),
	}
	for _, c := range chain {
		s.chainDER = append(s.chainDER, c.Raw...)
	}
	return s, nil
}

func (a *Agent) checkMinted(chain []*x509.Certificate, key *ecdsa.PrivateKey, id spiffeid.ID, now time.Time) error {
	if len(chain) == 0 || chain[0] == nil {
		return errors.New("empty chain")
	}
	leaf := chain[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("leaf does not hold the requested key")
	}
	got, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return err
	}
	if got != id {
		return fmt.Errorf("leaf names %s, want %s", got, id)
	}
	if left := leaf.NotAfter.Sub(now); left < minSVIDLifetime {
		// Rotating something this short-lived would spin against the
		// upstream; treat it as a failure, which backs off.
		return fmt.Errorf("leaf expires at %s, less than %s from now", leaf.NotAfter.Format(time.RFC3339Nano), minSVIDLifetime)
	}
	a.mu.Lock()
	b := a.mu.bundle
	a.mu.Unlock()
	if b == nil || len(b.roots) == 0 {
		// No bundle yet: nothing to verify against. Streams send nothing
		// until a bundle arrives, and rotation re-verifies later mints.
		return nil
	}
	if _, _, err := x509svid.Verify(chain, b.x509, x509svid.WithTime(now)); err != nil {
		return fmt.Errorf("does not verify against the trust bundle: %w", err)
	}
	return nil
}

// jwtSVIDFor returns a JWT-SVID for entry e and audience, from the cache
// while it is within the first half of its lifetime.
func (a *Agent) jwtSVIDFor(ctx context.Context, e Entry, audience []string) (string, error) {
	key := strings.Join(audience, jwtAudienceSeparator)
	now := a.clock()
	a.mu.Lock()
	if st, ok := a.mu.entries[e.ID]; ok {
		if j, ok := st.jwts[key]; ok && now.Before(j.refreshAt) {
			a.mu.Unlock()
			return j.token, nil
		}
	}
	a.mu.Unlock()

	mctx, cancel := context.WithTimeout(ctx, a.mintTimeout)
	defer cancel()
	token, err := a.upstream.MintJWTSVID(mctx, e.ID, e.SPIFFEID, audience)
	if err != nil {
		return "", fmt.Errorf("upstream: %w", err)
	}
	svid, err := jwtsvid.ParseInsecure(token, audience)
	if err != nil {
		return "", fmt.Errorf("upstream returned an unusable jwt-svid: %w", err)
	}
	if svid.ID != e.SPIFFEID {
		return "", fmt.Errorf("upstream returned a jwt-svid for %s, want %s", svid.ID, e.SPIFFEID)
	}
	now = a.clock()
	j := &jwtSVID{token: token, expiresAt: svid.Expiry, refreshAt: now.Add(svid.Expiry.Sub(now) / 2)}

	a.mu.Lock()
	defer a.mu.Unlock()
	if st, ok := a.mu.entries[e.ID]; ok && st.entry.SPIFFEID == e.SPIFFEID {
		if st.jwts == nil {
			st.jwts = make(map[string]*jwtSVID)
		}
		if len(st.jwts) >= maxJWTCachePerEntry {
			for k := range st.jwts { // evict an arbitrary one: the cache only saves latency
				delete(st.jwts, k)
				break
			}
		}
		st.jwts[key] = j
	}
	return token, nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
