package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mtakit/mta/resolver/dnstest"
)

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"example.com", "Example.COM.", "_25._tcp.mx.example.com", "_dmarc.example.org.",
		"xn--bcher-kva.example", "a..b", ".", "", "bücher.example", "_dmarc.BÜCHER.example.", "xn--zz.example", "a.\u200d.test", "a b", `a\046b`, "foo:bar/baz.example.com", "macro%percent  space%20url-space.example.com", "a\x00b.test", `a"b\c.test`,
		strings.Repeat("a", 63) + ".test", strings.Repeat("a.", 127) + "a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		out, ok := normalize(name)
		if !ok {
			if out != "" {
				t.Errorf("invalid %q gave %q", name, out)
			}
			return
		}
		if out != strings.ToLower(out) || strings.HasSuffix(out, ".") {
			t.Errorf("normalize(%q) = %q", name, out)
		}
		if plainHostname(name) {
			// Plain host names come back unchanged but for case, and
			// normalising again changes nothing.
			if again, ok := normalize(out); !ok || again != out {
				t.Errorf("normalize(%q) = %q, then %q %v", name, out, again, ok)
			}
			if !strings.EqualFold(out, strings.TrimSuffix(name, ".")) {
				t.Errorf("normalize(%q) = %q changes more than case", name, out)
			}
		}
		if _, ok := dns.IsDomainName(out + "."); !ok {
			t.Errorf("normalize accepted %q, miekg/dns does not", name)
		}
		// The question survives the wire: what the server echoes back, as
		// miekg/dns unpacks it, is the name we asked for.
		q := new(dns.Msg)
		q.SetQuestion(out+".", dns.TypeMX)
		wire, err := q.Pack()
		if err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		var back dns.Msg
		if err := back.Unpack(wire); err != nil {
			t.Fatalf("%q: unpack: %v", out, err)
		}
		if got := strings.TrimSuffix(back.Question[0].Name, "."); !strings.EqualFold(got, out) {
			t.Errorf("normalize(%q) = %q, but the wire gives back %q", name, out, got)
		}
	})
}

// plainHostname reports whether s holds only ASCII letters, digits, '-',
// '_' and '.'.
func plainHostname(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if !('a' <= c && c <= 'z' || '0' <= s[i] && s[i] <= '9' || s[i] == '-' || s[i] == '_' || s[i] == '.') {
			return false
		}
	}
	return true
}

