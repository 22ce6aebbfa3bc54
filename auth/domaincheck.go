package auth

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/auth/dmarc"
	"github.com/mtakit/mta/auth/spf"
	"github.com/mtakit/mta/resolver"
)

// Severity grades a [Finding].
type Severity string

// Severities.
const (
	OK      Severity = "ok"      // as it should be
	Warning Severity = "warning" // works, but should be improved
	Problem Severity = "problem" // mail will fail authentication or delivery
)

// Finding is one observation of [CheckDomain], in plain language.
type Finding struct {
	// Area is "spf", "dkim", "dmarc", "mx" or "mta-sts".
	Area     string
	Severity Severity
	// Message says what is right or wrong.
	Message string
	// Fix is the exact DNS record (zone-file line) to publish, when
	// publishing one fixes the problem; "" otherwise.
	Fix string
}

// DomainKey is a DKIM selector of the domain with its private key.
type DomainKey struct {
	Selector string
	Key      crypto.Signer
}

// DomainSetup describes how a domain sends mail.
type DomainSetup struct {
	// Domain is the sending (From and MAIL FROM) domain.
	Domain string
	// IPs are the addresses mail leaves from.
	IPs []netip.Addr
	// DKIM are the selectors and private keys mail is signed with.
	DKIM []DomainKey
}

// DomainReport is the outcome of CheckDomain.
type DomainReport struct {
	Domain   string
	Findings []Finding
}

// OK reports whether no finding is a Problem.
func (r *DomainReport) OK() bool {
	for _, f := range r.Findings {
		if f.Severity == Problem {
			return false
		}
	}
	return true
}

// String renders the report as text, one finding per line, each fix
// indented below its finding.
func (r *DomainReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Sending-domain check for %s\n", r.Domain)
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%-9s %-7s %s\n", "["+f.Area+"]", f.Severity, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(&b, "%17s publish: %s\n", "", f.Fix)
		}
	}
	if r.OK() {
		b.WriteString("No problems found.\n")
	} else {
		b.WriteString("Problems found: fix the records above.\n")
	}
	return b.String()
}

