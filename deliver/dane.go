package deliver

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// daneRecord is one TLSA record (RFC 6698 §2.1).
type daneRecord struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte
}

// TLSA usages, selectors and matching types (RFC 6698 §2.1, RFC 7218).
const (
	daneTA   = 2 // DANE-TA: trust anchor
	daneEE   = 3 // DANE-EE: the end-entity certificate itself
	selCert  = 0
	selSPKI  = 1
	matchRaw = 0
	match256 = 1
	match512 = 2
)

// daneError is a DANE authentication failure.
type daneError struct{ msg string }

func (e *daneError) Error() string { return "DANE: " + e.msg }

// usableTLSA keeps the records RFC 7672 §3.1.3 lets SMTP use: DANE-TA(2)
// and DANE-EE(3) with a known selector and matching type. PKIX-TA(0) and
// PKIX-EE(1) are unusable for SMTP.
func usableTLSA(rs []daneRecord) []daneRecord {
	var out []daneRecord
	for _, r := range rs {
		if r.Usage != daneTA && r.Usage != daneEE {
			continue
		}
		if r.Selector != selCert && r.Selector != selSPKI {
			continue
		}
		switch r.MatchingType {
		case matchRaw:
		case match256:
			if len(r.Data) != sha256.Size {
				continue
			}
		case match512:
			if len(r.Data) != sha512.Size {
				continue
			}
		default:
			continue
		}
		out = append(out, r)
	}
	return out
}

func daneMatch(r daneRecord, c *x509.Certificate) bool {
	var data []byte
	switch r.Selector {
	case selCert:
		data = c.Raw
	case selSPKI:
		data = c.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch r.MatchingType {
	case matchRaw:
		return bytes.Equal(data, r.Data)
	case match256:
		h := sha256.Sum256(data)
		return bytes.Equal(h[:], r.Data)
	case match512:
		h := sha512.Sum512(data)
		return bytes.Equal(h[:], r.Data)
	}
	return false
}

// daneVerifier returns a TLS verification function for the usable TLSA
// records of host (RFC 7672 §3.1):
//
//   - DANE-EE(3): the server's own certificate must match; its names and
//     validity dates are not checked (§3.1.1).
//   - DANE-TA(2): some certificate the server presented must match, and
//     the server certificate must chain to it and carry one of names
//     (the MX host name, as the TLSA base domain, §3.2.2).
func daneVerifier(records []daneRecord, names []string) func(cs tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &daneError{"no server certificate"}
		}
		leaf := cs.PeerCertificates[0]
		var taErr error
		for _, r := range records {
			switch r.Usage {
			case daneEE:
				if daneMatch(r, leaf) {
					return nil
				}
			case daneTA:
				for _, c := range cs.PeerCertificates {
					if !daneMatch(r, c) {
						continue
					}
					roots := x509.NewCertPool()
					roots.AddCert(c)
					inter := x509.NewCertPool()
					for _, ic := range cs.PeerCertificates[1:] {
						inter.AddCert(ic)
					}
					for _, name := range names {
						_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name})
						if err == nil {
							return nil
						}
						taErr = err
					}
				}
			}
		}
		if taErr != nil {
			return &daneError{fmt.Sprintf("certificate chains to a DANE-TA anchor but does not verify: %v", taErr)}
		}
		return &daneError{"no TLSA record matches the server certificate"}
	}
}
