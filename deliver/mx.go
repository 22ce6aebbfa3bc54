package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mta/deliver/mtasts"
	"github.com/mtakit/mta/resolver"
)

// Resolver is the DNS that MX delivery needs. *resolver.Resolver
// satisfies it.
type Resolver interface {
	LookupMX(ctx context.Context, name string) (resolver.Result[resolver.MX], error)
	LookupIP(ctx context.Context, network, name string) (resolver.Result[netip.Addr], error)
	LookupTLSA(ctx context.Context, name string) (resolver.Result[resolver.TLSA], error)
	LookupTXT(ctx context.Context, name string) (resolver.Result[string], error)
}

var _ Resolver = (*resolver.Resolver)(nil)

// MTASTS is the MTA-STS policy source MX delivery consults; *mtasts.Client
// satisfies it. Get returns nil without error for a domain without a
// policy.
type MTASTS interface {
	Get(ctx context.Context, domain string) (*mtasts.Policy, error)
}

var _ MTASTS = (*mtasts.Client)(nil)

// MXConfig configures an MX transport.
type MXConfig struct {
	ClientConfig

	// Resolver looks up MX, address, TLSA and TXT records. Required.
	Resolver Resolver

	// Port is the SMTP port of MX hosts. Default 25; tests use a loopback
	// port.
	Port uint16

	// Network selects address families: "ip" (default, both), "ip4" or
	// "ip6".
	Network string

	// MaxHosts is the number of MX hosts tried per attempt, and MaxAddrs
	// the number of addresses over all of them. Defaults 5 and 10 (as
	// Postfix's smtp_mx_address_limit keeps an attempt bounded).
	MaxHosts int
	MaxAddrs int

	// Shuffle reorders MX hosts of equal preference (RFC 5321 §5.1).
	// Nil: math/rand/v2.Shuffle. Tests pass a deterministic one.
	Shuffle func(n int, swap func(i, j int))

	// DisableDANE turns DANE (RFC 7672) off. By default, TLSA records of
	// MX hosts whose MX answer and TLSA answer are both DNSSEC-validated
	// (the resolver's AD bit) are enforced.
	DisableDANE bool

	// STS, when set, applies MTA-STS (RFC 8461) policies: use
	// mtasts.New. Nil: MTA-STS is not used.
	STS MTASTS
}

// MX is the transport that delivers over SMTP to the MX hosts of each
// recipient domain (RFC 5321 §5.1), with the TLS policy the domain asks
// for: DANE, else MTA-STS, else opportunistic STARTTLS. One transaction
// carries all the recipients of a domain. It is safe for concurrent use;
// Close it to close idle connections.
//
// # Outcomes
//
//   - NXDOMAIN for the recipient domain: permanent 550 5.1.2.
//   - Null MX (RFC 7505): permanent 556 5.1.10.
//   - No MX and no address: permanent 554 5.4.4.
//   - SERVFAIL or timeout: transient 451 4.4.3.
//   - Our own host name among the MX hosts: less preferred hosts are
//     dropped (§5.1); if none is left, or the hosts resolve only to our
//     addresses, or the peer greets with our name: permanent 554 5.4.6.
//   - Connection failures, 4xx/5xx greetings and TLS handshake failures
//     where the policy allows move on to the next address and host.
//
// # Site
//
// Route.Site is the set of MX host names, lower case, sorted and joined
// with commas (the domain itself for an implicit MX). Domains hosted by
// one provider with the same MX set share a site, which is what
// per-destination limits need; it needs no public-suffix list.
type MX struct {
	cfg MXConfig
	e   *engine
}

// ErrNoResolver is returned by NewMX without a Resolver.
var ErrNoResolver = errors.New("deliver: MX transport needs a Resolver")

