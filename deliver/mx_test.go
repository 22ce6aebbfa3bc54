package deliver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/mtakit/mta/deliver/smtptest"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

// mxLab is a set of SMTP servers on 127.0.0.x sharing one port, and a
// dnstest server whose zone points at them.
type mxLab struct {
	port uint16
	dns  *dnstest.Server
	res  *resolver.Resolver
}

// newLab starts servers at the given loopback addresses (all on one port)
// with their configs, and a DNS server with zone.
func newLab(t *testing.T, zone string, servers map[string]smtptest.Config) (*mxLab, map[string]*smtptest.Server) {
	t.Helper()
	var out map[string]*smtptest.Server
	var port uint16
	for try := 0; try < 20 && out == nil; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = uint16(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		started := map[string]*smtptest.Server{}
		ok := true
		for ip, cfg := range servers {
			cfg.Addr = fmt.Sprintf("%s:%d", ip, port)
			s, err := smtptest.Start(cfg)
			if err != nil {
				ok = false
				break
			}
			started[ip] = s
		}
		if !ok {
			for _, s := range started {
				s.Close()
			}
			continue
		}
		out = started
	}
	if out == nil {
		t.Fatal("no common free port for the test servers")
	}
	for _, s := range out {
		t.Cleanup(func() { s.Close() })
	}
	d := dnstest.New(t, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{d.Addr}, Timeout: 500 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &mxLab{port: port, dns: d, res: r}, out
}

func (l *mxLab) transport(t *testing.T, cfg MXConfig) *MX {
	t.Helper()
	cfg.Resolver = l.res
	cfg.Port = l.port
	if cfg.Hostname == "" {
		cfg.Hostname = testHost
	}
	if cfg.Shuffle == nil {
		cfg.Shuffle = func(int, func(i, j int)) {} // keep DNS order
	}
	m, err := NewMX(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

const labZone = `
example.test.        300 IN MX 10 mx1.example.test.
example.test.        300 IN MX 20 mx2.example.test.
mx1.example.test.    300 IN A 127.0.0.2
mx2.example.test.    300 IN A 127.0.0.3
down.test.           300 IN MX 10 mx-down.down.test.
down.test.           300 IN MX 20 mx2.example.test.
mx-down.down.test.   300 IN A 127.0.0.4
busy.test.           300 IN MX 10 mx-busy.busy.test.
busy.test.           300 IN MX 20 mx2.example.test.
mx-busy.busy.test.   300 IN A 127.0.0.5
implicit.test.       300 IN A 127.0.0.2
null.test.           300 IN MX 0 .
servfail.test.       300 IN MX 10 mx1.example.test.
equal.test.          300 IN MX 10 mx1.example.test.
equal.test.          300 IN MX 10 mx2.example.test.
self.test.           300 IN MX 10 client.deliver.test.
self.test.           300 IN MX 20 mx2.example.test.
selfsecond.test.     300 IN MX 10 mx2.example.test.
selfsecond.test.     300 IN MX 20 client.deliver.test.
noaddr.test.         300 IN MX 10 nothing.noaddr.test.
noaddr.test.         300 IN TXT "no A here"
`

func TestMXRouting(t *testing.T) {
	lab, srv := newLab(t, labZone, map[string]smtptest.Config{
		"127.0.0.2": {Hostname: "mx1.example.test"},
		"127.0.0.3": {Hostname: "mx2.example.test"},
		"127.0.0.5": {Hostname: "mx-busy.busy.test", Greeting: "421 4.3.2 too busy"},
	})
	lab.dns.SetFault("servfail.test", dns.TypeMX, dnstest.ServFail)
	mx := lab.transport(t, MXConfig{})
	for _, tc := range []struct {
		domain string
		code   int
		enh    smtp.EnhancedCode
		host   string // server that must get the message
	}{
		{"example.test", 250, smtp.EnhancedCode{}, "127.0.0.2"},
		{"down.test", 250, smtp.EnhancedCode{}, "127.0.0.3"},
		{"busy.test", 250, smtp.EnhancedCode{}, "127.0.0.3"},
		{"implicit.test", 250, smtp.EnhancedCode{}, "127.0.0.2"},
		{"null.test", 556, smtp.EnhancedCode{5, 1, 10}, ""},
		{"nxdomain.test", 550, smtp.EnhancedCode{5, 1, 2}, ""},
		{"servfail.test", 451, smtp.EnhancedCode{4, 4, 3}, ""},
		{"self.test", 554, smtp.EnhancedCode{5, 4, 6}, ""},
		{"selfsecond.test", 250, smtp.EnhancedCode{}, "127.0.0.3"},
		{"noaddr.test", 554, smtp.EnhancedCode{5, 4, 4}, ""},
	} {
		t.Run(tc.domain, func(t *testing.T) {
			before := map[string]int{}
			for ip, s := range srv {
				before[ip] = len(s.Messages())
			}
			r := deliverOK(t, mx, envelope("user@"+tc.domain), testMessage(""))[0]
			wantCode(t, r, tc.code, tc.enh)
			for ip, s := range srv {
				got := len(s.Messages()) - before[ip]
				if want := map[bool]int{true: 1, false: 0}[ip == tc.host]; got != want {
					t.Errorf("server %s got %d messages, want %d", ip, got, want)
				}
			}
			if tc.code == 250 && (r.Route.Addr.Addr().String() != tc.host || r.Route.Addr.Port() != lab.port) {
				t.Errorf("route %+v", r.Route)
			}
			if tc.code != 250 && (!r.Local || r.Err == nil) {
				t.Errorf("local failure expected: %+v", r)
			}
		})
	}
}

func TestMXDNSTimeoutIsTransient(t *testing.T) {
	lab, _ := newLab(t, labZone, nil)
	lab.dns.SetFault("example.test", dns.TypeMX, dnstest.Drop)
	mx := lab.transport(t, MXConfig{})
	r := deliverOK(t, mx, envelope("user@example.test"), testMessage(""))[0]
	wantCode(t, r, 451, smtp.EnhancedCode{4, 4, 3})
	if !errors.Is(r.Err, ErrDNS) {
		t.Fatalf("err %v", r.Err)
	}
}

func TestMXSiteAndOneTransactionPerDomain(t *testing.T) {
	lab, srv := newLab(t, labZone, map[string]smtptest.Config{
		"127.0.0.2": {Hostname: "mx1.example.test"},
	})
	mx := lab.transport(t, MXConfig{})
	res := deliverOK(t, mx, envelope("a@example.test", "b@equal.test", "c@EXAMPLE.test"), testMessage(""))
	for _, r := range res {
		wantCode(t, r, 250, smtp.EnhancedCode{})
	}
	if res[0].Route.Site != "mx1.example.test,mx2.example.test" || res[1].Route.Site != res[0].Route.Site || res[2].Route.Site != res[0].Route.Site {
		t.Fatalf("sites %q %q", res[0].Route.Site, res[1].Route.Site)
	}
	msgs := srv["127.0.0.2"].Messages()
	if len(msgs) != 2 || len(msgs[0].To) != 2 || len(msgs[1].To) != 1 {
		t.Fatalf("transactions: %+v", msgs)
	}
	if n := srv["127.0.0.2"].Sessions(); n != 1 {
		t.Fatalf("%d sessions, want 1 (both domains share the MX host)", n)
	}
	r := deliverOK(t, mx, envelope("a@implicit.test"), testMessage(""))[0]
	if r.Route.Site != "implicit.test" || r.Route.Host != "implicit.test" {
		t.Fatalf("implicit MX route %+v", r.Route)
	}
}

func TestMXEqualPreferenceShuffle(t *testing.T) {
	lab, srv := newLab(t, labZone, map[string]smtptest.Config{
		"127.0.0.2": {Hostname: "mx1.example.test"},
		"127.0.0.3": {Hostname: "mx2.example.test"},
	})
	swaps := 0
	mx := lab.transport(t, MXConfig{Shuffle: func(n int, swap func(i, j int)) {
		if n == 2 {
			swap(0, 1)
			swaps++
		}
	}})
	r := deliverOK(t, mx, envelope("a@equal.test"), testMessage(""))[0]
	wantCode(t, r, 250, smtp.EnhancedCode{})
	if swaps != 1 || r.Route.Host != "mx2.example.test" || len(srv["127.0.0.3"].Messages()) != 1 {
		t.Fatalf("swaps %d route %+v", swaps, r.Route)
	}
	// Different preferences are never shuffled.
	r = deliverOK(t, mx, envelope("a@example.test"), testMessage(""))[0]
	if r.Route.Host != "mx1.example.test" {
		t.Fatalf("route %+v", r.Route)
	}
}

func TestMXLimitsAndSelfAddress(t *testing.T) {
	lab, srv := newLab(t, labZone, map[string]smtptest.Config{
		"127.0.0.3": {Hostname: "mx2.example.test"},
	})
	// Only one host may be tried: mx-down fails and mx2 is not reached.
	mx := lab.transport(t, MXConfig{MaxHosts: 1})
	r := deliverOK(t, mx, envelope("a@down.test"), testMessage(""))[0]
	if !r.Reply.Temporary() || r.Route.Host != "mx-down.down.test" || len(srv["127.0.0.3"].Messages()) != 0 {
		t.Fatalf("%+v", r)
	}
	// Our own address as the only MX address is a loop.
	mx = lab.transport(t, MXConfig{ClientConfig: ClientConfig{LocalAddrs: []netipAddr{mustAddr("127.0.0.2")}}})
	wantCode(t, deliverOK(t, mx, envelope("a@implicit.test"), testMessage(""))[0], 554, smtp.EnhancedCode{5, 4, 6})
}

func TestMXNeedsResolver(t *testing.T) {
	if _, err := NewMX(MXConfig{}); !errors.Is(err, ErrNoResolver) {
		t.Fatal(err)
	}
}

// Deliver must honour ctx during DNS too.
func TestMXCancelledDuringDNS(t *testing.T) {
	lab, _ := newLab(t, labZone, nil)
	lab.dns.SetFault("example.test", dns.TypeMX, dnstest.Drop)
	mx := lab.transport(t, MXConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	env := envelope("a@example.test")
	res := mx.Deliver(ctx, env, bodyOf(testMessage("")))
	if err := Check(env, res); err != nil || !res[0].Reply.Temporary() || !strings.Contains(res[0].Reply.Message, "cancelled") {
		t.Fatalf("%v %+v", err, res[0])
	}
}
