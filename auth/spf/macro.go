package spf

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// macroMode selects the macro grammar: domain-spec (and unknown
// modifiers) or explain-string (RFC 7208 sections 7.1 and 6.2).
type macroMode uint8

const (
	// macroDomain: letters s l o d i p h v; no spaces.
	macroDomain macroMode = iota
	// macroExplain: also the exp-only letters c r t, and spaces.
	macroExplain
)

// macroToken is one piece of a parsed macro-string.
type macroToken struct {
	literal string // text of a literal run or of an escape
	escape  bool   // "%%", "%_" or "%-" (a macro-expand without letter)
	letter  byte   // lower-case macro letter; 0 for literals and escapes
	upper   bool   // the letter was upper case: URL-escape the value
	digits  int    // keep the rightmost digits parts; 0 keeps all
	reverse bool   // reverse the parts before keeping digits of them
	delims  string // delimiters to split on; "" means "."
}

// parseMacro parses a macro-string (RFC 7208 section 7.1):
//
//	macro-string = *( macro-expand / macro-literal )
//	macro-expand = ( "%{" macro-letter transformers *delimiter "}" ) / "%%" / "%_" / "%-"
//	macro-literal = %x21-24 / %x26-7E
//	transformers = *DIGIT [ "r" ]
//	delimiter    = "." / "-" / "+" / "," / "/" / "_" / "="
//
// In macroExplain mode spaces are literals too and the letters c, r and t
// are allowed. It never returns an empty token list for a non-empty s.
func parseMacro(s string, mode macroMode) ([]macroToken, error) {
	var toks []macroToken
	lit := 0 // start of the current literal run
	flush := func(end int) {
		if end > lit {
			toks = append(toks, macroToken{literal: s[lit:end]})
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			if (c < 0x21 || c > 0x7e) && !(c == ' ' && mode == macroExplain) {
				return nil, fmt.Errorf("invalid character 0x%02x in macro-string", c)
			}
			i++
			continue
		}
		flush(i)
		if i+1 >= len(s) {
			return nil, fmt.Errorf("'%%' at end of macro-string")
		}
		switch s[i+1] {
		case '%':
			toks = append(toks, macroToken{literal: "%", escape: true})
			i += 2
		case '_':
			toks = append(toks, macroToken{literal: " ", escape: true})
			i += 2
		case '-':
			toks = append(toks, macroToken{literal: "%20", escape: true})
			i += 2
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated macro in %q", s[i:])
			}
			tok, err := parseMacroExpand(s[i+2:i+end], mode)
			if err != nil {
				return nil, err
			}
			toks = append(toks, tok)
			i += end + 1
		default:
			return nil, fmt.Errorf("'%%' followed by %q", s[i+1])
		}
		lit = i
	}
	flush(len(s))
	return toks, nil
}

// parseMacroExpand parses the inside of "%{...}".
func parseMacroExpand(body string, mode macroMode) (macroToken, error) {
	if body == "" {
		return macroToken{}, fmt.Errorf("empty macro")
	}
	var tok macroToken
	c := body[0]
	lower := c | 0x20
	switch lower {
	case 's', 'l', 'o', 'd', 'i', 'p', 'h', 'v':
	case 'c', 'r', 't':
		if mode != macroExplain {
			return tok, fmt.Errorf("macro letter %q is allowed only in explanations", c)
		}
	default:
		return tok, fmt.Errorf("invalid macro letter %q", c)
	}
	if !isAlpha(c) {
		return tok, fmt.Errorf("invalid macro letter %q", c)
	}
	tok.letter = lower
	tok.upper = c != lower
	rest := body[1:]
	n := 0
	for n < len(rest) && isDigit(rest[n]) {
		n++
	}
	if n > 0 {
		// The digit transformer must be nonzero (RFC 7208 section 7.1).
		// Values too large for an int keep every part anyway.
		v, err := strconv.Atoi(rest[:n])
		if err != nil {
			v = math.MaxInt
		}
		if v == 0 {
			return tok, fmt.Errorf("macro digit transformer is zero")
		}
		tok.digits = v
		rest = rest[n:]
	}
	if rest != "" && (rest[0] == 'r' || rest[0] == 'R') {
		tok.reverse = true
		rest = rest[1:]
	}
	for i := 0; i < len(rest); i++ {
		if !strings.ContainsRune(".-+,/_=", rune(rest[i])) {
			return tok, fmt.Errorf("invalid macro delimiter %q", rest[i])
		}
	}
	tok.delims = rest
	return tok, nil
}

