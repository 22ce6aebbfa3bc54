package dnstest

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const testZone = `
$ORIGIN example.com.
$TTL 300
@        IN SOA ns hostmaster 1 3600 600 86400 60
@        IN MX 10 mx
@        IN MX 0 .
@        IN TXT "v=spf1" " -all"
@        IN SPF "v=spf1 -all"
mx       IN A 192.0.2.1
mx       IN AAAA 2001:db8::1
empty    IN TXT ""
esc      IN TXT "a\"b\\c\000\255"
alias    IN CNAME mx
loop1    IN CNAME loop2
loop2    IN CNAME loop1
out      IN CNAME www.other.test.
deep.ent IN A 192.0.2.9
*.wild   IN A 192.0.2.7
*.wild   IN MX 10 mx
here.wild IN TXT "exists"
1.2.0.192.in-addr.arpa. IN PTR mx.example.com.

$ORIGIN other.test.
www      IN A 192.0.2.8
`

// query sends one query to srv over the given transport ("udp" or "tcp").
func query(t *testing.T, srv *Server, network, name string, qtype uint16, edns int) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns > 0 {
		m.SetEdns0(uint16(edns), true)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, srv.Addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return resp
}

func types(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.ToLower(rr.Header().Name)+" "+dns.TypeToString[rr.Header().Rrtype])
	}
	return out
}

func TestAnswers(t *testing.T) {
	srv := New(t, testZone)
	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		soa    string // owner of the SOA in authority, "" for none
	}{
		{"example.com", dns.TypeMX, 0, []string{"example.com. MX", "example.com. MX"}, ""},
		{"EXAMPLE.Com", dns.TypeTXT, 0, []string{"example.com. TXT"}, ""},
		{"example.com", dns.TypeSPF, 0, []string{"example.com. SPF"}, ""},
		{"mx.example.com", dns.TypeAAAA, 0, []string{"mx.example.com. AAAA"}, ""},
		{"mx.example.com", dns.TypeMX, 0, nil, "example.com."},
		{"ent.example.com", dns.TypeA, 0, nil, "example.com."},
		{"nowhere.example.com", dns.TypeA, dns.RcodeNameError, nil, "example.com."},
		{"nowhere.test", dns.TypeA, dns.RcodeNameError, nil, "."},
		{"www.other.test", dns.TypeMX, 0, nil, "."},
		{"alias.example.com", dns.TypeA, 0, []string{"alias.example.com. CNAME", "mx.example.com. A"}, ""},
		{"alias.example.com", dns.TypeCNAME, 0, []string{"alias.example.com. CNAME"}, ""},
		{"alias.example.com", dns.TypeMX, 0, []string{"alias.example.com. CNAME"}, "example.com."},
		{"loop1.example.com", dns.TypeA, 0, []string{"loop1.example.com. CNAME", "loop2.example.com. CNAME"}, ""},
		{"out.example.com", dns.TypeA, 0, []string{"out.example.com. CNAME"}, ""}, // other zone: not chased
		{"x.wild.example.com", dns.TypeA, 0, []string{"x.wild.example.com. A"}, ""},
		{"a.b.wild.example.com", dns.TypeMX, 0, []string{"a.b.wild.example.com. MX"}, ""},
		{"x.wild.example.com", dns.TypeTXT, 0, nil, "example.com."},
		{"here.wild.example.com", dns.TypeA, 0, nil, "example.com."}, // exists: no wildcard
		{"wild.example.com", dns.TypeA, 0, nil, "example.com."},      // empty non-terminal
		{"1.2.0.192.in-addr.arpa", dns.TypePTR, 0, []string{"1.2.0.192.in-addr.arpa. PTR"}, ""},
		{"mx.example.com", dns.TypeANY, 0, []string{"mx.example.com. A", "mx.example.com. AAAA"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				resp := query(t, srv, network, tt.name, tt.qtype, 1232)
				if resp.Rcode != tt.rcode {
					t.Errorf("%s: rcode %s, want %s", network, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
				}
				if got := types(resp.Answer); !slices.Equal(got, tt.answer) {
					t.Errorf("%s: answer %v, want %v", network, got, tt.answer)
				}
				var soa string
				if len(resp.Ns) == 1 && resp.Ns[0].Header().Rrtype == dns.TypeSOA {
					soa = resp.Ns[0].Header().Name
				}
				if soa != tt.soa {
					t.Errorf("%s: authority %v, want SOA %q", network, resp.Ns, tt.soa)
				}
				if !resp.Authoritative || !resp.RecursionAvailable || resp.AuthenticatedData {
					t.Errorf("%s: flags %v", network, resp.MsgHdr)
				}
				if opt := resp.IsEdns0(); opt == nil || !opt.Do() {
					t.Errorf("%s: no OPT with DO in response", network)
				}
			}
		})
	}
}

