package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/selector"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// An unmodified go-spiffe client gets X.509 and JWT SVIDs from a real agent
// on a real socket, and they verify against the bundles the agent serves.
func TestGoSPIFFEClientEndToEnd(t *testing.T) {
	id := mustID(t, "spiffe://unum.local/ns/default/job/web")
	ta := startAgent(t, []Entry{{ID: "e1", SPIFFEID: id, Selectors: sel(t, selfUID())}}, agentOpts{})
	ctx := testCtx(t)

	svid, err := workloadapi.FetchX509SVID(ctx, ta.addr())
	require.NoError(t, err)
	require.Equal(t, id, svid.ID)
	leafKeyMatches(t, svid.Certificates[0], svid.PrivateKey)

	bundles, err := workloadapi.FetchX509Bundles(ctx, ta.addr())
	require.NoError(t, err)
	gotID, _, err := x509svid.Verify(svid.Certificates, bundles)
	require.NoError(t, err)
	require.Equal(t, id, gotID)
	b, err := bundles.GetX509BundleForTrustDomain(td)
	require.NoError(t, err)
	require.True(t, b.HasX509Authority(ta.ca.root))

	x509ctx, err := workloadapi.FetchX509Context(ctx, ta.addr())
	require.NoError(t, err)
	require.Len(t, x509ctx.SVIDs, 1)
	_, _, err = x509svid.Verify(x509ctx.SVIDs[0].Certificates, x509ctx.Bundles)
	require.NoError(t, err)

	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(ta.addr()))
	require.NoError(t, err)
	defer src.Close()
	fromSource, err := src.GetX509SVID()
	require.NoError(t, err)
	require.Equal(t, id, fromSource.ID)

	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "spiffe://unum.local/ns/default/job/db"}, ta.addr())
	require.NoError(t, err)
	require.Equal(t, id, jwt.ID)
	jwtBundles, err := workloadapi.FetchJWTBundles(ctx, ta.addr())
	require.NoError(t, err)
	verified, err := jwtsvid.ParseAndValidate(jwt.Marshal(), jwtBundles, []string{"spiffe://unum.local/ns/default/job/db"})
	require.NoError(t, err)
	require.Equal(t, id, verified.ID)

	validated, err := workloadapi.ValidateJWTSVID(ctx, jwt.Marshal(), "spiffe://unum.local/ns/default/job/db", ta.addr())
	require.NoError(t, err)
	require.Equal(t, id, validated.ID)

	// The agent caches JWT-SVIDs until half their lifetime.
	again, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "spiffe://unum.local/ns/default/job/db"}, ta.addr())
	require.NoError(t, err)
	require.Equal(t, jwt.Marshal(), again.Marshal())
	require.Equal(t, int64(1), ta.upstream.jwtN.Load())
}

// Binary selectors are evaluated on the executable the process runs: the
// path and the SHA-256 of the test binary itself.
func TestBinarySelectors(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	data, err := os.ReadFile(self)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])

	good := mustID(t, "spiffe://unum.local/ns/default/job/good")
	wrongHash := mustID(t, "spiffe://unum.local/ns/default/job/wronghash")
	wrongPath := mustID(t, "spiffe://unum.local/ns/default/job/wrongpath")
	ta := startAgent(t, []Entry{
		{ID: "a", SPIFFEID: good, Selectors: sel(t, selfUID(), "unix:path:"+self, "unix:sha256:"+digest)},
		{ID: "b", SPIFFEID: wrongHash, Selectors: sel(t, selfUID(), "unix:sha256:"+hex.EncodeToString(make([]byte, 32)))},
		{ID: "c", SPIFFEID: wrongPath, Selectors: sel(t, selfUID(), "unix:path:/usr/bin/true")},
	}, agentOpts{})

	svids, err := workloadapi.FetchX509SVIDs(testCtx(t), ta.addr())
	require.NoError(t, err)
	require.Len(t, svids, 1)
	require.Equal(t, good, svids[0].ID)
}

