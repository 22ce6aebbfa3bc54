package resolver

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults for the zero values of Config fields.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultAttempts    = 2
	DefaultCacheSize   = 10000
	DefaultMaxTTL      = time.Hour
	DefaultNegativeTTL = 15 * time.Minute
)

// ednsSize is the UDP payload size advertised in EDNS0 (RFC 6891): 1232
// octets avoids IP fragmentation on nearly every path (DNS Flag Day 2020).
const ednsSize = 1232

// maxCNAMEs is the longest CNAME chain followed.
const maxCNAMEs = 10

// Config configures a Resolver. The zero value is usable: it reads the
// servers from /etc/resolv.conf and applies the documented defaults.
type Config struct {
	// Servers are the recursive resolvers to query, as "host:port"
	// ("host" alone means port 53). They are tried in order; with
	// Attempts > 1 the whole list is tried again. Nil or empty: the
	// nameserver lines of /etc/resolv.conf, port 53; New fails if there
	// are none.
	Servers []string

	// Timeout bounds one query attempt to one server (dial, write, read).
	// Zero: 2s.
	Timeout time.Duration

	// Attempts is how many times each server is tried. Zero: 2.
	Attempts int

	// CacheSize is the maximum number of cached answers (positive and
	// negative); the least recently used are evicted first. Zero: 10000.
	// Negative: no cache (concurrent identical queries are still
	// collapsed into one).
	CacheSize int

	// MaxTTL caps how long an answer is cached, whatever its TTL.
	// Zero: 1h.
	MaxTTL time.Duration

	// NegativeTTL caps how long NXDOMAIN and no-data answers are cached
	// (RFC 2308 section 5). Zero: 15m.
	NegativeTTL time.Duration

	// Now returns the current time, for cache expiry. Zero: time.Now.
	Now func() time.Time

	// Logger receives one debug line per upstream resolution. Nil: discard.
	Logger *slog.Logger
}

// Resolver looks up DNS records through recursive resolvers, with a cache.
// It is safe for concurrent use. Create it with New. It needs no Close: its
// only goroutines are the upstream queries in progress, which end within
// the configured timeouts.
type Resolver struct {
	servers     []string
	attempts    int
	maxTTL      time.Duration
	negativeTTL time.Duration
	now         func() time.Time
	log         *slog.Logger
	udp         *dns.Client
	tcp         *dns.Client
	cache       *cache // nil when caching is off
	flight      flight
}

// New returns a Resolver for cfg. It fails when no server is configured
// and /etc/resolv.conf names none (or cannot be read).
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{
		attempts:    cfg.Attempts,
		maxTTL:      cfg.MaxTTL,
		negativeTTL: cfg.NegativeTTL,
		now:         cfg.Now,
		log:         cfg.Logger,
		flight:      flight{m: make(map[key]*call)},
	}
	servers := cfg.Servers
	if len(servers) == 0 {
		var err error
		if servers, err = resolvConfServers("/etc/resolv.conf"); err != nil {
			return nil, err
		}
	}
	var err error
	if r.servers, err = serverAddrs(servers); err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if r.attempts <= 0 {
		r.attempts = DefaultAttempts
	}
	if r.maxTTL <= 0 {
		r.maxTTL = DefaultMaxTTL
	}
	if r.negativeTTL <= 0 {
		r.negativeTTL = DefaultNegativeTTL
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case cfg.CacheSize == 0:
		r.cache = newCache(DefaultCacheSize)
	case cfg.CacheSize > 0:
		r.cache = newCache(cfg.CacheSize)
	}
	r.udp = &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: timeout}
	r.tcp = &dns.Client{Net: "tcp", Timeout: timeout}
	return r, nil
}

// resolvConfServers returns the nameservers listed in the resolv.conf file
// at path.
func resolvConfServers(path string) ([]string, error) {
	conf, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("resolver: no servers configured and %s unusable: %w", path, err)
	}
	if len(conf.Servers) == 0 {
		return nil, fmt.Errorf("resolver: no servers configured and none in %s", path)
	}
	return conf.Servers, nil
}

// serverAddrs validates servers, adding port 53 where none is given.
func serverAddrs(servers []string) ([]string, error) {
	var out []string
	for _, s := range servers {
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			host = strings.Trim(s, "[]")
			s = net.JoinHostPort(host, "53")
		}
		if host == "" {
			return nil, fmt.Errorf("resolver: invalid server address %q", s)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("resolver: no DNS servers configured")
	}
	return out, nil
}

