package ca_test

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/unumos/unum/identity/ca"
)

// Example shows the whole life of an X509-SVID: `unum init` makes a root, a
// control node gets an intermediate, an agent sends a CSR, and any SPIFFE
// library verifies the result against the root.
func Example() {
	td := spiffeid.RequireTrustDomainFromString("unum.local")
	now := time.Now()

	rootKey, _ := ca.GenerateKey()
	root, _ := ca.NewRoot(td, rootKey, now, 0)
	interKey, _ := ca.GenerateKey()
	inter, _ := ca.NewIntermediate(td, "cp1", interKey.Public(), root, rootKey, now, 0)
	authority, err := ca.New(td, inter, interKey, nil, time.Now)
	if err != nil {
		panic(err)
	}

	// On the workload's node: a fresh key and a CSR naming the workload.
	id := spiffeid.RequireFromString("spiffe://unum.local/ns/prod/job/web")
	workloadKey, _ := ca.GenerateKey()
	csr, _ := ca.CreateCSR(workloadKey, id)

	// On the control node, after policy said this node may have this ID.
	chain, err := authority.SignX509SVID(csr, id, time.Hour)
	if err != nil {
		panic(err)
	}

	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{root})
	got, _, err := x509svid.Verify(chain, bundle)
	fmt.Println(got, err, len(chain))
	// Output: spiffe://unum.local/ns/prod/job/web <nil> 2
}
