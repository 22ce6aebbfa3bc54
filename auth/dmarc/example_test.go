package dmarc_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/mtakit/mta/auth/dmarc"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

// Evaluate a message whose SPF passed for a bounce subdomain of the author
// domain (relaxed alignment).
func Example() {
	srv, err := dnstest.NewServer(`_dmarc.example.com. IN TXT "v=DMARC1; p=reject; sp=quarantine"`)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	ev, err := dmarc.New(dmarc.Config{Resolver: res})
	if err != nil {
		log.Fatal(err)
	}
	r, err := ev.Evaluate(context.Background(), dmarc.Input{
		From: []dmarc.FromField{{Name: "From", Value: " Alice <alice@example.com>"}},
		SPF:  dmarc.Identifier{Result: "pass", Domain: "bounces.example.com"},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Status, r.PolicyDomain, r.Policy, r.Disposition)

	// The same author, no authentication: the policy applies.
	r, _ = ev.Evaluate(context.Background(), dmarc.Input{
		From: []dmarc.FromField{{Name: "From", Value: " alice@news.example.com"}},
	})
	fmt.Println(r.Status, r.PolicyDomain, r.Policy, r.Disposition)
	// Output:
	// pass example.com reject none
	// fail example.com quarantine quarantine
}