// NewMX returns an MX transport.
func NewMX(cfg MXConfig) (*MX, error) {
	if cfg.Resolver == nil {
		return nil, ErrNoResolver
	}
	if cfg.Port == 0 {
		cfg.Port = 25
	}
	if cfg.Network == "" {
		cfg.Network = "ip"
	}
	if cfg.MaxHosts <= 0 {
		cfg.MaxHosts = 5
	}
	if cfg.MaxAddrs <= 0 {
		cfg.MaxAddrs = 10
	}
	if cfg.Shuffle == nil {
		cfg.Shuffle = rand.Shuffle
	}
	return &MX{cfg: cfg, e: newEngine(cfg.ClientConfig)}, nil
}

// Close closes idle pooled connections.
func (m *MX) Close() error {
	m.e.p.close()
	return nil
}

// Deliver sends env to the MX hosts of its recipients' domains, one
// transaction per domain. It returns one result per recipient, in order.
func (m *MX) Deliver(ctx context.Context, env *Envelope, body Body) []Result {
	res := make([]Result, len(env.Recipients))
	var domains []string
	groups := map[string][]int{}
	for i := range env.Recipients {
		d := strings.TrimSuffix(strings.ToLower(Domain(env.Recipients[i].Address)), ".")
		if _, ok := groups[d]; !ok {
			domains = append(domains, d)
		}
		groups[d] = append(groups[d], i)
	}
	for _, d := range domains {
		m.deliverDomain(ctx, d, env, groups[d], body, res)
	}
	return res
}

// routeError is a failure to find where to send.
type routeError struct {
	reply *smtp.SMTPError
	err   error
	route Route
}

func (m *MX) deliverDomain(ctx context.Context, domain string, env *Envelope, idx []int, body Body, res []Result) {
	started := m.e.now()
	targets, rerr := m.targets(ctx, domain, env)
	if rerr != nil {
		now := m.e.now()
		for _, i := range idx {
			res[i] = Result{
				Recipient: env.Recipients[i].Address,
				Reply:     rerr.reply,
				Local:     true,
				Err:       &LocalError{Reply: rerr.reply, Err: rerr.err},
				Route:     rerr.route,
				Attempted: started,
				Duration:  now.Sub(started),
			}
		}
		return
	}
	m.e.run(ctx, targets, env, idx, body, res, func(ti *TLSInfo) bool { return ti != nil && ti.Verified })
}

type mxHost struct {
	name      string
	authentic bool
}

