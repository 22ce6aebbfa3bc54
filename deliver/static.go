package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/emersion/go-sasl"
)

// TLSMode is the TLS policy of a static route.
type TLSMode int

const (
	// TLSOpportunistic (the zero value) uses STARTTLS when the server
	// offers it, without checking the certificate, and falls back to
	// plaintext when it is not offered or the handshake fails (RFC 7435).
	TLSOpportunistic TLSMode = iota
	// TLSNone never uses STARTTLS.
	TLSNone
	// TLSRequired requires STARTTLS with a certificate valid for the
	// route's host name under ClientConfig.RootCAs (or the system roots);
	// otherwise the attempt fails with a transient 4.7.x reply.
	TLSRequired
	// TLSImplicit speaks TLS from the first byte ("submissions", port
	// 465, RFC 8314), with the certificate checked as for TLSRequired.
	TLSImplicit
)

// StaticRoute sends the mail of some recipient domains to one fixed host.
type StaticRoute struct {
	// Domain is the recipient domain this route is for: an exact domain
	// ("example.com"), a parent domain with a leading dot (".example.com"
	// matches every subdomain), or "*" for everything else.
	// Case-insensitive.
	Domain string

	// Host is "host:port" (port 25 when omitted). An IP literal host is
	// used without DNS; a name is resolved with StaticConfig.LookupHost.
	Host string

	// TLS is the TLS policy; the zero value is opportunistic.
	TLS TLSMode
	// InsecureSkipVerify makes TLSRequired and TLSImplicit accept any
	// certificate (encryption without authentication).
	InsecureSkipVerify bool

	// Username and Password, when Username is set, authenticate with SMTP
	// AUTH PLAIN (LOGIN when the server offers only that). AUTH is only
	// done over TLS unless the route's TLS is TLSNone (for loopback test
	// setups); with opportunistic TLS a server that offers no STARTTLS
	// is refused rather than sent the password in clear.
	Username, Password string

	// LMTP speaks LMTP (RFC 2033) instead of SMTP: one reply per accepted
	// recipient after the data.
	LMTP bool
}

