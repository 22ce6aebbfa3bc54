package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Algorithm names a DKIM key type for key generation.
type Algorithm string

// Key types DKIM signers use today (RFC 8301, RFC 8463).
const (
	// RSA is an RSA key (2048 bits when generated here), signing with rsa-sha256.
	RSA Algorithm = "rsa"
	// Ed25519 is an Ed25519 key, signing with ed25519-sha256 (RFC 8463).
	Ed25519 Algorithm = "ed25519"
)

// Key errors.
var (
	// ErrKeyFormat reports a private or public key that cannot be decoded.
	ErrKeyFormat = errors.New("dkim: bad key")
	// ErrKeyType reports a key of a type DKIM cannot use (not RSA or Ed25519).
	ErrKeyType = errors.New("dkim: unsupported key type")
	// ErrKeyTooSmall reports an RSA key below the configured minimum size.
	ErrKeyTooSmall = errors.New("dkim: RSA key too small")
)

// GenerateKey makes a new private key: RSA 2048 bits for [RSA], or an
// Ed25519 key. rand is the entropy source; nil means crypto/rand.
func GenerateKey(alg Algorithm, random io.Reader) (crypto.Signer, error) {
	if random == nil {
		random = rand.Reader
	}
	switch alg {
	case RSA:
		k, err := rsa.GenerateKey(random, 2048)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate RSA key: %w", err)
		}
		return k, nil
	case Ed25519:
		_, k, err := ed25519.GenerateKey(random)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate Ed25519 key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrKeyType, alg)
}

// ParsePrivateKeyPEM decodes the first PEM block of data as a DKIM private
// key: PKCS#8 ("PRIVATE KEY", RSA or Ed25519) or PKCS#1 ("RSA PRIVATE KEY").
// Errors wrap [ErrKeyFormat] or [ErrKeyType].
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrKeyFormat)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: PKCS#1: %v", ErrKeyFormat, err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: PKCS#8: %v", ErrKeyFormat, err)
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("%w: %T", ErrKeyType, k)
	}
	return nil, fmt.Errorf("%w: PEM block %q (want PRIVATE KEY or RSA PRIVATE KEY)", ErrKeyFormat, block.Type)
}

// MarshalPrivateKeyPEM encodes an RSA or Ed25519 private key as a PKCS#8
// PEM block ("PRIVATE KEY").
func MarshalPrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	switch key.(type) {
	case *rsa.PrivateKey, ed25519.PrivateKey:
	default:
		return nil, fmt.Errorf("%w: %T", ErrKeyType, key)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFormat, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// KeyRecord returns the DNS TXT record value that publishes pub (RFC 6376
// §3.6.1): "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>" for RSA, or
// "v=DKIM1; k=ed25519; p=<base64 raw 32-byte key>" for Ed25519 (RFC 8463 §4).
func KeyRecord(pub crypto.PublicKey) (string, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrKeyFormat, err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	}
	return "", fmt.Errorf("%w: %T", ErrKeyType, pub)
}

// KeyRecordName returns the DNS name of a selector's key record:
// "<selector>._domainkey.<domain>." (RFC 6376 §3.6.2.1), lower case, with
// the trailing dot.
func KeyRecordName(selector, domain string) string {
	return strings.ToLower(selector + "._domainkey." + strings.TrimSuffix(domain, ".") + ".")
}

// ZoneTXT formats a zone-file TXT line for name and value, splitting value
// into quoted character-strings of at most 255 octets (RFC 1035 §3.3.14;
// RFC 6376 §3.6.2.2: the strings are joined without separator), e.g.
//
//	sel._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIB..." "...".
//
// Quotes and backslashes in value are escaped.
func ZoneTXT(name, value string) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(" IN TXT")
	for _, chunk := range splitTXT(value) {
		b.WriteString(" \"")
		for i := 0; i < len(chunk); i++ {
			c := chunk[i]
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('"')
	}
	return b.String()
}

