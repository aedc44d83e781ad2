package agent

import (
	"crypto/x509"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzValidateJWTSVID feeds untrusted tokens and audiences to the
// validation behind ValidateJWTSVID: it must never panic, must answer only
// InvalidArgument for a bad token, and must accept only tokens of the trust
// domain signed by a bundle key for the audience.
func FuzzValidateJWTSVID(f *testing.F) {
	c := newTestCA(f)
	a := New(Config{TrustDomain: td, Upstream: &caUpstream{}, Logger: quietLogger()})
	a.SetBundles([]*x509.Certificate{c.root}, c.jwtKeys())
	b := a.currentBundle()
	good, err := c.jwt.SignJWTSVID(mustID(f, "spiffe://unum.local/ns/a/job/b"), []string{"db"}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	goodResp, err := validateJWTSVID(b, good, "db")
	if err != nil {
		f.Fatal(err)
	}
	goodJTI := goodResp.Claims.Fields["jti"].GetStringValue()
	if goodJTI == "" {
		f.Fatal("issued token has no jti")
	}
	f.Add(good, "db")
	f.Add(good, "other")
	f.Add(good[:len(good)-3], "db")
	f.Add("e30.e30.", "db")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, token, audience string) {
		resp, err := validateJWTSVID(b, token, audience)
		if err != nil {
			if code := status.Code(err); code != codes.InvalidArgument {
				t.Fatalf("code %s for a bad token: %v", code, err)
			}
			return
		}
		// Only the seed was signed by the bundle's key, so anything accepted
		// must carry its claims (a different spelling of the same signed
		// bytes, such as non-canonical base64, is not a forgery).
		if audience != "db" || resp.SpiffeId != "spiffe://unum.local/ns/a/job/b" ||
			resp.Claims.Fields["jti"].GetStringValue() != goodJTI {
			t.Fatalf("accepted a token that was never issued: %q for audience %q: %v", token, audience, resp)
		}
	})
}
