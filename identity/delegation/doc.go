// Package delegation is unum's answer to sudo for the cluster: delegated
// credentials that let a service act on behalf of a caller without becoming
// a confused deputy. It owns the credential format, the chain rules, the
// signing keyring and the verifier every service links.
//
// # The credential
//
// A credential is a JWS compact token (RFC 7515), alg ES256, typ
// "unum-cred+jwt", kid naming the key of the control node that signed it.
// Its claims:
//
//	iss    spiffe://TD, the trust domain
//	sub    the original principal (a user, a workload)
//	act    the actor chain, nested as in RFC 8693 §4.1: the top level is
//	       the holder; each nested level is the actor before it, carrying
//	       the grant it held (jti, scope, aud, iat, exp) so that every verifier
//	       can check that each hop narrowed; an innermost level with only
//	       sub is an issuer who minted on sub's behalf (impersonation,
//	       `unum cred delegate --on-behalf-of`)
//	aud    the SPIFFE IDs of the services it may be presented to
//	scope  space-separated ACTION:RESOURCE patterns (Scope), the policy's
//	       vocabulary
//	iat, nbf, exp, jti
//	cnf    {"spiffe_id": holder} and, when the holder obtained the token
//	       over its own mTLS connection, {"x5t#S256": SHA-256 of that
//	       certificate} (RFC 8705 §3.1); the token then never outlives it
//
// # Rules (the issuer checks them, and every verifier again)
//
//   - attenuation only: a credential minted from another narrows its scopes
//     and audiences and never outlives it;
//   - the chain is at most MaxDepth actors (the policy may set less, default
//     DefaultMaxDepth) and ends with the holder, named again in cnf;
//   - lifetimes are at most MaxTTL whatever the policy says;
//   - a verifier accepts a credential only from its holder: the mTLS peer
//     must be cnf.spiffe_id, and present the certificate cnf.x5t#S256 names
//     when set. A stolen token is worthless without the holder's key;
//   - revoked when its jti or any ancestor's was revoked (whenever it was
//     minted: a jti names one credential and everything minted from it), or
//     its subject (or the subject's SPIFFE identity) was revoked after the
//     root credential of its chain was issued, or any actor (as a credential
//     holder, or its SPIFFE identity) after the credential it held was
//     issued: each act level carries its grant's iat, so authority issued
//     before a revocation stays cut in everything later minted from it
//     (revocation keys: RevocationKeyJTI and friends, in the same
//     revocation set as certificates).
//
// Whether a principal may delegate a scope to another, on whose behalf, is
// the policy's decision (action cred.delegate, and cred.impersonate for
// --on-behalf-of); the effective right of a delegated call is the
// intersection of the rights of everyone in the chain and the scope, which
// internal/rpc enforces for every unum service.
//
// # Keys
//
// Each control node signs with its own Tink JWT keyset (ES256, Keyring),
// sealed on its disk under the node's key-encryption key and rotated: a new
// primary key every rotation period, the old ones kept (verifying only) until
// every token they signed has expired. The public halves are published as a
// JWK set and reach every verifier through the control plane (PublicKeys).
//
// Verification is deterministic: no I/O, a clock injected, revocations read
// from a revocation.View fed by its owner. The signature check (ECDSA P-256
// over the exact bytes) is done here rather than through Tink's verifier:
// it lets the parser be strict (exactly the header we write, no unknown
// claims) and costs a third less; the keys are Tink's own, exported as JWKs.
//
// Who may import: control (minting), internal/rpc (verifying every call),
// node, internal/cli and any service in the cluster.
package delegation
