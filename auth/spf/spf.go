package spf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/mtakit/mta/resolver"
)

// Status is the result of an SPF check (RFC 7208 section 2.6). The zero
// value is None.
type Status uint8

// The SPF results of RFC 7208 section 2.6.
const (
	None      Status = iota // no usable domain, or it publishes no SPF record
	Neutral                 // the domain makes no assertion about the client
	Pass                    // the client is authorized to use the identity
	Fail                    // the client is explicitly not authorized
	Softfail                // probably not authorized; weaker than Fail
	TempError               // a transient (usually DNS) error; retry later
	PermError               // the published record is broken; fix it
)

var statusNames = [...]string{"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}

// String returns the result name used in Received-SPF and
// Authentication-Results header fields, e.g. "softfail".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Sentinel errors, found in Result.Err with errors.Is. Each is wrapped
// with detail as "sentinel: detail"; DNS failures also wrap the resolver's
// error, so resolver.IsTemporary and friends work on Result.Err too.
var (
	// ErrInvalidDomain: the domain to check is not a valid multi-label
	// domain name (RFC 7208 section 4.3). Status None.
	ErrInvalidDomain = errors.New("spf: invalid domain")

	// ErrNoRecord: the domain publishes no SPF record (RFC 7208 section
	// 4.5). Status None at the top level; PermError when an include or
	// redirect target has none.
	ErrNoRecord = errors.New("spf: no SPF record")

	// ErrMultipleRecords: the domain publishes more than one SPF record.
	// Status PermError.
	ErrMultipleRecords = errors.New("spf: multiple SPF records")

	// ErrSyntax: the record, or a term in it, is malformed. Status
	// PermError.
	ErrSyntax = errors.New("spf: syntax error")

	// ErrLookupLimit: more than MaxLookups terms causing DNS lookups
	// (RFC 7208 section 4.6.4). Status PermError.
	ErrLookupLimit = errors.New("spf: too many DNS lookups")

	// ErrVoidLookupLimit: more than MaxVoidLookups lookups returned no
	// records (RFC 7208 section 4.6.4). Status PermError.
	ErrVoidLookupLimit = errors.New("spf: too many void DNS lookups")

	// ErrMXLimit: an mx mechanism's domain has more than 10 MX records
	// (RFC 7208 section 4.6.4). Status PermError.
	ErrMXLimit = errors.New("spf: too many MX records")

	// ErrDNS: a DNS lookup failed temporarily (SERVFAIL, timeout) or the
	// context ended. Status TempError.
	ErrDNS = errors.New("spf: DNS lookup failed")
)

// Scope says which identity a Result is about (RFC 7208 section 2.3 and
// 2.4).
type Scope string

// The identities SPF checks.
const (
	ScopeMailFrom Scope = "mailfrom" // the MAIL FROM reverse-path
	ScopeHELO     Scope = "helo"     // the HELO/EHLO name
)

// Result is the outcome of one check. Verdicts, including TempError and
// PermError, are results, not Go errors.
type Result struct {
	// Status is the SPF result.
	Status Status
	// Scope is the identity checked; "" for CheckHost.
	Scope Scope
	// Domain is the domain whose policy was checked: the MAIL FROM
	// domain, or the HELO name. This is the domain DMARC aligns.
	Domain string
	// Sender is the <sender> of check_host(): the MAIL FROM address, or
	// postmaster@<HELO> for a null reverse-path and for HELO checks.
	Sender string
	// IP is the client address checked, IPv4-mapped IPv6 unmapped.
	IP netip.Addr
	// HELO is the HELO/EHLO name given, for the %{h} macro and headers.
	HELO string
	// Explanation is the expanded exp= text (or the default explanation)
	// for Fail, "" otherwise (RFC 7208 section 6.2).
	Explanation string
	// Mechanism is the term that decided the result, e.g. "-all" or
	// "ip4:192.0.2.0/24"; "default" when nothing matched; "" on errors and
	// for None.
	Mechanism string
	// Err says why the result is None, TempError or PermError; it wraps
	// one of the package's sentinels. Nil for the other results.
	Err error
	// Lookups and VoidLookups are the counts of DNS-querying terms and of
	// void lookups spent (RFC 7208 section 4.6.4).
	Lookups, VoidLookups int
}

// AuthResult returns the Authentication-Results method result (RFC 8601
// section 2.7.2), e.g. "spf=pass smtp.mailfrom=user@example.com" or
// "spf=none smtp.helo=mail.example.com".
func (r Result) AuthResult() string {
	if r.Scope == ScopeHELO {
		return "spf=" + r.Status.String() + " smtp.helo=" + headerValue(r.Domain)
	}
	local, domain := splitSender(r.Sender)
	return "spf=" + r.Status.String() + " smtp.mailfrom=" + headerValue(local) + "@" + headerValue(domain)
}

// ReceivedSPF returns the value of a Received-SPF header field (RFC 7208
// section 9.1) for this result; receiver names the host that checked, ""
// to omit it. Example:
//
//	pass (mx.example.org: domain of user@example.com designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="user@example.com"; helo=mail.example.com; identity=mailfrom; receiver=mx.example.org; mechanism="ip4:192.0.2.0/24"
func (r Result) ReceivedSPF(receiver string) string {
	var b strings.Builder
	b.WriteString(r.Status.String())
	b.WriteString(" (")
	if receiver != "" {
		b.WriteString(commentText(receiver))
		b.WriteString(": ")
	}
	who := commentText(r.Sender)
	ip := r.IP.String()
	switch r.Status {
	case Pass:
		b.WriteString("domain of " + who + " designates " + ip + " as permitted sender")
	case Fail:
		b.WriteString("domain of " + who + " does not designate " + ip + " as permitted sender")
	case Softfail:
		b.WriteString("domain of transitioning " + who + " does not designate " + ip + " as permitted sender")
	case Neutral:
		b.WriteString(ip + " is neither permitted nor denied by domain of " + who)
	case None:
		b.WriteString("domain of " + who + " does not designate permitted sender hosts")
	case TempError:
		b.WriteString("error in processing during lookup of " + who)
	case PermError:
		b.WriteString("permanent error in processing domain of " + who)
	}
	b.WriteString(") client-ip=" + ip)
	b.WriteString("; envelope-from=" + headerValue(r.Sender))
	if r.HELO != "" {
		b.WriteString("; helo=" + headerValue(r.HELO))
	}
	if r.Scope != "" {
		b.WriteString("; identity=" + string(r.Scope))
	}
	if receiver != "" {
		b.WriteString("; receiver=" + headerValue(receiver))
	}
	if r.Mechanism != "" {
		b.WriteString("; mechanism=" + headerValue(r.Mechanism))
	}
	if r.Err != nil && (r.Status == PermError || r.Status == TempError) {
		b.WriteString("; problem=" + headerValue(r.Err.Error()))
	}
	return b.String()
}

// headerValue returns s as a dot-atom when it is one, else as a quoted
// string (RFC 5322 section 3.2), dropping characters a header cannot hold.
func headerValue(s string) string {
	atom := s != "" && s[0] != '.' && s[len(s)-1] != '.' && !strings.Contains(s, "..")
	for i := 0; i < len(s) && atom; i++ {
		c := s[i]
		atom = isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0
	}
	if atom {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// commentText drops characters that would end or break a header comment.
func commentText(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '(' || r == ')' || r == '\\' || r < 0x20 || r >= 0x7f {
			return -1
		}
		return r
	}, s)
}

// Resolver is the DNS access SPF needs. *resolver.Resolver implements it;
// errors are classified with resolver.IsNotFound and resolver.IsTemporary.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) (resolver.Result[string], error)
	LookupIP(ctx context.Context, network, name string) (resolver.Result[netip.Addr], error)
	LookupMX(ctx context.Context, name string) (resolver.Result[resolver.MX], error)
	LookupPTR(ctx context.Context, addr netip.Addr) (resolver.Result[string], error)
}