// A process running as a uid no entry names is refused; a process running as
// a registered uid gets exactly its own identity and not the others'.
func TestUnregisteredUIDDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a workload process under another uid")
	}
	t.Parallel()
	rootID := mustID(t, "spiffe://unum.local/ns/system/job/root")
	appID := mustID(t, "spiffe://unum.local/ns/default/job/app")
	ta := startAgent(t, []Entry{
		{ID: "root", SPIFFEID: rootID, Selectors: sel(t, "unix:uid:0")},
		{ID: "app", SPIFFEID: appID, Selectors: sel(t, "unix:uid:4242")},
	}, agentOpts{})
	bin := copyTestBinary(t, ta.dir)

	got := fetchAs(t, bin, ta.sock, 4242, 4242)
	require.Equal(t, "OK", got.Code, got.Error)
	require.Equal(t, appID.String(), got.ID)

	got = fetchAs(t, bin, ta.sock, 4343, 4343)
	require.Equal(t, codes.PermissionDenied.String(), got.Code, got.Error)
	require.Contains(t, got.Error, "no identity issued")
}

// A process that connects and then execs a different binary, which uses the
// inherited connection, is refused: whatever identity the connecting binary
// had, the binary now speaking is not the one attested. Exec of the same
// binary is the control: it keeps working.
func TestExecAfterConnect(t *testing.T) {
	id := mustID(t, "spiffe://unum.local/ns/default/job/app")
	refused := make(chan Refusal, 8)
	ta := startAgent(t, []Entry{{ID: "e", SPIFFEID: id, Selectors: sel(t, selfUID())}}, agentOpts{refused: func(_ context.Context, r Refusal) { refused <- r }})
	self, err := os.Executable()
	require.NoError(t, err)
	other := copyTestBinary(t, ta.dir)

	got := runHelper(t, self, envHelper+"=connect-exec", envSock+"="+ta.sock, envExec+"="+self)
	require.Equal(t, "OK", got.Code, "exec of the same binary: %s", got.Error)
	require.Equal(t, id.String(), got.ID)

	got = runHelper(t, self, envHelper+"=connect-exec", envSock+"="+ta.sock, envExec+"="+other)
	require.Equal(t, codes.PermissionDenied.String(), got.Code, got.Error)
	require.Contains(t, got.Error, "executed a different binary after connecting")
	// The refusal is reported (the node audits it), with the caller as
	// it connected.
	select {
	case r := <-refused:
		require.True(t, r.Attestation)
		require.Contains(t, r.Reason, "executed a different binary after connecting")
		require.Equal(t, "/SpiffeWorkloadAPI/FetchX509SVID", r.Method)
		require.Equal(t, uint32(os.Geteuid()), r.UID)
		require.NotZero(t, r.PID)
	default:
		t.Fatal("the refusal was not reported")
	}
}

// A caller that matches no entry is refused and the refusal reported, with
// the executable attestation read.
func TestNoMatchReported(t *testing.T) {
	type report struct {
		method string // the call's, read from the context Refused is given
		r      Refusal
	}
	refused := make(chan report, 8)
	ta := startAgent(t, []Entry{{ID: "e", SPIFFEID: mustID(t, "spiffe://unum.local/ns/a/job/b"), Selectors: sel(t, "unix:uid:4242")}},
		agentOpts{refused: func(ctx context.Context, r Refusal) {
			m, _ := grpc.Method(ctx)
			refused <- report{method: m, r: r}
		}})
	stream, err := ta.rawClient(t).FetchX509SVID(withHeader(testCtx(t)), &workload.X509SVIDRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	requireCode(t, err, codes.PermissionDenied, "no registration entry matches")
	// Reported on the call's goroutine before the refusal is sent: it is
	// there by the time the caller has its answer.
	var got report
	select {
	case got = <-refused:
	default:
		t.Fatal("the refusal was not reported")
	}
	r := got.r
	require.Equal(t, "/SpiffeWorkloadAPI/FetchX509SVID", got.method, "Refused is given the call's context")
	require.Equal(t, got.method, r.Method)
	require.False(t, r.Attestation)
	require.Equal(t, os.Getpid(), r.PID)
	self, err := os.Executable()
	require.NoError(t, err)
	require.Equal(t, self, r.Path)
	require.Equal(t, "no registration entry matches this process", r.Reason)
}

// Calls without the workload.spiffe.io header are refused before anything
// else happens.
func TestSecurityHeaderRequired(t *testing.T) {
	ta := startAgent(t, []Entry{{ID: "e", SPIFFEID: mustID(t, "spiffe://unum.local/ns/a/job/b"), Selectors: sel(t, selfUID())}}, agentOpts{})
	client := ta.rawClient(t)
	ctx := testCtx(t)

	for name, ctx := range map[string]context.Context{
		"missing": ctx,
		"false":   metadataCtx(ctx, "false"),
		"twice":   metadataCtx(metadataCtx(ctx, "true"), "true"),
	} {
		t.Run(name, func(t *testing.T) {
			stream, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			require.NoError(t, err)
			_, err = stream.Recv()
			requireCode(t, err, codes.InvalidArgument, "security header")

			_, err = client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
			requireCode(t, err, codes.InvalidArgument, "security header")

			_, err = client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "x", Svid: "y"})
			requireCode(t, err, codes.InvalidArgument, "security header")

			bs, err := client.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
			require.NoError(t, err)
			_, err = bs.Recv()
			requireCode(t, err, codes.InvalidArgument, "security header")
		})
	}
}

