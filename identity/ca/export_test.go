package ca

import "math/big"

// WithTestSeams returns a copy of a whose leaves take their serial number
// from serial (when not nil) and, when template is set, are signed through
// x509.CreateCertificate even if a would sign them directly. It lets tests
// issue one leaf both ways and compare the encodings.
func (a *Authority) WithTestSeams(serial func() *big.Int, template bool) *Authority {
	c := *a
	if serial != nil {
		c.newSerial = serial
	}
	if template {
		c.ecKey = nil
	}
	return &c
}

// SignsDirectly reports whether a encodes and signs leaves itself rather than
// through x509.CreateCertificate.
func (a *Authority) SignsDirectly() bool { return a.ecKey != nil }
