package spf

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var fuzzRecordSeeds = []string{
	"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.com ~all",
	"v=spf1 a mx a:mail.example.com/24 mx:example.net//64 a/24//96 ptr ptr:example.org -all",
	"v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all exp=explain._spf.%{d}",
	"v=spf1 redirect=_spf.example.com",
	"v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all",
	"v=spf1 a:foo:bar/baz.example.com",
	"v=spf1 -exists:%(ir).sbl.example.com ?all",
	"v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all",
	"v=spf1 ip6:::1.1.1.1/0 ip4:1.2.3.4/032 a//129",
	"v=spf1 include:ip5.example.com/24 -all",
	"V=SpF1 ?all default=+",
	"v=spf1 a:ctrl.example.com\rptr -all",
	"v=spf1 a:\xEF\xBB\xBFgarbage.example.net -all",
	"v=spf1 exp= -all",
	"v=spf1",
}

// FuzzParseRecord checks that parsing never panics and that every
// accepted directive parses alone to the same thing.
func FuzzParseRecord(f *testing.F) {
	for _, s := range fuzzRecordSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, txt string) {
		rec, err := parseRecord(txt)
		if err != nil {
			if rec != nil {
				t.Fatalf("parseRecord(%q) returned a record with error %v", txt, err)
			}
			return
		}
		if !isSPFRecord(txt) {
			t.Fatalf("parseRecord accepted a non-SPF record %q", txt)
		}
		for _, d := range rec.directives {
			if d.cidr4 < 0 || d.cidr4 > 32 || d.cidr6 < 0 || d.cidr6 > 128 {
				t.Fatalf("%q: CIDR lengths %d/%d out of range", d.text, d.cidr4, d.cidr6)
			}
			if strings.ContainsAny(d.text, " \t\r\n") {
				t.Fatalf("%q: term holds white space", d.text)
			}
			again, err := parseRecord("v=spf1 " + d.text)
			if err != nil || len(again.directives) != 1 {
				t.Fatalf("term %q of %q does not parse alone: %v", d.text, txt, err)
			}
			a := again.directives[0]
			if a.kind != d.kind || a.qualifier != d.qualifier || a.domain != d.domain || a.prefix != d.prefix || a.cidr4 != d.cidr4 || a.cidr6 != d.cidr6 {
				t.Fatalf("term %q parses differently alone: %+v vs %+v", d.text, a, d)
			}
		}
	})
}

// FuzzMacro checks macro parsing and expansion: no panics, the
// explanation grammar accepts everything the domain grammar does, text
// without '%' expands to itself, and URL-escaped output is unreserved.
func FuzzMacro(f *testing.F) {
	for _, s := range []string{
		"%{s}", "%{l2r-}.%{d2}", "%{ir}.%{v}._spf.%{d2}", "%{L}", "%{S}.%{O}", "%%%_%-",
		"%{c} is %{r} at %{t}", "%{p}.should.example.com", "%{d999}", "%{i0}", "%{x}", "%",
		"plain.example.com", "%{l+-=,/_.}", "with space %{h}",
	} {
		f.Add(s, "strong-bad@email.example.com", "192.0.2.3")
	}
	f.Add("%{ir}", "a@b", "2001:db8::1")
	f.Fuzz(func(t *testing.T, s, sender, ipText string) {
		ip, err := netip.ParseAddr(ipText)
		if err != nil {
			ip = netip.MustParseAddr("192.0.2.1")
		}
		local, domain := splitSender(sender)
		env := &macroEnv{
			sender: sender, local: local, senderDM: domain, domain: domain,
			ip: ip.Unmap(), helo: "helo.example", receiver: "r.example",
			now: time.Unix(1, 0), ptr: func() string { return "ptr.example" },
		}
		dtoks, derr := parseMacro(s, macroDomain)
		etoks, eerr := parseMacro(s, macroExplain)
		if derr == nil && eerr != nil {
			t.Fatalf("%q: domain grammar accepts, explanation grammar rejects: %v", s, eerr)
		}
		if derr == nil {
			out := expandMacro(dtoks, env)
			if !strings.Contains(s, "%") && out != s {
				t.Fatalf("%q without macros expands to %q", s, out)
			}
			queryName(out)
		}
		if eerr == nil {
			expandMacro(etoks, env)
		}
		for _, c := range urlEscape(s) {
			if !(c < 0x80 && (isAlpha(byte(c)) || isDigit(byte(c)) || strings.ContainsRune("-._~%ABCDEF", c))) {
				t.Fatalf("urlEscape(%q) holds %q", s, c)
			}
		}
		checkDomainSpec(s)
	})
}
