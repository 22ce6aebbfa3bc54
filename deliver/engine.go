package deliver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// ClientConfig is what every SMTP transport of this package (MX, Static,
// LMTP) shares: who we are, where we send from, timeouts and connection
// reuse. The zero value is usable.
type ClientConfig struct {
	// Hostname is the EHLO name and our own name for loop detection.
	// Default: os.Hostname(), or "localhost".
	Hostname string

	// SourcePools are the source-address pools, selected by
	// Envelope.SourcePool. Envelopes whose SourcePool is empty or unknown
	// use the pool named "" when there is one, else the system's choice of
	// source address and Hostname.
	SourcePools map[string]SourcePool

	// LocalAddrs are addresses of this MTA other than the source pools'.
	// An MX host resolving only to our own addresses is a mail loop
	// (RFC 5321 §5.1).
	LocalAddrs []netip.Addr

	// RootCAs verify certificates for PKIX (static routes with TLS
	// required, MTA-STS, REQUIRETLS). Nil: the system roots.
	RootCAs *x509.CertPool

	// Timeouts of the SMTP phases; zero fields take RFC 5321 defaults.
	Timeouts Timeouts

	// Pool configures connection reuse and per-host concurrency.
	Pool PoolConfig

	// Dial opens a TCP connection from src (zero: any) to dst. Nil: a
	// net.Dialer bound to src.
	Dial func(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error)

	// MaxReplyBytes bounds the bytes a peer may send in one reply (and
	// a TLS handshake). Default 64 KiB.
	MaxReplyBytes int64

	// Now is the clock. Nil: time.Now.
	Now func() time.Time

	// Logger receives one line per session attempt. Nil: discard.
	Logger *slog.Logger
}

// SourcePool is a set of local addresses that connections are bound to,
// used in turn, with the EHLO name that goes with them (it should match
// their PTR records).
type SourcePool struct {
	Addrs    []netip.Addr
	Hostname string // default: ClientConfig.Hostname
}

// engine is the shared SMTP client machinery.
type engine struct {
	cfg  ClientConfig
	d    *dialer
	p    *pool
	now  func() time.Time
	log  *slog.Logger
	self []string
	rr   atomic.Uint64
	mine map[netip.Addr]bool
}