func TestRecordData(t *testing.T) {
	srv := New(t, testZone)
	resp := query(t, srv, "udp", "esc.example.com", dns.TypeTXT, 0)
	if len(resp.Answer) != 1 {
		t.Fatalf("answer %v", resp.Answer)
	}
	if got := resp.Answer[0].(*dns.TXT).Txt; !slices.Equal(got, []string{`a\"b\\c\000\255`}) {
		t.Errorf("TXT = %q", got)
	}
	resp = query(t, srv, "udp", "empty.example.com", dns.TypeTXT, 0)
	if got := resp.Answer[0].(*dns.TXT).Txt; !slices.Equal(got, []string{""}) {
		t.Errorf("empty TXT = %q", got)
	}
	resp = query(t, srv, "udp", "example.com", dns.TypeTXT, 0)
	if got := resp.Answer[0].(*dns.TXT).Txt; !slices.Equal(got, []string{"v=spf1", " -all"}) {
		t.Errorf("TXT = %q", got)
	}
	srv.AddRR(TXT("built.example.com", 60, "x\"y", strings.Repeat("z", 300)))
	resp = query(t, srv, "tcp", "built.example.com", dns.TypeTXT, 0)
	if got := resp.Answer[0].(*dns.TXT).Txt; len(got) != 3 || got[0] != `x\"y` || len(got[1]) != 255 || len(got[2]) != 45 {
		t.Errorf("TXT = %q", got)
	}
	srv.AddRR(SPF("built.example.com", 60, "v=spf1 \x00", ""), TXT("none.example.com", 60))
	resp = query(t, srv, "udp", "built.example.com", dns.TypeSPF, 0)
	if got := resp.Answer[0].(*dns.SPF).Txt; !slices.Equal(got, []string{`v=spf1 \000`, ""}) {
		t.Errorf("SPF = %q", got)
	}
	resp = query(t, srv, "udp", "none.example.com", dns.TypeTXT, 0)
	if got := resp.Answer[0].(*dns.TXT).Txt; !slices.Equal(got, []string{""}) {
		t.Errorf("TXT without strings = %q", got)
	}
	resp = query(t, srv, "udp", "example.com", dns.TypeMX, 0)
	targets := []string{}
	for _, rr := range resp.Answer {
		targets = append(targets, rr.(*dns.MX).Mx)
	}
	slices.Sort(targets)
	if !slices.Equal(targets, []string{".", "mx.example.com."}) {
		t.Errorf("MX targets %v", targets)
	}
}

func TestFaults(t *testing.T) {
	srv := New(t, testZone)
	srv.SetFault("example.com", dns.TypeMX, ServFail)
	srv.SetFault("example.com", dns.TypeANY, Refused)
	srv.SetFault("mx.example.com", 0, NXDomain)
	srv.SetFault("mx.example.com", dns.TypeAAAA, Authentic)
	srv.SetFault("alias.example.com", dns.TypeA, Truncate)

	if r := query(t, srv, "udp", "example.com", dns.TypeMX, 0); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Errorf("ServFail: %v", r)
	}
	if r := query(t, srv, "tcp", "Example.COM", dns.TypeTXT, 0); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("Refused: %v", r)
	}
	if r := query(t, srv, "udp", "mx.example.com", dns.TypeA, 0); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Errorf("NXDomain: %v", r)
	}
	if r := query(t, srv, "udp", "mx.example.com", dns.TypeAAAA, 0); r.Rcode != 0 || !r.AuthenticatedData || len(r.Answer) != 1 {
		t.Errorf("Authentic: %v", r)
	}
	if r := query(t, srv, "udp", "alias.example.com", dns.TypeA, 1232); !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("Truncate over UDP: %v", r)
	}
	if r := query(t, srv, "tcp", "alias.example.com", dns.TypeA, 1232); r.Truncated || len(r.Answer) != 2 {
		t.Errorf("Truncate over TCP: %v", r)
	}
	srv.ClearFault("example.com", dns.TypeMX)
	if r := query(t, srv, "udp", "example.com", dns.TypeMX, 0); r.Rcode != dns.RcodeRefused {
		t.Errorf("after ClearFault MX, the ANY fault applies: %v", r)
	}
	srv.SetFault("example.com", dns.TypeMX, 0)
	if r := query(t, srv, "udp", "example.com", dns.TypeMX, 0); r.Rcode != 0 || len(r.Answer) != 2 {
		t.Errorf("MX exempt from the ANY fault: %v", r)
	}
	srv.ClearFault("example.com", dns.TypeMX)
	srv.ClearFault("example.com", 0)
	if r := query(t, srv, "udp", "example.com", dns.TypeMX, 0); r.Rcode != 0 || len(r.Answer) != 2 {
		t.Errorf("after ClearFault: %v", r)
	}

	srv.SetFault("example.com", dns.TypeMX, Drop)
	for _, network := range []string{"udp", "tcp"} {
		m := new(dns.Msg)
		m.SetQuestion("example.com.", dns.TypeMX)
		c := &dns.Client{Net: network, Timeout: 200 * time.Millisecond}
		if _, _, err := c.Exchange(m, srv.Addr); err == nil {
			t.Errorf("Drop over %s: got an answer", network)
		}
	}
	if n := srv.Queries("EXAMPLE.com.", dns.TypeMX); n != 6 {
		t.Errorf("Queries MX = %d, want 6", n)
	}
	if n := srv.Queries("example.com", dns.TypeANY); n != 7 {
		t.Errorf("Queries all types = %d, want 7", n)
	}
	if n := srv.Queries("alias.example.com", dns.TypeA); n != 2 {
		t.Errorf("Queries alias A = %d, want 2 (UDP and TCP)", n)
	}
	if got := Drop.String() + Fault(0).String() + Fault(42).String(); got != "DropnoneFault(42)" {
		t.Errorf("String: %q", got)
	}
}