// FuzzResponse feeds arbitrary bytes, as a response to a query, through the
// checks and the answer processing a Resolver applies to what it receives.
func FuzzResponse(f *testing.F) {
	seed := func(qname string, qtype uint16, rcode int, ans, ns []string) {
		q := new(dns.Msg)
		q.SetQuestion(qname, qtype)
		m := new(dns.Msg)
		m.SetReply(q)
		m.Rcode = rcode
		for _, s := range ans {
			m.Answer = append(m.Answer, mustRR(s))
		}
		for _, s := range ns {
			m.Ns = append(m.Ns, mustRR(s))
		}
		m.SetEdns0(1232, true)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	soa := "example.com. 300 IN SOA ns.example.com. h.example.com. 1 2 3 4 60"
	seed("example.com.", dns.TypeMX, 0, []string{"example.com. 300 IN MX 10 mx.example.com.", "example.com. 300 IN MX 0 ."}, nil)
	seed("example.com.", dns.TypeA, 0, []string{"example.com. 300 IN CNAME www.example.com.", "www.example.com. 60 IN A 192.0.2.1"}, nil)
	seed("example.com.", dns.TypeAAAA, 0, []string{"example.com. 300 IN AAAA 2001:db8::1"}, nil)
	seed("example.com.", dns.TypeTXT, 0, []string{`example.com. 300 IN TXT "v=spf1" " -all" "\000\255"`}, nil)
	seed("_25._tcp.example.com.", dns.TypeTLSA, 0, []string{"_25._tcp.example.com. 300 IN TLSA 3 1 1 00ff"}, nil)
	seed("1.2.0.192.in-addr.arpa.", dns.TypePTR, 0, []string{"1.2.0.192.in-addr.arpa. 300 IN PTR host.example.com."}, nil)
	seed("example.com.", dns.TypeMX, dns.RcodeNameError, nil, []string{soa})
	seed("example.com.", dns.TypeMX, 0, []string{"example.com. 300 IN CNAME a.example.com.", "a.example.com. 300 IN CNAME example.com."}, []string{soa})
	seed("example.com.", dns.TypeMX, 0, []string{"example.com. 300 IN CNAME other.test."}, nil)

	convs := map[uint16]func(dns.RR) bool{
		dns.TypeMX:   func(rr dns.RR) bool { _, ok := convMX(rr); return ok },
		dns.TypeA:    func(rr dns.RR) bool { _, ok := convA(rr); return ok },
		dns.TypeAAAA: func(rr dns.RR) bool { _, ok := convAAAA(rr); return ok },
		dns.TypeTXT:  func(rr dns.RR) bool { _, ok := convTXT(rr); return ok },
		dns.TypeTLSA: func(rr dns.RR) bool { _, ok := convTLSA(rr); return ok },
		dns.TypePTR:  func(rr dns.RR) bool { _, ok := convPTR(rr); return ok },
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := new(dns.Msg)
		if resp.Unpack(b) != nil || len(resp.Question) == 0 {
			return
		}
		rq := resp.Question[0]
		qname, ok := normalize(rq.Name)
		if !ok {
			return
		}
		q := new(dns.Msg)
		q.SetQuestion(qname+".", rq.Qtype)
		if err := checkResponse(q, resp); err != nil {
			return
		}
		if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
			return
		}
		ch := chase{qname: qname, qtype: rq.Qtype, ttl: 1<<32 - 1, authentic: true}
		ans, next, err := ch.process(resp, qname)
		switch {
		case err != nil:
			if !strings.Contains(err.Error(), "CNAME") {
				t.Fatalf("unexpected error %v", err)
			}
		case next != "":
			if next == qname || ans.rrs != nil {
				t.Fatalf("next %q with answer %v", next, ans)
			}
		case ans.negative != nil:
			if ans.rrs != nil || !(IsNotFound(ans.negative)) {
				t.Fatalf("negative answer %+v", ans)
			}
		default:
			if len(ans.rrs) == 0 {
				t.Fatal("positive answer without records")
			}
			for _, rr := range ans.rrs {
				h := rr.Header()
				if h.Rrtype != rq.Qtype || canon(h.Name) != ans.name || seconds(h.Ttl) < ans.ttl {
					t.Fatalf("record %v does not belong to answer %q ttl %v", rr, ans.name, ans.ttl)
				}
				if conv := convs[rq.Qtype]; conv != nil {
					conv(rr)
				}
			}
		}
		// Unescaping never panics and yields at most the input length.
		for _, rr := range resp.Answer {
			if txt, ok := rr.(*dns.TXT); ok {
				for _, s := range txt.Txt {
					if u := unescape(s); len(u) > len(s) {
						t.Fatalf("unescape(%q) = %q", s, u)
					}
				}
			}
		}
	})
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		``:           ``,
		`plain`:      `plain`,
		`a\"b`:       `a"b`,
		`a\\b`:       `a\b`,
		`\000\255`:   "\x00\xff",
		`\256`:       `256`,
		`\12`:        `12`,
		`end\`:       `end\`,
		`\;x`:        `;x`,
		`mix\0651\\`: `mixA1\`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
	// Round trip through miekg/dns: every octet survives.
	var all []byte
	for i := range 256 {
		all = append(all, byte(i))
	}
	rr := dnstest.TXT("x", 300, string(all))
	buf := make([]byte, 1024)
	off, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := dns.UnpackRR(buf[:off], 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := convTXT(back); got != string(all) {
		t.Errorf("round trip lost octets: %q", got)
	}
}

// FuzzExchange sends the fuzz input, as the answer to every query, from a
// loopback responder (UDP and TCP) to a Resolver doing LookupMX: the whole
// network path, including miekg/dns's message reading. Only the ID is
// patched to match, so that no input makes the client wait for a timeout.
func FuzzExchange(f *testing.F) {
	seed := func(edit func(m *dns.Msg)) {
		q := new(dns.Msg)
		q.SetQuestion("example.test.", dns.TypeMX)
		m := new(dns.Msg)
		m.SetReply(q)
		edit(m)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	soa := mustRR("example.test. 300 IN SOA ns.example.test. h.example.test. 1 2 3 4 60")
	seed(func(m *dns.Msg) { m.Answer = []dns.RR{mustRR("example.test. 300 IN MX 10 mx.example.test.")} })
	seed(func(m *dns.Msg) { m.Rcode = dns.RcodeNameError; m.Ns = []dns.RR{soa} })
	seed(func(m *dns.Msg) { m.Ns = []dns.RR{soa}; m.AuthenticatedData = true })
	seed(func(m *dns.Msg) { m.Rcode = dns.RcodeServerFailure })
	seed(func(m *dns.Msg) { m.Truncated = true })
	seed(func(m *dns.Msg) {
		m.Answer = []dns.RR{mustRR("example.test. 300 IN CNAME a.example.test."), mustRR("a.example.test. 30 IN MX 0 .")}
	})

	var current atomic.Pointer[[]byte]
	answer := func(q *dns.Msg) []byte {
		b := slices.Clone(*current.Load())
		if len(b) >= 2 {
			binary.BigEndian.PutUint16(b, q.Id)
		}
		return b
	}
	rs := newResponder(f, answer, answer)
	r, err := New(Config{Servers: []string{rs.Addr}, Timeout: 2 * time.Second, Attempts: 1, CacheSize: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		current.Store(&b)
		res, err := r.LookupMX(context.Background(), "example.test")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || IsTemporary(err) == IsNotFound(err) && !errors.Is(err, ErrCNAMEChain) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if len(res.Records) == 0 || res.Name == "" {
			t.Fatalf("empty success %+v", res)
		}
	})
}
