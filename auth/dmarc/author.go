package dmarc

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"
)

// Author-domain errors: why a message has no usable author domain (RFC
// 9989 §5.3.1, §11.5). Each wraps ErrAuthor.
var (
	ErrAuthor = errors.New("dmarc: no single author domain")
	// ErrNoFrom: the message has no From field.
	ErrNoFrom = fmt.Errorf("%w: no From field", ErrAuthor)
	// ErrMultipleFrom: more than one From field.
	ErrMultipleFrom = fmt.Errorf("%w: more than one From field", ErrAuthor)
	// ErrMultipleAuthors: one From field with several addresses.
	ErrMultipleAuthors = fmt.Errorf("%w: From holds several addresses", ErrAuthor)
	// ErrGroup: group syntax (e.g. "undisclosed-recipients:;").
	ErrGroup = fmt.Errorf("%w: From uses group syntax", ErrAuthor)
	// ErrAmbiguousFrom: a From form that parsers disagree on (comments,
	// encoded-words or folding in the address, route syntax, quoted local
	// parts holding "@", whitespace before the colon, ...).
	ErrAmbiguousFrom = fmt.Errorf("%w: ambiguous From field", ErrAuthor)
)

// FromField is one From header field as found in the message.
type FromField struct {
	// Name is the field name as written, e.g. "From" or "From " (with the
	// whitespace before the colon, which RFC 5322 obsolete syntax allows
	// and parsers treat differently).
	Name string
	// Value is the raw value after the colon, folding (CRLF + WSP) kept.
	Value string
}

// AuthorDomain returns the lower-case A-label author domain of a message
// given its From fields. It fails closed, with an error wrapping
// [ErrAuthor], on every form that different parsers read differently.
func AuthorDomain(fields []FromField) (string, error) {
	switch len(fields) {
	case 0:
		return "", ErrNoFrom
	case 1:
	default:
		return "", ErrMultipleFrom
	}
	f := fields[0]
	if f.Name != strings.TrimSpace(f.Name) || !strings.EqualFold(f.Name, "From") {
		return "", fmt.Errorf("%w: whitespace around the field name %q", ErrAmbiguousFrom, f.Name)
	}
	v := f.Value
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			continue
		}
		if c < 0x20 && c != '\t' || c == 0x7f {
			return "", fmt.Errorf("%w: control character", ErrAmbiguousFrom)
		}
	}
	// Folding is legal, but only outside the address itself.
	unfolded := strings.NewReplacer("\r\n ", " ", "\r\n\t", "\t", "\n ", " ", "\n\t", "\t").Replace(v)
	if strings.ContainsAny(unfolded, "\r\n") {
		return "", fmt.Errorf("%w: bare CR or LF", ErrAmbiguousFrom)
	}
	if err := scanSpecials(unfolded); err != nil {
		return "", err
	}
	addrs, err := mail.ParseAddressList(unfolded)
	if err != nil {
		if strings.Contains(unfolded, ":") && strings.HasSuffix(strings.TrimSpace(unfolded), ";") {
			return "", ErrGroup
		}
		return "", fmt.Errorf("%w: %v", ErrAmbiguousFrom, err)
	}
	if len(addrs) != 1 {
		return "", ErrMultipleAuthors
	}
	addr := addrs[0].Address
	// The addr-spec must appear verbatim in the (unfolded) value: this
	// rejects folding or encoded-words inside the address.
	if !strings.Contains(v, addr) {
		return "", fmt.Errorf("%w: address is folded or encoded", ErrAmbiguousFrom)
	}
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr[:at], addr[at+1:]
	if strings.Contains(local, "@") {
		return "", fmt.Errorf("%w: quoted local part holds '@'", ErrAmbiguousFrom)
	}
	if strings.HasPrefix(domain, "[") || domain == "" {
		return "", fmt.Errorf("%w: domain literal or empty domain", ErrAmbiguousFrom)
	}
	return NormalizeDomain(domain)
}

// scanSpecials rejects comments, route syntax, address lists and group
// syntax outside quoted strings, and encoded-words inside angle brackets.
func scanSpecials(s string) error {
	inQuote, inAngle := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '(':
			return fmt.Errorf("%w: comment in From", ErrAmbiguousFrom)
		case c == '<':
			if inAngle {
				return fmt.Errorf("%w: nested '<'", ErrAmbiguousFrom)
			}
			inAngle = true
			if i+1 < len(s) && s[i+1] == '@' {
				return fmt.Errorf("%w: route syntax", ErrAmbiguousFrom)
			}
		case c == '>':
			inAngle = false
		case c == ',' && !inAngle:
			// An unquoted comma separates addresses, even when the other
			// element is empty (obsolete mailbox-list syntax): parsers
			// disagree on such lists, so count it as several authors.
			return ErrMultipleAuthors
		case c == ':' || c == ';':
			if inAngle {
				return fmt.Errorf("%w: route syntax", ErrAmbiguousFrom)
			}
			return ErrGroup
		case inAngle && c == '=' && i+1 < len(s) && s[i+1] == '?':
			return fmt.Errorf("%w: encoded-word in the address", ErrAmbiguousFrom)
		}
	}
	if inQuote {
		return fmt.Errorf("%w: unterminated quoted string", ErrAmbiguousFrom)
	}
	return nil
}

// NormalizeDomain lower-cases a domain, drops a trailing dot and converts
// U-labels to A-labels (RFC 5890), as DMARC compares and queries A-labels.
func NormalizeDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	if d == "" {
		return "", fmt.Errorf("%w: empty domain", ErrAmbiguousFrom)
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: domain %q: %v", ErrAmbiguousFrom, d, err)
	}
	return strings.ToLower(a), nil
}
