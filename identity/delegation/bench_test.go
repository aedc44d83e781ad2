package delegation

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// reportRate adds ops/s, the figure the issue's targets are stated in.
func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkIssue is what the control plane spends in this package per
// mint: Plan (rules, fresh jti, claims encoded once) and Sign (ES256 through
// Tink). No RPC, policy or audit.
func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	h := f.twoHops(b)
	scopes := mustScopes(b, "kv.read:kv/shop/*")
	for _, bb := range []struct {
		name string
		req  Request
	}{
		{"mint", Request{Caller: alice, Holder: svcA, Audience: []spiffeid.ID{api}, Scopes: scopes}},
		{"exchange", Request{Caller: svcB, CallerCert: h.bCert, Parent: h.c2}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, err := f.issuer.Plan(bb.req)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := f.issuer.Sign(c); err != nil {
						b.Fatal(err)
					}
				}
			})
			reportRate(b)
		})
	}
}

// BenchmarkVerifyCold verifies distinct two-hop credentials with the cache
// off: the parse, signature and chain check of every first presentation.
func BenchmarkVerifyCold(b *testing.B) {
	f := newFixture(b)
	h := f.twoHops(b)
	v, err := NewVerifier(VerifierConfig{TrustDomain: testTD, Keys: f.verify.Keys(), Revocations: f.view,
		Clock: func() time.Time { return testNow }, CacheSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	tokens := make([]string, 512)
	for i := range tokens {
		tokens[i], _ = f.mint(Request{Caller: svcA, Parent: h.c1, Holder: svcB, Audience: []spiffeid.ID{api}, Scopes: h.c2.Scopes})
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tok := tokens[next.Add(1)%uint64(len(tokens))]
			if _, err := v.Verify(Presentation{Token: tok, Peer: h.bCert, Audience: []spiffeid.ID{api}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	reportRate(b)
}

// BenchmarkVerifyWarm presents one two-hop credential again and again with
// the cache on: what every call after the first costs (time, revocation,
// audience and holder checks).
func BenchmarkVerifyWarm(b *testing.B) {
	f := newFixture(b)
	h := f.twoHops(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.verify.Verify(Presentation{Token: h.tok2, Peer: h.bCert, Audience: []spiffeid.ID{api}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	reportRate(b)
}
