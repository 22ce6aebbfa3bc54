package spf

import (
	"fmt"
	"net/netip"
	"strings"
)

// mechKind identifies a mechanism (RFC 7208 section 5).
type mechKind uint8

const (
	mechAll mechKind = iota + 1
	mechInclude
	mechA
	mechMX
	mechPTR
	mechIP4
	mechIP6
	mechExists
)

var mechNames = map[string]mechKind{
	"all":     mechAll,
	"include": mechInclude,
	"a":       mechA,
	"mx":      mechMX,
	"ptr":     mechPTR,
	"ip4":     mechIP4,
	"ip6":     mechIP6,
	"exists":  mechExists,
}

// directive is one parsed mechanism with its qualifier.
type directive struct {
	text      string   // the term as published, for Result.Mechanism
	qualifier Status   // Pass, Fail, Softfail or Neutral
	kind      mechKind // which mechanism
	domain    string   // domain-spec (unexpanded), "" when absent
	// domainToks is the parsed domain-spec, nil when absent.
	domainToks []macroToken
	prefix     netip.Prefix
	cidr4      int // ip4-cidr-length for a and mx, 32 when absent
	cidr6      int // ip6-cidr-length for a and mx, 128 when absent
}

// countsLookup reports whether the mechanism counts against the limit of
// 10 DNS-querying terms (RFC 7208 section 4.6.4).
func (d *directive) countsLookup() bool {
	switch d.kind {
	case mechInclude, mechA, mechMX, mechPTR, mechExists:
		return true
	}
	return false
}

// record is a parsed SPF record (RFC 7208 section 4.6).
type record struct {
	directives   []directive
	redirect     string       // domain-spec of redirect=, "" when absent
	redirectToks []macroToken // parsed redirect domain-spec
	expToks      []macroToken // parsed exp domain-spec, nil when absent
}

// isSPFRecord reports whether a TXT string is an SPF version 1 record: it
// starts with "v=spf1" (case-insensitively) followed by a space or the end
// (RFC 7208 section 4.5).
func isSPFRecord(txt string) bool {
	if len(txt) < 6 || !strings.EqualFold(txt[:6], "v=spf1") {
		return false
	}
	return len(txt) == 6 || txt[6] == ' '
}

// parseRecord parses a whole SPF record, including its version, and checks
// the syntax of every term (RFC 7208 section 4.6: syntax errors anywhere in
// the record are detected before any mechanism is evaluated). Errors wrap
// ErrSyntax.
func parseRecord(txt string) (*record, error) {
	if !isSPFRecord(txt) {
		return nil, fmt.Errorf("%w: record does not start with v=spf1", ErrSyntax)
	}
	rec := &record{}
	haveRedirect, haveExp := false, false
	// Terms are separated by one or more spaces (0x20) only; any other
	// control character is part of a term and makes it invalid
	// (RFC 7208 section 4.6.1).
	rec.directives = make([]directive, 0, strings.Count(txt, " "))
	for rest := txt[6:]; rest != ""; {
		var term string
		term, rest, _ = strings.Cut(rest, " ")
		if term == "" {
			continue
		}
		for i := 0; i < len(term); i++ {
			if c := term[i]; c < 0x21 || c > 0x7e {
				return nil, fmt.Errorf("%w: term %q: invalid character 0x%02x", ErrSyntax, term, c)
			}
		}
		if name, value, ok := splitModifier(term); ok {
			switch strings.ToLower(name) {
			case "redirect":
				if haveRedirect {
					return nil, fmt.Errorf("%w: redirect= given twice", ErrSyntax)
				}
				haveRedirect = true
				toks, err := checkDomainSpec(value)
				if err != nil {
					return nil, fmt.Errorf("%w: redirect=%s: %w", ErrSyntax, value, err)
				}
				rec.redirect, rec.redirectToks = value, toks
			case "exp":
				if haveExp {
					return nil, fmt.Errorf("%w: exp= given twice", ErrSyntax)
				}
				haveExp = true
				toks, err := checkDomainSpec(value)
				if err != nil {
					return nil, fmt.Errorf("%w: exp=%s: %w", ErrSyntax, value, err)
				}
				rec.expToks = toks
			default:
				// unknown-modifier = name "=" macro-string; ignored, but its
				// macro syntax must be valid (RFC 7208 sections 6 and 12).
				if _, err := parseMacro(value, macroDomain); err != nil {
					return nil, fmt.Errorf("%w: modifier %s: %w", ErrSyntax, name, err)
				}
			}
			continue
		}
		d, err := parseDirective(term)
		if err != nil {
			return nil, fmt.Errorf("%w: term %q: %w", ErrSyntax, term, err)
		}
		rec.directives = append(rec.directives, d)
	}
	return rec, nil
}

