package ca

// # How leaves are encoded and signed
//
// x509.CreateCertificate verifies every signature it makes, "to ensure the
// crypto.Signer behaved correctly". For ECDSA P-256 that verification costs
// more than the signature and was about a third of the CPU spent per SVID.
// When the Authority's key is an in-process *ecdsa.PrivateKey the signer is
// the standard library's own ECDSA, and the check would only catch a bug in
// it (a signature that fails to verify is then refused by every relying
// party, so such a bug costs availability, not trust); the Authority then
// writes the TBSCertificate itself with cryptobyte and signs its SHA-256
// with ecdsa.SignASN1 (signLeafDirect). Any other crypto.Signer (an HSM or
// KMS behind the interface, which can fail in ways a unit test does not see)
// keeps x509.CreateCertificate and its self-check (signLeafWithTemplate).
//
// The two paths must issue the same certificate. signLeafWithTemplate is the
// reference: leaf_test.go issues leaves both ways with the same serial and
// clock, for many random keys, IDs, TTLs, clocks and serials (and
// FuzzDirectLeafMatchesTemplate for arbitrary ones), and requires
// byte-identical TBSCertificates. A change to one path that is not made to
// the other fails those tests. Both paths end in x509.ParseCertificate, so a
// malformed encoding fails issuance instead of reaching a caller.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// leafKeyUsage is the key usage of every X509-SVID.
const leafKeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement

// leafExtKeyUsages is the extended key usage of every X509-SVID, in order,
// with the OIDs the direct path writes (crypto/x509 does not export its
// mapping).
var leafExtKeyUsages = [...]struct {
	usage x509.ExtKeyUsage
	oid   asn1.ObjectIdentifier
}{
	{x509.ExtKeyUsageServerAuth, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}},
	{x509.ExtKeyUsageClientAuth, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}},
}

var (
	oidAuthorityKeyID       = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidSignatureECDSASHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidPublicKeyECDSA       = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidNamedCurveP256       = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	emptyName               = []byte{0x30, 0x00} // an empty RDNSequence: the SVID Subject
	tagVersion              = cbasn1.Tag(0).Constructed().ContextSpecific()
	tagExtensions           = cbasn1.Tag(3).Constructed().ContextSpecific()
	tagAuthorityKeyID       = cbasn1.Tag(0).ContextSpecific()
	tagGeneralNameURI       = cbasn1.Tag(sanURI).ContextSpecific()
)

// leafSpec is everything that varies between two X509-SVIDs from one
// Authority. issue fills it; both signing paths encode exactly it.
type leafSpec struct {
	serial              *big.Int
	notBefore, notAfter time.Time
	pub                 crypto.PublicKey
	id                  spiffeid.ID
}

// signLeafWithTemplate is the reference encoding, through
// x509.CreateCertificate.
func (a *Authority) signLeafWithTemplate(l leafSpec) (*x509.Certificate, error) {
	ekus := make([]x509.ExtKeyUsage, len(leafExtKeyUsages))
	for i, u := range leafExtKeyUsages {
		ekus[i] = u.usage
	}
	tmpl := &x509.Certificate{
		SerialNumber:          l.serial,
		NotBefore:             l.notBefore,
		NotAfter:              l.notAfter,
		KeyUsage:              leafKeyUsage,
		ExtKeyUsage:           ekus,
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{l.id.URL()},
	}
	return createCertificate(tmpl, a.cert, l.pub, a.key)
}

// signLeafDirect encodes l with leafTBS and signs it with a.ecKey, without
// verifying the signature it just made (see the comment at the top of this
// file).
func (a *Authority) signLeafDirect(l leafSpec) (*x509.Certificate, error) {
	tbs, err := a.leafTBS(l)
	if err != nil {
		return nil, fmt.Errorf("encode certificate: %w", err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, a.ecKey, digest[:])
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm,
	// signatureValue BIT STRING } (RFC 5280 §4.1).
	b := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+32))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		addECDSAWithSHA256(b)
		b.AddASN1BitString(sig)
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("encode certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	return cert, nil
}

