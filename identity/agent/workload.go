package agent

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/unumos/unum/identity/attest"
	"github.com/unumos/unum/identity/selector"
)

// securityHeader is the metadata every Workload API call must carry. It
// proves the caller meant to speak to the Workload API (a browser or a
// confused proxy forwarding to the socket cannot set it), as the SPIFFE
// Workload API specification requires.
const securityHeader = "workload.spiffe.io"

// workloadServer serves one Serve call. stopping is closed when that Serve's
// context ends, so long-lived streams return and GracefulStop can finish.
type workloadServer struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	a        *Agent
	stopping <-chan struct{}
}

var _ workload.SpiffeWorkloadAPIServer = (*workloadServer)(nil)

var errShuttingDown = status.Error(codes.Unavailable, "workload api: agent is shutting down")

// caller checks the security header and returns the attested peer.
func (s *workloadServer) caller(ctx context.Context) (*attest.Peer, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return nil, status.Errorf(codes.InvalidArgument, "security header %q missing from request", securityHeader)
	}
	p, err := attest.PeerFromContext(ctx)
	if err != nil {
		s.a.log.Error("workload api call without attested peer", "error", err)
		return nil, status.Error(codes.Internal, "workload api: caller could not be identified")
	}
	return p, nil
}

// authorize attests p now and returns the entries it matches, sorted by
// entry ID. Any failure is PermissionDenied: nothing is handed out to a
// caller the agent cannot identify. Every refusal is reported to
// Config.Refused.
func (a *Agent) authorize(ctx context.Context, p *attest.Peer) ([]Entry, error) {
	method, _ := grpc.Method(ctx)
	proc, err := p.Attest()
	if err != nil {
		a.log.Warn("workload attestation failed", "pid", p.PID(), "uid", p.ConnectUID(), "error", err)
		a.refused(ctx, Refusal{Method: method, PID: p.PID(), UID: p.ConnectUID(), Reason: "workload attestation failed: " + err.Error(), Attestation: true})
		return nil, status.Errorf(codes.PermissionDenied, "workload attestation failed: %v", err)
	}
	a.mu.Lock()
	entries := a.mu.snapshot
	a.mu.Unlock()
	var matched []Entry
	for _, e := range entries {
		ok, err := selector.Match(e.Selectors, proc)
		if err != nil {
			// Fail closed: a selector we could not evaluate (say, the binary
			// could not be hashed) denies the call rather than being skipped.
			a.log.Warn("workload attestation failed", "pid", proc.PID, "uid", proc.UID, "entry_id", e.ID, "error", err)
			a.refused(ctx, Refusal{Method: method, PID: p.PID(), UID: p.ConnectUID(), Path: proc.Path, Reason: "workload attestation failed: " + err.Error(), Attestation: true})
			return nil, status.Errorf(codes.PermissionDenied, "workload attestation failed: %v", err)
		}
		if ok {
			matched = append(matched, e)
		}
	}
	if len(matched) == 0 {
		a.log.Info("no registration entry matches workload", "pid", proc.PID, "uid", proc.UID, "path", proc.Path)
		a.refused(ctx, Refusal{Method: method, PID: p.PID(), UID: p.ConnectUID(), Path: proc.Path, Reason: "no registration entry matches this process"})
		return nil, status.Error(codes.PermissionDenied, "no identity issued: no registration entry matches this process")
	}
	return matched, nil
}

// uniqueIDs keeps the first entry of each SPIFFE ID: two entries naming one
// ID would otherwise hand the caller two SVIDs for the same identity.
func uniqueIDs(entries []Entry) []Entry {
	seen := make(map[spiffeid.ID]bool, len(entries))
	out := entries[:0:0]
	for _, e := range entries {
		if !seen[e.SPIFFEID] {
			seen[e.SPIFFEID] = true
			out = append(out, e)
		}
	}
	return out
}

// ensureX509 mints, synchronously, the SVIDs of entries that have none, so a
// first fetch does not depend on Run having got there first. Entries in
// backoff are not retried here.
func (a *Agent) ensureX509(ctx context.Context, entries []Entry) error {
	var firstErr error
	for _, e := range entries {
		if err := a.mint(ctx, e.ID, false); err != nil && firstErr == nil && !errors.Is(err, ErrEntryRemoved) {
			firstErr = err
		}
	}
	return firstErr
}

// x509Response builds the response for entries from the cache. ok is false
// while there is no bundle or no valid SVID to send. key identifies the
// content, to suppress sending a stream the same thing twice.
func (a *Agent) x509Response(entries []Entry) (resp *workload.X509SVIDResponse, key []any, ok bool) {
	now := a.clock()
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.mu.bundle
	if b == nil {
		return nil, nil, false
	}
	resp = &workload.X509SVIDResponse{}
	key = []any{b}
	for _, e := range entries {
		st, found := a.mu.entries[e.ID]
		if !found || st.svid == nil || !now.Before(st.svid.expiresAt) {
			continue
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    st.svid.id.String(),
			X509Svid:    st.svid.chainDER,
			X509SvidKey: st.svid.keyDER,
			Bundle:      b.rootsDER,
		})
		key = append(key, st.svid)
	}
	if len(resp.Svids) == 0 {
		return nil, nil, false
	}
	return resp, key, true
}

func (a *Agent) currentBundle() *bundleState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mu.bundle
}