// targets resolves domain into the addresses to try, with their policies.
func (m *MX) targets(ctx context.Context, domain string, env *Envelope) ([]target, *routeError) {
	dnsFail := func(what string, err error) *routeError {
		if ctx.Err() != nil {
			return &routeError{reply: Reply(451, 4, 4, 2, "delivery attempt cancelled"), err: fmt.Errorf("%w: %w", errCancelled, ctx.Err())}
		}
		return &routeError{reply: Reply(451, 4, 4, 3, fmt.Sprintf("DNS lookup of %s failed: %v", what, err)), err: fmt.Errorf("%w: %w", ErrDNS, err)}
	}
	// An address literal, "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3).
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		lit := strings.TrimPrefix(strings.TrimSuffix(domain[1:], "]"), "ipv6:")
		a, err := netip.ParseAddr(lit)
		if err != nil {
			return nil, &routeError{reply: Reply(550, 5, 1, 2, "bad address literal "+domain), err: fmt.Errorf("%w: %w", ErrNoSuchHost, err)}
		}
		if m.e.isSelfAddr(a) {
			return nil, &routeError{reply: Reply(554, 5, 4, 6, "mail for "+domain+" loops back to myself"), err: ErrLoop}
		}
		src, ehloName := m.e.source(env, a)
		return []target{{host: a.String(), addr: netip.AddrPortFrom(a.Unmap(), m.cfg.Port), site: domain, src: src, ehlo: ehloName,
			policy: tlsPolicy{name: "opportunistic", roots: m.cfg.RootCAs}, self: m.e.self}}, nil
	}

	mxr, err := m.cfg.Resolver.LookupMX(ctx, domain)
	var hosts []mxHost
	implicit := false
	switch {
	case err == nil:
		var real []resolver.MX
		for _, r := range mxr.Records {
			if r.Host != "" && r.Host != "." {
				real = append(real, r)
			}
		}
		if len(real) == 0 {
			// RFC 7505 §4.1: a domain that publishes a null MX accepts no mail.
			return nil, &routeError{reply: Reply(556, 5, 1, 10, "recipient domain "+domain+" accepts no mail (null MX)"), err: ErrNullMX}
		}
		// Equal preferences in random order (RFC 5321 §5.1).
		for i := 0; i < len(real); {
			j := i
			for j < len(real) && real[j].Pref == real[i].Pref {
				j++
			}
			part := real[i:j]
			m.cfg.Shuffle(len(part), func(a, b int) { part[a], part[b] = part[b], part[a] })
			i = j
		}
		// RFC 5321 §5.1: if we are an MX host, only more preferred hosts
		// may be used.
		for k, r := range real {
			if isSelf(r.Host, m.e.self) {
				cut := k
				for cut > 0 && real[cut-1].Pref == r.Pref {
					cut--
				}
				real = real[:cut]
				if len(real) == 0 {
					return nil, &routeError{reply: Reply(554, 5, 4, 6, "mail for "+domain+" loops back to myself (we are its best MX)"), err: ErrLoop}
				}
				break
			}
		}
		for _, r := range real {
			hosts = append(hosts, mxHost{name: r.Host, authentic: mxr.Authentic})
		}
	case resolver.IsNXDomain(err):
		return nil, &routeError{reply: Reply(550, 5, 1, 2, "recipient domain "+domain+" does not exist"), err: fmt.Errorf("%w: %w", ErrNoSuchHost, err)}
	case resolver.IsNoData(err):
		// RFC 5321 §5.1: no MX, the domain itself is the implicit MX.
		implicit = true
		hosts = []mxHost{{name: domain}}
	case errors.Is(err, resolver.ErrInvalidName):
		return nil, &routeError{reply: Reply(550, 5, 1, 2, "bad recipient domain "+CleanText(domain, 255)), err: fmt.Errorf("%w: %w", ErrNoSuchHost, err)}
	default:
		return nil, dnsFail("MX "+domain, err)
	}
	site := domain
	if !implicit {
		names := make([]string, 0, len(hosts))
		for _, h := range hosts {
			names = append(names, h.name)
		}
		slices.Sort(names)
		site = strings.Join(slices.Compact(names), ",")
	}
	if len(hosts) > m.cfg.MaxHosts {
		hosts = hosts[:m.cfg.MaxHosts]
	}

	// MTA-STS (RFC 8461) applies unless the message opted out; DANE, when
	// present for a host, takes precedence (RFC 8461 §2).
	// A policy that cannot be fetched (and is not cached) is as no
	// policy (RFC 8461 §5).
	var sts *mtasts.Policy
	var stsErr error
	if m.cfg.STS != nil && !env.TLSOptional {
		sts, stsErr = m.cfg.STS.Get(ctx, domain)
	}

	var targets []target
	var lastErr error
	var tempFail, selfOnly bool
	var lastRoute Route
	for _, h := range hosts {
		if len(targets) >= m.cfg.MaxAddrs {
			break
		}
		ipr, err := m.cfg.Resolver.LookupIP(ctx, m.cfg.Network, h.name)
		if err != nil {
			lastErr = err
			if !resolver.IsNotFound(err) {
				tempFail = true
			}
			continue
		}
		if implicit {
			h.authentic = ipr.Authentic
		}
		pol, perr := m.policy(ctx, h, sts, env)
		if sts == nil && stsErr != nil && pol.name == "opportunistic" {
			pol.failure = "sts-policy-fetch-error"
		}
		lastRoute = Route{Site: site, Host: h.name, TLSPolicy: pol.name, TLSFailure: pol.failure}
		if perr != nil {
			lastErr = perr
			lastRoute.TLSFailure = perr.kind
			tempFail = true
			continue
		}
		for _, a := range ipr.Records {
			if m.e.isSelfAddr(a) {
				selfOnly = true
				continue
			}
			if len(targets) >= m.cfg.MaxAddrs {
				break
			}
			src, ehloName := m.e.source(env, a)
			targets = append(targets, target{
				host:   h.name,
				addr:   netip.AddrPortFrom(a.Unmap(), m.cfg.Port),
				site:   site,
				src:    src,
				ehlo:   ehloName,
				policy: pol,
				self:   m.e.self,
			})
		}
	}
	if len(targets) > 0 {
		return targets, nil
	}
	var pe *policyError
	switch {
	case errors.As(lastErr, &pe):
		return nil, &routeError{reply: Reply(451, 4, 7, 5, pe.Error()), err: fmt.Errorf("%w: %w", ErrPolicy, pe), route: lastRoute}
	case tempFail:
		return nil, dnsFail("addresses of the MX hosts of "+domain, lastErr)
	case selfOnly:
		return nil, &routeError{reply: Reply(554, 5, 4, 6, "mail for "+domain+" loops back to myself (MX hosts have our addresses)"), err: ErrLoop}
	default:
		return nil, &routeError{reply: Reply(554, 5, 4, 4, "no address for any MX host of "+domain), err: fmt.Errorf("%w: %w", ErrNoRoute, lastErr)}
	}
}

