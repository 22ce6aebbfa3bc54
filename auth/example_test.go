package auth_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"strings"
	"time"

	"github.com/mtakit/mta/auth"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

// Check an inbound message and prepend Authentication-Results.
func ExampleVerifier_Verify() {
	srv, err := dnstest.NewServer(`
example.com. IN TXT "v=spf1 ip4:192.0.2.10 -all"
_dmarc.example.com. IN TXT "v=DMARC1; p=reject"
`)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Config{Resolver: res, Hostname: "mx.example.org"})
	if err != nil {
		log.Fatal(err)
	}
	msg := "From: alice@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"
	r, err := v.Verify(context.Background(), strings.NewReader(msg),
		netip.MustParseAddr("192.0.2.10"), "mail.example.com", "bounce@example.com")
	if err != nil {
		log.Fatal(err)
	}
	// Header ends lines in CRLF, as on the wire; show them as newlines.
	fmt.Print(strings.ReplaceAll(r.Header(), "\r\n", "\n"))
	// Output:
	// Authentication-Results: mx.example.org;
	//  spf=pass smtp.mailfrom=bounce@example.com;
	//  dkim=none;
	//  dmarc=pass header.from=example.com
}

// Check a sending domain's DNS setup and print what to fix.
func ExampleCheckDomain() {
	srv, err := dnstest.NewServer(`example.com. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	rep, err := auth.CheckDomain(context.Background(), res, auth.DomainSetup{
		Domain: "example.com",
		IPs:    []netip.Addr{netip.MustParseAddr("192.0.2.10")},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range rep.Findings {
		if f.Fix != "" {
			fmt.Println(f.Fix)
		}
	}
	// Output:
	// _dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"
}
