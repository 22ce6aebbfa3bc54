// Package dnstest runs a real authoritative DNS server on loopback, for
// tests of every package that uses DNS.
//
// A Server answers UDP and TCP queries on 127.0.0.1 (one port for both)
// from records given as RFC 1035 master-file text (section 5), parsed with
// github.com/miekg/dns's ZoneParser. Point a resolver at Server.Addr:
//
//	srv := dnstest.New(t, `
//	example.com. 300 IN MX 10 mx.example.com.
//	mx.example.com. 300 IN A 192.0.2.1
//	`)
//	r, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr}})
//
// The server also plays the part of a recursive resolver: it sets RA and
// answers for every name it holds, whatever zone the names belong to.
//
// # Answers
//
// The server follows authoritative semantics (RFC 1034 section 4.3.2,
// RFC 2308 section 2):
//
//   - a name with records of the queried type: those records;
//   - a name that exists (it has records, or is an empty non-terminal
//     because a longer name exists below it) without records of the type:
//     NOERROR, an empty answer section and a SOA in the authority section
//     (NODATA);
//   - a name that does not exist: NXDOMAIN with a SOA in the authority
//     section;
//   - a name with a CNAME, queried for another type: the CNAME, followed by
//     the answer for its target if the target is in the same zone (as a
//     real authoritative server does), up to 16 CNAMEs and stopping at a
//     loop. The rcode is that of the last name (RFC 6604).
//   - a name that does not exist but has a wildcard (RFC 4592): "*.<closest
//     encloser>" records, with the queried name as owner.
//
// A name's zone is its closest ancestor (or itself) owning a SOA record;
// names without one belong to a single default zone. Negative answers carry
// that SOA, or, without one, a synthesised SOA owned by the root whose TTL
// and MINIMUM are the negative TTL (300 s unless SetNegativeTTL changes it).
//
// A UDP answer larger than the client's EDNS0 buffer (512 octets without
// EDNS0) is truncated with TC set; over TCP answers are complete. Queries
// with an OPT record get one back, echoing the DO bit. Names are compared
// case-insensitively.
//
// # Faults
//
// SetFault makes the server misbehave for a name, to exercise error
// handling: see Fault. Queries counts the queries that arrived, so tests can
// check caching and collapsing of identical queries. Hold delays answers
// until the test releases them, for deterministic concurrency tests.
// Queries of a class other than IN (or ANY) are refused.
//
// # Records
//
// NewServer, AddRecords and SetRecords take master-file text: default
// $ORIGIN "." (so write fully qualified names, or set $ORIGIN), $ORIGIN and
// $TTL honoured, default TTL 3600. TXT character-strings follow RFC 1035
// section 5.1 quoting: "\"" and "\\" escape, "\DDD" is any octet, "" is an
// empty string. AddRR takes records built in Go; TXT and SPF build those
// records from raw strings (any octets), escaping them as needed.
//
// A Server is safe for concurrent use: records and faults may change while
// queries are answered.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Fault is a misbehaviour of the server for a name (and type), set with
// SetFault. The zero value means no fault.
type Fault int

// Faults. Only Authentic combines with normal answers; the others replace
// them.
const (
	// ServFail answers with RCODE SERVFAIL (2) and no records.
	ServFail Fault = iota + 1
	// Refused answers with RCODE REFUSED (5) and no records.
	Refused
	// NXDomain answers with RCODE NXDOMAIN (3) and the zone's SOA, whether
	// the name exists or not.
	NXDomain
	// Drop sends no answer at all, over either transport: the client times
	// out.
	Drop
	// Truncate answers UDP queries with TC set and no records, which forces
	// a client to retry over TCP; TCP queries get the normal answer.
	Truncate
	// Authentic sets the AD bit (RFC 4035 section 3.2.3) on the normal
	// answer, as a validating resolver does for DNSSEC-secure data.
	Authentic
)

