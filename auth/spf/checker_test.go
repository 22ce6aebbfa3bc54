package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

const testZone = `
example.test.          IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.provider.test mx -all"
example.test.          IN MX  10 mx.example.test.
mx.example.test.       IN A   198.51.100.7
mx.example.test.       IN AAAA 2001:db8::25
_spf.provider.test.    IN TXT "v=spf1 ip4:203.0.113.0/25 ip6:2001:db8:f00::/48 ~all"
helo.example.test.     IN TXT "v=spf1 a -all"
helo.example.test.     IN A   192.0.2.99
soft.example.test.     IN TXT "v=spf1 ~all"
broken.example.test.   IN TXT "v=spf1 ip4:192.0.2.1 bogus -all"
servfail.example.test. IN TXT "v=spf1 a:dead.example.test -all"
explain.example.test.  IN TXT "v=spf1 -all exp=why.example.test"
xn--bcher-kva.test.    IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
why.example.test.      IN TXT "%{i} may not send for %{d} (checked by %{r} at %{t})"
`

func newTestChecker(t *testing.T, zone string) (*Checker, *dnstest.Server) {
	t.Helper()
	srv := dnstest.New(t, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &Checker{
		Resolver: r,
		Hostname: "mx.receiver.test",
		Now:      func() time.Time { return time.Unix(1700000000, 0) },
	}, srv
}

func TestCheckMailFrom(t *testing.T) {
	c, _ := newTestChecker(t, testZone)
	ctx := context.Background()
	for _, tc := range []struct {
		ip, helo, from string
		status         Status
		mech           string
		lookups        int
	}{
		{"192.0.2.10", "x.test", "user@example.test", Pass, "ip4:192.0.2.0/24", 0},
		{"::ffff:192.0.2.10", "x.test", "user@example.test", Pass, "ip4:192.0.2.0/24", 0},
		{"203.0.113.5", "x.test", "user@Example.Test.", Pass, "include:_spf.provider.test", 1},
		{"2001:db8:f00::1", "x.test", "user@example.test", Pass, "include:_spf.provider.test", 1},
		{"198.51.100.7", "x.test", "user@example.test", Pass, "mx", 2},
		{"2001:db8::25", "x.test", "<user@example.test>", Pass, "mx", 2},
		{"203.0.113.200", "x.test", "user@example.test", Fail, "-all", 2},
		{"192.0.2.99", "helo.example.test", "", Pass, "a", 1},
		{"192.0.2.98", "helo.example.test", "<>", Fail, "-all", 1},
		{"192.0.2.1", "x.test", "a@soft.example.test", Softfail, "~all", 0},
		{"192.0.2.1", "x.test", "a@nothing.example.test", None, "", 0},
		{"192.0.2.1", "x.test", "a@[192.0.2.1]", None, "", 0},
		{"192.0.2.1", "x.test", "a@broken.example.test", PermError, "", 0},
		{"192.0.2.1", "x.test", "jörg@Bücher.test", Pass, "ip4:192.0.2.0/24", 0},
		{"198.51.100.1", "x.test", "jörg@bücher.test", Fail, "-all", 0},
	} {
		r := c.CheckMailFrom(ctx, netip.MustParseAddr(tc.ip), tc.helo, tc.from)
		if r.Status != tc.status || r.Mechanism != tc.mech || r.Lookups != tc.lookups || r.Scope != ScopeMailFrom {
			t.Errorf("CheckMailFrom(%s, %q, %q) = %s %q lookups %d scope %q (err %v); want %s %q lookups %d",
				tc.ip, tc.helo, tc.from, r.Status, r.Mechanism, r.Lookups, r.Scope, r.Err, tc.status, tc.mech, tc.lookups)
		}
		if (r.Err != nil) != (tc.status == None || tc.status == PermError || tc.status == TempError) {
			t.Errorf("CheckMailFrom(%s, %q): Err = %v for %s", tc.ip, tc.from, r.Err, r.Status)
		}
	}
}

func TestResultFields(t *testing.T) {
	c, _ := newTestChecker(t, testZone)
	ctx := context.Background()

	r := c.CheckMailFrom(ctx, netip.MustParseAddr("::ffff:192.0.2.10"), "mail.example.test", "user@example.test")
	if r.Domain != "example.test" || r.Sender != "user@example.test" || r.IP != netip.MustParseAddr("192.0.2.10") || r.HELO != "mail.example.test" {
		t.Errorf("result fields = %+v", r)
	}
	if got, want := r.AuthResult(), "spf=pass smtp.mailfrom=user@example.test"; got != want {
		t.Errorf("AuthResult = %q, want %q", got, want)
	}
	got := r.ReceivedSPF("mx.receiver.test")
	for _, part := range []string{"pass (mx.receiver.test: domain of user@example.test designates 192.0.2.10 as permitted sender)",
		"client-ip=192.0.2.10;", `envelope-from="user@example.test";`, "helo=mail.example.test;", "identity=mailfrom;",
		"receiver=mx.receiver.test;", `mechanism="ip4:192.0.2.0/24"`} {
		if !strings.Contains(got, part) {
			t.Errorf("ReceivedSPF = %q, missing %q", got, part)
		}
	}

	r = c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "jörg@bücher.test")
	if r.Domain != "xn--bcher-kva.test" || r.Sender != "jörg@xn--bcher-kva.test" {
		t.Errorf("EAI sender: domain %q sender %q", r.Domain, r.Sender)
	}

	// Null reverse-path: postmaster@HELO.
	r = c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.99"), "helo.example.test", "")
	if r.Domain != "helo.example.test" || r.Sender != "postmaster@helo.example.test" || r.Status != Pass {
		t.Errorf("null sender: %+v", r)
	}

	h := c.CheckHELO(ctx, netip.MustParseAddr("192.0.2.99"), "helo.example.test")
	if h.Status != Pass || h.Scope != ScopeHELO || h.Domain != "helo.example.test" {
		t.Errorf("CheckHELO = %+v", h)
	}
	if got, want := h.AuthResult(), "spf=pass smtp.helo=helo.example.test"; got != want {
		t.Errorf("AuthResult = %q, want %q", got, want)
	}
	for _, helo := range []string{"[192.0.2.99]", "localhost", "192.0.2.99", ""} {
		if h := c.CheckHELO(ctx, netip.MustParseAddr("192.0.2.99"), helo); h.Status != None || !errors.Is(h.Err, ErrInvalidDomain) {
			t.Errorf("CheckHELO(%q) = %s, %v; want none, ErrInvalidDomain", helo, h.Status, h.Err)
		}
	}

	p := c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "a@broken.example.test")
	if !errors.Is(p.Err, ErrSyntax) || !strings.Contains(p.ReceivedSPF(""), `problem="`) {
		t.Errorf("permerror: %v / %q", p.Err, p.ReceivedSPF(""))
	}
	n := c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "a@nothing.example.test")
	if !errors.Is(n.Err, ErrNoRecord) || !resolver.IsNXDomain(n.Err) {
		t.Errorf("none: Err = %v, want ErrNoRecord wrapping NXDOMAIN", n.Err)
	}
}