var _ Resolver = (*resolver.Resolver)(nil)

// DefaultExplanation is the explanation used for Fail when the record has
// no usable exp= modifier and Checker.DefaultExplanation is empty. It is a
// macro-string (RFC 7208 section 7).
const DefaultExplanation = "%{d} does not designate %{c} as a permitted sender"

// Defaults for the zero values of Checker fields.
const (
	DefaultMaxLookups     = 10               // RFC 7208 section 4.6.4
	DefaultMaxVoidLookups = 2                // RFC 7208 section 4.6.4
	DefaultTimeout        = 20 * time.Second // RFC 7208 section 4.6.4: at least 20s
)

// Checker evaluates SPF policies. Set Resolver; every other field has a
// usable zero value. A Checker is safe for concurrent use and must not be
// changed while checks run.
type Checker struct {
	// Resolver answers the DNS queries. Required.
	Resolver Resolver

	// Hostname is the name of the host doing the check, the %{r} macro of
	// explanations. "": "unknown" (RFC 7208 section 7.3).
	Hostname string

	// DefaultExplanation is the macro-string expanded as Result.Explanation
	// for Fail when exp= is absent or unusable. "": DefaultExplanation.
	// If it does not parse, it is used as plain text.
	DefaultExplanation string

	// MaxLookups limits the terms that cause DNS lookups (include, a, mx,
	// ptr, exists, redirect) per check. Zero: 10.
	MaxLookups int

	// MaxVoidLookups limits the lookups that return no records (NXDOMAIN
	// or no data) per check. Zero: 2. Negative: no limit.
	MaxVoidLookups int

	// Timeout bounds one whole check; when it expires the result is
	// TempError. Zero: 20s. Negative: only ctx bounds the check. It never
	// extends the caller's context.
	Timeout time.Duration

	// Now returns the current time, for the %{t} macro. Nil: time.Now.
	Now func() time.Time

	// Logger gets one debug line per check. Nil: discard.
	Logger *slog.Logger
}