func TestJWTSVIDRequests(t *testing.T) {
	web := mustID(t, "spiffe://unum.local/ns/default/job/web")
	other := mustID(t, "spiffe://unum.local/ns/default/job/other")
	ta := startAgent(t, []Entry{
		{ID: "web", SPIFFEID: web, Selectors: sel(t, selfUID())},
		{ID: "other", SPIFFEID: other, Selectors: sel(t, "unix:uid:4242")},
	}, agentOpts{})
	client := ta.rawClient(t)
	ctx := withHeader(testCtx(t))

	_, err := client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{})
	requireCode(t, err, codes.InvalidArgument, "audience must be specified")

	_, err = client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: other.String()})
	requireCode(t, err, codes.PermissionDenied, "not entitled")

	_, err = client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: "not a spiffe id"})
	requireCode(t, err, codes.InvalidArgument, "invalid requested SPIFFE ID")

	resp, err := client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: web.String()})
	require.NoError(t, err)
	require.Len(t, resp.Svids, 1)
	token := resp.Svids[0].Svid

	valid, err := client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: token})
	require.NoError(t, err)
	require.Equal(t, web.String(), valid.SpiffeId)
	require.Equal(t, web.String(), valid.Claims.Fields["sub"].GetStringValue())
	require.NotZero(t, valid.Claims.Fields["exp"].GetNumberValue())

	_, err = client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "someone-else", Svid: token})
	requireCode(t, err, codes.InvalidArgument, "audience")

	_, err = client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "db"})
	requireCode(t, err, codes.InvalidArgument, "svid must be specified")

	// A token from a signer outside the bundle is refused.
	rogueKey, err := ca.GenerateKey()
	require.NoError(t, err)
	rogue, err := ca.NewJWTSigner(td, rogueKey, nil)
	require.NoError(t, err)
	forged, err := rogue.SignJWTSVID(web, []string{"db"}, time.Minute)
	require.NoError(t, err)
	_, err = client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: forged})
	requireCode(t, err, codes.InvalidArgument, "no JWT authority")

	// The served JWKS is go-spiffe's encoding of the bundle.
	bs, err := client.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	require.NoError(t, err)
	msg, err := bs.Recv()
	require.NoError(t, err)
	jb, err := jwtbundle.Parse(td, msg.Bundles[td.IDString()])
	require.NoError(t, err)
	require.True(t, jb.HasJWTAuthority(ta.ca.jwt.KeyID()))
}

// Rotation: with a 4s TTL the agent re-mints at half-life and the open
// stream delivers the new SVID.
func TestRotationUpdatesOpenStream(t *testing.T) {
	t.Parallel()
	id := mustID(t, "spiffe://unum.local/ns/default/job/rot")
	ta := startAgent(t, []Entry{{ID: "e", SPIFFEID: id, Selectors: sel(t, selfUID())}}, agentOpts{ttl: 4 * time.Second})
	ctx := testCtx(t)

	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(ta.addr()))
	require.NoError(t, err)
	defer src.Close()
	first, err := src.GetX509SVID()
	require.NoError(t, err)
	start := time.Now()

	select {
	case <-src.Updated():
	case <-ctx.Done():
		t.Fatal("no rotation delivered on the open stream")
	}
	second, err := src.GetX509SVID()
	require.NoError(t, err)
	require.NotEqual(t, first.Certificates[0].SerialNumber, second.Certificates[0].SerialNumber)
	require.Equal(t, id, second.ID)
	require.False(t, second.PrivateKey.Public().(*ecdsa.PublicKey).Equal(first.PrivateKey.Public()), "rotation must use a new key")
	elapsed := time.Since(start)
	require.Greater(t, elapsed, time.Second, "rotated too early")
	require.Less(t, elapsed, 4*time.Second, "rotated after expiry")
}

