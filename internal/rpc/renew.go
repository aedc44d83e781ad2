package rpc

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/unumos/unum/identity/revocation"
)

// Machine-readable reason of a refusal that renewal cures: a certificate
// issued between a backup and its restore (revocation.ErrMustRenew). It
// travels as a google.rpc.ErrorInfo detail, so a node reacts to it without
// parsing messages.
const (
	errorDomain     = "unum"
	ReasonMustRenew = "MUST_RENEW"
)

// revokedStatus is the status for a caller refused by revocation: always
// codes.Unauthenticated with the reason; ErrMustRenew also carries the
// ReasonMustRenew detail.
func revokedStatus(err error) error {
	st := status.New(codes.Unauthenticated, err.Error())
	if errors.Is(err, revocation.ErrMustRenew) {
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonMustRenew, Domain: errorDomain}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// IsMustRenew reports whether err is a server's refusal of a certificate
// that must be renewed first (see revokedStatus); the renewal methods
// accept that certificate.
func IsMustRenew(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unauthenticated {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain && info.GetReason() == ReasonMustRenew {
			return true
		}
	}
	return false
}