// CheckMailFrom checks the MAIL FROM identity (RFC 7208 section 2.4):
// check_host() with the domain of mailFrom, which may be given with or
// without angle brackets. For a null reverse-path ("" or "<>") it checks
// postmaster@helo instead; Result.Domain is then helo and Result.Scope
// still ScopeMailFrom. A mailFrom without local part ("@example.com") uses
// "postmaster" (RFC 7208 section 4.3). Internationalized domains are converted to
// A-labels (RFC 8616 section 4); Result.Domain and Result.Sender hold that
// form.
func (c *Checker) CheckMailFrom(ctx context.Context, ip netip.Addr, helo, mailFrom string) Result {
	mailFrom = strings.TrimSuffix(strings.TrimPrefix(mailFrom, "<"), ">")
	domain := helo
	sender := "postmaster@" + helo
	if mailFrom != "" {
		local, dom := splitSender(mailFrom)
		domain, sender = dom, local+"@"+dom
	}
	r := c.check(ctx, ip, domain, sender, helo)
	r.Scope = ScopeMailFrom
	return r
}

// CheckHELO checks the HELO/EHLO identity (RFC 7208 section 2.3):
// check_host() with domain helo and sender postmaster@helo. A HELO that is
// an address literal or not a multi-label domain name gives None.
func (c *Checker) CheckHELO(ctx context.Context, ip netip.Addr, helo string) Result {
	r := c.check(ctx, ip, helo, "postmaster@"+helo, helo)
	r.Scope = ScopeHELO
	return r
}

// CheckHost is RFC 7208's check_host(ip, domain, sender) (section 4), with
// helo for the %{h} macro. Most callers want CheckMailFrom or CheckHELO.
// A sender without "@" is taken as a domain with local part "postmaster".
func (c *Checker) CheckHost(ctx context.Context, ip netip.Addr, domain, sender, helo string) Result {
	local, dom := splitSender(sender)
	return c.check(ctx, ip, domain, local+"@"+dom, helo)
}

// Validate reports whether record is a syntactically valid SPF record
// ("v=spf1" and terms, RFC 7208 sections 4.5, 4.6 and 12), as check_host()
// would parse it. It queries no DNS, so it cannot see errors in included
// records or lookup limits. The error wraps ErrSyntax.
func Validate(record string) error {
	_, err := parseRecord(record)
	return err
}

// splitSender splits an address at its last "@"; an empty or missing local
// part becomes "postmaster" (RFC 7208 section 4.3).
func splitSender(s string) (local, domain string) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return "postmaster", s
	}
	local, domain = s[:i], s[i+1:]
	if local == "" {
		local = "postmaster"
	}
	return local, domain
}

