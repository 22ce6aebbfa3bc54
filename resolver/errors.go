package resolver

import (
	"context"
	"errors"
	"strings"

	"github.com/miekg/dns"
)

// Sentinel errors. Every error a lookup returns is either a context error
// (ctx.Err(), returned as is) or an *Error whose Err wraps exactly one of
// these sentinels. Classify with errors.Is or the Is* helpers, never by
// comparing strings.
//
// The sentinels fall into three classes that never overlap:
//
//   - not found (permanent): ErrNotFound (NXDOMAIN) and ErrNoData;
//   - temporary: ErrTemporary, and context errors;
//   - other permanent failures: ErrInvalidName and ErrCNAMEChain.
var (
	// ErrNotFound means the name does not exist (RCODE NXDOMAIN, RFC 1035
	// section 4.1.1), possibly at the end of a CNAME chain (RFC 6604).
	ErrNotFound = errors.New("resolver: no such domain")

	// ErrNoData means the name exists but has no records of the requested
	// type (NOERROR with an empty answer, "NODATA" in RFC 2308 section 2.2).
	ErrNoData = errors.New("resolver: no records of that type")

	// ErrTemporary means no usable answer could be obtained: SERVFAIL,
	// REFUSED or any other error RCODE from every server, timeouts, network
	// errors, malformed or mismatched responses, or a response still
	// truncated over TCP. Retrying later may succeed.
	ErrTemporary = errors.New("resolver: temporary failure")

	// ErrInvalidName means the name given to a lookup is not a valid domain
	// name: empty, an empty label, a label longer than 63 octets, a name
	// longer than 253 octets, or a character this package does not accept
	// (see the package documentation). No query is sent.
	ErrInvalidName = errors.New("resolver: invalid domain name")

	// ErrCNAMEChain means a CNAME chain loops back on itself, is longer
	// than the limit (10 CNAMEs), or points at the root. It is a permanent
	// misconfiguration of the queried domain (RFC 1034 section 3.6.2 says
	// chains must not loop; RFC 2181 section 10.1 that an alias points at a
	// canonical name), neither "not found" nor temporary.
	ErrCNAMEChain = errors.New("resolver: CNAME loop or chain too long")
)

// Error describes a failed lookup. It is safe to read concurrently and is
// never modified after it is returned.
type Error struct {
	Name   string // the name looked up (normalised), or as given if invalid
	Type   string // the query type, e.g. "MX"
	Server string // the server whose answer (or failure) decided the outcome, "" if none was asked
	Rcode  int    // the DNS response code of that answer, 0 if none (timeouts, network errors, NODATA)
	Err    error  // wraps exactly one of the package's sentinel errors
}

// Error returns a readable description such as
// "resolver: lookup MX example.com on 127.0.0.1:53: no such domain".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("resolver: lookup ")
	b.WriteString(e.Type)
	b.WriteByte(' ')
	b.WriteString(e.Name)
	if e.Server != "" {
		b.WriteString(" on ")
		b.WriteString(e.Server)
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "resolver: "))
	} else {
		b.WriteString("unknown error")
	}
	if e.Rcode != 0 {
		b.WriteString(" (rcode ")
		if s, ok := dns.RcodeToString[e.Rcode]; ok {
			b.WriteString(s)
		} else {
			b.WriteString("unknown")
		}
		b.WriteByte(')')
	}
	return b.String()
}

// Unwrap returns e.Err, so errors.Is(err, ErrNotFound) and friends work.
func (e *Error) Unwrap() error { return e.Err }

// IsNotFound reports whether err says that there is nothing there: the
// name does not exist (ErrNotFound) or has no records of the type
// (ErrNoData). It is never true for a temporary failure.
func IsNotFound(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoData)
}

// IsNXDomain reports whether err says that the name does not exist.
func IsNXDomain(err error) bool { return errors.Is(err, ErrNotFound) }

// IsNoData reports whether err says that the name exists but has no
// records of the requested type.
func IsNoData(err error) bool { return errors.Is(err, ErrNoData) }

// IsTemporary reports whether err is a temporary failure: ErrTemporary, or
// a context error (context.Canceled, context.DeadlineExceeded). It is never
// true when IsNotFound is, and vice versa.
func IsTemporary(err error) bool {
	return errors.Is(err, ErrTemporary) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded)
}
