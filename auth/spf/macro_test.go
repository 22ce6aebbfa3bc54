package spf

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func expandString(t *testing.T, s string, mode macroMode, env *macroEnv) string {
	t.Helper()
	toks, err := parseMacro(s, mode)
	if err != nil {
		t.Fatalf("parseMacro(%q): %v", s, err)
	}
	return expandMacro(toks, env)
}

// TestMacroRFCExamples checks the examples of RFC 7208 section 7.4.
func TestMacroRFCExamples(t *testing.T) {
	env := &macroEnv{
		sender:   "strong-bad@email.example.com",
		local:    "strong-bad",
		senderDM: "email.example.com",
		domain:   "email.example.com",
		ip:       netip.MustParseAddr("192.0.2.3"),
		helo:     "mx.example.org",
	}
	for in, want := range map[string]string{
		"%{s}":                              "strong-bad@email.example.com",
		"%{o}":                              "email.example.com",
		"%{d}":                              "email.example.com",
		"%{d4}":                             "email.example.com",
		"%{d3}":                             "email.example.com",
		"%{d2}":                             "example.com",
		"%{d1}":                             "com",
		"%{dr}":                             "com.example.email",
		"%{d2r}":                            "example.email",
		"%{l}":                              "strong-bad",
		"%{l-}":                             "strong.bad",
		"%{lr}":                             "strong-bad",
		"%{lr-}":                            "bad.strong",
		"%{l1r-}":                           "strong",
		"%{ir}.%{v}._spf.%{d2}":             "3.2.0.192.in-addr._spf.example.com",
		"%{lr-}.lp._spf.%{d2}":              "bad.strong.lp._spf.example.com",
		"%{lr-}.lp.%{ir}.%{v}._spf.%{d2}":   "bad.strong.lp.3.2.0.192.in-addr._spf.example.com",
		"%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}":  "3.2.0.192.in-addr.strong.lp._spf.example.com",
		"%{d2}.trusted-domains.example.net": "example.com.trusted-domains.example.net",
		"%{h}":                              "mx.example.org",
		"%{p}":                              "unknown",
		"%%%_%-":                            "% %20",
		"%{d999999999999999999999}":         "email.example.com",
	} {
		if got := expandString(t, in, macroDomain, env); got != want {
			t.Errorf("expand %q = %q, want %q", in, got, want)
		}
	}
	env.ip = netip.MustParseAddr("2001:db8::cb01")
	// The RFC prints the nibbles in lower case; this package writes them
	// in upper case, as the RFC 7208 test suite expects. DNS ignores case.
	want := "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com"
	if got := expandString(t, "%{ir}.%{v}._spf.%{d2}", macroDomain, env); got != want {
		t.Errorf("IPv6 expansion = %q, want %q", got, want)
	}
}

func TestMacroExplain(t *testing.T) {
	env := &macroEnv{
		sender:   "~jack&jill=up-a_b3.c@example.com",
		local:    "~jack&jill=up-a_b3.c",
		senderDM: "example.com",
		domain:   "example.com",
		ip:       netip.MustParseAddr("2001:db8::1"),
		receiver: "mx.example.org",
		now:      time.Unix(1700000000, 0),
		ptr:      func() string { return "host.example.com" },
	}
	for in, want := range map[string]string{
		"%{c} is not allowed":      "2001:db8::1 is not allowed",
		"%{r} at %{t}":             "mx.example.org at 1700000000",
		"see %{p}":                 "see host.example.com",
		"l=%{L}":                   "l=~jack%26jill%3Dup-a_b3.c",
		"%{S}":                     "~jack%26jill%3Dup-a_b3.c%40example.com",
		"spaces  allowed  %_here ": "spaces  allowed   here ",
	} {
		if got := expandString(t, in, macroExplain, env); got != want {
			t.Errorf("expand %q = %q, want %q", in, got, want)
		}
	}
	env.receiver = ""
	if got := expandString(t, "%{r}", macroExplain, env); got != "unknown" {
		t.Errorf("%%{r} without Hostname = %q, want unknown", got)
	}
	for _, bad := range []string{"%{c}", "%{r}", "%{t}", "a b", "%", "%x", "%{", "%{}", "%{d0}", "%{dx}", "\x80"} {
		if _, err := parseMacro(bad, macroDomain); err == nil {
			t.Errorf("parseMacro(%q, domain) succeeded", bad)
		}
	}
	for _, bad := range []string{"%", "%{q}", "\x80", "tab\there"} {
		if _, err := parseMacro(bad, macroExplain); err == nil {
			t.Errorf("parseMacro(%q, explain) succeeded", bad)
		}
	}
}

func TestTransformKeepsEmptyParts(t *testing.T) {
	tok := &macroToken{letter: 'l', delims: "-", reverse: true}
	if got := transform("a--b", tok); got != "b..a" {
		t.Errorf("transform = %q, want %q", got, "b..a")
	}
}

func TestQueryName(t *testing.T) {
	long := strings.Repeat("somewhat.long.exp.example.com.", 8) + "example.com"
	got, ok := queryName("foobar." + long)
	if !ok || len(got) > 253 || !strings.HasSuffix(got, ".example.com") || strings.HasPrefix(got, ".") {
		t.Errorf("queryName(long) = %q (%d), %v", got, len(got), ok)
	}
	// Labels are removed whole from the left, only as many as needed.
	if want := long; got != want {
		t.Errorf("queryName(long) = %q, want %q", got, want)
	}
	for in, want := range map[string]string{"example.com.": "example.com", "a.b": "a.b"} {
		if got, ok := queryName(in); !ok || got != want {
			t.Errorf("queryName(%q) = %q, %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "mail.example...com", strings.Repeat("x", 64) + ".com", ".com"} {
		if _, ok := queryName(bad); ok {
			t.Errorf("queryName(%q) ok", bad)
		}
	}
}

func TestDottedIP(t *testing.T) {
	if got := dottedIP(netip.MustParseAddr("192.0.2.1")); got != "192.0.2.1" {
		t.Errorf("dottedIP v4 = %q", got)
	}
	got := dottedIP(netip.MustParseAddr("2001:db8::cb01"))
	if want := "2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.C.B.0.1"; got != want {
		t.Errorf("dottedIP v6 = %q, want %q", got, want)
	}
}
