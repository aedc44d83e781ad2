// Package ca is unum's certificate authority: the deterministic core that
// creates the root and intermediate CA certificates, verifies certificate
// signing requests from untrusted parties, and issues X509-SVIDs and
// JWT-SVIDs. It opens no files and no sockets and reads no clock: callers pass
// `now` or a clock, and keep keys on disk with internal/seal.
//
// # Hierarchy
//
//	root (self-signed, MaxPathLen 1, URI SAN spiffe://TD, default 10 years;
//	 │    its key may live offline)
//	 └─ intermediate per control node (MaxPathLen 0, URI SAN
//	     │ spiffe://TD/node/NAME, default 1 year, never past the root)
//	     └─ X509-SVID leaves (URI SAN = the SPIFFE ID, empty Subject)
//
// The intermediate carries its node's SPIFFE ID so that every SVID names, in
// its chain, the control node that minted it (for audit and for revoking what
// a compromised control node issued). It cannot be mistaken for that node's
// SVID: it is a CA certificate, which every SPIFFE verifier refuses as a leaf.
//
// The intermediate is name-constrained (critical extension): permitted URI
// domain TD; excluded URI domain ".TD"; excluded every DNS name, every email
// address and every IPv4 and IPv6 address. RFC 5280 matching lets a domain
// constraint also match its subdomains, so the ".TD" exclusion is what stops
// an intermediate from issuing for a trust domain like "evil.TD". The
// DNS/email/IP exclusions mean that even a stolen intermediate key cannot mint
// a certificate usable for hostname-verified TLS under the unum root; SVIDs
// never carry such names anyway (VerifyCSR refuses CSRs that ask for them). The
// etcd role certificates, which do need IP and DNS names, come from their own
// CA (storage/meta). Go's verifier and OpenSSL both enforce these constraints.
//
// # Invariants
//
//   - all keys are ECDSA P-256; anything else is refused, including Ed25519
//     (one algorithm keeps every verifier simple; P-256 is what every SPIFFE
//     implementation supports);
//   - an issued SVID carries exactly one URI SAN, chosen by the CA, never one
//     copied from a CSR; nothing else from a CSR but its public key is used.
//     In particular the CSR's Subject is ignored: SVIDs have an empty Subject,
//     so no SVID can carry a role CN such as "unum-control";
//   - an SVID never outlives its issuer; a CA certificate never outlives its
//     parent;
//   - a leaf signed with an in-process *ecdsa.PrivateKey is encoded by the
//     package itself (leaf.go), skipping x509.CreateCertificate's costly
//     re-verification of its own signature; its TBSCertificate is
//     byte-identical to the one x509.CreateCertificate writes, which tests
//     and a fuzzer enforce. Any other crypto.Signer goes through
//     x509.CreateCertificate;
//   - Authority and JWTSigner are immutable after construction and safe for
//     concurrent use. Certificates they return share memory with the
//     Authority and must not be modified.
//
// Who may import: identity/... (the identity server, node agent, enrolment),
// cmd/unum (init, login) and tests. Other packages verify SVIDs with go-spiffe
// and a trust bundle; they never need this package.
package ca