// splitModifier splits a term of the form name "=" value, where
// name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) (RFC 7208 section 12).
// A term whose name is followed by anything other than "=" is not a
// modifier.
func splitModifier(term string) (name, value string, ok bool) {
	if term == "" || !isAlpha(term[0]) {
		return "", "", false
	}
	i := 1
	for i < len(term) && (isAlpha(term[i]) || isDigit(term[i]) || term[i] == '-' || term[i] == '_' || term[i] == '.') {
		i++
	}
	if i == len(term) || term[i] != '=' {
		return "", "", false
	}
	return term[:i], term[i+1:], true
}

// parseDirective parses [qualifier] mechanism (RFC 7208 sections 4.6.2 and 5).
func parseDirective(term string) (directive, error) {
	d := directive{text: term, qualifier: Pass, cidr4: 32, cidr6: 128}
	rest := term
	switch rest[0] {
	case '+':
		rest = rest[1:]
	case '-':
		d.qualifier, rest = Fail, rest[1:]
	case '~':
		d.qualifier, rest = Softfail, rest[1:]
	case '?':
		d.qualifier, rest = Neutral, rest[1:]
	}
	i := 0
	for i < len(rest) && rest[i] != ':' && rest[i] != '/' {
		i++
	}
	kind, ok := mechNames[strings.ToLower(rest[:i])]
	if !ok {
		return d, fmt.Errorf("unknown mechanism %q", rest[:i])
	}
	d.kind = kind
	args := rest[i:] // "", or starts with ':' or '/'
	switch kind {
	case mechAll:
		if args != "" {
			return d, fmt.Errorf("all takes no argument")
		}
	case mechInclude, mechExists:
		// include = "include" ":" domain-spec; exists likewise.
		if !strings.HasPrefix(args, ":") {
			return d, fmt.Errorf("missing domain-spec")
		}
		d.domain = args[1:]
		var err error
		if d.domainToks, err = checkDomainSpec(d.domain); err != nil {
			return d, err
		}
	case mechPTR:
		// PTR = "ptr" [ ":" domain-spec ]
		if args != "" {
			if args[0] != ':' {
				return d, fmt.Errorf("ptr takes no CIDR length")
			}
			d.domain = args[1:]
			var err error
			if d.domainToks, err = checkDomainSpec(d.domain); err != nil {
				return d, err
			}
		}
	case mechA, mechMX:
		// A = "a" [ ":" domain-spec ] [ dual-cidr-length ]
		spec, c4, c6, err := splitDualCIDR(args)
		if err != nil {
			return d, err
		}
		d.cidr4, d.cidr6 = c4, c6
		if spec != "" {
			if spec[0] != ':' {
				return d, fmt.Errorf("invalid argument %q", spec)
			}
			d.domain = spec[1:]
			if d.domainToks, err = checkDomainSpec(d.domain); err != nil {
				return d, err
			}
		}
	case mechIP4, mechIP6:
		// IP4 = "ip4" ":" ip4-network [ ip4-cidr-length ]
		if !strings.HasPrefix(args, ":") {
			return d, fmt.Errorf("missing network")
		}
		network, length, hasLength := strings.Cut(args[1:], "/")
		addr, err := netip.ParseAddr(network)
		if err != nil || addr.Zone() != "" {
			return d, fmt.Errorf("invalid address %q", network)
		}
		bits := 32
		if kind == mechIP6 {
			bits = 128
		}
		if (kind == mechIP4) != addr.Is4() {
			return d, fmt.Errorf("address %q of the wrong family", network)
		}
		if hasLength {
			if bits, ok = parseCIDRLength(length, bits); !ok {
				return d, fmt.Errorf("invalid CIDR length %q", length)
			}
		}
		d.prefix, err = addr.Prefix(bits)
		if err != nil {
			return d, fmt.Errorf("invalid network: %w", err)
		}
	}
	return d, nil
}

