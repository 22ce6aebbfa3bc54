package dnstest_test

import (
	"fmt"
	"log"

	"github.com/miekg/dns"
	"github.com/mtakit/mta/resolver/dnstest"
)

func Example() {
	srv, err := dnstest.NewServer(`
$ORIGIN example.com.
$TTL 300
@    IN MX 10 mx
mx   IN A 192.0.2.1
`)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	srv.SetFault("broken.example.com", dns.TypeANY, dnstest.ServFail)

	ask := func(name string, qtype uint16) {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		resp, err := dns.Exchange(m, srv.Addr)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s: %s, %d answers\n", name, dns.TypeToString[qtype], dns.RcodeToString[resp.Rcode], len(resp.Answer))
	}
	ask("example.com.", dns.TypeMX)
	ask("mx.example.com.", dns.TypeAAAA)
	ask("nowhere.example.com.", dns.TypeA)
	ask("broken.example.com.", dns.TypeA)
	fmt.Println("MX queries:", srv.Queries("example.com", dns.TypeMX))
	// Output:
	// example.com. MX: NOERROR, 1 answers
	// mx.example.com. AAAA: NOERROR, 0 answers
	// nowhere.example.com. A: NXDOMAIN, 0 answers
	// broken.example.com. A: SERVFAIL, 0 answers
	// MX queries: 1
}