// Result is the answer to a lookup.
type Result[T any] struct {
	// Records are the records found, never empty in a successful result.
	// The slice belongs to the caller.
	Records []T

	// TTL is how long the answer may still be used: the smallest TTL of
	// the records and of the CNAMEs leading to them, capped by
	// Config.MaxTTL, minus the time spent in the cache.
	TTL time.Duration

	// Authentic reports that every response the answer came from had the
	// AD bit set: the upstream resolver validated it with DNSSEC
	// (RFC 4035 section 3.2.3). Only meaningful when the path to that
	// resolver is trusted (loopback, or a secured channel).
	Authentic bool

	// Name is the name that owns the records after following CNAMEs:
	// lower case, without the trailing dot.
	Name string
}

// MX is a mail exchanger (RFC 1035 section 3.3.9).
type MX struct {
	Host string // lower case, without the trailing dot; "" is a null MX (RFC 7505)
	Pref uint16
}

// TLSA is a DANE TLSA record (RFC 6698 section 2.1).
type TLSA struct {
	Usage        uint8
	Selector     uint8
	MatchingType uint8
	Data         []byte // certificate association data
}

// LookupMX returns the MX records of name, sorted by preference (stable:
// records of equal preference keep the upstream order; no shuffling).
// A null MX (RFC 7505) is returned as an MX with Host "".
func (r *Resolver) LookupMX(ctx context.Context, name string) (Result[MX], error) {
	return lookup(ctx, r, name, dns.TypeMX, convMX)
}

// LookupIP returns the addresses of name. network is "ip4" (A records),
// "ip6" (AAAA records) or "ip" (both: IPv4 addresses first). For "ip" the
// two queries run concurrently; if one type has records and the other
// fails in any way, the records found are returned. When both fail, the
// error is temporary if either failure is, NXDOMAIN if either says so,
// otherwise no data.
func (r *Resolver) LookupIP(ctx context.Context, network, name string) (Result[netip.Addr], error) {
	switch network {
	case "ip4":
		return lookup(ctx, r, name, dns.TypeA, convA)
	case "ip6":
		return lookup(ctx, r, name, dns.TypeAAAA, convAAAA)
	case "ip":
	default:
		return Result[netip.Addr]{}, fmt.Errorf("resolver: LookupIP: unknown network %q", network)
	}
	if err := ctx.Err(); err != nil {
		return Result[netip.Addr]{}, err
	}
	k4, err := lookupKey(name, dns.TypeA)
	if err != nil {
		return Result[netip.Addr]{}, err
	}
	k6 := key{k4.name, dns.TypeAAAA}
	var r4, r6 Result[netip.Addr]
	var err4, err6 error
	e4, e6 := r.cached(k4), r.cached(k6)
	switch {
	case e4 != nil && e6 != nil && e4.err == nil && e6.err == nil:
		// Both cached: one allocation for the combined records.
		now := r.now()
		a, b := e4.records.([]netip.Addr), e6.records.([]netip.Addr)
		recs := make([]netip.Addr, 0, len(a)+len(b))
		return Result[netip.Addr]{
			Records:   append(append(recs, a...), b...),
			TTL:       min(e4.expires.Sub(now), e6.expires.Sub(now)),
			Authentic: e4.authentic && e6.authentic,
			Name:      e4.name,
		}, nil
	case e4 == nil && e6 == nil:
		// Both upstream, concurrently.
		type res struct {
			r   Result[netip.Addr]
			err error
		}
		ch := make(chan res, 1)
		go func() {
			r6, err := lookupUpstream(ctx, r, k6, convAAAA)
			ch <- res{r6, err}
		}()
		r4, err4 = lookupUpstream(ctx, r, k4, convA)
		six := <-ch
		r6, err6 = six.r, six.err
	default:
		r4, err4 = lookupKeyed(ctx, r, k4, e4, convA)
		r6, err6 = lookupKeyed(ctx, r, k6, e6, convAAAA)
	}
	switch {
	case err4 == nil && err6 == nil:
		r4.Records = append(r4.Records, r6.Records...)
		r4.TTL = min(r4.TTL, r6.TTL)
		r4.Authentic = r4.Authentic && r6.Authentic
		return r4, nil
	case err4 == nil:
		return r4, nil
	case err6 == nil:
		return r6, nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return Result[netip.Addr]{}, ctxErr
	}
	switch {
	case IsTemporary(err4):
		return Result[netip.Addr]{}, err4
	case IsTemporary(err6):
		return Result[netip.Addr]{}, err6
	case IsNXDomain(err4):
		return Result[netip.Addr]{}, err4
	case IsNXDomain(err6):
		return Result[netip.Addr]{}, err6
	}
	return Result[netip.Addr]{}, err4
}

