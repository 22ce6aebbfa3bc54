package resolver_test

import (
	"context"
	"fmt"
	"log"

	"github.com/miekg/dns"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

func ExampleResolver_LookupMX() {
	// A DNS server on loopback stands in for the recursive resolver.
	srv, err := dnstest.NewServer(`
$ORIGIN example.com.
@       300 IN MX 20 Backup.example.com.
@       300 IN MX 10 mx.example.com.
nullmx  300 IN MX 0 .
`)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	res, err := r.LookupMX(ctx, "Example.com.")
	if err != nil {
		log.Fatal(err)
	}
	for _, mx := range res.Records {
		fmt.Println(mx.Pref, mx.Host)
	}
	fmt.Println(res.Name, res.TTL)

	res, err = r.LookupMX(ctx, "nullmx.example.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("null MX: %q\n", res.Records[0].Host)
	// Output:
	// 10 mx.example.com
	// 20 backup.example.com
	// example.com 5m0s
	// null MX: ""
}

func ExampleIsTemporary() {
	srv, err := dnstest.NewServer(`
$ORIGIN example.com.
@    300 IN SOA ns hostmaster 1 3600 600 86400 60
www  300 IN A 192.0.2.1
`)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	srv.SetFault("broken.example.com", dns.TypeANY, dnstest.ServFail)

	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Attempts: 1})
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"www.example.com", "nowhere.example.com", "broken.example.com", "bad..name"} {
		_, err := r.LookupMX(context.Background(), name)
		fmt.Printf("%s: nxdomain=%v nodata=%v temporary=%v\n",
			name, resolver.IsNXDomain(err), resolver.IsNoData(err), resolver.IsTemporary(err))
	}
	// Output:
	// www.example.com: nxdomain=false nodata=true temporary=false
	// nowhere.example.com: nxdomain=true nodata=false temporary=false
	// broken.example.com: nxdomain=false nodata=false temporary=true
	// bad..name: nxdomain=false nodata=false temporary=false
}

func ExampleResolver_LookupTLSA() {
	srv, err := dnstest.NewServer(`
_25._tcp.mx.example.com. 300 IN TLSA 3 1 1 8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d
`)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	// The upstream validated the answer with DNSSEC: it sets the AD bit.
	srv.SetFault("_25._tcp.mx.example.com", dns.TypeTLSA, dnstest.Authentic)

	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}})
	if err != nil {
		log.Fatal(err)
	}
	res, err := r.LookupTLSA(context.Background(), "_25._tcp.mx.example.com")
	if err != nil {
		log.Fatal(err)
	}
	if !res.Authentic {
		fmt.Println("not DNSSEC-validated: ignore for DANE")
		return
	}
	for _, t := range res.Records {
		fmt.Printf("usage %d selector %d matching %d data %x...\n", t.Usage, t.Selector, t.MatchingType, t.Data[:4])
	}
	// Output:
	// usage 3 selector 1 matching 1 data 8d02536c...
}
