package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mtakit/mta/resolver/dnstest"
)

const zone = `
$ORIGIN example.com.
$TTL 300
@        IN SOA ns hostmaster 1 3600 600 86400 60
@        IN MX 20 mx2
@        IN MX 10 mx1
@        IN MX 20 mx3
@        IN TXT "v=spf1 " "-all"
@        IN A 192.0.2.10
@        IN AAAA 2001:db8::10
mx1      IN A 192.0.2.1
mx2      IN A 192.0.2.2
mx3      IN AAAA 2001:db8::3
null     IN MX 0 .
v4only   IN A 192.0.2.4
v6only   IN AAAA 2001:db8::6
empty    IN TXT ""
alias    IN CNAME mx1
alias2   IN CNAME alias
nxalias  IN CNAME missing
_25._tcp.mx1 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
a.b.c    IN A 192.0.2.5
`

// newResolver returns a resolver pointed at srv with a fast timeout.
func newResolver(t testing.TB, cfg Config, srv *dnstest.Server) *Resolver {
	t.Helper()
	if cfg.Servers == nil {
		cfg.Servers = []string{srv.Addr}
	}
	if cfg.Timeout == 0 {
		// Generous: only tests of timeouts should ever see one, even on a
		// loaded machine. Those set a short Timeout themselves.
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Attempts == 0 {
		cfg.Attempts = 1
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLookupMX(t *testing.T) {
	srv := dnstest.New(t, zone)
	r := newResolver(t, Config{}, srv)
	ctx := context.Background()

	res, err := r.LookupMX(ctx, "Example.COM.")
	if err != nil {
		t.Fatal(err)
	}
	want := []MX{{"mx1.example.com", 10}, {"mx2.example.com", 20}, {"mx3.example.com", 20}}
	if !slices.Equal(res.Records, want) {
		t.Errorf("records = %v, want %v", res.Records, want)
	}
	if res.Name != "example.com" || res.TTL != 300*time.Second || res.Authentic {
		t.Errorf("result = %+v", res)
	}

	res, err = r.LookupMX(ctx, "null.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Records, []MX{{"", 0}}) {
		t.Errorf("null MX: %v", res.Records)
	}
}

func TestLookupIP(t *testing.T) {
	srv := dnstest.New(t, zone)
	r := newResolver(t, Config{}, srv)
	ctx := context.Background()
	a := netip.MustParseAddr
	tests := []struct {
		network, name string
		want          []netip.Addr
		err           error
	}{
		{"ip", "example.com", []netip.Addr{a("192.0.2.10"), a("2001:db8::10")}, nil},
		{"ip4", "example.com", []netip.Addr{a("192.0.2.10")}, nil},
		{"ip6", "example.com", []netip.Addr{a("2001:db8::10")}, nil},
		{"ip", "v4only.example.com", []netip.Addr{a("192.0.2.4")}, nil},
		{"ip", "v6only.example.com", []netip.Addr{a("2001:db8::6")}, nil},
		{"ip6", "v4only.example.com", nil, ErrNoData},
		{"ip", "null.example.com", nil, ErrNoData},
		{"ip", "nowhere.example.com", nil, ErrNotFound},
		{"ip4", "a.b.c.example.com", []netip.Addr{a("192.0.2.5")}, nil},
		{"ip4", "b.c.example.com", nil, ErrNoData},                                    // empty non-terminal
		{"ip", "example.com.", []netip.Addr{a("192.0.2.10"), a("2001:db8::10")}, nil}, // both cached
		{"ip", "v4only.example.com", []netip.Addr{a("192.0.2.4")}, nil},               // one negative, cached
		{"ip", "b.c.example.com", nil, ErrNoData},                                     // one cached, one upstream
	}
	for _, tt := range tests {
		t.Run(tt.network+" "+tt.name, func(t *testing.T) {
			res, err := r.LookupIP(ctx, tt.network, tt.name)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Records, tt.want) {
				t.Errorf("records = %v, want %v", res.Records, tt.want)
			}
		})
	}
	if _, err := r.LookupIP(ctx, "tcp", "example.com"); err == nil {
		t.Error("network tcp accepted")
	}
	if _, err := r.LookupIP(ctx, "ip", "bad..name"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("invalid name: %v", err)
	}
	if n := srv.Queries("example.com", dns.TypeA) + srv.Queries("example.com", dns.TypeAAAA); n != 2 {
		t.Errorf("example.com: %d queries, want 2", n)
	}
}

// TestLookupIPPartial checks how "ip" combines an answer with a failure.
func TestLookupIPPartial(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.SetFault("example.com", dns.TypeAAAA, dnstest.ServFail)
	srv.SetFault("v4only.example.com", dns.TypeA, dnstest.Refused)
	srv.SetFault("mx2.example.com", dns.TypeAAAA, dnstest.Authentic)
	srv.SetFault("mx2.example.com", dns.TypeA, dnstest.Authentic)
	r := newResolver(t, Config{}, srv)
	ctx := context.Background()

	res, err := r.LookupIP(ctx, "ip", "example.com")
	if err != nil || !slices.Equal(res.Records, []netip.Addr{netip.MustParseAddr("192.0.2.10")}) {
		t.Errorf("A answered, AAAA failed: %+v %v", res, err)
	}
	// A refused, AAAA no data: temporary, never "not found".
	_, err = r.LookupIP(ctx, "ip", "v4only.example.com")
	checkClass(t, err, ErrTemporary)
	// Both no data, one authentic: the result is authentic only if both are.
	res, err = r.LookupIP(ctx, "ip", "mx2.example.com")
	if err != nil || !res.Authentic || len(res.Records) != 1 {
		t.Errorf("mx2: %+v %v", res, err)
	}
	res, err = r.LookupIP(ctx, "ip", "example.com")
	if err != nil || res.Authentic {
		t.Errorf("example.com: %+v %v", res, err)
	}
	srv.SetFault("nxd.example.com", dns.TypeAAAA, dnstest.ServFail)
	_, err = r.LookupIP(ctx, "ip", "nxd.example.com")
	checkClass(t, err, ErrTemporary)
	// A no data, AAAA NXDOMAIN: NXDOMAIN.
	srv.SetFault("b.c.example.com", dns.TypeAAAA, dnstest.NXDomain)
	_, err = r.LookupIP(ctx, "ip", "b.c.example.com")
	checkClass(t, err, ErrNotFound)
	// Both no data.
	_, err = r.LookupIP(ctx, "ip", "null.example.com")
	checkClass(t, err, ErrNoData)
}

func TestLookupTXT(t *testing.T) {
	srv := dnstest.New(t, zone)
	raw := "a\x00b\"c\\d\xff e"
	srv.AddRR(dnstest.TXT("raw.example.com", 300, raw, "", "tail"))
	srv.AddRR(dnstest.TXT("long.example.com", 300, strings.Repeat("x", 600)))
	if err := srv.AddRecords(`multi.example.com. 300 IN TXT "one"
multi.example.com. 300 IN TXT "two" "three"
esc.example.com. 300 IN TXT "semi;colon" "quote\"d" "oct\255"`); err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, Config{}, srv)
	ctx := context.Background()
	tests := []struct {
		name string
		want []string
	}{
		{"example.com", []string{"v=spf1 -all"}},
		{"empty.example.com", []string{""}},
		{"raw.example.com", []string{raw + "tail"}},
		{"long.example.com", []string{strings.Repeat("x", 600)}},
		{"multi.example.com", []string{"one", "twothree"}},
		{"esc.example.com", []string{"semi;colonquote\"doct\xff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := r.LookupTXT(ctx, tt.name)
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Clone(res.Records)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("records = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLookupTLSA(t *testing.T) {
	srv := dnstest.New(t, zone)
	r := newResolver(t, Config{}, srv)
	res, err := r.LookupTLSA(context.Background(), "_25._tcp.MX1.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Records) != 1 {
		t.Fatalf("records = %v", res.Records)
	}
	got := res.Records[0]
	if got.Usage != 3 || got.Selector != 1 || got.MatchingType != 1 || len(got.Data) != 32 || got.Data[0] != 0x01 || got.Data[31] != 0xef {
		t.Errorf("TLSA = %+v", got)
	}
	// The caller owns Data: changing it does not change the cache.
	got.Data[0] = 0xff
	res, err = r.LookupTLSA(context.Background(), "_25._tcp.mx1.example.com")
	if err != nil || res.Records[0].Data[0] != 0x01 {
		t.Errorf("cached TLSA data changed by caller: %v %v", res.Records, err)
	}
}

func TestLookupPTR(t *testing.T) {
	srv := dnstest.New(t, `
1.2.0.192.in-addr.arpa. 300 IN PTR MX1.Example.COM.
1.2.0.192.in-addr.arpa. 300 IN PTR other.example.net.
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR v6.example.com.
`)
	r := newResolver(t, Config{}, srv)
	ctx := context.Background()
	for _, tt := range []struct {
		addr string
		want []string
	}{
		{"192.0.2.1", []string{"mx1.example.com", "other.example.net"}},
		{"::ffff:192.0.2.1", []string{"mx1.example.com", "other.example.net"}},
		{"2001:db8::1", []string{"v6.example.com"}},
	} {
		res, err := r.LookupPTR(ctx, netip.MustParseAddr(tt.addr))
		if err != nil {
			t.Fatalf("%s: %v", tt.addr, err)
		}
		got := slices.Sorted(slices.Values(res.Records))
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.addr, got, tt.want)
		}
	}
	if _, err := r.LookupPTR(ctx, netip.MustParseAddr("192.0.2.99")); !IsNXDomain(err) {
		t.Errorf("missing PTR: %v", err)
	}
	if _, err := r.LookupPTR(ctx, netip.Addr{}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("zero addr: %v", err)
	}
}

// checkClass verifies that err belongs to exactly the class of want and
// that the classes never overlap.
func checkClass(t *testing.T, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	if IsTemporary(err) && IsNotFound(err) {
		t.Errorf("%v is both temporary and not found", err)
	}
	if got, w := IsTemporary(err), want == ErrTemporary || want == context.Canceled || want == context.DeadlineExceeded; got != w {
		t.Errorf("IsTemporary(%v) = %v", err, got)
	}
	if got, w := IsNotFound(err), want == ErrNotFound || want == ErrNoData; got != w {
		t.Errorf("IsNotFound(%v) = %v", err, got)
	}
	if got, w := IsNXDomain(err), want == ErrNotFound; got != w {
		t.Errorf("IsNXDomain(%v) = %v", err, got)
	}
	if got, w := IsNoData(err), want == ErrNoData; got != w {
		t.Errorf("IsNoData(%v) = %v", err, got)
	}
}

// closedPort returns a loopback UDP address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestErrors(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.SetFault("servfail.example.com", dns.TypeMX, dnstest.ServFail)
	srv.SetFault("refused.example.com", dns.TypeANY, dnstest.Refused)
	srv.SetFault("drop.example.com", 0, dnstest.Drop)
	srv.SetFault("mx1.example.com", dns.TypeMX, dnstest.NXDomain)
	r := newResolver(t, Config{}, srv)
	rDrop := newResolver(t, Config{Timeout: 200 * time.Millisecond}, srv)
	ctx := context.Background()

	tests := []struct {
		name  string
		want  error
		rcode int
	}{
		{"nowhere.example.com", ErrNotFound, dns.RcodeNameError},
		{"nowhere.invalid", ErrNotFound, dns.RcodeNameError},
		{"mx1.example.com", ErrNotFound, dns.RcodeNameError}, // forced NXDOMAIN although it exists
		{"v4only.example.com", ErrNoData, 0},
		{"b.c.example.com", ErrNoData, 0},
		{"servfail.example.com", ErrTemporary, dns.RcodeServerFailure},
		{"refused.example.com", ErrTemporary, dns.RcodeRefused},
		{"drop.example.com", ErrTemporary, 0},
		{"", ErrInvalidName, 0},
		{".", ErrInvalidName, 0},
		{"a..example.com", ErrInvalidName, 0},
		{".example.com", ErrInvalidName, 0},
		{"example.com..", ErrInvalidName, 0},
		{strings.Repeat("a", 64) + ".example.com", ErrInvalidName, 0},
		{strings.Repeat("abcdefghi.", 25) + "example", ErrInvalidName, 0},
		{"exa mple.com", ErrNotFound, dns.RcodeNameError}, // any octet is legal in a label (RFC 2181 section 11)
		{"xn--bcher-kva.example", ErrNotFound, dns.RcodeNameError},
		{"bücher.example", ErrNotFound, dns.RcodeNameError}, // converted to xn--bcher-kva.example
		{"b\xffcher.example", ErrInvalidName, 0},
		{"a\u200d.example", ErrInvalidName, 0},                // ZWJ not allowed here (RFC 5892)
		{`a\.b.example.com`, ErrNotFound, dns.RcodeNameError}, // the backslash is an octet of the label "a\"
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := r
			if strings.HasPrefix(tt.name, "drop.") {
				r = rDrop
			}
			_, err := r.LookupMX(ctx, tt.name)
			checkClass(t, err, tt.want)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T is not *Error", err)
			}
			if e.Rcode != tt.rcode || e.Type != "MX" {
				t.Errorf("Error = %+v, want rcode %d", e, tt.rcode)
			}
			if tt.want != ErrInvalidName && e.Server != srv.Addr {
				t.Errorf("Server = %q, want %q", e.Server, srv.Addr)
			}
			if !strings.HasPrefix(e.Error(), "resolver: lookup MX ") {
				t.Errorf("Error() = %q", e.Error())
			}
		})
	}
	// Every fault query was retried Attempts (1) times per server, and
	// invalid names never reached the server.
	if n := srv.Queries("servfail.example.com", dns.TypeMX); n != 1 {
		t.Errorf("servfail queries = %d", n)
	}
	if n := srv.Queries("a..example.com", 0) + srv.Queries("exa mple.com", 0); n != 0 {
		t.Errorf("invalid names queried %d times", n)
	}

	t.Run("longest valid name", func(t *testing.T) {
		name := strings.Repeat("abcdefgh.", 27) + "abcde.test" // 253 octets
		if len(name) != 253 {
			t.Fatalf("len %d", len(name))
		}
		_, err := r.LookupMX(ctx, name+".")
		checkClass(t, err, ErrNotFound)
	})

	t.Run("closed port", func(t *testing.T) {
		r := newResolver(t, Config{Servers: []string{closedPort(t)}, Attempts: 2}, srv)
		_, err := r.LookupMX(ctx, "example.com")
		checkClass(t, err, ErrTemporary)
	})
}

