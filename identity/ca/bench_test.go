package ca_test

import (
	"testing"
	"time"

	"github.com/unumos/unum/identity/ca"
)

// BenchmarkSignX509SVID measures what the identity server does per SVID
// request: verify an untrusted CSR, then sign the leaf.
func BenchmarkSignX509SVID(b *testing.B) {
	f := newFixture(b)
	id := mustID(b, "spiffe://unum.local/ns/prod/job/web")
	csr, err := ca.CreateCSR(mustKey(b), id)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.auth.SignX509SVID(csr, id, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCSR(b *testing.B) {
	id := mustID(b, "spiffe://unum.local/ns/prod/job/web")
	csr, err := ca.CreateCSR(mustKey(b), id)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.VerifyCSR(csr, id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignJWTSVID(b *testing.B) {
	s, err := ca.NewJWTSigner(testTD, mustKey(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	id := mustID(b, "spiffe://unum.local/ns/prod/job/web")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.SignJWTSVID(id, []string{"spiffe://unum.local/system/kv"}, 5*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