// splitDualCIDR splits a trailing dual-cidr-length off the argument of a or
// mx: [ "/" ip4-cidr-length ] [ "//" ip6-cidr-length ] (RFC 7208 section
// 5.6). The rest is returned unchanged.
func splitDualCIDR(args string) (rest string, cidr4, cidr6 int, err error) {
	cidr4, cidr6 = 32, 128
	rest = args
	if i := strings.LastIndex(rest, "//"); i >= 0 && allDigits(rest[i+2:]) {
		var ok bool
		if cidr6, ok = parseCIDRLength(rest[i+2:], 128); !ok {
			return "", 0, 0, fmt.Errorf("invalid IPv6 CIDR length %q", rest[i+2:])
		}
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 && allDigits(rest[i+1:]) {
		var ok bool
		if cidr4, ok = parseCIDRLength(rest[i+1:], 32); !ok {
			return "", 0, 0, fmt.Errorf("invalid IPv4 CIDR length %q", rest[i+1:])
		}
		rest = rest[:i]
	}
	if strings.HasPrefix(rest, "/") {
		return "", 0, 0, fmt.Errorf("invalid CIDR length %q", rest)
	}
	return rest, cidr4, cidr6, nil
}

// parseCIDRLength parses a prefix length: "0" or a decimal number without
// leading zeros, at most max (RFC 7208 section 12, ip4-cidr-length and
// ip6-cidr-length).
func parseCIDRLength(s string, max int) (int, bool) {
	if s == "" || len(s) > 3 || !allDigits(s) || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n, n <= max
}

// checkDomainSpec checks domain-spec = macro-string domain-end, where
// domain-end = ( "." toplabel [ "." ] ) / macro-expand (RFC 7208 section
// 7.1). The exp-only macro letters c, r and t are not allowed.
func checkDomainSpec(spec string) ([]macroToken, error) {
	if spec == "" {
		return nil, fmt.Errorf("empty domain-spec")
	}
	toks, err := parseMacro(spec, macroDomain)
	if err != nil {
		return nil, err
	}
	last := toks[len(toks)-1]
	if last.letter != 0 || last.escape {
		return toks, nil // ends in a macro-expand
	}
	tail := last.literal
	tail = strings.TrimSuffix(tail, ".")
	dot := strings.LastIndexByte(tail, '.')
	if dot < 0 {
		return nil, fmt.Errorf("domain-spec %q does not end in a top-level label or macro", spec)
	}
	if !isTopLabel(tail[dot+1:]) {
		return nil, fmt.Errorf("invalid top-level label %q", tail[dot+1:])
	}
	return toks, nil
}

// isTopLabel checks toplabel = ( *alphanum ALPHA *alphanum ) /
// ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) (RFC 7208 section 7.1).
func isTopLabel(s string) bool {
	if s == "" {
		return false
	}
	alpha, dash := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isAlpha(c):
			alpha = true
		case isDigit(c):
		case c == '-':
			dash = true
		default:
			return false
		}
	}
	if !dash {
		return alpha
	}
	return s[0] != '-' && s[len(s)-1] != '-'
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