// LookupTXT returns the TXT records of name, one string per record: the
// record's character-strings joined without separator (as RFC 7208
// section 3.3 and RFC 6376 section 3.6.2.2 require), as raw bytes.
func (r *Resolver) LookupTXT(ctx context.Context, name string) (Result[string], error) {
	return lookup(ctx, r, name, dns.TypeTXT, convTXT)
}

// LookupTLSA returns the TLSA records of name, e.g. "_25._tcp.mx.example.com"
// (RFC 7672 section 2.2). Check Result.Authentic before using them for
// DANE: unauthenticated TLSA records must be ignored.
func (r *Resolver) LookupTLSA(ctx context.Context, name string) (Result[TLSA], error) {
	res, err := lookup(ctx, r, name, dns.TypeTLSA, convTLSA)
	for i := range res.Records { // cached records share Data; give the caller its own
		res.Records[i].Data = slices.Clone(res.Records[i].Data)
	}
	return res, err
}

// LookupPTR returns the names addr maps back to (RFC 1035 section 3.5),
// lower case and without the trailing dot. IPv4-mapped IPv6 addresses are
// looked up as IPv4 addresses; an IPv6 zone is ignored.
func (r *Resolver) LookupPTR(ctx context.Context, addr netip.Addr) (Result[string], error) {
	if !addr.IsValid() {
		return Result[string]{}, &Error{Name: addr.String(), Type: "PTR", Err: ErrInvalidName}
	}
	rev, err := dns.ReverseAddr(addr.Unmap().WithZone("").String())
	if err != nil {
		return Result[string]{}, &Error{Name: addr.String(), Type: "PTR", Err: fmt.Errorf("%w: %v", ErrInvalidName, err)}
	}
	return lookup(ctx, r, rev, dns.TypePTR, convPTR)
}

func convMX(rr dns.RR) (MX, bool) {
	mx, ok := rr.(*dns.MX)
	if !ok {
		return MX{}, false
	}
	return MX{Host: canon(mx.Mx), Pref: mx.Preference}, true
}

