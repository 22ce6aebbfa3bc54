package spf

import (
	"errors"
	"strings"
	"testing"
)

func TestIsSPFRecord(t *testing.T) {
	for txt, want := range map[string]bool{
		"v=spf1":             true,
		"v=spf1 -all":        true,
		"V=SpF1 -all":        true,
		"v=spf1  ":           true,
		"v=spf10":            false,
		"v=spf1-all":         false,
		" v=spf1 -all":       false,
		"v=spf":              false,
		"":                   false,
		"spf2.0/pra ?all":    false,
		"v=DMARC1; p=reject": false,
	} {
		if got := isSPFRecord(txt); got != want {
			t.Errorf("isSPFRecord(%q) = %v, want %v", txt, got, want)
		}
	}
}

func TestParseRecordGood(t *testing.T) {
	for _, tc := range []struct {
		rec      string
		terms    int
		redirect string
		exp      bool
	}{
		{"v=spf1", 0, "", false},
		{"v=spf1 -all", 1, "", false},
		{"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.com ~all", 4, "", false},
		{"v=spf1 a mx a:mail.example.com/24 mx:example.net//64 a/24//96 ptr ptr:example.org exists:%{ir}.bl.example.com -all", 9, "", false},
		{"v=spf1 redirect=_spf.example.com", 0, "_spf.example.com", false},
		{"v=spf1 -all exp=explain.%{d}", 1, "", true},
		{"v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all", 2, "", false},
		{"v=spf1 a:foo:bar/baz.example.com", 1, "", false},
		{"v=spf1 a:foo.example.xn--zckzah -all", 2, "", false},
		{"v=spf1 ?a:%{H} +mx ~ptr -exists:%{l2r-}.%{d} default=+", 4, "", false},
		{"v=spf1 ip6:::1.1.1.1/0 IP4:1.1.1.1/0 ALL", 3, "", false},
		{"v=spf1 a:example.com. -all", 2, "", false},
		{"v=spf1 include:%{d}.%%.%_.%-", 1, "", false},
	} {
		rec, err := parseRecord(tc.rec)
		if err != nil {
			t.Errorf("parseRecord(%q): %v", tc.rec, err)
			continue
		}
		if len(rec.directives) != tc.terms || rec.redirect != tc.redirect || (rec.expToks != nil) != tc.exp {
			t.Errorf("parseRecord(%q) = %d directives, redirect %q, exp %v; want %d, %q, %v",
				tc.rec, len(rec.directives), rec.redirect, rec.expToks != nil, tc.terms, tc.redirect, tc.exp)
		}
	}
}

func TestParseRecordDetails(t *testing.T) {
	rec, err := parseRecord("v=spf1 -a:example.com/24//64 ~ip4:192.0.2.7/16 ?mx +ptr:example.net")
	if err != nil {
		t.Fatal(err)
	}
	d := rec.directives
	if d[0].kind != mechA || d[0].qualifier != Fail || d[0].domain != "example.com" || d[0].cidr4 != 24 || d[0].cidr6 != 64 {
		t.Errorf("a term parsed as %+v", d[0])
	}
	if d[1].kind != mechIP4 || d[1].qualifier != Softfail || d[1].prefix.String() != "192.0.0.0/16" {
		t.Errorf("ip4 term parsed as %+v", d[1])
	}
	if d[2].kind != mechMX || d[2].qualifier != Neutral || d[2].domain != "" || d[2].cidr4 != 32 || d[2].cidr6 != 128 {
		t.Errorf("mx term parsed as %+v", d[2])
	}
	if d[3].kind != mechPTR || d[3].qualifier != Pass || d[3].domain != "example.net" {
		t.Errorf("ptr term parsed as %+v", d[3])
	}
}

