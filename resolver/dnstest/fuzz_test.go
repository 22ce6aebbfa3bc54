package dnstest

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzZone parses arbitrary master-file text and answers queries for every
// name in it, without sockets: no panics, and every response packs.
func FuzzZone(f *testing.F) {
	f.Add(testZone, "x.wild.example.com.", uint16(dns.TypeA))
	f.Add("a.test. 300 IN CNAME a.test.\n", "a.test.", uint16(dns.TypeMX))
	f.Add("$ORIGIN test.\n$TTL 5\n@ IN SOA ns h 1 2 3 4 5\n* IN TXT \"\" \"\\255\"\n", "q.test.", uint16(dns.TypeTXT))
	f.Add("a.test. IN SPF \"v=spf1 a -all\"\na.test. IN AAAA ::1\n", "A.TEST.", uint16(dns.TypeANY))
	f.Add("x. IN TLSA 3 1 1 00ff\n", "x.", uint16(dns.TypeTLSA))
	f.Fuzz(func(t *testing.T, zone, qname string, qtype uint16) {
		rrs, err := ParseZone(zone)
		if err != nil {
			return
		}
		s := newServer()
		s.data.add(rrs)
		names := []string{qname}
		for _, rr := range rrs {
			names = append(names, rr.Header().Name, "sub."+rr.Header().Name)
		}
		for _, name := range names {
			if _, ok := dns.IsDomainName(name); !ok {
				continue
			}
			for _, qt := range []uint16{qtype, dns.TypeA, dns.TypeTXT} {
				q := new(dns.Msg)
				q.SetQuestion(dns.Fqdn(name), qt)
				q.SetEdns0(1232, true)
				for _, udp := range []bool{true, false} {
					resp := s.Respond(q, udp)
					if resp == nil {
						t.Fatal("nil response without Drop fault")
					}
					b, err := resp.Pack()
					if err != nil {
						// Records the parser accepts but that do not fit a
						// message (e.g. huge RDATA) cannot be served.
						continue
					}
					if udp && len(b) > 1232 {
						t.Fatalf("UDP response of %d octets", len(b))
					}
					if resp.Rcode == dns.RcodeNameError && len(resp.Answer) > 0 && resp.Answer[len(resp.Answer)-1].Header().Rrtype != dns.TypeCNAME {
						t.Fatalf("NXDOMAIN with answer %v", resp.Answer)
					}
				}
			}
		}
		// Removing every name leaves nothing behind.
		for _, rr := range rrs {
			s.data.remove(rr.Header().Name, dns.TypeANY)
		}
		if len(s.data.rrs) != 0 || len(s.data.names) != 0 {
			t.Fatalf("leftovers: %v %v", s.data.rrs, s.data.names)
		}
	})
}