// When the upstream fails, the cached SVID keeps being served until it
// expires; minting is retried and recovers.
func TestUpstreamFailureServesCachedUntilExpiry(t *testing.T) {
	t.Parallel()
	id := mustID(t, "spiffe://unum.local/ns/default/job/flaky")
	ta := startAgent(t, []Entry{{ID: "e", SPIFFEID: id, Selectors: sel(t, selfUID())}},
		agentOpts{ttl: 3 * time.Second, backoffBase: 100 * time.Millisecond})
	ctx := testCtx(t)

	first, err := workloadapi.FetchX509SVID(ctx, ta.addr())
	require.NoError(t, err)
	ta.upstream.fail.Store(true)
	calls := ta.upstream.x509N.Load()

	// Past half-life the rotation fails and is retried with backoff...
	require.Eventually(t, func() bool { return ta.upstream.x509N.Load() >= calls+3 }, 5*time.Second, 10*time.Millisecond)
	// ...while the cached SVID is still served.
	cached, err := workloadapi.FetchX509SVID(ctx, ta.addr())
	require.NoError(t, err)
	require.Equal(t, first.Certificates[0].Raw, cached.Certificates[0].Raw)

	// After expiry there is nothing to serve.
	time.Sleep(time.Until(first.Certificates[0].NotAfter) + 100*time.Millisecond)
	client := ta.rawClient(t)
	stream, err := client.FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	requireCode(t, err, codes.Unavailable, errUpstreamDown.Error())

	// Recovery.
	ta.upstream.fail.Store(false)
	var fresh *x509svid.SVID
	require.Eventually(t, func() bool {
		fresh, err = workloadapi.FetchX509SVID(ctx, ta.addr())
		return err == nil
	}, 5*time.Second, 50*time.Millisecond)
	require.NotEqual(t, first.Certificates[0].SerialNumber, fresh.Certificates[0].SerialNumber)
}

// Removing an entry updates the stream of a caller that still matches
// another, and ends, PermissionDenied, the stream of one that matches none.
func TestRemovingEntriesUpdatesAndEndsStream(t *testing.T) {
	a := mustID(t, "spiffe://unum.local/ns/default/job/a")
	b := mustID(t, "spiffe://unum.local/ns/default/job/b")
	entryA := Entry{ID: "a", SPIFFEID: a, Selectors: sel(t, selfUID())}
	entryB := Entry{ID: "b", SPIFFEID: b, Selectors: sel(t, "unix:gid:"+itoa(os.Getegid()))}
	ta := startAgent(t, []Entry{entryA, entryB}, agentOpts{})
	stream, err := ta.rawClient(t).FetchX509SVID(withHeader(testCtx(t)), &workload.X509SVIDRequest{})
	require.NoError(t, err)

	msg, err := stream.Recv()
	require.NoError(t, err)
	require.Equal(t, []string{a.String(), b.String()}, svidIDs(msg))

	ta.SetEntries([]Entry{entryA})
	msg, err = stream.Recv()
	require.NoError(t, err)
	require.Equal(t, []string{a.String()}, svidIDs(msg))

	ta.SetEntries(nil)
	_, err = stream.Recv()
	requireCode(t, err, codes.PermissionDenied, "no identity issued")
}

// A new bundle (say, a root rotation) reaches open streams.
func TestBundleUpdateReachesStreams(t *testing.T) {
	ta := startAgent(t, []Entry{{ID: "e", SPIFFEID: mustID(t, "spiffe://unum.local/ns/x/job/y"), Selectors: sel(t, selfUID())}}, agentOpts{})
	stream, err := ta.rawClient(t).FetchX509Bundles(withHeader(testCtx(t)), &workload.X509BundlesRequest{})
	require.NoError(t, err)
	msg, err := stream.Recv()
	require.NoError(t, err)
	require.Equal(t, ta.ca.root.Raw, msg.Bundles[td.IDString()])

	next := newTestCA(t)
	ta.SetBundles([]*x509.Certificate{ta.ca.root, next.root}, ta.ca.jwtKeys())
	msg, err = stream.Recv()
	require.NoError(t, err)
	require.Equal(t, append(append([]byte{}, ta.ca.root.Raw...), next.root.Raw...), msg.Bundles[td.IDString()])
}

