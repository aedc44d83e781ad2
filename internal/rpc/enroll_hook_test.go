package rpc

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
)

// TestEnrollmentRateLimitHook: every refusal of the rate limiter is
// reported, with the method, and nothing else is.
func TestEnrollmentRateLimitHook(t *testing.T) {
	p := newPKI(t, "unum.test")
	var hooked, wrongMethod atomic.Int32
	srv := NewEnrollmentServer(p.creds(t, "/node/n1"), nilLogger(), OnRateLimited(func(m string) {
		if m != unumv1.Enrollment_Join_FullMethodName {
			wrongMethod.Add(1)
		}
		hooked.Add(1)
	}))
	unumv1.RegisterEnrollmentServer(srv, countingEnrollment{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := DialEnrollment(lis.Addr().String(), ca.Fingerprint(p.root))
	require.NoError(t, err)
	defer cc.Close()
	c := unumv1.NewEnrollmentClient(cc)
	limited := int32(0)
	for i := 0; i < enrollBurst+10; i++ {
		_, err := c.Join(ctx5(t), &unumv1.JoinRequest{Token: "x"})
		if status.Code(err) == codes.ResourceExhausted {
			limited++
		}
	}
	require.Positive(t, limited)
	require.Equal(t, limited, hooked.Load())
	require.Zero(t, wrongMethod.Load())
}