// StaticConfig configures a Static transport.
type StaticConfig struct {
	ClientConfig

	// Routes are tried in this order of precedence: exact domain, then the
	// longest matching ".parent" domain, then "*".
	Routes []StaticRoute

	// Fallback receives the recipients no route matches (for example an
	// MX transport). Nil: they fail with a permanent 5.4.4 reply.
	Fallback Transport

	// LookupHost resolves route host names. Nil: net.DefaultResolver.
	LookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Static is a transport that sends to fixed hosts (smarthosts, relays,
// LMTP servers): one transaction per route for all the message's
// recipients on it, over pooled connections. It is safe for concurrent
// use. Close it to close idle connections.
type Static struct {
	cfg    StaticConfig
	e      *engine
	routes []StaticRoute
}

// NewStatic returns a Static transport. It reports an error for a route
// without host or with a bad "host:port".
func NewStatic(cfg StaticConfig) (*Static, error) {
	for i, r := range cfg.Routes {
		if r.Domain == "" {
			return nil, fmt.Errorf("deliver: static route %d has no domain", i)
		}
		if _, _, err := splitHostPort(r.Host, 25); err != nil || r.Host == "" {
			return nil, fmt.Errorf("deliver: static route %d: bad host %q", i, r.Host)
		}
	}
	return &Static{cfg: cfg, e: newEngine(cfg.ClientConfig), routes: cfg.Routes}, nil
}

// Close closes idle pooled connections. Deliveries still running finish;
// their connections are then closed instead of pooled.
func (s *Static) Close() error {
	s.e.p.close()
	return nil
}

// route returns the index of the route for domain, or -1.
func (s *Static) route(domain string) int {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	best, bestLen, star := -1, -1, -1
	for i, r := range s.routes {
		d := strings.ToLower(r.Domain)
		switch {
		case d == "*":
			if star < 0 {
				star = i
			}
		case d == domain:
			return i
		case strings.HasPrefix(d, ".") && strings.HasSuffix(domain, d) && len(d) > bestLen:
			best, bestLen = i, len(d)
		}
	}
	if best >= 0 {
		return best
	}
	return star
}

// Deliver sends env to the routes of its recipients. It returns one
// result per recipient, in order.
func (s *Static) Deliver(ctx context.Context, env *Envelope, body Body) []Result {
	res := make([]Result, len(env.Recipients))
	// Group recipients by route, keeping order within each group.
	var groups [][]int
	var groupRoute []int
	var unrouted []int
	for i := range env.Recipients {
		ri := s.route(Domain(env.Recipients[i].Address))
		if ri < 0 {
			unrouted = append(unrouted, i)
			continue
		}
		found := false
		for g, gr := range groupRoute {
			if gr == ri {
				groups[g] = append(groups[g], i)
				found = true
				break
			}
		}
		if !found {
			groupRoute = append(groupRoute, ri)
			groups = append(groups, []int{i})
		}
	}
	for g, idx := range groups {
		s.deliverRoute(ctx, &s.routes[groupRoute[g]], env, idx, body, res)
	}
	if len(unrouted) > 0 {
		s.unrouted(ctx, env, unrouted, body, res)
	}
	return res
}

func (s *Static) unrouted(ctx context.Context, env *Envelope, idx []int, body Body, res []Result) {
	if s.cfg.Fallback == nil {
		now := s.e.now()
		reply := Reply(554, 5, 4, 4, "no route to the recipient's domain")
		for _, i := range idx {
			res[i] = Result{Recipient: env.Recipients[i].Address, Reply: reply, Local: true,
				Err: &LocalError{Reply: reply, Err: ErrNoRoute}, Attempted: now}
		}
		return
	}
	sub := *env
	sub.Recipients = make([]Recipient, len(idx))
	for k, i := range idx {
		sub.Recipients[k] = env.Recipients[i]
	}
	out := s.cfg.Fallback.Deliver(ctx, &sub, body)
	if err := Check(&sub, out); err != nil {
		now := s.e.now()
		reply := Reply(451, 4, 3, 0, "fallback transport failed")
		for _, i := range idx {
			res[i] = Result{Recipient: env.Recipients[i].Address, Reply: reply, Local: true,
				Err: &LocalError{Reply: reply, Err: err}, Attempted: now}
		}
		return
	}
	for k, i := range idx {
		res[i] = out[k]
	}
}

func (s *Static) deliverRoute(ctx context.Context, r *StaticRoute, env *Envelope, idx []int, body Body, res []Result) {
	host, port, _ := splitHostPort(r.Host, 25)
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		lookup := s.cfg.LookupHost
		if lookup == nil {
			lookup = func(ctx context.Context, h string) ([]netip.Addr, error) {
				return net.DefaultResolver.LookupNetIP(ctx, "ip", h)
			}
		}
		addrs, err = lookup(ctx, host)
		if err != nil || len(addrs) == 0 {
			if err == nil {
				err = errors.New("no addresses")
			}
			reply := Reply(451, 4, 4, 3, fmt.Sprintf("cannot resolve relay host %s: %v", host, err))
			now := s.e.now()
			for _, i := range idx {
				res[i] = Result{Recipient: env.Recipients[i].Address, Reply: reply, Local: true,
					Err: &LocalError{Reply: reply, Err: fmt.Errorf("%w: %w", ErrDNS, err)}, Attempted: now,
					Route: Route{Host: host}}
			}
			return
		}
	}
	pol := tlsPolicy{name: "opportunistic", mode: tlsOpportunistic, roots: s.cfg.RootCAs}
	switch r.TLS {
	case TLSNone:
		pol = tlsPolicy{name: "none", mode: tlsNone}
	case TLSRequired, TLSImplicit:
		pol = tlsPolicy{name: "tls", mode: tlsRequired, roots: s.cfg.RootCAs}
		if r.TLS == TLSImplicit {
			pol.mode = tlsImplicit
		}
		if !r.InsecureSkipVerify {
			roots := s.cfg.RootCAs
			pol.verify = func(cs tls.ConnectionState) error { return verifyPKIX(cs, host, roots) }
		}
	}
	targets := make([]target, 0, len(addrs))
	for _, a := range addrs {
		src, ehloName := s.e.source(env, a)
		t := target{
			host:   host,
			addr:   netip.AddrPortFrom(a.Unmap(), port),
			site:   strings.ToLower(host),
			src:    src,
			ehlo:   ehloName,
			policy: pol,
			lmtp:   r.LMTP,
			self:   s.e.self,
		}
		if r.Username != "" {
			user, pass, needTLS := r.Username, r.Password, r.TLS != TLSNone
			t.authID = user
			t.auth = func(mechs string) sasl.Client {
				for _, m := range strings.Fields(mechs) {
					if strings.EqualFold(m, sasl.Plain) {
						return sasl.NewPlainClient("", user, pass)
					}
				}
				for _, m := range strings.Fields(mechs) {
					if strings.EqualFold(m, sasl.Login) {
						return sasl.NewLoginClient(user, pass)
					}
				}
				return sasl.NewPlainClient("", user, pass)
			}
			if needTLS && pol.mode == tlsOpportunistic {
				// Never send a password in clear because STARTTLS was
				// missing: require it for authenticated routes.
				t.policy.mode = tlsRequired
				t.policy.verify = nil
			}
		}
		targets = append(targets, t)
	}
	s.e.run(ctx, targets, env, idx, body, res, func(ti *TLSInfo) bool { return ti != nil && ti.Verified })
}
