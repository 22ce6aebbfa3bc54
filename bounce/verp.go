package bounce

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// VERP errors, returned wrapped with details by [VERP.Decode] and
// [VERP.Encode].
var (
	// ErrVERPMalformed: the address is not a signed return path of ours.
	ErrVERPMalformed = errors.New("bounce: malformed signed return path")
	// ErrVERPForged: the MAC does not verify under any key: forged or altered.
	ErrVERPForged = errors.New("bounce: signed return path does not verify")
	// ErrVERPExpired: the return path is older than MaxAge (or from the future).
	ErrVERPExpired = errors.New("bounce: signed return path expired")
	// ErrVERPTooLong: even the short form exceeds the 64-octet local part.
	ErrVERPTooLong = errors.New("bounce: signed return path too long")
	// ErrVERPConfig: the VERP has no usable key or domain.
	ErrVERPConfig = errors.New("bounce: VERP misconfigured")
)

// VERP signs and verifies return paths (variable envelope return paths)
// that carry a message ID and the recipient, so that a bounce identifies
// both even when it is not a parsable DSN, and forged bounces are refused.
//
// The local part has the form
//
//	PREFIX+DAY+ID+R+MAC
//
// where DAY is the issue day (days since 1970-01-01, base 36), ID the
// escaped message ID, R the recipient in one of three forms, and MAC the
// first 8 bytes of HMAC-SHA256 over the version, domain and fields, in
// lower-case base 32 (13 characters). Escaping keeps only [a-z0-9.-];
// '@' becomes '=' and every other octet "_hh" (hex), so the whole local
// part is lower case and survives MTAs that fold case.
//
// R is "r" + the escaped recipient when the local part fits in 64 octets
// (RFC 5321 §4.5.3.1.1); else "i" + the recipient's index in the message
// (when the caller gives one, 0 or more); else "h" + [RecipientHash] of
// the address. The decoded [ReturnPath] says which form was used: look
// the recipient up by index or by hash in the queue's record of the
// message. The message ID is never shortened: an ID too long for even the
// short forms is an error wrapping [ErrVERPTooLong].
//
// A VERP is immutable after first use and safe for concurrent use.
type VERP struct {
	// Keys are HMAC keys of at least 16 bytes. The first signs; all are
	// tried when verifying, so a new key can be put first while old
	// return paths still verify. Required.
	Keys [][]byte
	// Domain is the return path domain, e.g. "bounce.example.com".
	// Required; compared case-insensitively and covered by the MAC.
	Domain string
	// Prefix starts the local part. Zero: "b". It must be lower-case
	// letters or digits.
	Prefix string
	// MaxAge is how long a return path verifies. Zero: 30 days. Bounces
	// can arrive days after delivery (retries, DSN delays, RFC 5321
	// §4.5.4.1 suggests giving up after 4-5 days).
	MaxAge time.Duration
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
}

// ReturnPath is a decoded signed return path.
type ReturnPath struct {
	// MessageID is the message ID given to Encode.
	MessageID string
	// Recipient is the recipient address, lower case, when it was encoded
	// in full; empty otherwise.
	Recipient string
	// RecipientIndex is the recipient's index when the short index form
	// was used, else -1.
	RecipientIndex int
	// RecipientHash is the recipient's [RecipientHash] when the hash form
	// was used, else empty.
	RecipientHash string
	// Issued is the UTC day the return path was made.
	Issued time.Time
}

// Matches reports whether addr is the recipient this return path names:
// equal to Recipient (case-insensitively) or to RecipientHash. It cannot
// decide for the index form and returns false there.
func (rp *ReturnPath) Matches(addr string) bool {
	switch {
	case rp.Recipient != "":
		return strings.EqualFold(rp.Recipient, addr)
	case rp.RecipientHash != "":
		return hmac.Equal([]byte(rp.RecipientHash), []byte(RecipientHash(addr)))
	}
	return false
}

// RecipientHash returns the 8-character hash of an address used by the
// hash form: base 32 of the first 5 bytes of SHA-256 of the lower-cased
// address.
func RecipientHash(addr string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(addr))))
	return b32.EncodeToString(sum[:5])
}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

const (
	verpVersion  = "v1"
	macLen       = 8
	maxLocalPart = 64 // RFC 5321 §4.5.3.1.1
)

func (v *VERP) check() error {
	if len(v.Keys) == 0 {
		return fmt.Errorf("%w: no keys", ErrVERPConfig)
	}
	for i, k := range v.Keys {
		if len(k) < 16 {
			return fmt.Errorf("%w: key %d shorter than 16 bytes", ErrVERPConfig, i)
		}
	}
	if v.Domain == "" {
		return fmt.Errorf("%w: no domain", ErrVERPConfig)
	}
	for _, c := range v.prefix() {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return fmt.Errorf("%w: prefix %q must be lower-case letters or digits", ErrVERPConfig, v.Prefix)
		}
	}
	return nil
}

func (v *VERP) prefix() string {
	if v.Prefix == "" {
		return "b"
	}
	return v.Prefix
}

func (v *VERP) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *VERP) maxAge() time.Duration {
	if v.MaxAge <= 0 {
		return 30 * 24 * time.Hour
	}
	return v.MaxAge
}