// CheckDomain checks the DNS setup of a sending domain through res: SPF
// (present, one record, every IP passing, within the 10-lookup limit),
// DKIM (each selector's key published, parseable and matching its private
// key), DMARC (a valid policy found by the DNS Tree Walk), MX (present and
// resolvable, so bounces and replies arrive) and MTA-STS (the _mta-sts
// TXT record well-formed when present; the HTTPS policy file is not
// fetched). The error is only ctx.Err() or a nil resolver; DNS failures
// are findings.
func CheckDomain(ctx context.Context, res *resolver.Resolver, setup DomainSetup) (*DomainReport, error) {
	if res == nil {
		return nil, errors.New("auth: CheckDomain: nil resolver")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	domain := strings.ToLower(strings.TrimSuffix(setup.Domain, "."))
	rep := &DomainReport{Domain: domain}
	add := func(area string, sev Severity, fix string, format string, args ...any) {
		rep.Findings = append(rep.Findings, Finding{Area: area, Severity: sev, Message: fmt.Sprintf(format, args...), Fix: fix})
	}
	checkSPF(ctx, res, domain, setup.IPs, add)
	checkDKIM(ctx, res, domain, setup.DKIM, add)
	checkDMARC(ctx, res, domain, add)
	checkMX(ctx, res, domain, add)
	checkMTASTS(ctx, res, domain, add)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return rep, nil
}

type addFunc func(area string, sev Severity, fix string, format string, args ...any)

func txtRecords(ctx context.Context, res *resolver.Resolver, name string) ([]string, error) {
	r, err := res.LookupTXT(ctx, name)
	if resolver.IsNotFound(err) {
		return nil, nil
	}
	return r.Records, err
}

// suggestedSPF builds a record authorizing ips, keeping the terms of an
// existing record when there is one.
func suggestedSPF(existing string, ips []netip.Addr) string {
	var terms []string
	all := "-all"
	if existing != "" {
		for _, t := range strings.Fields(existing)[1:] {
			if strings.HasSuffix(strings.ToLower(t), "all") && len(t) <= 4 {
				all = t
				continue
			}
			terms = append(terms, t)
		}
	}
	have := map[string]bool{}
	for _, t := range terms {
		have[strings.ToLower(t)] = true
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		t := "ip4:" + ip.String()
		if ip.Is6() {
			t = "ip6:" + ip.String()
		}
		if !have[t] {
			terms = append(terms, t)
			have[t] = true
		}
	}
	return strings.Join(append(append([]string{"v=spf1"}, terms...), all), " ")
}

func checkSPF(ctx context.Context, res *resolver.Resolver, domain string, ips []netip.Addr, add addFunc) {
	recs, err := txtRecords(ctx, res, domain)
	if err != nil {
		add("spf", Problem, "", "cannot read the TXT records of %s: %v", domain, err)
		return
	}
	var spfRecs []string
	for _, r := range recs {
		if r == "v=spf1" || strings.HasPrefix(strings.ToLower(r), "v=spf1 ") {
			spfRecs = append(spfRecs, r)
		}
	}
	switch len(spfRecs) {
	case 0:
		add("spf", Problem, dkim.ZoneTXT(domain+".", suggestedSPF("", ips)), "%s publishes no SPF record, so receivers cannot tell which servers may send its mail", domain)
		return
	case 1:
		add("spf", OK, "", "SPF record: %s", spfRecs[0])
	default:
		add("spf", Problem, dkim.ZoneTXT(domain+".", suggestedSPF(spfRecs[0], ips)), "%s publishes %d SPF records; receivers treat that as an error (permerror). Keep exactly one", domain, len(spfRecs))
		return
	}
	if len(ips) == 0 {
		add("spf", Warning, "", "no sending IPs given, so SPF coverage was not checked")
		return
	}
	checker := &spf.Checker{Resolver: res}
	var missing []netip.Addr
	for _, ip := range ips {
		r := checker.CheckHost(ctx, ip, domain, "postmaster@"+domain, domain)
		switch {
		case r.Status == spf.Pass:
			add("spf", OK, "", "%s is authorized by SPF (%s, %d DNS lookups of 10)", ip, r.Mechanism, r.Lookups)
		case errors.Is(r.Err, spf.ErrLookupLimit) || errors.Is(r.Err, spf.ErrVoidLookupLimit):
			add("spf", Problem, "", "the SPF record needs more DNS lookups than RFC 7208 allows (10, and 2 void lookups): every check ends in permerror. Replace include: chains with ip4:/ip6: ranges (%v)", r.Err)
			return
		case r.Status == spf.TempError:
			add("spf", Problem, "", "SPF check for %s failed temporarily: %v", ip, r.Err)
		case r.Status == spf.PermError:
			add("spf", Problem, "", "the SPF record is broken (permerror): %v", r.Err)
			return
		default:
			add("spf", Problem, "", "%s is not authorized by SPF (result %s); mail from it fails SPF", ip, r.Status)
			missing = append(missing, ip)
		}
	}
	if len(missing) > 0 {
		add("spf", Problem, dkim.ZoneTXT(domain+".", suggestedSPF(spfRecs[0], missing)), "add the missing sending IPs to the SPF record")
	}
}

func checkDKIM(ctx context.Context, res *resolver.Resolver, domain string, keys []DomainKey, add addFunc) {
	if len(keys) == 0 {
		add("dkim", Warning, "", "no DKIM selectors given, so DKIM was not checked; unsigned mail cannot pass DMARC when forwarded")
		return
	}
	for _, k := range keys {
		name := k.Selector + "._domainkey." + domain
		fix, ferr := dkim.KeyTXT(k.Selector, domain, k.Key.Public())
		if ferr != nil {
			add("dkim", Problem, "", "selector %s: unusable private key: %v", k.Selector, ferr)
			continue
		}
		if rk, ok := k.Key.Public().(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
			add("dkim", Warning, "", "selector %s: RSA key of %d bits; use 2048 bits or more (RFC 8301)", k.Selector, rk.N.BitLen())
		}
		recs, err := txtRecords(ctx, res, name)
		if err != nil {
			add("dkim", Problem, "", "selector %s: cannot read %s: %v", k.Selector, name, err)
			continue
		}
		keyRecs := recs
		switch len(keyRecs) {
		case 0:
			add("dkim", Problem, fix, "selector %s: no key published at %s, so every signature fails (permerror)", k.Selector, name)
			continue
		case 1:
		default:
			add("dkim", Problem, fix, "selector %s: %d TXT records at %s; verifiers need exactly one", k.Selector, len(keyRecs), name)
			continue
		}
		rec, err := dkim.ParseKeyRecord(keyRecs[0])
		switch {
		case err != nil:
			add("dkim", Problem, fix, "selector %s: the key record does not parse: %v", k.Selector, err)
		case rec.Revoked:
			add("dkim", Problem, fix, "selector %s: the key is revoked (empty p=)", k.Selector)
		case !rec.Matches(k.Key):
			add("dkim", Problem, fix, "selector %s: the published key does not match the private key; signatures will fail", k.Selector)
		default:
			msg := fmt.Sprintf("selector %s: %s key published and matching", k.Selector, rec.KeyType)
			if len(rec.Flags) > 0 && strings.Contains(strings.Join(rec.Flags, ":"), "y") {
				add("dkim", Warning, "", "%s, but marked as testing (t=y): receivers may ignore failures", msg)
			} else {
				add("dkim", OK, "", "%s", msg)
			}
		}
	}
}

func checkDMARC(ctx context.Context, res *resolver.Resolver, domain string, add addFunc) {
	suggest := dkim.ZoneTXT("_dmarc."+domain+".", "v=DMARC1; p=none; rua=mailto:dmarc-reports@"+domain)
	ev, err := dmarc.New(dmarc.Config{Resolver: res})
	if err != nil {
		add("dmarc", Problem, "", "%v", err)
		return
	}
	w, err := ev.TreeWalk(ctx, domain)
	if err != nil {
		add("dmarc", Problem, "", "DMARC lookup failed: %v", err)
		return
	}
	f, ok := w.PolicyRecord()
	if !ok {
		if len(w.Discarded) > 0 {
			add("dmarc", Problem, suggest, "several DMARC records at _dmarc.%s: all are ignored; keep one", w.Discarded[0])
			return
		}
		add("dmarc", Problem, suggest, "no DMARC record for %s: receivers apply no policy and send no reports. Start with p=none and reports, then move to quarantine or reject", domain)
		return
	}
	if f.Err != nil {
		add("dmarc", Problem, suggest, "the DMARC record at _dmarc.%s is invalid: %v", f.Domain, f.Err)
		return
	}
	rec := f.Record
	where := "published at _dmarc." + f.Domain
	pol := rec.Policy
	if f.Domain != domain {
		where = "inherited from _dmarc." + f.Domain
		if rec.SubdomainPolicy != "" {
			pol = rec.SubdomainPolicy
		}
	}
	switch {
	case pol == dmarc.PolicyNone:
		add("dmarc", Warning, "", "DMARC record %s: policy none (monitoring only; forged mail is not blocked): %s", where, rec)
	case rec.Testing:
		add("dmarc", Warning, "", "DMARC record %s: policy %s in testing mode (t=y lowers it one step): %s", where, pol, rec)
	default:
		add("dmarc", OK, "", "DMARC record %s: policy %s: %s", where, pol, rec)
	}
	if len(rec.RUA) == 0 {
		add("dmarc", Warning, "", "the DMARC record has no rua= address, so you receive no aggregate reports")
	}
	if len(rec.Ignored) > 0 {
		add("dmarc", Warning, "", "the DMARC record has ignored tags or values: %s", strings.Join(rec.Ignored, ", "))
	}
}

func checkMX(ctx context.Context, res *resolver.Resolver, domain string, add addFunc) {
	r, err := res.LookupMX(ctx, domain)
	switch {
	case resolver.IsNotFound(err):
		add("mx", Warning, "", "%s has no MX record: bounces and replies go to its address record (implicit MX), if it has one", domain)
		return
	case err != nil:
		add("mx", Problem, "", "cannot read the MX records of %s: %v", domain, err)
		return
	}
	for _, mx := range r.Records {
		if mx.Host == "" {
			add("mx", Problem, "", "%s publishes a null MX (RFC 7505): it accepts no mail, so bounces and complaints about its mail are lost", domain)
			return
		}
	}
	for _, mx := range r.Records {
		_, err4 := res.LookupIP(ctx, "ip4", mx.Host)
		_, err6 := res.LookupIP(ctx, "ip6", mx.Host)
		if err4 != nil && err6 != nil {
			add("mx", Problem, "", "MX host %s (preference %d) has no address record: mail to %s cannot be delivered there", mx.Host, mx.Pref, domain)
		} else {
			add("mx", OK, "", "MX host %s (preference %d) resolves", mx.Host, mx.Pref)
		}
	}
}

var stsID = regexp.MustCompile(`^[A-Za-z0-9]{1,32}$`)

// checkMTASTS checks the _mta-sts TXT record (RFC 8461 §3.1).
func checkMTASTS(ctx context.Context, res *resolver.Resolver, domain string, add addFunc) {
	name := "_mta-sts." + domain
	recs, err := txtRecords(ctx, res, name)
	if err != nil {
		add("mta-sts", Problem, "", "cannot read %s: %v", name, err)
		return
	}
	var sts []string
	for _, r := range recs {
		if strings.HasPrefix(r, "v=STSv1") {
			sts = append(sts, r)
		}
	}
	switch len(sts) {
	case 0:
		add("mta-sts", Warning, "", "no MTA-STS record at %s (optional: it makes senders require TLS to your MX)", name)
		return
	case 1:
	default:
		add("mta-sts", Problem, "", "%d MTA-STS records at %s; senders ignore the policy unless there is exactly one", len(sts), name)
		return
	}
	valid := false
	for _, part := range strings.Split(sts[0], ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		if k == "id" && stsID.MatchString(v) {
			valid = true
		}
	}
	if !strings.HasPrefix(sts[0], "v=STSv1;") || !valid {
		add("mta-sts", Problem, dkim.ZoneTXT(name+".", "v=STSv1; id=20260101000000"), "the MTA-STS record %q is malformed: it needs \"v=STSv1;\" first and id= of 1 to 32 letters or digits (RFC 8461 §3.1); change the id whenever the policy file changes", sts[0])
		return
	}
	add("mta-sts", OK, "", "MTA-STS record: %s (the policy at https://mta-sts.%s/.well-known/mta-sts.txt was not fetched)", sts[0], domain)
}