// Every method refuses a caller that matches no entry, bundles included.
func TestUnmatchedCallerGetsNothing(t *testing.T) {
	ta := startAgent(t, []Entry{{ID: "e", SPIFFEID: mustID(t, "spiffe://unum.local/ns/x/job/y"), Selectors: sel(t, "unix:uid:4242")}}, agentOpts{})
	client := ta.rawClient(t)
	ctx := withHeader(testCtx(t))

	s1, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	require.NoError(t, err)
	_, err = s1.Recv()
	requireCode(t, err, codes.PermissionDenied, "no identity issued")
	s2, err := client.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	require.NoError(t, err)
	_, err = s2.Recv()
	requireCode(t, err, codes.PermissionDenied, "no identity issued")
	s3, err := client.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	require.NoError(t, err)
	_, err = s3.Recv()
	requireCode(t, err, codes.PermissionDenied, "no identity issued")
	_, err = client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
	requireCode(t, err, codes.PermissionDenied, "no identity issued")
	_, err = client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "x", Svid: "y"})
	requireCode(t, err, codes.PermissionDenied, "no identity issued")
	require.Zero(t, ta.upstream.jwtN.Load(), "no JWT-SVID minted for a caller that matches no entry")
}

// The agent refuses an upstream answer it cannot use, so it never serves a
// certificate for the wrong key or identity.
func TestMintedSVIDIsChecked(t *testing.T) {
	id := mustID(t, "spiffe://unum.local/ns/default/job/web")
	otherKey, err := ca.GenerateKey()
	require.NoError(t, err)
	stranger := newTestCA(t)
	tests := []struct {
		name    string
		tamper  func(c *testCA) func([]byte, spiffeid.ID) ([]*x509.Certificate, error)
		wantErr string
	}{
		{
			name: "another key",
			tamper: func(c *testCA) func([]byte, spiffeid.ID) ([]*x509.Certificate, error) {
				return func(_ []byte, id spiffeid.ID) ([]*x509.Certificate, error) {
					return c.authority.SignX509SVIDForKey(otherKey.Public(), id, time.Hour)
				}
			},
			wantErr: "does not hold the requested key",
		},
		{
			name: "another identity",
			tamper: func(c *testCA) func([]byte, spiffeid.ID) ([]*x509.Certificate, error) {
				return func(csr []byte, _ spiffeid.ID) ([]*x509.Certificate, error) {
					req, err := x509.ParseCertificateRequest(csr)
					if err != nil {
						return nil, err
					}
					return c.authority.SignX509SVIDForKey(req.PublicKey, mustID(t, "spiffe://unum.local/ns/evil/job/x"), time.Hour)
				}
			},
			wantErr: "leaf names spiffe://unum.local/ns/evil/job/x",
		},
		{
			name: "outside the bundle",
			tamper: func(*testCA) func([]byte, spiffeid.ID) ([]*x509.Certificate, error) {
				return func(csr []byte, id spiffeid.ID) ([]*x509.Certificate, error) {
					return stranger.authority.SignX509SVID(csr, id, time.Hour)
				}
			},
			wantErr: "does not verify against the trust bundle",
		},
		{
			name: "too short-lived",
			tamper: func(c *testCA) func([]byte, spiffeid.ID) ([]*x509.Certificate, error) {
				return func(csr []byte, id spiffeid.ID) ([]*x509.Certificate, error) {
					return c.authority.SignX509SVID(csr, id, 100*time.Millisecond)
				}
			},
			wantErr: "less than 1s from now",
		},
		{
			name: "empty chain",
			tamper: func(*testCA) func([]byte, spiffeid.ID) ([]*x509.Certificate, error) {
				return func([]byte, spiffeid.ID) ([]*x509.Certificate, error) { return nil, nil }
			},
			wantErr: "empty chain",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCA(t)
			up := &caUpstream{ca: c, ttl: time.Hour, tamper: tt.tamper(c)}
			a := New(Config{TrustDomain: td, Upstream: up, Logger: quietLogger()})
			a.SetBundles([]*x509.Certificate{c.root}, nil)
			a.SetEntries([]Entry{{ID: "e", SPIFFEID: id, Selectors: sel(t, selfUID())}})
			err := a.mint(context.Background(), "e", true)
			require.ErrorContains(t, err, tt.wantErr)
			a.mu.Lock()
			defer a.mu.Unlock()
			require.Nil(t, a.mu.entries["e"].svid)
		})
	}
}