// check runs check_host() at the top level and finishes the Result.
func (c *Checker) check(ctx context.Context, ip netip.Addr, domain, sender, helo string) Result {
	start := time.Now()
	ip = ip.Unmap() // IPv4-mapped IPv6 is IPv4 (RFC 7208 section 5).
	domain = aLabels(strings.TrimSuffix(domain, "."))
	local, senderDomain := splitSender(sender)
	senderDomain = aLabels(strings.TrimSuffix(senderDomain, "."))
	sender = local + "@" + senderDomain
	res := Result{Domain: domain, Sender: sender, IP: ip, HELO: helo}
	if c.Timeout >= 0 {
		timeout := c.Timeout
		if timeout == 0 {
			timeout = DefaultTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	e := &evaluator{
		c:          c,
		ip:         ip,
		maxLookups: c.MaxLookups,
		maxVoids:   c.MaxVoidLookups,
		env: macroEnv{
			sender:   sender,
			local:    local,
			senderDM: senderDomain,
			ip:       ip,
			helo:     helo,
			receiver: c.Hostname,
			now:      now(),
		},
	}
	if e.maxLookups <= 0 {
		e.maxLookups = DefaultMaxLookups
	}
	if e.maxVoids == 0 {
		e.maxVoids = DefaultMaxVoidLookups
	}
	var out outcome
	switch {
	case c.Resolver == nil:
		out = tempError(fmt.Errorf("%w: Checker.Resolver is nil", ErrDNS))
	case !ip.IsValid():
		out = outcome{status: PermError, err: fmt.Errorf("%w: no client IP address", ErrSyntax)}
	case !validDomain(domain):
		// RFC 7208 section 4.3: a malformed domain gives "none".
		out = outcome{status: None, err: fmt.Errorf("%w: %q", ErrInvalidDomain, domain)}
	default:
		out = e.checkHost(ctx, domain)
	}
	res.Status, res.Mechanism, res.Err = out.status, out.mech, out.err
	res.Lookups, res.VoidLookups = e.lookups, e.voids
	if out.status == Fail {
		res.Explanation = e.explain(ctx, out)
	}
	if c.Logger != nil {
		c.Logger.LogAttrs(ctx, slog.LevelDebug, "spf check",
			slog.String("ip", ip.String()), slog.String("domain", domain), slog.String("sender", sender),
			slog.String("result", res.Status.String()), slog.String("mechanism", res.Mechanism),
			slog.Int("lookups", res.Lookups), slog.Int("void_lookups", res.VoidLookups),
			slog.Any("err", res.Err), slog.Duration("duration", time.Since(start)))
	}
	return res
}

// aLabels converts an internationalised domain name to A-labels ("xn--",
// RFC 5890), as RFC 8616 section 4 asks before SPF evaluation, with the
// UTS #46 lookup mapping but without the host-name character rule, so
// that labels such as "_spf" survive. ASCII names, and names that do not
// convert (validDomain then rejects them), are returned unchanged.
func aLabels(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] >= utf8.RuneSelf {
			p := idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false), idna.StrictDomainName(false))
			if a, err := p.ToASCII(name); err == nil {
				return a
			}
			return name
		}
	}
	return name
}

// validDomain applies the initial-processing checks of RFC 7208 section
// 4.3: a multi-label domain name of at most 253 octets whose labels are 1
// to 63 printable ASCII octets, not a domain literal, and whose top-level
// label is not all digits (an IP address is not a domain).
func validDomain(name string) bool {
	if len(name) > 253 || !validLabels(name) || !strings.Contains(name, ".") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e || c == '[' || c == ']' || c == '@' {
			return false
		}
	}
	return !allDigits(name[strings.LastIndexByte(name, '.')+1:])
}

// outcome is the result of one check_host() evaluation, with what the
// explanation needs: the exp= of the record that decided and its domain.
type outcome struct {
	status Status
	mech   string
	err    error
	exp    []macroToken // exp= of the deciding record, nil if none
	domain string       // <domain> of the deciding record
}

// evaluator holds the state of one top-level check: the limits are shared
// by all nested include and redirect evaluations (RFC 7208 section 4.6.4).
type evaluator struct {
	c          *Checker
	ip         netip.Addr
	env        macroEnv
	lookups    int
	voids      int
	maxLookups int
	maxVoids   int

	ptrDone   bool     // ptrNames and ptrVoid are computed
	ptrNames  []string // validated names of ip (RFC 7208 section 5.5)
	ptrVoid   bool     // the PTR lookup returned nothing
	ptrCached map[string]string
}

func permError(err error) outcome { return outcome{status: PermError, err: err} }

func tempError(err error) outcome { return outcome{status: TempError, err: err} }