// String returns the fault's name.
func (f Fault) String() string {
	switch f {
	case 0:
		return "none"
	case ServFail:
		return "ServFail"
	case Refused:
		return "Refused"
	case NXDomain:
		return "NXDomain"
	case Drop:
		return "Drop"
	case Truncate:
		return "Truncate"
	case Authentic:
		return "Authentic"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// DefaultNegativeTTL is the TTL and MINIMUM of the synthesised SOA of
// negative answers for names outside any zone that has a SOA.
const DefaultNegativeTTL = 300

// maxCNAMEs bounds how many CNAMEs the server follows in one answer.
const maxCNAMEs = 16

// Server is an authoritative DNS server on loopback. Create it with
// NewServer or New; stop it with Close.
type Server struct {
	// Addr is the "127.0.0.1:port" address the server listens on, for UDP
	// and TCP.
	Addr string

	udp *dns.Server
	tcp *dns.Server

	closed    chan struct{} // closed by Close, releases held queries
	closeOnce sync.Once

	mu      sync.Mutex
	holds   map[qkey]chan struct{}
	data    *data
	faults  map[qkey]Fault
	queries map[qkey]int
	negTTL  uint32
}

// qkey is a lower-case fully qualified name and a type.
type qkey struct {
	name  string
	qtype uint16
}

// NewServer parses zone (master-file text, see the package documentation)
// and starts a server for it on 127.0.0.1. It returns an error for text
// that does not parse or when the sockets cannot be opened.
func NewServer(zone string) (*Server, error) {
	rrs, err := ParseZone(zone)
	if err != nil {
		return nil, err
	}
	s := newServer()
	s.data.add(rrs)
	if err := s.listen(); err != nil {
		return nil, err
	}
	return s, nil
}

// newServer returns a server that does not listen yet.
func newServer() *Server {
	return &Server{
		data:    newData(),
		faults:  make(map[qkey]Fault),
		queries: make(map[qkey]int),
		holds:   make(map[qkey]chan struct{}),
		closed:  make(chan struct{}),
		negTTL:  DefaultNegativeTTL,
	}
}

// New is NewServer for tests: it fails t on error and closes the server
// when the test ends (t.Cleanup).
func New(t testing.TB, zone string) *Server {
	t.Helper()
	s, err := NewServer(zone)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// listen opens UDP and TCP sockets on the same free loopback port and
// starts serving.
func (s *Server) listen() error {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("dnstest: listen udp: %w", err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			lastErr = err
			continue // port taken for TCP: try another
		}
		s.Addr = addr
		s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serveUDP)}
		s.tcp = &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serveTCP)}
		if err := start(s.udp); err != nil {
			pc.Close()
			l.Close()
			return err
		}
		if err := start(s.tcp); err != nil {
			s.udp.Shutdown()
			l.Close()
			return err
		}
		return nil
	}
	return fmt.Errorf("dnstest: no port free for both UDP and TCP: %w", lastErr)
}

// start runs srv in a goroutine and waits until it serves.
func start(srv *dns.Server) error {
	started := make(chan struct{})
	errc := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-errc:
		return fmt.Errorf("dnstest: serve: %w", err)
	case <-time.After(10 * time.Second):
		return errors.New("dnstest: server did not start")
	}
}

// Close stops the server and waits for its goroutines to finish. Queries
// being held (see Hold) are dropped. Calling Close again does nothing.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
	})
	return err
}

// AddRecords parses zone (master-file text) and adds its records to those
// the server holds. Records identical to ones already held are not added
// twice (an RRset is a set, RFC 2181 section 5).
func (s *Server) AddRecords(zone string) error {
	rrs, err := ParseZone(zone)
	if err != nil {
		return err
	}
	s.AddRR(rrs...)
	return nil
}

// AddRR adds records built in Go, like AddRecords.
func (s *Server) AddRR(rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.add(rrs)
}