func TestSetEntriesSkipsInvalid(t *testing.T) {
	a := New(Config{TrustDomain: td, Upstream: &caUpstream{}, Logger: quietLogger()})
	ok := mustID(t, "spiffe://unum.local/ns/a/job/b")
	a.SetEntries([]Entry{
		{ID: "z-good", SPIFFEID: ok, Selectors: sel(t, "unix:uid:1")},
		{ID: "", SPIFFEID: ok, Selectors: sel(t, "unix:uid:1")},
		{ID: "foreign", SPIFFEID: mustID(t, "spiffe://other.domain/ns/a/job/b"), Selectors: sel(t, "unix:uid:1")},
		{ID: "no-selectors", SPIFFEID: ok},
		{ID: "binary-only", SPIFFEID: ok, Selectors: sel(t, "unix:path:/bin/sh")},
		{ID: "z-good", SPIFFEID: ok, Selectors: sel(t, "unix:uid:2")},
		{ID: "a-good", SPIFFEID: ok, Selectors: sel(t, "unix:gid:1")},
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for _, e := range a.mu.snapshot {
		ids = append(ids, e.ID)
	}
	require.Equal(t, []string{"a-good", "z-good"}, ids)
	require.Equal(t, "1", a.mu.snapshot[1].Selectors[0].Value, "first of duplicate IDs wins")
}

func TestServeSocketSafety(t *testing.T) {
	newDir := func(t *testing.T, mode os.FileMode) string {
		dir, err := os.MkdirTemp("", "ua")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(dir) })
		require.NoError(t, os.Chmod(dir, mode))
		return dir
	}
	a := New(Config{TrustDomain: td, Upstream: &caUpstream{}, Logger: quietLogger()})

	t.Run("world writable parent", func(t *testing.T) {
		dir := newDir(t, 0o777)
		err := a.Serve(t.Context(), filepath.Join(dir, "agent.sock"))
		require.ErrorContains(t, err, "writable by group or others")
	})
	t.Run("symlinked parent", func(t *testing.T) {
		dir := newDir(t, 0o755)
		require.NoError(t, os.Symlink("/tmp", filepath.Join(dir, "link")))
		err := a.Serve(t.Context(), filepath.Join(dir, "link", "agent.sock"))
		require.ErrorContains(t, err, "not a directory")
	})
	t.Run("regular file in the way", func(t *testing.T) {
		dir := newDir(t, 0o755)
		path := filepath.Join(dir, "agent.sock")
		require.NoError(t, os.WriteFile(path, []byte("x"), 0o600))
		err := a.Serve(t.Context(), path)
		require.ErrorContains(t, err, "is not a socket")
	})
	t.Run("relative path", func(t *testing.T) {
		require.ErrorContains(t, a.Serve(t.Context(), "agent.sock"), "absolute")
	})
	t.Run("too long", func(t *testing.T) {
		require.ErrorContains(t, a.Serve(t.Context(), "/"+string(make([]byte, 120))), "limit")
	})
	t.Run("mode, live socket, stale socket", func(t *testing.T) {
		dir := newDir(t, 0o755)
		path := filepath.Join(dir, "public", "agent.sock")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Serve(ctx, path) }()
		waitForSocket(t, path)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o666), fi.Mode().Perm())
		require.Equal(t, os.ModeSocket, fi.Mode().Type())

		require.ErrorContains(t, a.Serve(t.Context(), path), "in use by another process")

		cancel()
		require.NoError(t, <-done)
		_, err = os.Stat(path)
		require.ErrorIs(t, err, os.ErrNotExist, "socket removed on shutdown")
	})
}