func newEngine(cfg ClientConfig) *engine {
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
		if cfg.Hostname == "" {
			cfg.Hostname = "localhost"
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Timeouts = cfg.Timeouts.withDefaults()
	e := &engine{
		cfg:  cfg,
		now:  cfg.Now,
		log:  cfg.Logger,
		mine: make(map[netip.Addr]bool),
		self: []string{cfg.Hostname},
	}
	for _, a := range cfg.LocalAddrs {
		e.mine[a.Unmap()] = true
	}
	for _, sp := range cfg.SourcePools {
		if sp.Hostname != "" {
			e.self = append(e.self, sp.Hostname)
		}
		for _, a := range sp.Addrs {
			e.mine[a.Unmap()] = true
		}
	}
	e.d = &dialer{dial: cfg.Dial, timeouts: cfg.Timeouts, maxReply: cfg.MaxReplyBytes, now: cfg.Now}
	e.p = newPool(cfg.Pool, cfg.Timeouts, cfg.Now)
	return e
}

// source picks the source address and EHLO name for env and a destination.
func (e *engine) source(env *Envelope, dst netip.Addr) (netip.Addr, string) {
	sp, ok := e.cfg.SourcePools[env.SourcePool]
	if !ok {
		sp, ok = e.cfg.SourcePools[""]
	}
	if !ok {
		return netip.Addr{}, e.cfg.Hostname
	}
	name := sp.Hostname
	if name == "" {
		name = e.cfg.Hostname
	}
	var fit []netip.Addr
	for _, a := range sp.Addrs {
		if a.Unmap().Is4() == dst.Unmap().Is4() {
			fit = append(fit, a.Unmap())
		}
	}
	if len(fit) == 0 {
		return netip.Addr{}, name
	}
	return fit[e.rr.Add(1)%uint64(len(fit))], name
}

// isSelfAddr reports whether a is one of our addresses.
func (e *engine) isSelfAddr(a netip.Addr) bool { return e.mine[a.Unmap()] }

// failure records why a target could not be used.
type failure struct {
	t   *target
	err error
}

// run delivers the recipients idx of env to the first of targets that
// takes a session, trying at most maxTries of them. It fills res for idx.
func (e *engine) run(ctx context.Context, targets []target, env *Envelope, idx []int, body Body, res []Result, tlsOK func(*TLSInfo) bool) {
	started := e.now()
	var last failure
	for ti := range targets {
		t := &targets[ti]
		if err := ctx.Err(); err != nil {
			last = failure{t, fmt.Errorf("%w: %w", errCancelled, err)}
			break
		}
		if err := e.p.acquire(ctx, t.addr); err != nil {
			last = failure{t, fmt.Errorf("%w: %w", errCancelled, err)}
			break
		}
		key := poolKey{addr: t.addr, src: t.src, host: t.host, ehlo: t.ehlo, policy: t.policy.name, failure: t.policy.failure, mode: t.policy.mode, authID: t.authID, lmtp: t.lmtp}
		sc := e.p.get(key)
		var err error
		if sc == nil {
			sc, err = e.open(ctx, t)
		}
		if err != nil {
			e.p.release(t.addr)
			e.log.LogAttrs(ctx, slog.LevelInfo, "deliver: session failed",
				slog.String("msgid", env.MessageID), slog.String("host", t.host),
				slog.String("addr", t.addr.String()), slog.Any("err", err))
			last = failure{t, err}
			if errors.Is(err, ErrLoop) {
				break
			}
			continue
		}
		sc.key = key
		r := sc.send(ctx, e.cfg.Timeouts, env, idx, body, res, tlsOK, e.now)
		if r.stale {
			sc.close()
			sc, err = e.open(ctx, t)
			if err != nil {
				e.p.release(t.addr)
				last = failure{t, err}
				continue
			}
			sc.key = key
			r = sc.send(ctx, e.cfg.Timeouts, env, idx, body, res, tlsOK, e.now)
		}
		e.p.put(sc, r.reusable && ctx.Err() == nil)
		e.p.release(t.addr)
		e.log.LogAttrs(ctx, slog.LevelDebug, "deliver: transaction done",
			slog.String("msgid", env.MessageID), slog.String("host", t.host),
			slog.String("addr", t.addr.String()), slog.Duration("duration", e.now().Sub(started)))
		return
	}
	reply, local := failReply(last.err)
	route := Route{}
	if last.t != nil {
		route = Route{Site: last.t.site, Host: last.t.host, Addr: last.t.addr, TLSPolicy: last.t.policy.name, TLSFailure: last.t.policy.failure}
		var te *tlsError
		if errors.As(last.err, &te) {
			route.TLSFailure = te.kind
		}
	}
	var cause error
	if local {
		cause = &LocalError{Reply: reply, Err: last.err}
	}
	now := e.now()
	for _, i := range idx {
		res[i] = Result{
			Recipient: env.Recipients[i].Address,
			Reply:     reply,
			Local:     local,
			Err:       cause,
			Route:     route,
			Attempted: started,
			Duration:  now.Sub(started),
		}
	}
}

// open opens a session to t; after a failed STARTTLS handshake under an
// opportunistic policy it tries t once more without STARTTLS (as Postfix
// does with smtp_tls_security_level = may).
func (e *engine) open(ctx context.Context, t *target) (*sconn, error) {
	sc, err := e.d.open(ctx, t)
	var te *tlsError
	if errors.As(err, &te) && te.retryPlain {
		plain := *t
		plain.policy.mode = tlsNone
		plain.policy.reportFailures = false
		sc, err = e.d.open(ctx, &plain)
		if err == nil && t.policy.reportFailures {
			sc.route.TLSFailure = te.kind
		}
	}
	return sc, err
}

// failReply makes the reply for a destination that could not be used.
// The second result is false when the reply is the peer's own.
func failReply(err error) (*smtp.SMTPError, bool) {
	var se *smtp.SMTPError
	var te *tlsError
	switch {
	case err == nil:
		return Reply(451, 4, 4, 0, "no destination to try"), true
	case errors.Is(err, ErrLoop):
		// RFC 5321 §5.1 / RFC 3463 5.4.6: routing loop.
		return Reply(554, 5, 4, 6, err.Error()), true
	case errors.Is(err, errCancelled):
		return Reply(451, 4, 4, 2, "delivery attempt cancelled: "+err.Error()), true
	case errors.Is(err, ErrAuth):
		return Reply(451, 4, 7, 0, err.Error()), true
	case errors.As(err, &te):
		if te.kind == "starttls-not-supported" {
			return Reply(451, 4, 7, 4, err.Error()), true
		}
		return Reply(451, 4, 7, 5, err.Error()), true
	case errors.As(err, &se):
		if se.Code/100 == 4 {
			return cleanReply(se), false
		}
		// A server that refuses the session with 5xx is skipped as Postfix
		// does (smtp_skip_5xx_greeting); the mail is deferred, not bounced.
		return Reply(451, 4, 4, 0, fmt.Sprintf("session refused: %d %s", se.Code, CleanText(se.Message, 300))), true
	case errors.Is(err, ErrTimeout):
		return Reply(451, 4, 4, 1, "no answer: "+err.Error()), true
	default:
		return Reply(451, 4, 4, 1, "connection failed: "+err.Error()), true
	}
}

// splitHostPort splits "host:port" with a default port.
func splitHostPort(s string, def uint16) (string, uint16, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return strings.Trim(s, "[]"), def, nil
		}
		return "", 0, err
	}
	var p uint16
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p == 0 {
		return "", 0, fmt.Errorf("deliver: bad port in %q", s)
	}
	return host, p, nil
}
