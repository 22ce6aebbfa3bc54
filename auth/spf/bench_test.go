package spf

import (
	"context"
	"net/netip"
	"testing"

	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

// benchZone is a realistic policy: own networks, two providers with nested
// includes (as large senders publish them), and mx.
const benchZone = `
example.test.            IN TXT "v=spf1 ip4:192.0.2.0/26 include:_spf.mailer.test include:spf.crm.test mx ~all"
example.test.            IN MX 10 mx1.example.test.
example.test.            IN MX 20 mx2.example.test.
mx1.example.test.        IN A 198.51.100.10
mx2.example.test.        IN A 198.51.100.20
_spf.mailer.test.        IN TXT "v=spf1 include:_netblocks.mailer.test include:_netblocks2.mailer.test include:_netblocks3.mailer.test ~all"
_netblocks.mailer.test.  IN TXT "v=spf1 ip4:35.190.247.0/24 ip4:64.233.160.0/19 ip4:66.102.0.0/20 ip4:66.249.80.0/20 ip4:72.14.192.0/18 ip4:74.125.0.0/16 ip4:108.177.8.0/21 ~all"
_netblocks2.mailer.test. IN TXT "v=spf1 ip6:2001:4860:4000::/36 ip6:2404:6800:4000::/36 ip6:2607:f8b0:4000::/36 ip6:2800:3f0:4000::/36 ~all"
_netblocks3.mailer.test. IN TXT "v=spf1 ip4:172.217.0.0/19 ip4:172.217.32.0/20 ip4:172.217.128.0/19 ip4:173.194.0.0/16 ~all"
spf.crm.test.            IN TXT "v=spf1 ip4:13.110.208.0/21 ip4:13.111.0.0/16 a:send.crm.test -all"
send.crm.test.           IN A 203.0.113.50
`

func benchChecker(b *testing.B) *Checker {
	srv, err := dnstest.NewServer(benchZone)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	return &Checker{Resolver: r}
}

// BenchmarkCheckWarmCache measures whole check_host() evaluations against
// a warm resolver cache. The client matches the mx mechanism, after the
// two includes (5 records, 6 DNS-querying terms, 8 cached lookups).
func BenchmarkCheckWarmCache(b *testing.B) {
	c := benchChecker(b)
	ctx := context.Background()
	ip := netip.MustParseAddr("198.51.100.20")
	if r := c.CheckMailFrom(ctx, ip, "mx2.example.test", "user@example.test"); r.Status != Pass || r.Mechanism != "mx" {
		b.Fatalf("warm-up: %s %q %v", r.Status, r.Mechanism, r.Err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if r := c.CheckMailFrom(ctx, ip, "mx2.example.test", "user@example.test"); r.Status != Pass {
			b.Fatal(r.Status, r.Err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "evals/s")
}

// BenchmarkCheckWarmCacheParallel is the same on all CPUs.
func BenchmarkCheckWarmCacheParallel(b *testing.B) {
	c := benchChecker(b)
	ctx := context.Background()
	ip := netip.MustParseAddr("198.51.100.20")
	if r := c.CheckMailFrom(ctx, ip, "mx2.example.test", "user@example.test"); r.Status != Pass {
		b.Fatalf("warm-up: %s %v", r.Status, r.Err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := c.CheckMailFrom(ctx, ip, "mx2.example.test", "user@example.test"); r.Status != Pass {
				b.Error(r.Status, r.Err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "evals/s")
}

// BenchmarkParseRecord measures parsing of a typical record.
func BenchmarkParseRecord(b *testing.B) {
	const rec = "v=spf1 ip4:192.0.2.0/26 include:_spf.mailer.test include:spf.crm.test a:%{d} mx ~all exp=why.%{d}"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
}
