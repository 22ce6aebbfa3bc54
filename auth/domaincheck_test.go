package auth

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

func findings(rep *DomainReport, area string, sev Severity) []Finding {
	var out []Finding
	for _, f := range rep.Findings {
		if f.Area == area && f.Severity == sev {
			out = append(out, f)
		}
	}
	return out
}

func TestCheckDomain(t *testing.T) {
	good, err := dkim.GenerateKey(dkim.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := dkim.GenerateKey(dkim.Ed25519, nil)
	goodLine, _ := dkim.KeyTXT("good", "example.com", good.Public())
	wrongLine, _ := dkim.KeyTXT("wrong", "example.com", other.Public())
	includes := ""
	for i := range 11 {
		includes += " include:i" + string(rune('a'+i)) + ".example.net"
	}
	zone := goodLine + "\n" + wrongLine + `
example.com. IN TXT "v=spf1 ip4:192.0.2.0/25 -all"
example.com. IN MX 10 mx.example.com.
example.com. IN MX 20 gone.example.com.
mx.example.com. IN A 192.0.2.25
_dmarc.example.com. IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.com"
_mta-sts.example.com. IN TXT "v=STSv1; id=bad-id!"
loopy.example. IN TXT "v=spf1` + includes + ` -all"
`
	for i := range 11 {
		zone += "i" + string(rune('a'+i)) + `.example.net. IN TXT "v=spf1 ?all"` + "\n"
	}
	srv := dnstest.New(t, zone)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rep, err := CheckDomain(ctx, res, DomainSetup{
		Domain: "example.com",
		IPs:    []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")},
		DKIM:   []DomainKey{{"good", good}, {"wrong", good}, {"missing", good}},
	})
	if err != nil {
		t.Fatal(err)
	}
	text := rep.String()
	t.Log(text)
	if rep.OK() {
		t.Fatal("report OK despite problems")
	}
	spfProblems := findings(rep, "spf", Problem)
	if len(spfProblems) != 2 || !strings.Contains(spfProblems[0].Message, "198.51.100.7") ||
		spfProblems[1].Fix != `example.com. IN TXT "v=spf1 ip4:192.0.2.0/25 ip4:198.51.100.7 -all"` {
		t.Errorf("spf problems: %+v", spfProblems)
	}
	if len(findings(rep, "spf", OK)) != 2 {
		t.Errorf("spf ok: %+v", findings(rep, "spf", OK))
	}
	dk := findings(rep, "dkim", Problem)
	if len(dk) != 2 || !strings.Contains(dk[0].Message, "does not match") || !strings.Contains(dk[1].Message, "no key published") ||
		!strings.HasPrefix(dk[1].Fix, `missing._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=`) {
		t.Errorf("dkim problems: %+v", dk)
	}
	if len(findings(rep, "dkim", OK)) != 1 || len(findings(rep, "dmarc", OK)) != 1 {
		t.Errorf("dkim/dmarc ok: %s", text)
	}
	if mx := findings(rep, "mx", Problem); len(mx) != 1 || !strings.Contains(mx[0].Message, "gone.example.com") {
		t.Errorf("mx: %+v", mx)
	}
	if sts := findings(rep, "mta-sts", Problem); len(sts) != 1 || !strings.Contains(sts[0].Fix, "_mta-sts.example.com. IN TXT") {
		t.Errorf("mta-sts: %+v", sts)
	}

	// A domain with nothing published gets the records to publish.
	rep, err = CheckDomain(ctx, res, DomainSetup{Domain: "bare.example", IPs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, DKIM: []DomainKey{{"s1", good}}})
	if err != nil {
		t.Fatal(err)
	}
	wantFixes := []string{
		`bare.example. IN TXT "v=spf1 ip6:2001:db8::1 -all"`,
		`_dmarc.bare.example. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@bare.example"`,
		`s1._domainkey.bare.example. IN TXT "v=DKIM1; k=ed25519; p=`,
	}
	for _, w := range wantFixes {
		if !strings.Contains(rep.String(), w) {
			t.Errorf("missing fix %s in\n%s", w, rep)
		}
	}
	// Over the SPF lookup limit.
	rep, err = CheckDomain(ctx, res, DomainSetup{Domain: "loopy.example", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}})
	if err != nil {
		t.Fatal(err)
	}
	if p := findings(rep, "spf", Problem); len(p) != 1 || !strings.Contains(p[0].Message, "more DNS lookups") {
		t.Errorf("lookup limit: %+v", p)
	}
}
