package delegation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// MetadataKey is the gRPC metadata key a credential is presented in, with
// every call made on the subject's behalf.
const MetadataKey = "unum-delegation"

type contextKey struct{}

// NewContext returns ctx carrying c, the verified credential of the current
// call.
func NewContext(ctx context.Context, c *Credential) context.Context {
	return context.WithValue(ctx, contextKey{}, c)
}

// FromContext returns the verified credential the current call presented.
func FromContext(ctx context.Context) (*Credential, bool) {
	c, ok := ctx.Value(contextKey{}).(*Credential)
	return c, ok && c != nil
}

// OutgoingContext returns ctx whose outgoing calls present token.
func OutgoingContext(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, MetadataKey, token)
}

// ErrNotPresented: the call presented no credential (FromIncoming).
var ErrNotPresented = errors.New("no delegated credential presented")

// FromIncoming verifies the credential an incoming gRPC call presents
// against the call's mTLS peer: what a service's own interceptor calls. It
// returns ErrNotPresented when there is none, and refuses more than one.
//
// The holder binding is only as good as the peer certificate: the server's
// TLS configuration must verify the client's chain against the trust
// bundle (go-spiffe's tlsconfig.MTLSServerConfig does; tls.RequestClientCert
// or RequireAnyClientCert alone do not), or anyone could present a
// self-made certificate naming the holder.
func (v *Verifier) FromIncoming(ctx context.Context, audience []spiffeid.ID, maxDepth int) (*Credential, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	tokens := md.Get(MetadataKey)
	switch len(tokens) {
	case 0:
		return nil, ErrNotPresented
	case 1:
	default:
		return nil, fmt.Errorf("%w: %d credentials presented, at most one", ErrMalformed, len(tokens))
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("%w: no peer", ErrHolder)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || !ti.State.HandshakeComplete || len(ti.State.PeerCertificates) == 0 {
		return nil, fmt.Errorf("%w: the call is not over mutual TLS", ErrHolder)
	}
	return v.Verify(Presentation{Token: tokens[0], Peer: ti.State.PeerCertificates[0], Audience: audience, MaxDepth: maxDepth})
}

// UnaryServerInterceptor verifies the credential a call presents (held by
// the mTLS peer, for one of audience, the chain within maxDepth) and puts
// it in the handler's context (FromContext), whence the service builds its
// policy input: the subject, then every actor (Credential.Principals),
// each of whose rights the call must have, within Credential.Allows. A call
// that presents a credential that does not verify is refused
// (Unauthenticated, with the reason); one without a credential passes
// unchanged unless required. A service that must not be called directly
// sets required.
func (v *Verifier) UnaryServerInterceptor(audience []spiffeid.ID, maxDepth int, required bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := v.incoming(ctx, audience, maxDepth, required)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams. A stream
// opened with a credential ends (Unauthenticated, with the reason) when
// the credential is revoked or expires while it runs: it was verified
// once, when the stream opened, and a stream may outlive it by hours.
func (v *Verifier) StreamServerInterceptor(audience []spiffeid.ID, maxDepth int, required bool) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := v.incoming(ss.Context(), audience, maxDepth, required)
		if err != nil {
			return err
		}
		c, ok := FromContext(ctx)
		if !ok {
			return handler(srv, &credentialStream{ServerStream: ss, ctx: ctx})
		}
		ctx, cancel := context.WithCancelCause(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			v.watch(ctx, c, cancel)
		}()
		defer func() {
			cancel(nil)
			<-done
		}()
		err = handler(srv, &credentialStream{ServerStream: ss, ctx: ctx})
		if cause := context.Cause(ctx); cause != nil && status.Code(cause) == codes.Unauthenticated {
			return cause
		}
		return err
	}
}

// watch cancels ctx, with why, once c is revoked or expired (Leeway
// included); it returns then or when ctx ends.
func (v *Verifier) watch(ctx context.Context, c *Credential, cancel context.CancelCauseFunc) {
	t := time.NewTimer(c.Expiry.Add(Leeway).Sub(v.clock()))
	defer t.Stop()
	for {
		set, changed, loaded := v.revocations.Snapshot()
		if loaded {
			if err := CheckRevoked(set, c); err != nil {
				cancel(status.Errorf(codes.Unauthenticated, "delegated credential refused: %v", err))
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cancel(status.Errorf(codes.Unauthenticated, "delegated credential refused: %v: at %s", ErrExpired, c.Expiry.UTC().Format(time.RFC3339)))
			return
		case <-changed:
		}
	}
}

func (v *Verifier) incoming(ctx context.Context, audience []spiffeid.ID, maxDepth int, required bool) (context.Context, error) {
	c, err := v.FromIncoming(ctx, audience, maxDepth)
	switch {
	case errors.Is(err, ErrNotPresented) && !required:
		return ctx, nil
	case err != nil:
		return nil, status.Errorf(codes.Unauthenticated, "delegated credential refused: %v", err)
	}
	return NewContext(ctx, c), nil
}

type credentialStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *credentialStream) Context() context.Context { return s.ctx }
