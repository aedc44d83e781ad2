package ca_test

import (
	"testing"
	"time"

	"github.com/unumos/unum/identity/ca"
)

// BenchmarkSignX509SVID measures what SignX509SVID does per request: verify
// an untrusted CSR, then sign the leaf. "direct" is the path an
// *ecdsa.PrivateKey Authority takes; "template" is x509.CreateCertificate,
// which also verifies the signature it made (the path of any other
// crypto.Signer, and of every leaf before the direct path existed).
func BenchmarkSignX509SVID(b *testing.B) {
	f := newFixture(b)
	id := mustID(b, "spiffe://unum.local/ns/prod/job/web")
	csr, err := ca.CreateCSR(mustKey(b), id)
	if err != nil {
		b.Fatal(err)
	}
	for _, path := range leafPaths(f) {
		b.Run(path.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := path.auth.SignX509SVID(csr, id, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignVerifiedCSR measures signing a CSR the caller has already
// verified ("direct", "template"), and the whole verify-once request the
// control plane makes with it ("VerifyCSR+direct"), to compare with
// VerifyCSR followed by SignX509SVID, which verifies twice.
func BenchmarkSignVerifiedCSR(b *testing.B) {
	f := newFixture(b)
	id := mustID(b, "spiffe://unum.local/ns/prod/job/web")
	csrDER, err := ca.CreateCSR(mustKey(b), id)
	if err != nil {
		b.Fatal(err)
	}
	csr, err := ca.VerifyCSR(csrDER, id)
	if err != nil {
		b.Fatal(err)
	}
	for _, path := range leafPaths(f) {
		b.Run(path.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := path.auth.SignVerifiedCSR(csr, id, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("VerifyCSR+direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			csr, err := ca.VerifyCSR(csrDER, id)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.auth.SignVerifiedCSR(csr, id, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// leafPaths is f's Authority on each of its two leaf-signing paths.
func leafPaths(f *fixture) []struct {
	name string
	auth *ca.Authority
} {
	return []struct {
		name string
		auth *ca.Authority
	}{
		{"direct", f.auth},
		{"template", f.auth.WithTestSeams(nil, true)},
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