func TestTruncation(t *testing.T) {
	srv := New(t, "")
	for i := range 30 {
		srv.AddRR(TXT("big.test", 300, strings.Repeat("x", 60)+string(rune('A'+i))))
	}
	for _, tt := range []struct {
		network string
		edns    int
		trunc   bool
	}{
		{"udp", 0, true},    // 512 octets
		{"udp", 1232, true}, // ~2100 octets needed
		{"udp", 4096, false},
		{"tcp", 0, false},
	} {
		r := query(t, srv, tt.network, "big.test", dns.TypeTXT, tt.edns)
		if r.Truncated != tt.trunc {
			t.Errorf("%s edns %d: TC %v", tt.network, tt.edns, r.Truncated)
		}
		if !tt.trunc && len(r.Answer) != 30 {
			t.Errorf("%s edns %d: %d records", tt.network, tt.edns, len(r.Answer))
		}
		r.Compress = true
		if r.Len() > max(tt.edns, 512) && tt.network == "udp" {
			t.Errorf("%s edns %d: %d octets", tt.network, tt.edns, r.Len())
		}
	}
}

func TestSetRecords(t *testing.T) {
	srv := New(t, testZone)
	if err := srv.SetRecords("MX.example.com", dns.TypeA, "mx.example.com. 60 IN A 192.0.2.99"); err != nil {
		t.Fatal(err)
	}
	r := query(t, srv, "udp", "mx.example.com", dns.TypeA, 0)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.99" || r.Answer[0].Header().Ttl != 60 {
		t.Errorf("after SetRecords: %v", r.Answer)
	}
	if r := query(t, srv, "udp", "mx.example.com", dns.TypeAAAA, 0); len(r.Answer) != 1 {
		t.Errorf("AAAA lost: %v", r.Answer)
	}
	if err := srv.SetRecords("mx.example.com", dns.TypeA, ""); err != nil {
		t.Fatal(err)
	}
	if r := query(t, srv, "udp", "mx.example.com", dns.TypeA, 0); r.Rcode != 0 || len(r.Answer) != 0 {
		t.Errorf("A removed: %v", r)
	}
	if err := srv.SetRecords("mx.example.com", dns.TypeANY, ""); err != nil {
		t.Fatal(err)
	}
	if r := query(t, srv, "udp", "mx.example.com", dns.TypeAAAA, 0); r.Rcode != dns.RcodeNameError {
		t.Errorf("name removed: %v", r)
	}
	if err := srv.SetRecords("deep.ent.example.com", dns.TypeANY, ""); err != nil {
		t.Fatal(err)
	}
	if r := query(t, srv, "udp", "ent.example.com", dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Errorf("empty non-terminal kept after its child went: %v", r)
	}
	if err := srv.SetRecords("mx.example.com", dns.TypeANY, "mx.example.com. IN TXT \"t\"\nmx.example.com. IN A 192.0.2.3"); err != nil {
		t.Fatal(err)
	}
	if r := query(t, srv, "udp", "mx.example.com", dns.TypeANY, 0); len(r.Answer) != 2 {
		t.Errorf("recreated: %v", r.Answer)
	}
	for _, bad := range []struct {
		qtype uint16
		zone  string
	}{
		{dns.TypeA, "other.example.com. IN A 192.0.2.1"},
		{dns.TypeA, "mx.example.com. IN AAAA ::1"},
		{dns.TypeA, "mx.example.com. IN A not-an-address"},
	} {
		if err := srv.SetRecords("mx.example.com", bad.qtype, bad.zone); err == nil {
			t.Errorf("SetRecords accepted %q", bad.zone)
		}
	}
	// AddRecords ignores duplicates.
	if err := srv.AddRecords("mx.example.com. IN A 192.0.2.3\nMX.example.com. 1 IN A 192.0.2.3"); err != nil {
		t.Fatal(err)
	}
	if r := query(t, srv, "udp", "mx.example.com", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Errorf("duplicates added: %v", r.Answer)
	}
	if err := srv.AddRecords("x. IN BOGUS 1"); err == nil {
		t.Error("AddRecords accepted a bad record")
	}
	if _, err := NewServer("$ORIGIN\n"); err == nil {
		t.Error("NewServer accepted a bad zone")
	}
}