// checkHost is check_host() for one domain (RFC 7208 section 4), shared
// by the top level, include and redirect.
func (e *evaluator) checkHost(ctx context.Context, domain string) outcome {
	if !validDomain(domain) {
		return outcome{status: None, err: fmt.Errorf("%w: %q", ErrInvalidDomain, domain)}
	}
	rec, out, ok := e.fetchRecord(ctx, domain)
	if !ok {
		return out
	}
	env := e.env
	env.domain = domain
	env.ptr = func() string { return e.validatedName(ctx, domain) }
	for i := range rec.directives {
		d := &rec.directives[i]
		if d.countsLookup() {
			e.lookups++
			if e.lookups > e.maxLookups {
				return permError(fmt.Errorf("%w: more than %d at %q in %s", ErrLookupLimit, e.maxLookups, d.text, domain))
			}
		}
		match, errOut := e.match(ctx, d, &env)
		if errOut != nil {
			return *errOut
		}
		if match {
			return outcome{status: d.qualifier, mech: d.text, exp: rec.expToks, domain: domain}
		}
	}
	if rec.redirect != "" {
		// RFC 7208 section 6.1: redirect is used only when no mechanism
		// matched; it counts as a DNS lookup and replaces the record.
		e.lookups++
		if e.lookups > e.maxLookups {
			return permError(fmt.Errorf("%w: more than %d at redirect=%s in %s", ErrLookupLimit, e.maxLookups, rec.redirect, domain))
		}
		target, ok := queryName(expandMacro(rec.redirectToks, &env))
		if !ok {
			return permError(fmt.Errorf("%w: redirect=%s: invalid target %q", ErrSyntax, rec.redirect, target))
		}
		out := e.checkHost(ctx, target)
		if out.status == None {
			// A redirect to a domain without a record is a permerror.
			return permError(fmt.Errorf("%w: redirect=%s: %w", ErrNoRecord, target, out.err))
		}
		return out
	}
	return outcome{status: Neutral, mech: "default", domain: domain}
}

// fetchRecord looks up and parses the SPF record of domain (RFC 7208
// sections 4.4 and 4.5). ok is false when out holds the result instead.
func (e *evaluator) fetchRecord(ctx context.Context, domain string) (rec *record, out outcome, ok bool) {
	txts, err := e.c.Resolver.LookupTXT(ctx, domain)
	if err != nil {
		if resolver.IsTemporary(err) || ctx.Err() != nil {
			return nil, tempError(fmt.Errorf("%w: TXT %s: %w", ErrDNS, domain, err)), false
		}
		return nil, outcome{status: None, err: fmt.Errorf("%w at %s: %w", ErrNoRecord, domain, err)}, false
	}
	var spf []string
	for _, t := range txts.Records {
		if isSPFRecord(t) {
			spf = append(spf, t)
		}
	}
	switch len(spf) {
	case 0:
		return nil, outcome{status: None, err: fmt.Errorf("%w at %s", ErrNoRecord, domain)}, false
	case 1:
	default:
		return nil, permError(fmt.Errorf("%w at %s: %d records", ErrMultipleRecords, domain, len(spf))), false
	}
	rec, err = parseRecord(spf[0])
	if err != nil {
		return nil, permError(fmt.Errorf("%s: %w", domain, err)), false
	}
	return rec, outcome{}, true
}

// target returns the name a mechanism queries: its expanded domain-spec,
// or <domain> when it has none. ok is false when the expansion is not a
// valid DNS name; such a name cannot exist, so the mechanism does not
// match.
func (e *evaluator) target(d *directive, env *macroEnv) (string, bool) {
	if d.domainToks == nil {
		return env.domain, true
	}
	return queryName(expandMacro(d.domainToks, env))
}

// void counts a void lookup and reports the limit error, if reached.
func (e *evaluator) void(what string) *outcome {
	e.voids++
	if e.maxVoids >= 0 && e.voids > e.maxVoids {
		out := permError(fmt.Errorf("%w: more than %d, at %s", ErrVoidLookupLimit, e.maxVoids, what))
		return &out
	}
	return nil
}

// dnsError turns a failed lookup into the outcome RFC 7208 section 5
// prescribes: temperror for temporary failures. For the rest (name does
// not exist, no data, invalid name, CNAME loop) it returns nil and the
// mechanism continues as if there were no records.
func dnsError(ctx context.Context, what string, err error) *outcome {
	if resolver.IsTemporary(err) || ctx.Err() != nil {
		out := tempError(fmt.Errorf("%w: %s: %w", ErrDNS, what, err))
		return &out
	}
	return nil
}