func convA(rr dns.RR) (netip.Addr, bool) {
	a, ok := rr.(*dns.A)
	if !ok {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(a.A.To4())
	return ip, ok
}

func convAAAA(rr dns.RR) (netip.Addr, bool) {
	a, ok := rr.(*dns.AAAA)
	if !ok || len(a.AAAA) != net.IPv6len {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16([16]byte(a.AAAA)), true
}

func convTXT(rr dns.RR) (string, bool) {
	t, ok := rr.(*dns.TXT)
	if !ok {
		return "", false
	}
	if len(t.Txt) == 1 {
		return unescape(t.Txt[0]), true
	}
	var b strings.Builder
	for _, s := range t.Txt {
		b.WriteString(unescape(s))
	}
	return b.String(), true
}

func convTLSA(rr dns.RR) (TLSA, bool) {
	t, ok := rr.(*dns.TLSA)
	if !ok {
		return TLSA{}, false
	}
	data, err := hex.DecodeString(t.Certificate)
	if err != nil {
		return TLSA{}, false
	}
	return TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data}, true
}

func convPTR(rr dns.RR) (string, bool) {
	p, ok := rr.(*dns.PTR)
	if !ok {
		return "", false
	}
	return canon(p.Ptr), true
}

// canon returns a domain name from a response in the form of results and
// cache keys: lower case, without the trailing dot. Unlike normalize it
// does not restrict the characters: such names are data, in miekg/dns
// presentation format (with \DDD escapes for unusual octets).
func canon(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// unescape turns a character-string in miekg/dns presentation format back
// into its octets: miekg/dns writes '"' and '\' as \" and \\, and
// unprintable octets as \DDD (decimal).
func unescape(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if n <= 255 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// typeString returns the mnemonic of qtype, e.g. "MX".
func typeString(qtype uint16) string {
	if s, ok := dns.TypeToString[qtype]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", qtype)
}

// lookup is the common path of every Lookup method: validate the name,
// answer from the cache, or resolve upstream (collapsing concurrent
// identical lookups) and cache the outcome.
func lookup[T any](ctx context.Context, r *Resolver, name string, qtype uint16, conv func(dns.RR) (T, bool)) (Result[T], error) {
	if err := ctx.Err(); err != nil {
		return Result[T]{}, err
	}
	k, err := lookupKey(name, qtype)
	if err != nil {
		return Result[T]{}, err
	}
	return lookupKeyed(ctx, r, k, r.cached(k), conv)
}

// lookupKey returns the cache key for a lookup, or ErrInvalidName.
func lookupKey(name string, qtype uint16) (key, error) {
	qname, ok := normalize(name)
	if !ok {
		return key{}, &Error{Name: name, Type: typeString(qtype), Err: ErrInvalidName}
	}
	return key{qname, qtype}, nil
}

// cached returns the live cache entry for k, or nil.
func (r *Resolver) cached(k key) *entry {
	if r.cache == nil {
		return nil
	}
	return r.cache.get(k, r.now())
}

// lookupKeyed answers k from e, the cache entry found for it, or, if e is
// nil, from upstream.
func lookupKeyed[T any](ctx context.Context, r *Resolver, k key, e *entry, conv func(dns.RR) (T, bool)) (Result[T], error) {
	if e != nil {
		return fromEntry[T](e, e.expires.Sub(r.now()))
	}
	return lookupUpstream(ctx, r, k, conv)
}

// lookupUpstream resolves k upstream, sharing the query with concurrent
// lookups of k, and caches the outcome.
func lookupUpstream[T any](ctx context.Context, r *Resolver, k key, conv func(dns.RR) (T, bool)) (Result[T], error) {
	var recheck func() *entry
	cached := false
	if r.cache != nil {
		recheck = func() *entry {
			e := r.cache.get(k, r.now())
			cached = e != nil
			return e
		}
	}
	e, err := r.flight.do(ctx, k, recheck, func() (*entry, error) {
		return resolveTyped(context.WithoutCancel(ctx), r, k, conv)
	})
	if err != nil {
		return Result[T]{}, err
	}
	if cached {
		// Found by recheck, cached earlier: report what remains.
		return fromEntry[T](e, e.expires.Sub(r.now()))
	}
	return fromEntry[T](e, e.ttl)
}

// fromEntry builds the caller's result (or error) from an entry.
func fromEntry[T any](e *entry, ttl time.Duration) (Result[T], error) {
	if e.err != nil {
		return Result[T]{}, &Error{Name: e.key.name, Type: typeString(e.key.qtype), Server: e.server, Rcode: e.rcode, Err: e.err}
	}
	recs := e.records.([]T)
	return Result[T]{
		Records:   slices.Clone(recs),
		TTL:       ttl,
		Authentic: e.authentic,
		Name:      e.name,
	}, nil
}

// resolveTyped resolves k upstream, converts the records to T and caches
// the outcome unless it is a temporary failure.
func resolveTyped[T any](ctx context.Context, r *Resolver, k key, conv func(dns.RR) (T, bool)) (*entry, error) {
	start := time.Now()
	ans, err := r.resolve(ctx, k)
	if err != nil {
		r.log.Debug("dns lookup", slog.String("name", k.name), slog.String("type", typeString(k.qtype)),
			slog.Any("error", err), slog.Duration("duration", time.Since(start)))
		return nil, err
	}
	e := &entry{key: k, name: ans.name, authentic: ans.authentic, server: ans.server}
	if ans.negative != nil {
		e.err, e.rcode, e.ttl = ans.negative, ans.rcode, ans.ttl
	} else {
		recs := make([]T, 0, len(ans.rrs))
		for _, rr := range ans.rrs {
			if v, ok := conv(rr); ok {
				recs = append(recs, v)
			}
		}
		if len(recs) == 0 {
			// Records of the type that cannot be used (e.g. a TLSA whose
			// data is not hex) count as none.
			e.err, e.ttl = ErrNoData, 0
		} else {
			if k.qtype == dns.TypeMX {
				slices.SortStableFunc(any(recs).([]MX), func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
			}
			e.records, e.ttl = recs, ans.ttl
		}
	}
	r.log.Debug("dns lookup", slog.String("name", k.name), slog.String("type", typeString(k.qtype)),
		slog.String("server", ans.server), slog.Int("records", len(ans.rrs)), slog.Bool("authentic", ans.authentic),
		slog.Any("error", e.err), slog.Duration("ttl", e.ttl), slog.Duration("duration", time.Since(start)))
	if r.cache != nil && e.ttl > 0 {
		e.expires = r.now().Add(e.ttl)
		r.cache.put(e)
	}
	return e, nil
}