// SetRecords replaces the records of type qtype at name with those of zone
// (master-file text, which may only contain records of that name and
// type). qtype dns.TypeANY (or 0) replaces all the name's records, and then
// zone may hold records of any type for name. An empty zone removes the
// records: SetRecords(name, dns.TypeANY, "") deletes the name. Typical use:
// change a record's data or TTL between two lookups to observe caching.
func (s *Server) SetRecords(name string, qtype uint16, zone string) error {
	rrs, err := ParseZone(zone)
	if err != nil {
		return err
	}
	owner := fqdn(name)
	for _, rr := range rrs {
		h := rr.Header()
		if fqdn(h.Name) != owner {
			return fmt.Errorf("dnstest: SetRecords %s: record for another name: %s", name, rr)
		}
		if qtype != 0 && qtype != dns.TypeANY && h.Rrtype != qtype {
			return fmt.Errorf("dnstest: SetRecords %s %s: record of another type: %s", name, dns.TypeToString[qtype], rr)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.remove(owner, qtype)
	s.data.add(rrs)
	return nil
}

// SetNegativeTTL sets the TTL and MINIMUM of the SOA synthesised for
// negative answers about names in no zone with a SOA record. Zero
// restores DefaultNegativeTTL.
func (s *Server) SetNegativeTTL(ttl uint32) {
	if ttl == 0 {
		ttl = DefaultNegativeTTL
	}
	s.mu.Lock()
	s.negTTL = ttl
	s.mu.Unlock()
}

// SetFault makes the server misbehave for queries of name and qtype;
// qtype dns.TypeANY (or 0) means every type. A fault for the exact type
// takes precedence over one for every type, so SetFault(name, qtype, 0)
// exempts one type from a fault set for all. Faults apply to the queried
// name only, not to names reached through CNAMEs.
func (s *Server) SetFault(name string, qtype uint16, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[qkey{fqdn(name), anyType(qtype)}] = f
}

// ClearFault removes the fault set for name and qtype.
func (s *Server) ClearFault(name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.faults, qkey{fqdn(name), anyType(qtype)})
}

// Queries returns how many queries for name and qtype arrived, over both
// transports (a UDP query retried over TCP counts twice). qtype
// dns.TypeANY (or 0) counts the queries of every type for name.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := fqdn(name)
	if qtype != 0 && qtype != dns.TypeANY {
		return s.queries[qkey{n, qtype}]
	}
	total := 0
	for k, c := range s.queries {
		if k.name == n {
			total += c
		}
	}
	return total
}

// ParseZone parses master-file text (RFC 1035 section 5) with default
// $ORIGIN "." and default TTL 3600. $INCLUDE is not allowed.
func ParseZone(zone string) ([]dns.RR, error) {
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "")
	zp.SetDefaultTTL(3600)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("dnstest: zone: %w", err)
	}
	return rrs, nil
}

// TXT returns a TXT record for name with one character-string per element
// of strs, which may hold any octets: they are escaped as miekg/dns
// expects. Strings longer than 255 octets are split (RFC 1035 section
// 3.3.14 limits each to 255). Add it with AddRR.
func TXT(name string, ttl uint32, strs ...string) *dns.TXT {
	return &dns.TXT{
		Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
		Txt: charStrings(strs),
	}
}

// SPF is TXT for the SPF record type (99, RFC 4408 section 3.1.1; RFC 7208
// section 14.1 deprecates it, but test suites still publish it).
func SPF(name string, ttl uint32, strs ...string) *dns.SPF {
	return &dns.SPF{
		Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeSPF, Class: dns.ClassINET, Ttl: ttl},
		Txt: charStrings(strs),
	}
}

// charStrings escapes strs and splits them into character-strings of at
// most 255 octets; no strings at all make one empty character-string.
func charStrings(strs []string) []string {
	var out []string
	for _, s := range strs {
		for {
			part := s
			if len(part) > 255 {
				part = part[:255]
			}
			out = append(out, escapeTXT(part))
			s = s[len(part):]
			if s == "" {
				break
			}
		}
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}

// escapeTXT writes s in miekg/dns presentation form: '"' and '\' are
// escaped, unprintable octets become \DDD.
func escapeTXT(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func fqdn(name string) string { return strings.ToLower(dns.Fqdn(name)) }

func anyType(qtype uint16) uint16 {
	if qtype == 0 {
		return dns.TypeANY
	}
	return qtype
}

func (s *Server) serveUDP(w dns.ResponseWriter, req *dns.Msg) { s.serve(w, req, true) }
func (s *Server) serveTCP(w dns.ResponseWriter, req *dns.Msg) { s.serve(w, req, false) }

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg, udp bool) {
	var hold chan struct{}
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		s.mu.Lock()
		hold = s.holds[qkey{name, q.Qtype}]
		if hold == nil {
			hold = s.holds[qkey{name, dns.TypeANY}]
		}
		s.mu.Unlock()
	}
	resp := s.Respond(req, udp)
	if hold != nil {
		select {
		case <-hold:
		case <-s.closed:
			return
		}
	}
	if resp == nil {
		return // Drop
	}
	w.WriteMsg(resp)
}