// addrs looks up the addresses of name in the family of the client IP.
// void is true when the lookup returned nothing (NXDOMAIN or no data).
func (e *evaluator) addrs(ctx context.Context, name string) (ips []netip.Addr, void bool, err error) {
	network := "ip6"
	if e.ip.Is4() {
		network = "ip4"
	}
	res, err := e.c.Resolver.LookupIP(ctx, network, name)
	if err != nil {
		return nil, resolver.IsNotFound(err), err
	}
	return res.Records, len(res.Records) == 0, nil
}

// matchIP reports whether ip is in the network of addr with the CIDR
// length for the client's address family (RFC 7208 section 5.6).
func (e *evaluator) matchIP(addr netip.Addr, d *directive) bool {
	addr = addr.Unmap()
	if addr.Is4() != e.ip.Is4() {
		return false
	}
	bits := d.cidr6
	if addr.Is4() {
		bits = d.cidr4
	}
	p, err := addr.Prefix(bits)
	return err == nil && p.Contains(e.ip)
}

// match evaluates one mechanism (RFC 7208 section 5). A non-nil outcome
// ends the evaluation (errors).
func (e *evaluator) match(ctx context.Context, d *directive, env *macroEnv) (bool, *outcome) {
	switch d.kind {
	case mechAll:
		return true, nil
	case mechIP4, mechIP6:
		return e.ip.Is4() == (d.kind == mechIP4) && d.prefix.Contains(e.ip), nil
	case mechA:
		name, ok := e.target(d, env)
		if !ok {
			return false, nil
		}
		ips, void, err := e.addrs(ctx, name)
		if out := dnsError(ctx, "a "+name, err); out != nil {
			return false, out
		}
		if void {
			return false, e.void("a:" + name)
		}
		for _, ip := range ips {
			if e.matchIP(ip, d) {
				return true, nil
			}
		}
		return false, nil
	case mechMX:
		return e.matchMX(ctx, d, env)
	case mechPTR:
		return e.matchPTR(ctx, d, env)
	case mechExists:
		name, ok := e.target(d, env)
		if !ok {
			return false, nil
		}
		// exists always queries A records, whatever the client's family
		// (RFC 7208 section 5.7).
		res, err := e.c.Resolver.LookupIP(ctx, "ip4", name)
		if out := dnsError(ctx, "exists "+name, err); out != nil {
			return false, out
		}
		if len(res.Records) == 0 {
			if err == nil || resolver.IsNotFound(err) {
				return false, e.void("exists:" + name)
			}
			return false, nil
		}
		return true, nil
	case mechInclude:
		name, ok := e.target(d, env)
		if !ok {
			return false, outPtr(permError(fmt.Errorf("%w: %s: invalid target", ErrSyntax, d.text)))
		}
		out := e.checkHost(ctx, name)
		// RFC 7208 section 5.2: pass matches; fail, softfail and neutral do
		// not; temperror and permerror propagate; none is a permerror.
		switch out.status {
		case Pass:
			return true, nil
		case Fail, Softfail, Neutral:
			return false, nil
		case None:
			return false, outPtr(permError(fmt.Errorf("%w: include:%s: %w", ErrNoRecord, name, out.err)))
		default:
			out.mech, out.exp = "", nil
			return false, &out
		}
	}
	return false, nil
}

func outPtr(o outcome) *outcome { return &o }

// matchMX evaluates the mx mechanism (RFC 7208 section 5.4).
func (e *evaluator) matchMX(ctx context.Context, d *directive, env *macroEnv) (bool, *outcome) {
	name, ok := e.target(d, env)
	if !ok {
		return false, nil
	}
	res, err := e.c.Resolver.LookupMX(ctx, name)
	if out := dnsError(ctx, "mx "+name, err); out != nil {
		return false, out
	}
	if err != nil && !resolver.IsNotFound(err) {
		return false, nil
	}
	if len(res.Records) == 0 {
		return false, e.void("mx:" + name)
	}
	// At most 10 MX hosts may be looked up; more is a permerror (RFC 7208
	// section 4.6.4).
	if len(res.Records) > 10 {
		return false, outPtr(permError(fmt.Errorf("%w: %s has %d", ErrMXLimit, name, len(res.Records))))
	}
	for _, mx := range res.Records {
		if mx.Host == "" {
			continue // null MX (RFC 7505): no host
		}
		ips, _, err := e.addrs(ctx, mx.Host)
		if out := dnsError(ctx, "mx host "+mx.Host, err); out != nil {
			return false, out
		}
		for _, ip := range ips {
			if e.matchIP(ip, d) {
				return true, nil
			}
		}
	}
	return false, nil
}

