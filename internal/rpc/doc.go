// Package rpc builds unum's mutual-TLS gRPC servers and clients from X509-SVIDs
// and puts one authorization seam in front of every method.
//
// Every server built here verifies the client's SVID against the trust
// bundle (go-spiffe tlsconfig), and every call, unary or streaming, passes
// one interceptor that classifies the verified caller (identity.Classify)
// and asks the Authorizer. Handlers read the caller with CallerFromContext;
// they never look at TLS state themselves. A denial is PermissionDenied with
// the reason ("denied by policy: ..."), which the CLI maps to exit code 3.
//
// The enrolment listener is the one exception to mutual TLS: EnrollmentServerTLS
// serves the node's chain plus the root, and PinnedClientTLS lets a joining
// party that holds no certificate yet authenticate the server by the CA
// fingerprint carried in its token.
//
// Only unum's own daemons and CLI import this package.
package rpc
