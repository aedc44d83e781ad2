package rpc

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/unumos/unum/identity"
)

// checkUserExpiry refuses a call from a user whose certificate has expired
// since the connection's handshake: TLS checks validity only then, and an
// HTTP/2 connection lives as long as its client keeps it. People's
// certificates are short-lived on purpose (and renewed with a new key on a
// new connection), so a call past expiry is refused rather than served on
// the strength of an old handshake. Nodes and workloads are not checked
// here: they rotate their SVIDs under long-lived connections, which would
// all fail at the first expiry; revocation (checked on every call) is what
// cuts those off.
func checkUserExpiry(c Caller, now time.Time) error {
	if c.Kind != identity.KindUser || c.Certificate == nil || now.Before(c.Certificate.NotAfter) {
		return nil
	}
	return status.Errorf(codes.Unauthenticated, "certificate of %s expired at %s: renew it before it expires (unum login --renew), or log in again",
		c.ID, c.Certificate.NotAfter.UTC().Format(time.RFC3339))
}
