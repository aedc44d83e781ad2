package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrCSRRefused is wrapped by every error VerifyCSR returns for a request it
// will not sign; callers map it to an invalid-argument answer.
var ErrCSRRefused = errors.New("csr refused")

// maxCSRSize bounds the DER a caller may hand to VerifyCSR. A P-256 CSR with
// one URI SAN is about 300 bytes.
const maxCSRSize = 16 << 10

var (
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// GeneralName tags (RFC 5280 §4.2.1.6), context-specific.
const (
	sanOtherName     = 0
	sanEmail         = 1
	sanDNS           = 2
	sanX400          = 3
	sanDirectoryName = 4
	sanEDIParty      = 5
	sanURI           = 6
	sanIP            = 7
	sanRegisteredID  = 8
)

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCSRRefused}, args...)...)
}

// VerifyCSR parses and checks a certificate signing request from an
// untrusted party that wants an X509-SVID for want. It returns the parsed
// request only when every check passes; the caller then uses only its public
// key. It refuses (with an error wrapping ErrCSRRefused that names the
// problem) a request that:
//
//   - is larger than 16 KiB, does not parse, or has trailing data;
//   - is not signed with ECDSA and SHA-256/384/512, or whose signature does
//     not verify;
//   - holds a key other than ECDSA P-256;
//   - asks for a DNS, IP, email or any other non-URI subject alternative name,
//     more than one URI, or a URI other than want (zero URIs is fine: the CA
//     sets the URI itself);
//   - asks for basicConstraints CA:TRUE, or a keyUsage with keyCertSign or
//     cRLSign;
//   - requests any extension other than subjectAltName, basicConstraints,
//     keyUsage, extKeyUsage and subjectKeyIdentifier (none is ever copied;
//     refusing the unknown keeps confused clients visible), or one twice.
//
// The Subject (CN, O, ...) is ignored and never copied into a certificate.
func VerifyCSR(csrDER []byte, want spiffeid.ID) (*x509.CertificateRequest, error) {
	if want.IsZero() {
		return nil, refuse("no SPIFFE ID to check the request against")
	}
	if len(csrDER) > maxCSRSize {
		return nil, refuse("request is %d bytes, limit %d", len(csrDER), maxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, refuse("cannot parse request: %v", err)
	}
	switch csr.SignatureAlgorithm {
	case x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512:
	default:
		// CheckSignature would accept SHA-1 in a CSR; we do not.
		return nil, refuse("signature algorithm %s, want ECDSA with SHA-256, SHA-384 or SHA-512", csr.SignatureAlgorithm)
	}
	if err := checkP256(csr.PublicKey); err != nil {
		return nil, refuse("public key: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse("bad signature: %v", err)
	}
	// Go's parsed SAN fields, for messages that name the offending value.
	switch {
	case len(csr.DNSNames) > 0:
		return nil, refuse("asks for DNS SAN %q: SVIDs carry only a SPIFFE ID", csr.DNSNames[0])
	case len(csr.IPAddresses) > 0:
		return nil, refuse("asks for IP SAN %s: SVIDs carry only a SPIFFE ID", csr.IPAddresses[0])
	case len(csr.EmailAddresses) > 0:
		return nil, refuse("asks for email SAN %q: SVIDs carry only a SPIFFE ID", csr.EmailAddresses[0])
	case len(csr.URIs) > 1:
		return nil, refuse("asks for %d URI SANs, at most one is allowed", len(csr.URIs))
	case len(csr.URIs) == 1:
		if err := checkURI(csr.URIs[0], want); err != nil {
			return nil, err
		}
	}
	seen := make(map[string]bool, len(csr.Extensions))
	for _, ext := range csr.Extensions {
		oid := ext.Id.String()
		if seen[oid] {
			return nil, refuse("extension %s requested twice", oid)
		}
		seen[oid] = true
		if err := checkRequestedExtension(ext.Id, ext.Value); err != nil {
			return nil, err
		}
	}
	return csr, nil
}

func checkURI(u *url.URL, want spiffeid.ID) error {
	id, err := spiffeid.FromURI(u)
	if err != nil {
		return refuse("URI SAN %q is not a SPIFFE ID: %v", u, err)
	}
	if id.TrustDomain() != want.TrustDomain() {
		return refuse("URI SAN %q is in trust domain %q, want %q", u, id.TrustDomain().Name(), want.TrustDomain().Name())
	}
	if id != want || u.String() != want.String() {
		return refuse("URI SAN %q is not the SPIFFE ID being issued (%s)", u, want)
	}
	return nil
}

func checkRequestedExtension(id asn1.ObjectIdentifier, value []byte) error {
	switch {
	case id.Equal(oidSubjectAltName):
		return checkSANTypes(value)
	case id.Equal(oidBasicConstraints):
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		rest, err := asn1.Unmarshal(value, &bc)
		if err != nil || len(rest) != 0 {
			return refuse("malformed basicConstraints extension")
		}
		if bc.IsCA {
			return refuse("asks for basicConstraints CA:TRUE: the CA issues only leaf certificates")
		}
	case id.Equal(oidKeyUsage):
		var ku asn1.BitString
		rest, err := asn1.Unmarshal(value, &ku)
		if err != nil || len(rest) != 0 {
			return refuse("malformed keyUsage extension")
		}
		const keyCertSign, cRLSign = 5, 6
		if ku.At(keyCertSign) != 0 || ku.At(cRLSign) != 0 {
			return refuse("asks for keyUsage keyCertSign or cRLSign: the CA issues only leaf certificates")
		}
	case id.Equal(oidExtKeyUsage), id.Equal(oidSubjectKeyID):
		// Harmless: the CA sets its own.
	default:
		return refuse("unsupported requested extension %s", id)
	}
	return nil
}

// checkSANTypes walks the raw GeneralNames: Go's parser skips name types it
// does not model (otherName, directoryName, ...), and we refuse those too.
func checkSANTypes(value []byte) error {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(value, &seq)
	if err != nil || len(rest) != 0 || !seq.IsCompound || seq.Tag != asn1.TagSequence || seq.Class != asn1.ClassUniversal {
		return refuse("malformed subjectAltName extension")
	}
	for names := seq.Bytes; len(names) > 0; {
		var name asn1.RawValue
		names, err = asn1.Unmarshal(names, &name)
		if err != nil {
			return refuse("malformed subjectAltName extension")
		}
		if name.Class != asn1.ClassContextSpecific {
			return refuse("malformed subjectAltName extension: name of class %d", name.Class)
		}
		if name.Tag != sanURI {
			return refuse("asks for a %s SAN: SVIDs carry only a SPIFFE ID", sanTypeName(name.Tag))
		}
	}
	return nil
}

func sanTypeName(tag int) string {
	switch tag {
	case sanOtherName:
		return "otherName"
	case sanEmail:
		return "email"
	case sanDNS:
		return "DNS"
	case sanX400:
		return "x400Address"
	case sanDirectoryName:
		return "directoryName"
	case sanEDIParty:
		return "ediPartyName"
	case sanIP:
		return "IP"
	case sanRegisteredID:
		return "registeredID"
	}
	return fmt.Sprintf("GeneralName [%d]", tag)
}

// CreateCSR returns a DER certificate signing request for id signed by key:
// one URI SAN, empty Subject, no other extension. It is what agents, nodes and
// people call before asking for an SVID.
func CreateCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	if id.IsZero() {
		return nil, errors.New("create csr: empty SPIFFE ID")
	}
	if key == nil {
		return nil, errors.New("create csr: no key")
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create csr for %s: %w", id, err)
	}
	return der, nil
}