// matchPTR evaluates the ptr mechanism (RFC 7208 section 5.5). DNS errors
// make it not match rather than temperror.
func (e *evaluator) matchPTR(ctx context.Context, d *directive, env *macroEnv) (bool, *outcome) {
	target, ok := e.target(d, env)
	if !ok {
		return false, nil
	}
	names := e.validated(ctx)
	if e.ptrVoid {
		if out := e.void("ptr"); out != nil {
			return false, out
		}
	}
	target = strings.ToLower(target)
	for _, n := range names {
		if n == target || strings.HasSuffix(n, "."+target) {
			return true, nil
		}
	}
	return false, nil
}

// validated returns the validated domain names of the client IP: at most
// 10 PTR names whose forward lookup includes the IP (RFC 7208 sections
// 5.5 and 4.6.4). It is computed once per check.
func (e *evaluator) validated(ctx context.Context) []string {
	if e.ptrDone {
		return e.ptrNames
	}
	e.ptrDone = true
	res, err := e.c.Resolver.LookupPTR(ctx, e.ip)
	if err != nil {
		e.ptrVoid = resolver.IsNotFound(err)
		return nil
	}
	e.ptrVoid = len(res.Records) == 0
	names := res.Records
	if len(names) > 10 {
		names = names[:10] // the rest MUST be ignored
	}
	for _, n := range names {
		ips, _, err := e.addrs(ctx, n)
		if err != nil {
			continue // a DNS error skips this name (RFC 7208 section 5.5)
		}
		for _, ip := range ips {
			if ip.Unmap() == e.ip {
				e.ptrNames = append(e.ptrNames, strings.ToLower(strings.TrimSuffix(n, ".")))
				break
			}
		}
	}
	return e.ptrNames
}

// validatedName is the %{p} macro for <domain>: a validated name equal
// to or under domain if there is one, else any validated name, else
// "unknown" (RFC 7208 section 7.3).
func (e *evaluator) validatedName(ctx context.Context, domain string) string {
	if p, ok := e.ptrCached[domain]; ok {
		return p
	}
	names := e.validated(ctx)
	p := "unknown"
	domain = strings.ToLower(domain)
	for _, n := range names {
		if n == domain || strings.HasSuffix(n, "."+domain) {
			p = n
			break
		}
	}
	if p == "unknown" && len(names) > 0 {
		p = names[0]
	}
	if e.ptrCached == nil {
		e.ptrCached = make(map[string]string)
	}
	e.ptrCached[domain] = p
	return p
}

// explain returns the explanation for a Fail (RFC 7208 section 6.2): the
// expanded TXT record named by exp=, or the default when exp= is absent,
// its target is not a single TXT record, or its text is malformed. DNS
// lookups made here count against no limit.
func (e *evaluator) explain(ctx context.Context, out outcome) string {
	env := e.env
	env.domain = out.domain
	env.ptr = func() string { return e.validatedName(ctx, out.domain) }
	if out.exp != nil {
		if text, ok := e.fetchExplanation(ctx, out.exp, &env); ok {
			return text
		}
	}
	def := e.c.DefaultExplanation
	if def == "" {
		def = DefaultExplanation
	}
	toks, err := parseMacro(def, macroExplain)
	if err != nil {
		return def
	}
	return expandMacro(toks, &env)
}

func (e *evaluator) fetchExplanation(ctx context.Context, exp []macroToken, env *macroEnv) (string, bool) {
	name, ok := queryName(expandMacro(exp, env))
	if !ok {
		return "", false
	}
	res, err := e.c.Resolver.LookupTXT(ctx, name)
	if err != nil || len(res.Records) != 1 {
		return "", false
	}
	toks, err := parseMacro(res.Records[0], macroExplain)
	if err != nil {
		return "", false
	}
	return expandMacro(toks, env), true
}
