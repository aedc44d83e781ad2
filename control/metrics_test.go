package control

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/metrics/label"
)

// counters reads the harness's registry; delta compares two readings.
func counters(t *testing.T) map[string]float64 {
	t.Helper()
	v, err := h.metrics.Values()
	require.NoError(t, err)
	return v
}

func delta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if !strings.HasPrefix(k, "unum_") {
			continue // runtime and process metrics
		}
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// TestSVIDCounters: every mint and renewal, issued or refused, moves
// exactly its counter, over the real gRPC services.
func TestSVIDCounters(t *testing.T) {
	e := register(t, "spiffe://unum.test/ns/metrics/job/a", "node-1", "unix:uid:1000")
	ic := unumv1.NewIdentityClient(conn(t, "/node/node-1"))
	before := counters(t)

	_, err := ic.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: e.GetId(), SpiffeId: e.GetSpiffeId(), Csr: csrFor(t, e.GetSpiffeId())})
	require.NoError(t, err)
	_, err = ic.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: "0000", SpiffeId: e.GetSpiffeId(), Csr: csrFor(t, e.GetSpiffeId())})
	requireCode(t, err, codes.PermissionDenied, "no registration entry")
	_, err = ic.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: e.GetId(), SpiffeId: e.GetSpiffeId(), Csr: []byte("junk")})
	requireCode(t, err, codes.InvalidArgument, "csr")
	_, err = ic.MintJWTSVID(ctxT(t), &unumv1.MintJWTSVIDRequest{EntryId: e.GetId(), SpiffeId: e.GetSpiffeId(), Audience: []string{"db"}})
	require.NoError(t, err)
	_, err = ic.MintJWTSVID(ctxT(t), &unumv1.MintJWTSVIDRequest{EntryId: e.GetId(), SpiffeId: e.GetSpiffeId()})
	requireCode(t, err, codes.InvalidArgument, "audience")
	_, err = ic.RenewNodeSVID(ctxT(t), &unumv1.RenewNodeSVIDRequest{Csr: csrFor(t, "spiffe://unum.test/node/node-1")})
	require.NoError(t, err)

	require.Equal(t, map[string]float64{
		`unum_svids_issued_total{kind="workload"}`:                   1,
		`unum_svids_refused_total{kind="workload",reason="denied"}`:  1,
		`unum_svids_refused_total{kind="workload",reason="invalid"}`: 1,
		`unum_svids_issued_total{kind="jwt"}`:                        1,
		`unum_svids_refused_total{kind="jwt",reason="invalid"}`:      1,
		`unum_svids_issued_total{kind="node"}`:                       1,
	}, delta(before, counters(t)))
}

// TestEnrollmentCounters: each way a join ends is counted under its own
// outcome, and a successful join also counts the node SVID it issued.
func TestEnrollmentCounters(t *testing.T) {
	fp := ca.Fingerprint(h.root)
	ec := enrollClient(t, fp)
	shortResp, err := unumv1.NewClusterClient(conn(t, "/user/admin")).CreateJoinToken(ctxT(t), &unumv1.CreateJoinTokenRequest{Name: "metrics-expired", Roles: []string{"compute"}, TtlSeconds: 1})
	require.NoError(t, err)
	tok := mintToken(t, "metrics-ok")
	before := counters(t)

	_, err = ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
	require.NoError(t, err)
	_, err = ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
	requireCode(t, err, codes.PermissionDenied, "already been used")
	_, err = ec.Join(ctxT(t), joinReq("unum1.node.garbage", makeCSR(t, csrOpts{})))
	requireCode(t, err, codes.InvalidArgument, "join token")
	unknown := mintToken(t, "metrics-unknown")
	_, err = ec.Join(ctxT(t), joinReq(unknown[:len(unknown)-4]+"AAAA", makeCSR(t, csrOpts{})))
	require.Error(t, err)
	bad := mintToken(t, "metrics-badcsr")
	_, err = ec.Join(ctxT(t), joinReq(bad, makeCSR(t, csrOpts{uris: []string{"spiffe://unum.test/node/someone-else"}})))
	requireCode(t, err, codes.InvalidArgument, "csr")
	time.Sleep(time.Until(time.Unix(shortResp.GetExpiresAtUnix()+1, 0)))
	_, err = ec.Join(ctxT(t), joinReq(shortResp.GetToken(), makeCSR(t, csrOpts{})))
	requireCode(t, err, codes.PermissionDenied, "expired")

	require.Equal(t, map[string]float64{
		`unum_enrollment_attempts_total{kind="node",outcome="ok"}`:        1,
		`unum_enrollment_attempts_total{kind="node",outcome="used"}`:      1,
		`unum_enrollment_attempts_total{kind="node",outcome="bad_token"}`: 2,
		`unum_enrollment_attempts_total{kind="node",outcome="invalid"}`:   1,
		`unum_enrollment_attempts_total{kind="node",outcome="expired"}`:   1,
		`unum_svids_issued_total{kind="node"}`:                            1,
	}, delta(before, counters(t)))
}

func TestEnrollmentOutcome(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, label.OutcomeOK},
		{status.Error(codes.PermissionDenied, "join token expired at 2030-01-01T00:00:00Z"), label.OutcomeExpired},
		{status.Error(codes.PermissionDenied, "join token has already been used"), label.OutcomeUsed},
		{status.Error(codes.PermissionDenied, "join token is unknown to this cluster"), label.OutcomeBadToken},
		{status.Error(codes.PermissionDenied, "join token is invalid"), label.OutcomeBadToken},
		{status.Error(codes.InvalidArgument, "join token: malformed"), label.OutcomeBadToken},
		{status.Error(codes.InvalidArgument, "node csr refused: x"), label.OutcomeInvalid},
		{status.Error(codes.FailedPrecondition, "start it with --kek-file PATH; the token was not used"), label.OutcomeInvalid},
		{status.Error(codes.AlreadyExists, `a node named "x" already exists`), label.OutcomeInvalid},
		{status.Error(codes.ResourceExhausted, "too many enrolment attempts"), label.OutcomeRateLimited},
		{status.Error(codes.Unavailable, "read join token: no quorum"), label.OutcomeError},
		{status.Error(codes.Internal, "sign node svid"), label.OutcomeError},
		{errors.New("plain"), label.OutcomeError},
	} {
		require.Equal(t, tc.want, enrollmentOutcome(tc.err), "%v", tc.err)
	}
}
