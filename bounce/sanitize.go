package bounce

import (
	"strings"
	"unicode/utf8"
)

// Length caps applied to outside values before they are written into a
// DSN header or status field.
const (
	maxAddrLen = 320 // RFC 5321 §4.5.3.1.3 path (256) plus generous slack
	maxHostLen = 255 // RFC 1035 §2.3.4
	maxTextLen = 900 // diagnostic text; RFC 5321 §4.5.3.1.5 reply lines are 512
	maxIDLen   = 100 // RFC 3461 §4.4 ENVID is at most 100 characters
)

// clean returns s with control characters (CR, LF, NUL, other C0 and DEL)
// replaced by spaces, runs of white space collapsed, invalid UTF-8 replaced,
// surrounding space trimmed and the result cut to at most max bytes on a
// rune boundary.
func clean(s string, max int) string {
	var b strings.Builder
	b.Grow(min(len(s), max))
	space := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r == utf8.RuneError && size == 1 {
			r = '?'
		}
		if r < 0x20 || r == 0x7f || r == ' ' || (r >= 0x80 && r < 0xa0) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			if b.Len()+1 > max {
				break
			}
			b.WriteByte(' ')
		}
		space = false
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// cleanAddr is clean for addresses: white space is removed entirely and
// surrounding angle brackets are dropped.
func cleanAddr(s string) string {
	s = clean(s, maxAddrLen+2)
	s = strings.ReplaceAll(s, " ", "")
	s = strings.TrimPrefix(s, "<")
	s = strings.TrimSuffix(s, ">")
	if len(s) > maxAddrLen {
		s = s[:maxAddrLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// isASCII reports whether s holds only 7-bit characters.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