// Encode returns the signed return path for a message ID and recipient.
// rcptIndex is the recipient's position in the message, used by the short
// form when the full recipient does not fit; pass -1 to use the hash form
// instead.
func (v *VERP) Encode(messageID, recipient string, rcptIndex int) (string, error) {
	if err := v.check(); err != nil {
		return "", err
	}
	if messageID == "" {
		return "", fmt.Errorf("%w: empty message ID", ErrVERPMalformed)
	}
	day := strconv.FormatInt(v.now().UTC().Unix()/86400, 36)
	id := verpEscape(messageID)
	forms := []string{"r" + verpEscape(strings.ToLower(strings.TrimSpace(recipient)))}
	if rcptIndex >= 0 {
		forms = append(forms, "i"+strconv.Itoa(rcptIndex))
	}
	forms = append(forms, "h"+RecipientHash(recipient))
	for _, r := range forms {
		body := v.prefix() + "+" + day + "+" + id + "+" + r
		local := body + "+" + v.mac(v.Keys[0], body)
		if len(local) <= maxLocalPart {
			return local + "@" + strings.ToLower(v.Domain), nil
		}
	}
	return "", fmt.Errorf("%w: message ID %q leaves no room", ErrVERPTooLong, messageID)
}

func (v *VERP) mac(key []byte, body string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(verpVersion + "\x00" + strings.ToLower(v.Domain) + "\x00" + body))
	return b32.EncodeToString(m.Sum(nil)[:macLen])
}

// Decode verifies and decodes a signed return path: a full address at
// Domain, or a bare local part. Errors wrap [ErrVERPMalformed],
// [ErrVERPForged] or [ErrVERPExpired]. The MAC is compared in constant
// time under every key.
func (v *VERP) Decode(addr string) (*ReturnPath, error) {
	if err := v.check(); err != nil {
		return nil, err
	}
	addr = strings.Trim(strings.TrimSpace(addr), "<>")
	local := addr
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		if !strings.EqualFold(addr[at+1:], v.Domain) {
			return nil, fmt.Errorf("%w: domain %q is not %q", ErrVERPMalformed, addr[at+1:], v.Domain)
		}
		local = addr[:at]
	}
	if len(local) > maxLocalPart {
		return nil, fmt.Errorf("%w: local part over %d octets", ErrVERPMalformed, maxLocalPart)
	}
	local = strings.ToLower(local)
	parts := strings.Split(local, "+")
	if len(parts) != 5 || parts[0] != v.prefix() {
		return nil, fmt.Errorf("%w: want %s+DAY+ID+R+MAC", ErrVERPMalformed, v.prefix())
	}
	body := strings.Join(parts[:4], "+")
	got := []byte(parts[4])
	ok := false
	for _, k := range v.Keys {
		// Check every key without an early exit.
		if hmac.Equal(got, []byte(v.mac(k, body))) {
			ok = true
		}
	}
	if !ok {
		return nil, ErrVERPForged
	}
	day, err := strconv.ParseInt(parts[1], 36, 64)
	if err != nil || day < 0 || day > 1<<31 {
		return nil, fmt.Errorf("%w: bad day %q", ErrVERPMalformed, parts[1])
	}
	issued := time.Unix(day*86400, 0).UTC()
	now := v.now().UTC()
	if issued.After(now.Add(48*time.Hour)) || now.Sub(issued) > v.maxAge()+24*time.Hour {
		return nil, fmt.Errorf("%w: issued %s", ErrVERPExpired, issued.Format("2006-01-02"))
	}
	id, err := verpUnescape(parts[2])
	if err != nil || id == "" {
		return nil, fmt.Errorf("%w: message ID: %v", ErrVERPMalformed, err)
	}
	rp := &ReturnPath{MessageID: id, RecipientIndex: -1, Issued: issued}
	r := parts[3]
	if r == "" {
		return nil, fmt.Errorf("%w: empty recipient field", ErrVERPMalformed)
	}
	switch r[0] {
	case 'r':
		if rp.Recipient, err = verpUnescape(r[1:]); err != nil {
			return nil, fmt.Errorf("%w: recipient: %v", ErrVERPMalformed, err)
		}
	case 'i':
		n, err := strconv.Atoi(r[1:])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: recipient index %q", ErrVERPMalformed, r[1:])
		}
		rp.RecipientIndex = n
	case 'h':
		if len(r) != 9 {
			return nil, fmt.Errorf("%w: recipient hash %q", ErrVERPMalformed, r[1:])
		}
		rp.RecipientHash = r[1:]
	default:
		return nil, fmt.Errorf("%w: recipient form %q", ErrVERPMalformed, r[:1])
	}
	return rp, nil
}

// verpEscape keeps [a-z0-9.-], turns '@' into '=' and escapes every other
// octet (including upper case) as "_hh".
func verpEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-':
			b.WriteByte(c)
		case c == '@':
			b.WriteByte('=')
		default:
			const hexd = "0123456789abcdef"
			b.WriteByte('_')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&15])
		}
	}
	return b.String()
}

func verpUnescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '=':
			b.WriteByte('@')
		case c == '_':
			if i+2 >= len(s) {
				return "", errors.New("truncated escape")
			}
			n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return "", errors.New("bad escape")
			}
			b.WriteByte(byte(n))
			i += 2
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-':
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("character %q", c)
		}
	}
	return b.String(), nil
}