// TestUnusualOctets checks that names are taken as text: any octet but '.'
// belongs to a label (RFC 2181 section 11), as SPF needs for domain-specs
// with any visible character (RFC 7208 section 7.1). The zone writes them
// in presentation format, the lookups as plain text.
func TestUnusualOctets(t *testing.T) {
	srv := dnstest.New(t, `
foo:bar/baz.example.com.                          300 IN A   192.0.2.1
macro%percent\ \ space%20url-space.example.com.    300 IN TXT "spaces"
quote\"at\@semi\;paren\(\)back\\.example.com.     300 IN TXT "specials"
ctl\009x.example.com.                             300 IN TXT "tab"
`)
	r := newResolver(t, Config{}, srv)
	ctx := context.Background()
	ip, err := r.LookupIP(ctx, "ip4", "FOO:bar/baz.example.com")
	if err != nil || len(ip.Records) != 1 || ip.Records[0] != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("colon and slash: %+v, %v", ip, err)
	}
	for name, want := range map[string]string{
		"macro%percent  space%20url-space.example.com": "spaces",
		`quote"at@semi;paren()back\.example.com`:       "specials",
		"ctl\tx.example.com":                           "tab",
	} {
		txt, err := r.LookupTXT(ctx, name)
		if err != nil || len(txt.Records) != 1 || txt.Records[0] != want {
			t.Errorf("%q: %+v, %v", name, txt, err)
		}
		// The second lookup is answered from the cache under the same key.
		if _, err := r.LookupTXT(ctx, name); err != nil {
			t.Errorf("%q again: %v", name, err)
		}
	}
	if n := srv.Queries(`macro%percent\ \ space%20url-space.example.com`, dns.TypeTXT); n != 1 {
		t.Errorf("queries for the name with spaces = %d, want 1 (then cached)", n)
	}
}

