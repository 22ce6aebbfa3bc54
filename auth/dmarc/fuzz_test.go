package dmarc

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseRecord: no panics; a parsed record formats to a record that
// parses back to the same text (round trip).
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=DMARC1; p=reject",
		"v=DMARC1 ;p = quarantine ;",
		"v=DMARC1; p=none; sp=reject; np=quarantine; adkim=s; aspf=s; psd=n; t=y; rua=mailto:a@example.com; fo=1",
		"v=DMARC1; p=block; rua=mailto:r@example.com",
		"v=DMARC1; p=reject; pct=50; rf=afrf; ri=86400",
		"p=reject; v=DMARC1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecord(s)
		if err != nil {
			if !errors.Is(err, ErrNotDMARC) && !errors.Is(err, ErrRecordSyntax) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		out := r.String()
		r2, err := ParseRecord(out)
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, out, err)
		}
		if r2.String() != out {
			t.Fatalf("round trip %q -> %q", out, r2.String())
		}
	})
}

// FuzzAuthorDomain: no panics; a domain returned is lower case, has no
// whitespace or control characters, and appears in the input (as given or
// as its U-label form).
func FuzzAuthorDomain(f *testing.F) {
	for _, s := range []string{
		" alice@example.com", ` "Alice" <alice@example.com>`, " =?utf-8?q?M=C3=BCller?= <info@bücher.example>",
		" <@a.example,@b.example:user@c.example>", " alice@example.com (x)", ` "a@b"@c.example`,
		" undisclosed-recipients:;", " a@a.example, b@b.example", " Alice\r\n <alice@example.com>",
	} {
		f.Add("From", s)
	}
	f.Add("From ", " a@a.example")
	f.Fuzz(func(t *testing.T, name, value string) {
		d, err := AuthorDomain([]FromField{{Name: name, Value: value}})
		if err != nil {
			if !errors.Is(err, ErrAuthor) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if d == "" || d != strings.ToLower(d) || strings.ContainsAny(d, " \t\r\n\x00;()<>@\"") {
			t.Fatalf("bad domain %q from %q", d, value)
		}
	})
}