func TestExplanation(t *testing.T) {
	c, _ := newTestChecker(t, testZone)
	ctx := context.Background()
	r := c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "u@explain.example.test")
	if want := "192.0.2.1 may not send for explain.example.test (checked by mx.receiver.test at 1700000000)"; r.Status != Fail || r.Explanation != want {
		t.Errorf("explanation = %s %q, want fail %q", r.Status, r.Explanation, want)
	}
	r = c.CheckMailFrom(ctx, netip.MustParseAddr("203.0.113.200"), "x.test", "u@example.test")
	if want := "example.test does not designate 203.0.113.200 as a permitted sender"; r.Explanation != want {
		t.Errorf("default explanation = %q, want %q", r.Explanation, want)
	}
	c.DefaultExplanation = "see https://example.test/spf?ip=%{c}&s=%{S}"
	r = c.CheckMailFrom(ctx, netip.MustParseAddr("203.0.113.200"), "x.test", "u+x@example.test")
	if want := "see https://example.test/spf?ip=203.0.113.200&s=u%2Bx%40example.test"; r.Explanation != want {
		t.Errorf("configured explanation = %q, want %q", r.Explanation, want)
	}
	c.DefaultExplanation = "100% broken"
	r = c.CheckMailFrom(ctx, netip.MustParseAddr("203.0.113.200"), "x.test", "u@example.test")
	if r.Explanation != "100% broken" {
		t.Errorf("unparsable default explanation = %q, want it verbatim", r.Explanation)
	}
	r = c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "u@soft.example.test")
	if r.Status != Softfail || r.Explanation != "" {
		t.Errorf("softfail has explanation %q", r.Explanation)
	}
}

