package dmarc

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/mtakit/mta/resolver/dnstest"
)

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // Record.String(), "" when an error is expected
		wantErr error
	}{
		{"v=DMARC1; p=reject", "v=DMARC1; p=reject", nil},
		{"v=DMARC1 ;p = quarantine ;", "v=DMARC1; p=quarantine", nil},
		{"v=DMARC1; p=none; sp=reject; np=quarantine; adkim=s; aspf=s; psd=n; t=y; rua=mailto:a@example.com, mailto:b@example.com; fo=1",
			"v=DMARC1; p=none; sp=reject; np=quarantine; adkim=s; aspf=s; psd=n; t=y; rua=mailto:a@example.com,mailto:b@example.com; fo=1", nil},
		{"v=DMARC1", "v=DMARC1; p=none", nil},                                        // RFC 9989: no p= means none
		{"v=DMARC1; p=reject; pct=50; rf=afrf; ri=86400", "v=DMARC1; p=reject", nil}, // historic tags tolerated
		{"v=DMARC1; p=reject; adkim=x; psd=maybe; t=perhaps; foo=bar", "v=DMARC1; p=reject", nil},
		{"v=DMARC1; p=block; rua=mailto:r@example.com", "v=DMARC1; p=none; rua=mailto:r@example.com", nil},
		{"v=DMARC1; p=block", "", ErrRecordSyntax},
		{"v=DMARC1; p=reject; sp=bogus", "", ErrRecordSyntax},
		{"v=DMARC1; p=reject; p=none", "", ErrRecordSyntax},
		{"v=DMARC1; p=reject; junk", "", ErrRecordSyntax},
		{"v=DMARC1; p=reject\x00", "", ErrRecordSyntax},
		{"p=reject; v=DMARC1", "", ErrNotDMARC},
		{"v=dmarc1; p=reject", "", ErrNotDMARC},
		{"v=DMARC2; p=reject", "", ErrNotDMARC},
		{"v=spf1 -all", "", ErrNotDMARC},
		{"", "", ErrNotDMARC},
	} {
		r, err := ParseRecord(tc.in)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%q: got %v, want %v", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := r.String(); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestAuthorDomain: every From ambiguity of the "Composition Kills" study
// fails closed with a reason; ordinary forms work.
func TestAuthorDomain(t *testing.T) {
	one := func(v string) []FromField { return []FromField{{Name: "From", Value: v}} }
	for _, tc := range []struct {
		name    string
		fields  []FromField
		want    string
		wantErr error
	}{
		{"plain", one(" alice@Example.COM"), "example.com", nil},
		{"display name", one(` "Alice" <alice@example.com>`), "example.com", nil},
		{"display name with address", one(` "security@bank.example" <attacker@evil.example>`), "evil.example", nil},
		{"encoded display name", one(" =?utf-8?q?M=C3=BCller?= <info@bücher.example>"), "xn--bcher-kva.example", nil},
		{"folded between name and address", one(" Alice\r\n <alice@example.com>"), "example.com", nil},
		{"no From", nil, "", ErrNoFrom},
		{"duplicate From", []FromField{{"From", " a@a.example"}, {"From", " b@b.example"}}, "", ErrMultipleFrom},
		{"space before colon", []FromField{{"From ", " a@a.example"}}, "", ErrAmbiguousFrom},
		{"several addresses", one(" a@a.example, b@b.example"), "", ErrMultipleAuthors},
		{"trailing comma", one(" <alice@bank.example>,"), "", ErrMultipleAuthors},
		{"leading empty element", one(" , alice@bank.example"), "", ErrMultipleAuthors},
		{"address as display name", one(" alice@bank.example <bob@evil.example>"), "", ErrAmbiguousFrom},
		{"folded before second address", one(" alice@bank.example\r\n\t<bob@evil.example>"), "", ErrAmbiguousFrom},
		{"double @", one(" alice@bank.example@evil.example"), "", ErrAmbiguousFrom},
		{"comment after address", one(" <alice@bank.example> (bob@evil.example)"), "", ErrAmbiguousFrom},
		{"quoted display name with comma", one(` "Doe, John" <john@example.com>`), "example.com", nil},
		{"empty group", one(" undisclosed-recipients:;"), "", ErrGroup},
		{"group with member", one(" friends: a@a.example;"), "", ErrGroup},
		{"route syntax", one(" <@a.example,@b.example:user@c.example>"), "", ErrAmbiguousFrom},
		{"comment", one(" alice@example.com (via bank.example)"), "", ErrAmbiguousFrom},
		{"comment in domain", one(" alice@(x)example.com"), "", ErrAmbiguousFrom},
		{"quoted local part with @", one(` "admin@bank.example"@evil.example`), "", ErrAmbiguousFrom},
		{"encoded-word address", one(" =?utf-8?b?YWRtaW5AYmFuay5leGFtcGxl?="), "", ErrAmbiguousFrom},
		{"encoded-word inside brackets", one(" <=?utf-8?q?a=40bank.example?=@evil.example>"), "", ErrAmbiguousFrom},
		{"folded inside address", one(" <alice@bank.\r\n example>"), "", ErrAmbiguousFrom},
		{"bare LF", one(" alice@bank.example\nFrom: x@evil.example"), "", ErrAmbiguousFrom},
		{"NUL", one(" alice@bank.example\x00@evil.example"), "", ErrAmbiguousFrom},
		{"domain literal", one(" alice@[192.0.2.1]"), "", ErrAmbiguousFrom},
		{"empty", one(" "), "", ErrAmbiguousFrom},
		{"two brackets", one(" <a@bank.example> <b@evil.example>"), "", ErrAuthor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AuthorDomain(tc.fields)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrAuthor) {
					t.Fatalf("got %q, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestWalkNames(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com com"},
		{"a.b.c.example.com", "a.b.c.example.com b.c.example.com c.example.com example.com com"},
		{"a.b.c.d.e.f.g.h.i.j.mail.example.com", "a.b.c.d.e.f.g.h.i.j.mail.example.com g.h.i.j.mail.example.com h.i.j.mail.example.com i.j.mail.example.com j.mail.example.com mail.example.com example.com com"},
		{"b.c.d.e.f.g.example.com", "b.c.d.e.f.g.example.com c.d.e.f.g.example.com d.e.f.g.example.com e.f.g.example.com f.g.example.com g.example.com example.com com"},
		{"test", "test"},
	} {
		got := strings.Join(walkNames(tc.in), " ")
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
		if n := len(walkNames(tc.in)); n > MaxWalkQueries {
			t.Errorf("%s: %d queries", tc.in, n)
		}
	}
}

// TestTreeWalkQueries counts the queries the real walk sends.
func TestTreeWalkQueries(t *testing.T) {
	srv := dnstest.New(t, `_dmarc.example.com. IN TXT "v=DMARC1; p=reject"`)
	e := newEvaluator(t, srv)
	long := "a.b.c.d.e.f.g.h.i.j.k.l.mail.example.com"
	w, err := e.TreeWalk(context.Background(), long)
	if err != nil {
		t.Fatal(err)
	}
	if w.OrgDomain != "example.com" || len(w.Queried) != 8 {
		t.Fatalf("org %s after %d queries: %v", w.OrgDomain, len(w.Queried), w.Queried)
	}
	total := 0
	for _, n := range walkNames(long) {
		total += srv.Queries("_dmarc."+n, dns.TypeTXT)
	}
	if total != 8 {
		t.Fatalf("server saw %d queries, want 8", total)
	}
	if srv.Queries("_dmarc.b.c.d.e.f.g.h.i.j.k.l.mail.example.com", dns.TypeTXT) != 0 {
		t.Fatal("the walk did not jump to 7 labels")
	}
}

// TestAlignmentEdges covers alignment cases beyond the corpus.
func TestAlignmentEdges(t *testing.T) {
	srv := dnstest.New(t, `
_dmarc.example.com. IN TXT "v=DMARC1; p=reject"
_dmarc.strict.example. IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
_dmarc.example.net. IN TXT "v=DMARC1; p=quarantine"
example.com. IN A 192.0.2.1
`)
	e := newEvaluator(t, srv)
	from := func(v string) []FromField { return []FromField{{Name: "From", Value: " " + v}} }
	for _, tc := range []struct {
		name string
		in   Input
		want Status
		disp Policy
	}{
		{"dkim parent of author, relaxed", Input{From: from("a@deep.sub.example.com"), DKIM: []Identifier{{"pass", "example.com"}}}, StatusPass, PolicyNone},
		{"dkim child of author, relaxed", Input{From: from("a@example.com"), DKIM: []Identifier{{"pass", "mail.example.com"}}}, StatusPass, PolicyNone},
		{"look-alike suffix", Input{From: from("a@example.com"), DKIM: []Identifier{{"pass", "badexample.com"}}}, StatusFail, PolicyReject},
		{"other org shares TLD", Input{From: from("a@example.com"), DKIM: []Identifier{{"pass", "example.net"}}, SPF: Identifier{"pass", "example.net"}}, StatusFail, PolicyReject},
		{"strict exact", Input{From: from("a@strict.example"), DKIM: []Identifier{{"pass", "STRICT.example."}}}, StatusPass, PolicyNone},
		{"strict child", Input{From: from("a@strict.example"), SPF: Identifier{"pass", "bounce.strict.example"}}, StatusFail, PolicyReject},
		{"dkim fail aligned", Input{From: from("a@example.com"), DKIM: []Identifier{{"fail", "example.com"}, {"permerror", "example.com"}}}, StatusFail, PolicyReject},
		{"spf softfail", Input{From: from("a@example.com"), SPF: Identifier{"softfail", "example.com"}}, StatusFail, PolicyReject},
		{"unaligned temperror is no excuse", Input{From: from("a@example.com"), DKIM: []Identifier{{"temperror", "example.net"}}}, StatusFail, PolicyReject},
		{"aligned dkim temperror", Input{From: from("a@example.com"), DKIM: []Identifier{{"temperror", "example.com"}}}, StatusTempError, ""},
		{"garbage d=", Input{From: from("a@example.com"), DKIM: []Identifier{{"pass", "exa mple..com"}}}, StatusFail, PolicyReject},
		{"empty d=", Input{From: from("a@example.com"), DKIM: []Identifier{{"pass", ""}}}, StatusFail, PolicyReject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := e.Evaluate(context.Background(), tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tc.want || r.Disposition != tc.disp {
				t.Fatalf("got %s/%s (%s), want %s/%s", r.Status, r.Disposition, r.Reason, tc.want, tc.disp)
			}
		})
	}
}

// TestOversizedAndManyRecords: an oversized TXT record (several strings,
// >2 KB) still parses; many TXT records at one name are filtered and
// several DMARC ones discarded.
func TestOversizedAndManyRecords(t *testing.T) {
	big := "v=DMARC1; p=reject; rua=" + strings.Repeat("mailto:r@example.com,", 120) + "mailto:last@example.com"
	srv := dnstest.New(t, "")
	srv.AddRR(dnstest.TXT("_dmarc.big.example", 300, big))
	for i := range 30 {
		srv.AddRR(dnstest.TXT("_dmarc.many.example", 300, "not dmarc "+strings.Repeat("x", i)))
	}
	srv.AddRR(dnstest.TXT("_dmarc.many.example", 300, "v=DMARC1; p=quarantine"))
	srv.AddRR(dnstest.TXT("_dmarc.dup.example", 300, "v=DMARC1; p=reject"))
	srv.AddRR(dnstest.TXT("_dmarc.dup.example", 300, "v=DMARC1; p=none"))
	e := newEvaluator(t, srv)
	for _, tc := range []struct {
		from   string
		status Status
		policy Policy
	}{
		{"a@big.example", StatusFail, PolicyReject},
		{"a@many.example", StatusFail, PolicyQuarantine},
		{"a@dup.example", StatusNone, ""},
	} {
		r, err := e.Evaluate(context.Background(), Input{From: []FromField{{"From", " " + tc.from}}})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != tc.status || r.Policy != tc.policy {
			t.Errorf("%s: got %s %q (%s)", tc.from, r.Status, r.Policy, r.Reason)
		}
	}
}

func TestEvaluateCanceled(t *testing.T) {
	srv := dnstest.New(t, "")
	e := newEvaluator(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Evaluate(ctx, Input{From: []FromField{{"From", " a@example.com"}}}); err != context.Canceled {
		t.Fatalf("got %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a resolver succeeded")
	}
}
