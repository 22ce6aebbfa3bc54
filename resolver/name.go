package resolver

import (
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// maxNameLen is the longest name accepted, in presentation form without the
// trailing dot: 255 octets on the wire (RFC 1035 section 2.3.4) minus the
// length octet of the first label and the root label.
const maxNameLen = 253

// maxLabelLen is the longest label (RFC 1035 section 2.3.4).
const maxLabelLen = 63

// idnaProfile converts internationalised names to A-labels: the UTS #46
// lookup mapping (case folding, NFC) and IDNA2008 validity checks, but
// without the STD3 host-name restriction, so that service labels such as
// "_dmarc" survive. It is read-only.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
	idna.VerifyDNSLength(true),
)

// normalize returns name as used for queries, cache keys and results:
// ASCII, lower case, without a trailing dot, in the presentation format of
// miekg/dns. It accepts names with or without one trailing dot, in any
// letter case.
//
// The name is taken as text, not as presentation format: every '.'
// separates labels and every other octet belongs to a label. DNS itself
// allows any octet in a label (RFC 2181 section 11); host-name syntax is a
// policy of the callers, and some need more (SPF's domain-specs may hold
// any visible character, RFC 7208 section 7.1). Octets that presentation
// format reserves (space ' @ ; ( ) " and backslash) are escaped with a
// backslash and octets outside the printable ASCII range as \DDD, exactly
// as miekg/dns writes names it unpacks from a response, so that the
// question we send and the one the server echoes compare equal.
//
// A name containing octets of 0x80 and above is taken as UTF-8 and
// converted to A-labels (RFC 5890, via golang.org/x/net/idna with the
// UTS #46 lookup mapping); a name that is not valid UTF-8 or does not
// convert is rejected. Empty labels, labels over 63 octets and names over
// 253 octets are rejected.
//
// When name is already normalised and holds only letters, digits, '-' and
// '_', normalize returns it without allocating.
func normalize(name string) (string, bool) {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			if !utf8.ValidString(name) {
				return "", false
			}
			a, err := idnaProfile.ToASCII(name)
			if err != nil {
				return "", false
			}
			name = a
			break
		}
	}
	if len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	if len(name) == 0 || len(name) > maxNameLen {
		return "", false
	}
	rewrite := false // upper-case letters or octets to escape
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 {
				return "", false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			rewrite = true
		}
		label++
		if label > maxLabelLen {
			return "", false
		}
	}
	if label == 0 {
		return "", false
	}
	if !rewrite {
		return name, true
	}
	b := make([]byte, 0, len(name)+8)
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'A' <= c && c <= 'Z':
			b = append(b, c+('a'-'A'))
		case c == ' ', c == '\'', c == '@', c == ';', c == '(', c == ')', c == '"', c == '\\':
			b = append(b, '\\', c)
		case c < ' ' || c > '~':
			b = append(b, '\\', '0'+c/100, '0'+c/10%10, '0'+c%10)
		default:
			b = append(b, c)
		}
	}
	return string(b), true
}
