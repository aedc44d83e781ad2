// Package identity names the principals of a unum trust domain and holds the
// rules that tie a SPIFFE ID to a kind of principal (DESIGN.md §3):
//
//	node      spiffe://TD/node/NAME
//	system    spiffe://TD/system/SERVICE
//	workload  spiffe://TD/ns/NAMESPACE/...   (jobs: /ns/NS/job/JOB)
//	user      spiffe://TD/user/NAME
//
// Every authorization decision starts from Classify: an ID that fits none of
// these shapes is of KindUnknown and is granted nothing. The sub-packages own
// the moving parts: ca (certificate authority), selector and attest (workload
// attestation), agent (the Workload API) and jointoken (enrolment tokens).
// The control-plane identity service that drives them is package control.
package identity
