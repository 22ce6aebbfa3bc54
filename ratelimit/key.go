package ratelimit

import (
	"fmt"
	"strings"
)

// Key names one destination of one sender: the recipient domain, the MX site
// serving it, the source (an IP address or the name of a pool of them) and
// the tenant. Every field is a plain string and any of them may be empty.
//
// Domain and Site are compared case-insensitively and without a trailing
// dot. When Site is empty the Domain stands in for it, so a caller that does
// not know the MX site still gets per-domain budgets from site rules.
type Key struct {
	Domain string `json:"domain,omitempty"`
	Site   string `json:"site,omitempty"`
	Source string `json:"source,omitempty"`
	Tenant string `json:"tenant,omitempty"`
}

// normalize returns k with Domain and Site lower-cased, trailing dots
// removed and Site defaulted to Domain.
func (k Key) normalize() Key {
	k.Domain = normDomain(k.Domain)
	k.Site = normDomain(k.Site)
	if k.Site == "" {
		k.Site = k.Domain
	}
	return k
}

func normDomain(s string) string {
	s = strings.TrimSuffix(s, ".")
	return strings.ToLower(s) // returns s itself when nothing changes
}

// get returns the value of dimension d.
func (k Key) get(d Dimension) string {
	switch d {
	case Domain:
		return k.Domain
	case Site:
		return k.Site
	case Source:
		return k.Source
	case Tenant:
		return k.Tenant
	}
	return ""
}

// String formats k as space-separated name=value pairs of its non-empty
// fields, the same form the rule text format uses for matches.
func (k Key) String() string {
	var b strings.Builder
	for _, d := range allDimensions {
		if v := k.get(d); v != "" {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(d.String())
			b.WriteByte('=')
			b.WriteString(quoteIfNeeded(v))
		}
	}
	return b.String()
}

// Dimension is one field of a [Key]. Rules list dimensions in Rule.Per to say
// for which combinations a separate budget is kept.
type Dimension uint8

// The dimensions of a Key.
const (
	Domain Dimension = iota + 1 // recipient domain
	Site                        // MX site (domains sharing MX hosts)
	Source                      // source IP address or pool
	Tenant                      // tenant (customer, account)
)

var allDimensions = [...]Dimension{Domain, Site, Source, Tenant}

// String returns the dimension's name as used in rule text and JSON:
// "domain", "site", "source" or "tenant".
func (d Dimension) String() string {
	switch d {
	case Domain:
		return "domain"
	case Site:
		return "site"
	case Source:
		return "source"
	case Tenant:
		return "tenant"
	}
	return fmt.Sprintf("Dimension(%d)", uint8(d))
}

// ParseDimension parses a dimension name ("domain", "site", "source",
// "tenant"; case-insensitive). It returns an error wrapping [ErrSyntax] for
// anything else.
func ParseDimension(s string) (Dimension, error) {
	for _, d := range allDimensions {
		if strings.EqualFold(s, d.String()) {
			return d, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown dimension %q", ErrSyntax, s)
}

// MarshalText implements encoding.TextMarshaler.
func (d Dimension) MarshalText() ([]byte, error) {
	if d < Domain || d > Tenant {
		return nil, fmt.Errorf("%w: invalid dimension %d", ErrSyntax, uint8(d))
	}
	return []byte(d.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Dimension) UnmarshalText(b []byte) error {
	v, err := ParseDimension(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// project builds the budget identifier part for the given dimensions: the
// key's values for them, escaped and joined. The result is stable across
// processes, so several nodes agree on it.
func (k Key) project(b *strings.Builder, dims []Dimension) {
	for _, d := range dims {
		b.WriteByte('|')
		b.WriteString(d.String())
		b.WriteByte('=')
		escapeID(b, k.get(d))
	}
}

// escapeID writes s with '%' and '|' percent-encoded, so that the joined
// identifier cannot be ambiguous.
func escapeID(b *strings.Builder, s string) {
	if !strings.ContainsAny(s, "%|") {
		b.WriteString(s)
		return
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '%':
			b.WriteString("%25")
		case '|':
			b.WriteString("%7C")
		default:
			b.WriteByte(s[i])
		}
	}
}