// stream runs the loop shared by the streaming methods: attest, build, send
// when the content changed, wait for the next change. build returns ok=false
// when there is nothing to send yet; its key identifies the content.
func (s *workloadServer) stream(ctx context.Context, p *attest.Peer,
	build func(ctx context.Context, entries []Entry, first bool) (key []any, ok bool, send func() error, err error)) error {
	var last []any
	first := true
	for {
		changed := s.a.changes()
		// Re-attest before every update: a caller that exec'd, exited or
		// lost its entry since the last message gets nothing more.
		entries, err := s.a.authorize(ctx, p)
		if err != nil {
			return err
		}
		key, ok, send, err := build(ctx, entries, first)
		if err != nil {
			return err
		}
		if ok && !slices.Equal(key, last) {
			if err := send(); err != nil {
				return err
			}
			last, first = key, false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return errShuttingDown
		}
	}
}

// FetchX509SVID streams the caller's X509-SVIDs, keys and the bundle, and an
// update whenever any of them changes.
func (s *workloadServer) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	p, err := s.caller(ctx)
	if err != nil {
		return err
	}
	return s.stream(ctx, p, func(ctx context.Context, entries []Entry, first bool) ([]any, bool, func() error, error) {
		entries = uniqueIDs(entries)
		mintErr := s.a.ensureX509(ctx, entries)
		resp, key, ok := s.a.x509Response(entries)
		if !ok && first && mintErr != nil {
			return nil, false, nil, status.Errorf(codes.Unavailable, "no x509-svid available yet: %v", mintErr)
		}
		return key, ok, func() error { return stream.Send(resp) }, nil
	})
}

// FetchX509Bundles streams the trust domain's X.509 bundle.
func (s *workloadServer) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	ctx := stream.Context()
	p, err := s.caller(ctx)
	if err != nil {
		return err
	}
	return s.stream(ctx, p, func(context.Context, []Entry, bool) ([]any, bool, func() error, error) {
		b := s.a.currentBundle()
		if b == nil {
			return nil, false, nil, nil
		}
		resp := &workload.X509BundlesResponse{Bundles: map[string][]byte{s.a.td.IDString(): b.rootsDER}}
		return []any{b}, true, func() error { return stream.Send(resp) }, nil
	})
}

// FetchJWTBundles streams the trust domain's JWT bundle as a JWKS.
func (s *workloadServer) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	ctx := stream.Context()
	p, err := s.caller(ctx)
	if err != nil {
		return err
	}
	return s.stream(ctx, p, func(context.Context, []Entry, bool) ([]any, bool, func() error, error) {
		b := s.a.currentBundle()
		if b == nil {
			return nil, false, nil, nil
		}
		resp := &workload.JWTBundlesResponse{Bundles: map[string][]byte{s.a.td.IDString(): b.jwks}}
		return []any{b}, true, func() error { return stream.Send(resp) }, nil
	})
}

// FetchJWTSVID returns JWT-SVIDs for the audience: one per SPIFFE ID the
// caller matches, or only the requested one, which it must match.
func (s *workloadServer) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if slices.Contains(req.Audience, "") {
		return nil, status.Error(codes.InvalidArgument, "audience must not contain an empty value")
	}
	var want spiffeid.ID
	if req.SpiffeId != "" {
		if want, err = spiffeid.FromString(req.SpiffeId); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
	}
	entries, err := s.a.authorize(ctx, p)
	if err != nil {
		return nil, err
	}
	entries = uniqueIDs(entries)
	if !want.IsZero() {
		entries = slices.DeleteFunc(entries, func(e Entry) bool { return e.SPIFFEID != want })
		if len(entries) == 0 {
			s.a.log.Warn("workload asked for a JWT-SVID it is not entitled to", "pid", p.PID(), "uid", p.ConnectUID(), "spiffe_id", want.String())
			return nil, status.Errorf(codes.PermissionDenied, "no identity issued: this process is not entitled to %s", want)
		}
	}
	resp := &workload.JWTSVIDResponse{}
	for _, e := range entries {
		token, err := s.a.jwtSVIDFor(ctx, e, req.Audience)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "could not fetch JWT-SVID for %s: %v", e.SPIFFEID, err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: e.SPIFFEID.String(), Svid: token})
	}
	return resp, nil
}

// ValidateJWTSVID validates a JWT-SVID against the trust domain's JWT bundle
// and the audience, and returns its SPIFFE ID and claims.
func (s *workloadServer) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	if _, err := s.a.authorize(ctx, p); err != nil {
		return nil, err
	}
	return validateJWTSVID(s.a.currentBundle(), req.Svid, req.Audience)
}

// validateJWTSVID checks token, untrusted input, against the bundle and
// audience. Errors are gRPC statuses.
func validateJWTSVID(b *bundleState, token, audience string) (*workload.ValidateJWTSVIDResponse, error) {
	if b == nil {
		return nil, status.Error(codes.Unavailable, "no JWT bundle available yet")
	}
	svid, err := jwtsvid.ParseAndValidate(token, b.jwt, []string{audience})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid JWT-SVID: %v", err)
	}
	claims, err := claimsStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// claimsStruct converts decoded JSON claims to a protobuf Struct through
// JSON, which handles every value JSON decoding can produce.
func claimsStruct(claims map[string]any) (*structpb.Struct, error) {
	b, err := json.Marshal(claims)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return s, nil
}
