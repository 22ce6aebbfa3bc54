package dkim

import (
	"errors"
	"fmt"
	"strings"
)

// ErrTagSyntax reports a malformed tag=value list (RFC 6376 §3.2).
var ErrTagSyntax = errors.New("dkim: malformed tag list")

// Tag is one tag=value pair of a DKIM tag list.
type Tag struct {
	Name  string
	Value string // with surrounding whitespace removed; inner FWS kept
}

// Tags is a parsed tag list in the order the tags appeared.
type Tags []Tag

// Get returns the value of the tag name (case-sensitive, as RFC 6376 §3.2
// says) and whether it is present.
func (t Tags) Get(name string) (string, bool) {
	for _, x := range t {
		if x.Name == name {
			return x.Value, true
		}
	}
	return "", false
}

// ParseTags parses an RFC 6376 §3.2 tag list, as found in DKIM-Signature
// fields and key records: tag-spec *(";" tag-spec) [";"]. Tag names are
// ALPHA *(ALPHA / DIGIT / "_"); values are printable ASCII except ";" with
// folding whitespace allowed inside. A duplicated tag name, a missing "=",
// a bad name or a control character is an error wrapping [ErrTagSyntax].
// Empty values are allowed.
func ParseTags(s string) (Tags, error) {
	var tags Tags
	specs := strings.Split(s, ";")
	for _, spec := range specs {
		if isFWS(spec) {
			// An empty spec: allowed as the trailing ";" and tolerated
			// between separators, as common verifiers do.
			continue
		}
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q has no '='", ErrTagSyntax, clip(spec))
		}
		name = trimFWS(name)
		if !validTagName(name) {
			return nil, fmt.Errorf("%w: bad tag name %q", ErrTagSyntax, clip(name))
		}
		value = trimFWS(value)
		for j := 0; j < len(value); j++ {
			c := value[j]
			if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				continue
			}
			if c < 0x21 || c > 0x7e {
				return nil, fmt.Errorf("%w: control or non-ASCII octet in tag %s", ErrTagSyntax, name)
			}
		}
		if _, dup := tags.Get(name); dup {
			return nil, fmt.Errorf("%w: duplicate tag %s", ErrTagSyntax, name)
		}
		tags = append(tags, Tag{Name: name, Value: value})
	}
	return tags, nil
}

func isFWS(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\r', '\n':
		default:
			return false
		}
	}
	return true
}

func trimFWS(s string) string { return strings.Trim(s, " \t\r\n") }

// removeFWS deletes all whitespace, as base64 values in tags may be folded.
func removeFWS(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\r', '\n':
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func validTagName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !alpha {
			return false
		}
		if !alpha && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
