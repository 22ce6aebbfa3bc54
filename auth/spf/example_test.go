package spf_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/mtakit/mta/auth/spf"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

func Example() {
	// A real DNS server on loopback stands in for the Internet.
	srv, err := dnstest.NewServer(`
example.test.      IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.esp.test -all exp=why.example.test"
_spf.esp.test.     IN TXT "v=spf1 ip6:2001:db8:e5::/48 ~all"
why.example.test.  IN TXT "%{i} is not a mail server of %{d}"
`)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}})
	if err != nil {
		log.Fatal(err)
	}
	checker := &spf.Checker{Resolver: r, Hostname: "mx.receiver.test"}

	ctx := context.Background()
	for _, ip := range []string{"192.0.2.25", "2001:db8:e5::1", "198.51.100.1"} {
		res := checker.CheckMailFrom(ctx, netip.MustParseAddr(ip), "mail.example.test", "alice@example.test")
		fmt.Printf("%s: %s (%s)\n", ip, res.AuthResult(), res.Mechanism)
		if res.Status == spf.Fail {
			fmt.Println("  explanation:", res.Explanation)
		}
	}
	// Output:
	// 192.0.2.25: spf=pass smtp.mailfrom=alice@example.test (ip4:192.0.2.0/24)
	// 2001:db8:e5::1: spf=pass smtp.mailfrom=alice@example.test (include:_spf.esp.test)
	// 198.51.100.1: spf=fail smtp.mailfrom=alice@example.test (-all)
	//   explanation: 198.51.100.1 is not a mail server of example.test
}