func TestGracefulStopEndsStreams(t *testing.T) {
	dir, err := os.MkdirTemp("", "ua")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	c := newTestCA(t)
	a := New(Config{TrustDomain: td, Upstream: &caUpstream{ca: c, ttl: time.Hour}, Logger: quietLogger()})
	a.SetBundles([]*x509.Certificate{c.root}, nil)
	a.SetEntries([]Entry{{ID: "e", SPIFFEID: mustID(t, "spiffe://unum.local/ns/x/job/y"), Selectors: sel(t, selfUID())}})
	ta := &testAgent{Agent: a, sock: filepath.Join(dir, "agent.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ta.sock) }()
	waitForSocket(t, ta.sock)

	stream, err := ta.rawClient(t).FetchX509SVID(withHeader(testCtx(t)), &workload.X509SVIDRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err, "served without Run: the first fetch mints on demand")

	start := time.Now()
	cancel()
	require.NoError(t, <-done)
	require.Less(t, time.Since(start), shutdownGracePeriod, "streams must end promptly on shutdown")
	_, err = stream.Recv()
	require.Error(t, err)
}

func requireCode(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	require.Equal(t, code, st.Code(), "status: %v", err)
	require.Contains(t, st.Message(), msg)
}

func metadataCtx(ctx context.Context, v string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", v)
}

func itoa(n int) string { return strconv.Itoa(n) }

func svidIDs(msg *workload.X509SVIDResponse) []string {
	var ids []string
	for _, s := range msg.Svids {
		ids = append(ids, s.SpiffeId)
	}
	return ids
}

// Entries are minted in the background as soon as they arrive, so a first
// fetch usually hits the cache; an entry whose SPIFFE ID is unchanged keeps
// its SVID when its selectors change, and gets a new one when its ID does.
func TestSetEntriesMintsInBackground(t *testing.T) {
	ta := startAgent(t, nil, agentOpts{})
	cached := func(id string) *x509SVID {
		ta.mu.Lock()
		defer ta.mu.Unlock()
		if st, ok := ta.mu.entries[id]; ok {
			return st.svid
		}
		return nil
	}
	first := mustID(t, "spiffe://unum.local/ns/a/job/first")
	ta.SetEntries([]Entry{{ID: "e", SPIFFEID: first, Selectors: sel(t, "unix:uid:4242")}})
	require.Eventually(t, func() bool { return cached("e") != nil }, 5*time.Second, time.Millisecond)
	svid := cached("e")
	require.Equal(t, first, svid.id)

	ta.SetEntries([]Entry{{ID: "e", SPIFFEID: first, Selectors: sel(t, "unix:uid:4243"), Revision: 2}})
	require.Same(t, svid, cached("e"))

	second := mustID(t, "spiffe://unum.local/ns/a/job/second")
	ta.SetEntries([]Entry{{ID: "e", SPIFFEID: second, Selectors: sel(t, "unix:uid:4243"), Revision: 3}})
	require.Eventually(t, func() bool { s := cached("e"); return s != nil && s.id == second }, 5*time.Second, time.Millisecond)
	require.Equal(t, int64(2), ta.upstream.x509N.Load())
}

// TestUnchangedStateDoesNotWakeStreams: the control plane resends its state
// as a keepalive; an identical update must not wake every open stream.
func TestUnchangedStateDoesNotWakeStreams(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	a := New(Config{TrustDomain: td})
	entries := []Entry{{ID: "e1", SPIFFEID: spiffeid.RequireFromPath(td, "/ns/a/job/b"), Selectors: []selector.Selector{selector.MustParse("unix:uid:1")}}}
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	root, err := ca.NewRoot(td, key, time.Now(), time.Hour)
	require.NoError(t, err)
	a.SetEntries(entries)
	a.SetBundles([]*x509.Certificate{root}, map[string]crypto.PublicKey{"k1": key.Public()})

	changed := a.changes()
	a.SetEntries(slices.Clone(entries))
	a.SetBundles([]*x509.Certificate{root}, map[string]crypto.PublicKey{"k1": key.Public()})
	select {
	case <-changed:
		t.Fatal("an unchanged update woke the streams")
	default:
	}
	a.SetEntries(nil)
	select {
	case <-changed:
	default:
		t.Fatal("a real change did not wake the streams")
	}
}