func TestParseRecordBad(t *testing.T) {
	for _, rec := range []string{
		"v=spf1 ip4:1.2.3.4 -all moo",        // unknown mechanism anywhere
		"v=spf1 moo.cow/far_out=man:dog/cat", // '/' before '='
		"v=spf1 redirect:example.com",        // modifier written as mechanism
		"v=spf1 a:foo-bar -all",              // no dot before toplabel
		"v=spf1 -all.",
		"v=spf1 -all:foobar",
		"v=spf1 -all/8",
		"v=spf1 ptr/0 -all",
		"v=spf1 ptr:",
		"v=spf1 a//129",
		"v=spf1 a/33",
		"v=spf1 a/24/64",
		"v=spf1 a:111.222.33.44",
		"v=spf1 a:abc.123",
		"v=spf1 a:museum",
		"v=spf1 a:museum.",
		"v=spf1 a:example.-com",
		"v=spf1 a:example.com:8080",
		"v=spf1 a:",
		"v=spf1 a:foo.example.com\x00",
		"v=spf1 include",
		"v=spf1 include:",
		"v=spf1 include:ip5.example.com/24",
		"v=spf1 exists",
		"v=spf1 exists:mail.example.com/24",
		"v=spf1 ip4",
		"v=spf1 ip4:1.2.3.4/33",
		"v=spf1 ip4:1.2.3.4/032",
		"v=spf1 ip4:1.2.3.4//32",
		"v=spf1 ip4:1.2.3.4:8080",
		"v=spf1 ip4:1.2.3",
		"v=spf1 ip4:2001:db8::1",
		"v=spf1 ip6",
		"v=spf1 ip6:::1.1.1.1/129",
		"v=spf1 ip6:::1.1.1.1//33",
		"v=spf1 ip6::CAFE::BABE",
		"v=spf1 ip6:1.2.3.4",
		"v=spf1 ip6:fe80::1%eth0",
		"v=spf1 1up=foo",
		"v=spf1 =all",
		"v=spf1 -foo=bar",
		"v=spf1 exp=",
		"v=spf1 exp=-all",
		"v=spf1 redirect=",
		"v=spf1 redirect=-all ?all",
		"v=spf1 exp=a.example.com exp=b.example.com",
		"v=spf1 redirect=a.example.com redirect=b.example.com",
		"v=spf1 -all foo=%abc",
		"v=spf1 -all exp=%{r}.example.com",
		"v=spf1 a:%{c}.example.com",
		"v=spf1 -exists:%(ir).sbl.example.com",
		"v=spf1 exists:foo%.sbl.example.com",
		"v=spf1 a:%{a}.example.com",
		"v=spf1 a:%{d0}.example.com",
		"v=spf1 a:%{d2x}.example.com",
		"v=spf1 a:%{d.example.com",
		"v=spf1 a:ctrl.example.com\rptr -all",
		"v=spf1 ip4:192.0.2.5\n include:example.com",
		"v=spf1 a:\u00efgarbage.example.net -all",
		"v=spf1 \x96all",
		"v=spf10",
	} {
		if _, err := parseRecord(rec); !errors.Is(err, ErrSyntax) {
			t.Errorf("parseRecord(%q) = %v, want ErrSyntax", rec, err)
		}
	}
}

func TestSplitDualCIDR(t *testing.T) {
	for _, tc := range []struct {
		in     string
		rest   string
		c4, c6 int
		ok     bool
	}{
		{"", "", 32, 128, true},
		{"/24", "", 24, 128, true},
		{"//64", "", 32, 64, true},
		{"/0//0", "", 0, 0, true},
		{":example.com/24//64", ":example.com", 24, 64, true},
		{":foo:bar/baz.example.com", ":foo:bar/baz.example.com", 32, 128, true},
		{"/33", "", 0, 0, false},
		{"//129", "", 0, 0, false},
		{"/024", "", 0, 0, false},
		{"/24/64", "", 0, 0, false},
	} {
		rest, c4, c6, err := splitDualCIDR(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (rest != tc.rest || c4 != tc.c4 || c6 != tc.c6)) {
			t.Errorf("splitDualCIDR(%q) = %q, %d, %d, %v; want %q, %d, %d, ok=%v", tc.in, rest, c4, c6, err, tc.rest, tc.c4, tc.c6, tc.ok)
		}
	}
}

func TestValidDomain(t *testing.T) {
	for name, want := range map[string]bool{
		"example.com":                            true,
		"_spf.example.com":                       true,
		"mail.example.com":                       true,
		"a." + strings.Repeat("b", 63) + ".com":  true,
		"a." + strings.Repeat("b", 64) + ".com":  false,
		"A2345678":                               false,
		"[1.2.3.5]":                              false,
		"1.2.3.4":                                false,
		"a...example.com":                        false,
		"":                                       false,
		"JUMPIN' JUPITER":                        false,
		"b\u00fccher.example":                    false,
		strings.Repeat("abcdefghi.", 26) + "com": false,
	} {
		if got := validDomain(name); got != want {
			t.Errorf("validDomain(%q) = %v, want %v", name, got, want)
		}
	}
}