// leafTBS is the DER TBSCertificate (RFC 5280 §4.1) of the leaf l, written
// field by field as x509.CreateCertificate writes the template of
// signLeafWithTemplate: the same fields, extensions in the same order with
// the same criticality (those before the SAN come from leafConstants).
func (a *Authority) leafTBS(l leafSpec) ([]byte, error) {
	if l.serial == nil || l.serial.Sign() <= 0 {
		return nil, errors.New("serial number must be positive")
	}
	pub, ok := l.pub.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%T key, want ECDSA P-256", l.pub)
	}
	point, err := pub.Bytes()
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	uri := l.id.URL().String()
	if err := checkIA5(uri); err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 512))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(tagVersion, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(2) // v3
		})
		b.AddASN1BigInt(l.serial)
		addECDSAWithSHA256(b)
		b.AddBytes(a.issuerName)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, l.notBefore)
			addTime(b, l.notAfter)
		})
		b.AddBytes(emptyName)
		// SubjectPublicKeyInfo as x509.MarshalPKIXPublicKey writes a P-256
		// key (RFC 5480 §2): id-ecPublicKey, namedCurve secp256r1, and the
		// uncompressed point.
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidPublicKeyECDSA)
				b.AddASN1ObjectIdentifier(oidNamedCurveP256)
			})
			b.AddASN1BitString(point)
		})
		b.AddASN1(tagExtensions, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(a.leafExtensions)
				// Critical because the Subject is empty (RFC 5280 §4.2.1.6).
				addExtension(b, oidSubjectAltName, true, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(tagGeneralNameURI, func(b *cryptobyte.Builder) {
							b.AddBytes([]byte(uri))
						})
					})
				})
			})
		})
	})
	return b.Bytes()
}

// leafConstants returns the parts of the TBSCertificate that are the same
// for every leaf under cert, so that New encodes them once: the issuer Name
// and the extensions before the subjectAltName. They follow the rules
// x509.CreateCertificate applies to a parent and to the template of
// signLeafWithTemplate: the issuer is the parent's RawSubject (its Subject
// re-encoded when there is none); the extensions are keyUsage (critical),
// extKeyUsage, basicConstraints (critical) and, unless the issuer equals the
// leaf's empty Subject, authorityKeyIdentifier with the parent's subject key
// identifier when it has one, in that order.
func leafConstants(cert *x509.Certificate) (issuerName, extensions []byte, err error) {
	issuerName = cert.RawSubject
	if len(issuerName) == 0 {
		if issuerName, err = asn1.Marshal(cert.Subject.ToRDNSequence()); err != nil {
			return nil, nil, fmt.Errorf("encode certificate subject: %w", err)
		}
	}
	var authorityKeyID []byte
	if !bytes.Equal(issuerName, emptyName) {
		authorityKeyID = cert.SubjectKeyId
	}
	b := cryptobyte.NewBuilder(nil)
	addExtension(b, oidKeyUsage, true, func(b *cryptobyte.Builder) {
		addKeyUsage(b, leafKeyUsage)
	})
	addExtension(b, oidExtKeyUsage, false, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for _, u := range leafExtKeyUsages {
				b.AddASN1ObjectIdentifier(u.oid)
			}
		})
	})
	// BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE,
	// pathLenConstraint ... OPTIONAL }: a leaf's is the empty SEQUENCE,
	// since DER omits a DEFAULT value.
	addExtension(b, oidBasicConstraints, true, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
	})
	if len(authorityKeyID) > 0 {
		addExtension(b, oidAuthorityKeyID, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(tagAuthorityKeyID, func(b *cryptobyte.Builder) {
					b.AddBytes(authorityKeyID)
				})
			})
		})
	}
	if extensions, err = b.Bytes(); err != nil {
		return nil, nil, fmt.Errorf("encode leaf extensions: %w", err)
	}
	return issuerName, extensions, nil
}

// addECDSAWithSHA256 writes the AlgorithmIdentifier ecdsa-with-SHA256, whose
// parameters are absent (RFC 5758 §3.2).
func addECDSAWithSHA256(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidSignatureECDSASHA256)
	})
}

// addTime writes t as RFC 5280 §4.1.2.5 requires (and encoding/asn1 does):
// in UTC, to the second, as UTCTime for the years 1950 through 2049 and as
// GeneralizedTime otherwise.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}

// addExtension writes Extension ::= SEQUENCE { extnID, critical BOOLEAN
// DEFAULT FALSE, extnValue OCTET STRING }; DER omits critical when false.
func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// addKeyUsage writes ku as the KeyUsage BIT STRING: x509.KeyUsage bit i is
// named bit i, and DER drops trailing zero bits of a named bit list (X.690
// §11.2.2), which is what the unused-bits count records.
func addKeyUsage(b *cryptobyte.Builder, ku x509.KeyUsage) {
	octets := [2]byte{bits.Reverse8(uint8(ku)), bits.Reverse8(uint8(ku >> 8))}
	n := len(octets)
	for n > 0 && octets[n-1] == 0 {
		n--
	}
	var unused uint8
	if n > 0 {
		unused = uint8(bits.TrailingZeros8(octets[n-1]))
	}
	b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
		b.AddUint8(unused)
		b.AddBytes(octets[:n])
	})
}

// checkIA5 refuses what an IA5String (a URI SAN) cannot hold, as
// x509.CreateCertificate does.
func checkIA5(s string) error {
	for i := range len(s) {
		if s[i] > 0x7f {
			return fmt.Errorf("%q cannot be encoded as an IA5String", s)
		}
	}
	return nil
}