func TestIDNA(t *testing.T) {
	srv := dnstest.New(t, "xn--bcher-kva.example. 300 IN MX 10 xn--mx-bcher-kva.example.\n")
	r := newResolver(t, Config{CacheSize: -1}, srv)
	for _, name := range []string{"bücher.example", "BÜCHER.example.", "xn--bcher-kva.example", "XN--BCHER-KVA.EXAMPLE"} {
		res, err := r.LookupMX(context.Background(), name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.Name != "xn--bcher-kva.example" || res.Records[0].Host != "xn--mx-bcher-kva.example" {
			t.Errorf("%s: %+v", name, res)
		}
	}
	if n := srv.Queries("xn--bcher-kva.example", dns.TypeMX); n != 4 {
		t.Errorf("queries = %d, want 4", n)
	}
}

func TestServersAndAttempts(t *testing.T) {
	bad := dnstest.New(t, zone)
	bad.SetFault("example.com", 0, dnstest.ServFail)
	good := dnstest.New(t, zone)
	// The first server fails, the second answers.
	r := newResolver(t, Config{Servers: []string{bad.Addr, good.Addr}, Attempts: 3}, good)
	res, err := r.LookupMX(context.Background(), "example.com")
	if err != nil || len(res.Records) != 3 {
		t.Fatalf("LookupMX = %v, %v", res, err)
	}
	if b, g := bad.Queries("example.com", dns.TypeMX), good.Queries("example.com", dns.TypeMX); b != 1 || g != 1 {
		t.Errorf("queries bad=%d good=%d, want 1 and 1", b, g)
	}
	// Both fail: each is tried Attempts times.
	good.SetFault("example.com", 0, dnstest.Refused)
	_, err = r.LookupTXT(context.Background(), "example.com")
	checkClass(t, err, ErrTemporary)
	if b, g := bad.Queries("example.com", dns.TypeTXT), good.Queries("example.com", dns.TypeTXT); b != 3 || g != 3 {
		t.Errorf("queries bad=%d good=%d, want 3 and 3", b, g)
	}
	// Host without port means port 53.
	r2, err := New(Config{Servers: []string{"127.0.0.1", "::1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r2.servers, []string{"127.0.0.1:53", "[::1]:53"}) {
		t.Errorf("servers = %v", r2.servers)
	}
}

func TestContext(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.SetFault("drop.example.com", 0, dnstest.Drop)
	r := newResolver(t, Config{Timeout: 2 * time.Second}, srv)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.LookupMX(ctx, "example.com")
	checkClass(t, err, context.Canceled)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = r.LookupMX(ctx, "drop.example.com")
	checkClass(t, err, context.DeadlineExceeded)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = r.LookupIP(ctx, "ip", "drop.example.com")
	checkClass(t, err, context.DeadlineExceeded)
}

func TestTruncation(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.SetFault("example.com", dns.TypeMX, dnstest.Truncate)
	// 40 TXT records of 100 octets: far more than 1232 octets.
	var big []string
	for i := range 40 {
		s := strings.Repeat(string(rune('a'+i%26)), 99) + string(rune('0'+i%10))
		big = append(big, s)
		srv.AddRR(dnstest.TXT("big.example.com", 300, s))
	}
	r := newResolver(t, Config{}, srv)
	ctx := context.Background()

	res, err := r.LookupMX(ctx, "example.com")
	if err != nil || len(res.Records) != 3 {
		t.Fatalf("LookupMX = %v, %v", res, err)
	}
	if n := srv.Queries("example.com", dns.TypeMX); n != 2 {
		t.Errorf("queries = %d, want 2 (UDP, then TCP)", n)
	}
	res2, err := r.LookupTXT(ctx, "big.example.com")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(big)
	got := slices.Sorted(slices.Values(res2.Records))
	if !slices.Equal(got, big) {
		t.Errorf("got %d records, want %d", len(got), len(big))
	}
	if n := srv.Queries("big.example.com", dns.TypeTXT); n != 2 {
		t.Errorf("queries = %d, want 2 (UDP, then TCP)", n)
	}
}

func TestCNAME(t *testing.T) {
	srv := dnstest.New(t, zone+`
loop1   IN CNAME loop2
loop2   IN CNAME loop3
loop3   IN CNAME LOOP1
self    IN CNAME self
out     IN CNAME www.other.test.
nodata  IN CNAME v4only
`+chain(12)+`
$ORIGIN other.test.
@       IN SOA ns hostmaster 1 3600 600 86400 60
www     IN CNAME back.example.com.
`)
	if err := srv.AddRecords("back.example.com. 60 IN MX 5 mx1.example.com.\n"); err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, Config{}, srv)
	ctx := context.Background()

	res, err := r.LookupIP(ctx, "ip4", "alias2.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "mx1.example.com" || !slices.Equal(res.Records, []netip.Addr{netip.MustParseAddr("192.0.2.1")}) {
		t.Errorf("alias2 = %+v", res)
	}

	// A chain across zones: the server answers with the CNAME only, and
	// the resolver asks for the target itself (twice: out → www.other.test
	// → back.example.com).
	mx, err := r.LookupMX(ctx, "out.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if mx.Name != "back.example.com" || mx.TTL != 60*time.Second || !slices.Equal(mx.Records, []MX{{"mx1.example.com", 5}}) {
		t.Errorf("out = %+v", mx)
	}
	if n := srv.Queries("back.example.com", dns.TypeMX); n != 1 {
		t.Errorf("target queried %d times, want 1", n)
	}

	_, err = r.LookupMX(ctx, "nxalias.example.com")
	checkClass(t, err, ErrNotFound)
	if !strings.Contains(err.Error(), "missing.example.com") {
		t.Errorf("error does not name the target: %v", err)
	}
	_, err = r.LookupMX(ctx, "nodata.example.com")
	checkClass(t, err, ErrNoData)

	for _, name := range []string{"loop1.example.com", "self.example.com", "c0.example.com", "c2.example.com"} {
		_, err = r.LookupMX(ctx, name)
		checkClass(t, err, ErrCNAMEChain)
	}
	// 10 CNAMEs are fine.
	if _, err = r.LookupIP(ctx, "ip4", "c3.example.com"); err != nil {
		t.Errorf("chain of 10: %v", err)
	}
	// Asking for the CNAME itself does not follow it.
	if _, err = r.LookupMX(ctx, "alias.example.com"); !IsNoData(err) {
		t.Errorf("MX of alias to host without MX: %v", err)
	}
}

// chain returns a chain of CNAMEs c0 → c1 → … → c<n> → mx1.
func chain(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("c" + itoa(i) + " IN CNAME c" + itoa(i+1) + "\n")
	}
	b.WriteString("c" + itoa(n) + " IN CNAME mx1\n")
	return b.String()
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestAuthentic(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.SetFault("example.com", dns.TypeMX, dnstest.Authentic)
	now := time.Unix(1e9, 0)
	r := newResolver(t, Config{Now: func() time.Time { return now }}, srv)
	ctx := context.Background()
	for range 2 { // upstream, then cached
		res, err := r.LookupMX(ctx, "example.com")
		if err != nil || !res.Authentic {
			t.Errorf("MX: %+v, %v; want Authentic", res, err)
		}
	}
	if n := srv.Queries("example.com", dns.TypeMX); n != 1 {
		t.Errorf("queries = %d", n)
	}
	res, err := r.LookupTXT(ctx, "example.com")
	if err != nil || res.Authentic {
		t.Errorf("TXT: %+v, %v; want not Authentic", res, err)
	}
	// A chain is authentic only if every part is.
	srv.SetFault("alias.example.com", dns.TypeA, dnstest.Authentic)
	ip, err := r.LookupIP(ctx, "ip4", "alias.example.com")
	if err != nil || !ip.Authentic {
		t.Errorf("alias: %+v, %v; want Authentic", ip, err)
	}
	ip, err = r.LookupIP(ctx, "ip4", "alias2.example.com")
	if err != nil || ip.Authentic {
		t.Errorf("alias2: %+v, %v; want not Authentic", ip, err)
	}
}