// macroEnv holds the values macro letters expand to (RFC 7208 section 7.3).
type macroEnv struct {
	sender   string     // s
	local    string     // l
	senderDM string     // o
	domain   string     // d
	ip       netip.Addr // i, c and v; already unmapped
	helo     string     // h
	receiver string     // r
	now      time.Time  // t
	ptr      func() string
}

// value returns the unescaped, untransformed value of a macro letter.
func (e *macroEnv) value(letter byte) string {
	switch letter {
	case 's':
		return e.sender
	case 'l':
		return e.local
	case 'o':
		return e.senderDM
	case 'd':
		return e.domain
	case 'i':
		return dottedIP(e.ip)
	case 'p':
		if e.ptr == nil {
			return "unknown"
		}
		return e.ptr()
	case 'v':
		if e.ip.Is4() {
			return "in-addr"
		}
		return "ip6"
	case 'h':
		return e.helo
	case 'c':
		return e.ip.String()
	case 'r':
		if e.receiver == "" {
			return "unknown"
		}
		return e.receiver
	case 't':
		return strconv.FormatInt(e.now.Unix(), 10)
	}
	return ""
}

// dottedIP returns the "i" macro form of ip: dotted quad for IPv4, and 32
// dot-separated hexadecimal nibbles for IPv6 (RFC 7208 section 7.3). The
// nibbles are upper case, as the RFC 7208 test suite expects; DNS compares
// names case-insensitively.
func dottedIP(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	const hex = "0123456789ABCDEF"
	a := ip.As16()
	b := make([]byte, 0, 63)
	for i, x := range a {
		if i > 0 {
			b = append(b, '.')
		}
		b = append(b, hex[x>>4], '.', hex[x&0xf])
	}
	return string(b)
}

// expandMacro expands parsed tokens (RFC 7208 section 7.4).
func expandMacro(toks []macroToken, env *macroEnv) string {
	var b strings.Builder
	for i := range toks {
		t := &toks[i]
		if t.letter == 0 {
			b.WriteString(t.literal)
			continue
		}
		v := transform(env.value(t.letter), t)
		if t.upper {
			v = urlEscape(v)
		}
		b.WriteString(v)
	}
	return b.String()
}

// transform splits a macro value on the delimiters, optionally reverses
// the parts, keeps the rightmost digits parts, and joins them with dots.
func transform(v string, t *macroToken) string {
	if t.delims == "" && !t.reverse && t.digits == 0 {
		return v
	}
	delims := t.delims
	if delims == "" {
		delims = "."
	}
	// Every delimiter splits, so empty parts are kept.
	var parts []string
	start := 0
	for i := 0; i < len(v); i++ {
		if strings.IndexByte(delims, v[i]) >= 0 {
			parts = append(parts, v[start:i])
			start = i + 1
		}
	}
	parts = append(parts, v[start:])
	if t.reverse {
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	if t.digits > 0 && t.digits < len(parts) {
		parts = parts[len(parts)-t.digits:]
	}
	return strings.Join(parts, ".")
}

// urlEscape percent-encodes every octet outside the URI unreserved set
// ALPHA / DIGIT / "-" / "." / "_" / "~" (RFC 7208 section 7.3, RFC 3986).
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlpha(c) || isDigit(c) || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// queryName turns an expanded domain-spec into a name to look up: without
// its trailing dot, and shortened to at most 253 octets by removing labels
// from the left (RFC 7208 section 7.3). ok is false when no valid DNS name
// remains (an empty label or a label over 63 octets); such a target does
// not exist, so the mechanism does not match (RFC 7208 sections 4.3 and
// 4.8 leave it undefined; this follows the preferred test-suite result).
func queryName(expanded string) (name string, ok bool) {
	name = strings.TrimSuffix(expanded, ".")
	for len(name) > 253 {
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return "", false
		}
		name = name[i+1:]
	}
	return name, validLabels(name)
}

// validLabels reports whether every dot-separated label of name is 1 to
// 63 octets long.
func validLabels(name string) bool {
	if name == "" {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}