func TestTempErrors(t *testing.T) {
	c, srv := newTestChecker(t, testZone)
	ctx := context.Background()
	srv.SetFault("dead.example.test", 0, dnstest.ServFail)
	r := c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "u@servfail.example.test")
	if r.Status != TempError || !errors.Is(r.Err, ErrDNS) || !resolver.IsTemporary(r.Err) {
		t.Errorf("SERVFAIL on a: %s %v", r.Status, r.Err)
	}
	srv.SetFault("example.test", dns.TypeTXT, dnstest.ServFail)
	r = c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "u@example.test")
	if r.Status != TempError || !resolver.IsTemporary(r.Err) {
		t.Errorf("SERVFAIL on TXT: %s %v", r.Status, r.Err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	r = c.CheckMailFrom(cctx, netip.MustParseAddr("192.0.2.1"), "x.test", "u@soft.example.test")
	if r.Status != TempError || !errors.Is(r.Err, context.Canceled) {
		t.Errorf("cancelled context: %s %v", r.Status, r.Err)
	}

	// The whole check is bounded by Timeout.
	release := srv.Hold("soft.example.test", dns.TypeTXT)
	defer release()
	c.Timeout = 50 * time.Millisecond
	r = c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "x.test", "u@soft.example.test")
	if r.Status != TempError || !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("held answer with Timeout: %s %v", r.Status, r.Err)
	}
}

func TestLimitsConfigurable(t *testing.T) {
	c, _ := newTestChecker(t, `
limits.test. IN TXT "v=spf1 a:n1.limits.test a:n2.limits.test a:n3.limits.test include:inc.limits.test -all"
inc.limits.test. IN TXT "v=spf1 ?all"
`)
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")
	r := c.CheckMailFrom(ctx, ip, "x.test", "u@limits.test")
	if r.Status != PermError || !errors.Is(r.Err, ErrVoidLookupLimit) || r.VoidLookups != 3 {
		t.Errorf("default void limit: %s %v voids %d", r.Status, r.Err, r.VoidLookups)
	}
	c.MaxVoidLookups = -1
	r = c.CheckMailFrom(ctx, ip, "x.test", "u@limits.test")
	if r.Status != Fail || r.Lookups != 4 || r.VoidLookups != 3 {
		t.Errorf("no void limit: %s %v lookups %d voids %d", r.Status, r.Err, r.Lookups, r.VoidLookups)
	}
	c.MaxLookups = 3
	r = c.CheckMailFrom(ctx, ip, "x.test", "u@limits.test")
	if r.Status != PermError || !errors.Is(r.Err, ErrLookupLimit) {
		t.Errorf("MaxLookups 3: %s %v", r.Status, r.Err)
	}
}

func TestMisuse(t *testing.T) {
	var c Checker
	r := c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.1"), "x.test", "a@example.test")
	if r.Status != TempError || !errors.Is(r.Err, ErrDNS) {
		t.Errorf("nil Resolver: %s %v", r.Status, r.Err)
	}
	c2, _ := newTestChecker(t, testZone)
	r = c2.CheckMailFrom(context.Background(), netip.Addr{}, "x.test", "a@example.test")
	if r.Status != PermError {
		t.Errorf("invalid IP: %s %v", r.Status, r.Err)
	}
}

func TestValidate(t *testing.T) {
	if err := Validate("v=spf1 ip4:192.0.2.0/24 include:_spf.example.com -all"); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	for _, bad := range []string{"v=spf1 ip4:192.0.2.0/33", "spf1 -all", "v=spf1 include:", "v=spf1 a:%{c}.example.com"} {
		if err := Validate(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("Validate(%q) = %v, want ErrSyntax", bad, err)
		}
	}
}

func TestConcurrentChecks(t *testing.T) {
	c, _ := newTestChecker(t, testZone)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 8 {
		wg.Go(func() {
			for j := range 8 {
				v := i*32 + j*4 // half inside 203.0.113.0/25, half outside
				ip := netip.AddrFrom4([4]byte{203, 0, 113, byte(v)})
				want := Pass
				if v >= 128 {
					want = Fail
				}
				if r := c.CheckMailFrom(ctx, ip, "x.test", "u@example.test"); r.Status != want {
					errs <- fmt.Sprintf("%s: %s (%v), want %s", ip, r.Status, r.Err, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestStatusString(t *testing.T) {
	want := []string{"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}
	for i, w := range want {
		if got := Status(i).String(); got != w {
			t.Errorf("Status(%d) = %q, want %q", i, got, w)
		}
	}
	if got := Status(42).String(); got != "Status(42)" {
		t.Errorf("Status(42) = %q", got)
	}
}