// policyError is a TLS policy that rules a host out before connecting.
type policyError struct {
	msg  string
	kind string // RFC 8460 result type
}

func (e *policyError) Error() string { return e.msg }

// policy decides the TLS policy for one MX host.
func (m *MX) policy(ctx context.Context, h mxHost, sts *mtasts.Policy, env *Envelope) (tlsPolicy, *policyError) {
	opportunistic := tlsPolicy{name: "opportunistic", roots: m.cfg.RootCAs}
	if env.TLSOptional {
		return opportunistic, nil
	}
	// DANE (RFC 7672 §2.2): only when the MX host name came from a
	// validated answer and the TLSA answer is validated too.
	if !m.cfg.DisableDANE && h.authentic {
		tr, err := m.cfg.Resolver.LookupTLSA(ctx, "_25._tcp."+h.name)
		switch {
		case err == nil && tr.Authentic && len(tr.Records) > 0:
			recs := make([]daneRecord, len(tr.Records))
			for i, r := range tr.Records {
				recs[i] = daneRecord{Usage: r.Usage, Selector: r.Selector, MatchingType: r.MatchingType, Data: r.Data}
			}
			usable := usableTLSA(recs)
			p := tlsPolicy{name: "dane", mode: tlsRequired, minVersion: tls.VersionTLS12}
			if len(usable) > 0 {
				p.verify = daneVerifier(usable, []string{h.name})
			}
			// With only unusable records TLS is still mandatory, but
			// unauthenticated (RFC 7672 §2.2).
			return p, nil
		case err != nil && !resolver.IsNotFound(err):
			// §2.2.1: a failed TLSA lookup in a signed zone must not be
			// taken as "no TLSA": the host is not used.
			return tlsPolicy{name: "dane"}, &policyError{msg: fmt.Sprintf("TLSA lookup for %s failed: %v", h.name, err), kind: "tlsa-invalid"}
		}
	}
	if sts != nil {
		switch sts.Mode {
		case mtasts.ModeEnforce:
			if !sts.Match(h.name) {
				return tlsPolicy{name: "mta-sts"}, &policyError{msg: fmt.Sprintf("MX host %s is not allowed by the MTA-STS policy", h.name), kind: "validation-failure"}
			}
			host, roots := h.name, m.cfg.RootCAs
			return tlsPolicy{name: "mta-sts", mode: tlsRequired, roots: roots,
				verify: func(cs tls.ConnectionState) error { return verifyPKIX(cs, host, roots) }}, nil
		case mtasts.ModeTesting:
			host, roots := h.name, m.cfg.RootCAs
			p := tlsPolicy{name: "mta-sts-testing", roots: roots, reportFailures: true,
				verify: func(cs tls.ConnectionState) error { return verifyPKIX(cs, host, roots) }}
			return p, nil
		}
	}
	return opportunistic, nil
}
