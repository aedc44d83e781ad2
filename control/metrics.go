package control

import (
	"context"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/internal/metrics/label"
	"github.com/unumos/unum/internal/rpc"
)

// Metrics receives the control services' counters; the node passes its
// *metrics.Metrics, and a nil Config.Metrics counts nothing. Label values
// are the constants of package label (so control does not import the
// Prometheus client). Implementations must be safe for concurrent use and
// must not block.
//
// Who reports what:
//   - MintX509SVID, MintJWTSVID, RenewNodeSVID and Join report every call
//     (wrappers below; refusal reasons come from the gRPC code).
//   - Login and RenewUser (users.go) report the same way: every login as an
//     enrolment attempt of kind user (and, when it succeeds, an issued user
//     SVID, as Join does for nodes), every renewal as a user SVID issued or
//     refused. enrollmentOutcome reads token refusals from their messages:
//     say "token" and "expired" or "already been used".
//   - The enrolment listener's rate limiter reports rate_limited refusals
//     itself (the calls never reach a handler).
//   - The audit witness (audit.go) reports every checkpoint submission.
type Metrics interface {
	SVIDIssued(kind string)
	SVIDRefused(kind, reason string)
	Enrollment(kind, outcome string)
	AuditWitness(outcome string)
}

// countSVID records the outcome of one SVID request.
func (s *Server) countSVID(kind string, err error) {
	m := s.cfg.Metrics
	if m == nil {
		return
	}
	if err == nil {
		m.SVIDIssued(kind)
		return
	}
	m.SVIDRefused(kind, refusalReason(err))
}

// countEnrollment records the outcome of one enrolment attempt.
func (s *Server) countEnrollment(kind string, err error) {
	if m := s.cfg.Metrics; m != nil {
		m.Enrollment(kind, enrollmentOutcome(err))
	}
}

// refusalReason maps a refusal to its label by gRPC code only: nothing the
// caller sent can become a label value.
func refusalReason(err error) string {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return label.ReasonInvalid
	case codes.PermissionDenied, codes.Unauthenticated, codes.NotFound, codes.AlreadyExists:
		return label.ReasonDenied
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted:
		return label.ReasonUnavailable
	}
	return label.ReasonError
}

// enrollmentOutcome classifies a Join (or Login) result. Token refusals are
// told apart by the handlers' own fixed wording, never by caller input:
// every token refusal starts "join token" / mentions "token", and says
// "expired" or "already been used" when that is why.
func enrollmentOutcome(err error) string {
	if err == nil {
		return label.OutcomeOK
	}
	st, _ := status.FromError(err)
	msg := st.Message()
	tokenRefusal := strings.Contains(msg, "token") && !strings.Contains(msg, "the token was not used")
	switch st.Code() {
	case codes.ResourceExhausted:
		return label.OutcomeRateLimited
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		switch {
		case !tokenRefusal:
			return label.OutcomeInvalid
		case strings.Contains(msg, "expired"):
			return label.OutcomeExpired
		case strings.Contains(msg, "already been used"):
			return label.OutcomeUsed
		}
		return label.OutcomeBadToken
	case codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange:
		return label.OutcomeInvalid
	}
	return label.OutcomeError
}

// MintX509SVID implements unumv1.IdentityServer.
func (s *Server) MintX509SVID(ctx context.Context, req *unumv1.MintX509SVIDRequest) (*unumv1.MintX509SVIDResponse, error) {
	resp, err := s.mintX509SVID(ctx, req)
	s.countSVID(label.KindWorkload, err)
	s.recordSVID(ctx, audit.ActionSVIDIssue, SVIDDetails{Type: "x509", SPIFFEID: clip(req.GetSpiffeId()), EntryID: clip(req.GetEntryId())}, resp.GetChain(), err)
	return resp, err
}

// MintJWTSVID implements unumv1.IdentityServer.
func (s *Server) MintJWTSVID(ctx context.Context, req *unumv1.MintJWTSVIDRequest) (*unumv1.MintJWTSVIDResponse, error) {
	resp, err := s.mintJWTSVID(ctx, req)
	s.countSVID(label.KindJWT, err)
	d := SVIDDetails{Type: "jwt", SPIFFEID: clip(req.GetSpiffeId()), EntryID: clip(req.GetEntryId())}
	for i, a := range req.GetAudience() {
		if i == 8 {
			break
		}
		d.Audience = append(d.Audience, clip(a))
	}
	if err == nil {
		d.NotAfter = s.cfg.Clock().Add(s.cfg.JWTTTL).UTC()
	}
	// The token itself is a bearer credential: never recorded.
	s.recordSVID(ctx, audit.ActionSVIDIssue, d, nil, err)
	return resp, err
}

// RenewNodeSVID implements unumv1.IdentityServer.
func (s *Server) RenewNodeSVID(ctx context.Context, req *unumv1.RenewNodeSVIDRequest) (*unumv1.RenewNodeSVIDResponse, error) {
	resp, err := s.renewNodeSVID(ctx, req)
	s.countSVID(label.KindNode, err)
	d := SVIDDetails{Type: "x509"}
	if c, ok := rpc.CallerFromContext(ctx); ok {
		d.SPIFFEID = c.ID.String()
	}
	s.recordSVID(ctx, audit.ActionSVIDRotate, d, resp.GetChain(), err)
	return resp, err
}

// recordSVID records an SVID issued (chain: its DER chain, leaf first) or
// refused (err).
func (s *Server) recordSVID(ctx context.Context, action string, d SVIDDetails, chain [][]byte, err error) {
	if len(chain) > 0 {
		if leaf, perr := x509.ParseCertificate(chain[0]); perr == nil {
			d.Serial, d.NotAfter = leaf.SerialNumber.String(), leaf.NotAfter.UTC()
		}
	}
	outcome, reasons := outcomeOf(err)
	s.record(ctx, audit.Event{Kind: audit.KindSVID, Action: action, Outcome: outcome, Reasons: reasons}.WithDetails(d))
}

// Join implements unumv1.EnrollmentServer (see join).
func (s *Server) Join(ctx context.Context, req *unumv1.JoinRequest) (*unumv1.JoinResponse, error) {
	var u tokenUse
	resp, err := s.join(ctx, req, &u)
	s.recordTokenUse(ctx, "node", &u, err, func(e audit.Event) audit.Event {
		id, _ := identity.NodeID(s.cfg.TrustDomain, u.name)
		e.Kind, e.Action, e.Subject = audit.KindNode, audit.ActionNodeJoin, id.String()
		return e.WithDetails(SVIDDetails{Type: "x509", SPIFFEID: id.String(), Serial: u.leaf.SerialNumber.String(),
			NotAfter: u.leaf.NotAfter.UTC(), Roles: u.roles, TokenID: u.id})
	})
	s.countEnrollment(label.KindNode, err)
	// A node SVID is issued only by a join that succeeds; a refused join
	// is counted as an enrolment outcome, not as a refused SVID.
	if err == nil {
		s.countSVID(label.KindNode, nil)
	}
	return resp, err
}