// Hold delays the answers to queries of name and qtype (dns.TypeANY or 0:
// every type) until release is called or the server is closed. The queries
// are counted (see Queries) as soon as they arrive, so a test can wait
// until a query is being held, act, and then release it. Calling release
// more than once is harmless; Hold again for the same name and type
// replaces an earlier hold for new queries.
func (s *Server) Hold(name string, qtype uint16) (release func()) {
	ch := make(chan struct{})
	k := qkey{fqdn(name), anyType(qtype)}
	s.mu.Lock()
	s.holds[k] = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.holds[k] == ch {
				delete(s.holds, k)
			}
			s.mu.Unlock()
			close(ch)
		})
	}
}

// Respond computes the server's response to req, received over UDP if udp
// is true, counting the query. A nil response means none is sent (Drop).
// It is what the server does for each query, exposed for tests that need
// no sockets (fuzzing, for instance).
func (s *Server) Respond(req *dns.Msg, udp bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(req.Question) != 1 || req.Response {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		m.SetEdns0(1232, opt.Do())
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries[qkey{name, q.Qtype}]++
	fault, ok := s.faults[qkey{name, q.Qtype}]
	if !ok {
		fault = s.faults[qkey{name, dns.TypeANY}]
	}
	switch fault {
	case ServFail:
		m.Rcode = dns.RcodeServerFailure
		return m
	case Refused:
		m.Rcode = dns.RcodeRefused
		return m
	case NXDomain:
		m.Authoritative = true
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{s.soaFor(name)}
		return m
	case Drop:
		return nil
	case Truncate:
		if udp {
			m.Truncated = true
			return m
		}
	case Authentic:
		m.AuthenticatedData = true
	}
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	s.answer(m, name, q.Qtype)
	if udp {
		m.Truncate(size)
	} else {
		m.Compress = true
	}
	return m
}

// answer fills m with the answer to (name, qtype), following CNAMEs within
// the zone. Called with s.mu held.
func (s *Server) answer(m *dns.Msg, name string, qtype uint16) {
	zone := s.data.zoneOf(name)
	visited := map[string]bool{name: true}
	cur := name
	for range maxCNAMEs + 1 {
		rrs, exists := s.data.lookup(cur)
		if !exists {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{s.soaFor(cur)}
			return
		}
		var cname *dns.CNAME
		n := len(m.Answer)
		for _, rr := range rrs {
			t := rr.Header().Rrtype
			if t == qtype || qtype == dns.TypeANY {
				m.Answer = append(m.Answer, rr)
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if len(m.Answer) > n {
			return
		}
		if cname == nil {
			m.Ns = []dns.RR{s.soaFor(cur)}
			return
		}
		m.Answer = append(m.Answer, cname)
		target := strings.ToLower(cname.Target)
		if visited[target] || s.data.zoneOf(target) != zone {
			return // a loop, or a target another server would answer for
		}
		visited[target] = true
		cur = target
	}
}

// soaFor returns the SOA for negative answers about name: the SOA of its
// zone, or a synthesised one. Called with s.mu held.
func (s *Server) soaFor(name string) dns.RR {
	if z := s.data.zoneOf(name); z != "" {
		for _, rr := range s.data.rrs[z] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return rr
			}
		}
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.negTTL},
		Ns:      "ns.dnstest.invalid.",
		Mbox:    "hostmaster.dnstest.invalid.",
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.negTTL,
	}
}