func TestNegativeTTL(t *testing.T) {
	srv := New(t, "a.test. 300 IN A 192.0.2.1")
	soa := func() *dns.SOA {
		r := query(t, srv, "udp", "b.test", dns.TypeA, 0)
		return r.Ns[0].(*dns.SOA)
	}
	if s := soa(); s.Minttl != DefaultNegativeTTL || s.Hdr.Ttl != DefaultNegativeTTL {
		t.Errorf("SOA %v", s)
	}
	srv.SetNegativeTTL(5)
	if s := soa(); s.Minttl != 5 || s.Hdr.Ttl != 5 {
		t.Errorf("SOA %v", s)
	}
	srv.SetNegativeTTL(0)
	if s := soa(); s.Minttl != DefaultNegativeTTL {
		t.Errorf("SOA %v", s)
	}
}

func TestHold(t *testing.T) {
	srv := New(t, testZone)
	release := srv.Hold("mx.example.com", dns.TypeA)
	var wg sync.WaitGroup
	var resp *dns.Msg
	wg.Go(func() {
		m := new(dns.Msg)
		m.SetQuestion("mx.example.com.", dns.TypeA)
		c := &dns.Client{Net: "udp", Timeout: 30 * time.Second}
		resp, _, _ = c.Exchange(m, srv.Addr)
	})
	deadline := time.Now().Add(30 * time.Second)
	for srv.Queries("mx.example.com", dns.TypeA) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// Other names are not held.
	if r := query(t, srv, "udp", "mx.example.com", dns.TypeAAAA, 0); len(r.Answer) != 1 {
		t.Errorf("AAAA: %v", r)
	}
	release()
	release()
	wg.Wait()
	if resp == nil || len(resp.Answer) != 1 {
		t.Errorf("held query: %v", resp)
	}
	// Close releases held queries.
	srv.Hold("mx.example.com", 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m := new(dns.Msg)
		m.SetQuestion("mx.example.com.", dns.TypeA)
		c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
		c.Exchange(m, srv.Addr)
	}()
	for srv.Queries("mx.example.com", dns.TypeA) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	<-done
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestRespondMalformed(t *testing.T) {
	srv := newServer()
	m := new(dns.Msg)
	if r := srv.Respond(m, true); r.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: %v", r)
	}
	m.SetQuestion("a.test.", dns.TypeA)
	m.Opcode = dns.OpcodeNotify
	if r := srv.Respond(m, true); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("notify: %v", r)
	}
	m.Opcode = dns.OpcodeQuery
	m.Question[0].Qclass = dns.ClassCHAOS
	if r := srv.Respond(m, true); r.Rcode != dns.RcodeRefused {
		t.Errorf("chaos: %v", r)
	}
}

// TestConcurrent queries the same records from many goroutines while they
// change, for the race detector.
func TestConcurrent(t *testing.T) {
	srv := New(t, testZone)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			network := []string{"udp", "tcp"}[i%2]
			for range 20 {
				r := query(t, srv, network, "alias.example.com", dns.TypeA, 1232)
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					t.Errorf("answer %v", r)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			if err := srv.SetRecords("mx.example.com", dns.TypeA, "mx.example.com. 60 IN A 192.0.2."+strings.Repeat("1", 1+i%3)); err != nil {
				t.Error(err)
				return
			}
			srv.SetFault("other.example.com", 0, Fault(1+i%6))
			srv.Queries("alias.example.com", 0)
		}
	})
	wg.Wait()
	if n := srv.Queries("alias.example.com", dns.TypeA); n != 160 {
		t.Errorf("Queries = %d, want 160", n)
	}
}