// splitTXT cuts s into pieces of at most 255 octets; an empty s gives one
// empty string.
func splitTXT(s string) []string {
	if s == "" {
		return []string{""}
	}
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// KeyTXT returns the zone-file line to publish for a selector's public key:
// ZoneTXT(KeyRecordName(selector, domain), KeyRecord(pub)).
func KeyTXT(selector, domain string, pub crypto.PublicKey) (string, error) {
	rec, err := KeyRecord(pub)
	if err != nil {
		return "", err
	}
	return ZoneTXT(KeyRecordName(selector, domain), rec), nil
}

// PublicKeyRecord is a parsed DKIM key record (RFC 6376 §3.6.1).
type PublicKeyRecord struct {
	// Version is the v= tag ("DKIM1"), empty when absent.
	Version string
	// KeyType is the k= tag, "rsa" when absent.
	KeyType string
	// Hashes is the h= tag's list of acceptable hash algorithms; nil means all.
	Hashes []string
	// Services is the s= tag; nil means all ("*").
	Services []string
	// Flags is the t= tag (e.g. "y" testing, "s" strict i= domain).
	Flags []string
	// Revoked is true when p= is empty (RFC 6376 §3.6.1).
	Revoked bool
	// PublicKey is *rsa.PublicKey or ed25519.PublicKey; nil when revoked.
	PublicKey crypto.PublicKey
}

// ParseKeyRecord parses a DKIM key record (the TXT value with its
// character-strings joined). Unknown tags are ignored (RFC 6376 §3.6.1);
// malformed tag lists, a v= other than DKIM1, a missing p= and undecodable
// keys are errors wrapping [ErrKeyFormat]; unknown key types wrap [ErrKeyType].
// RSA keys may be SubjectPublicKeyInfo or PKCS#1 (erratum 3017).
func ParseKeyRecord(s string) (*PublicKeyRecord, error) {
	tags, err := ParseTags(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFormat, err)
	}
	rec := &PublicKeyRecord{KeyType: "rsa"}
	if v, ok := tags.Get("v"); ok {
		if v != "DKIM1" {
			return nil, fmt.Errorf("%w: version %q", ErrKeyFormat, v)
		}
		rec.Version = v
	}
	if k, ok := tags.Get("k"); ok {
		rec.KeyType = strings.ToLower(k)
	}
	if h, ok := tags.Get("h"); ok {
		rec.Hashes = splitColon(h)
	}
	if sv, ok := tags.Get("s"); ok {
		rec.Services = splitColon(sv)
		for _, x := range rec.Services {
			if x == "*" {
				rec.Services = nil
				break
			}
		}
	}
	if t, ok := tags.Get("t"); ok {
		rec.Flags = splitColon(t)
	}
	p, ok := tags.Get("p")
	if !ok {
		return nil, fmt.Errorf("%w: missing p=", ErrKeyFormat)
	}
	p = removeFWS(p)
	if p == "" {
		rec.Revoked = true
		return rec, nil
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("%w: p=: %v", ErrKeyFormat, err)
	}
	switch rec.KeyType {
	case "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			pk1, err1 := x509.ParsePKCS1PublicKey(der)
			if err1 != nil {
				return nil, fmt.Errorf("%w: RSA key: %v", ErrKeyFormat, err)
			}
			pub = pk1
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: k=rsa but key is %T", ErrKeyFormat, pub)
		}
		rec.PublicKey = rk
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: Ed25519 key of %d bytes", ErrKeyFormat, len(der))
		}
		rec.PublicKey = ed25519.PublicKey(der)
	default:
		return nil, fmt.Errorf("%w: k=%s", ErrKeyType, rec.KeyType)
	}
	return rec, nil
}

// Matches reports whether the record publishes the public half of key.
func (r *PublicKeyRecord) Matches(key crypto.Signer) bool {
	if r == nil || r.PublicKey == nil || key == nil {
		return false
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	eq, ok := key.Public().(equaler)
	return ok && eq.Equal(r.PublicKey)
}

func splitColon(s string) []string {
	parts := strings.Split(s, ":")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, strings.ToLower(p))
		}
	}
	return out
}
