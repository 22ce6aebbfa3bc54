// Package setup holds what the example programs (examples/relay,
// examples/sendapi) both set up from their flags: the outbound transport
// (a sandbox folder, static routes, or delivery by MX for what no route
// covers), the DKIM key ring, the embedded queue store, and repeatable
// flags.
package setup

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/deliver/mtasts"
	"github.com/mtakit/mta/resolver"
)

// TransportConfig is what the flags give.
type TransportConfig struct {
	// Hostname is the EHLO name.
	Hostname string
	// Sandbox, when set, is the folder every message is written to
	// instead of being delivered.
	Sandbox string
	// Routes are "DOMAIN=HOST:PORT" (DOMAIN exact, ".parent" or "*").
	Routes []string
	// DNS servers (host:port) for MX delivery; none: /etc/resolv.conf.
	DNS []string
	// MXPort is the SMTP port of MX hosts.
	MXPort int
	// MTASTS applies MTA-STS policies (RFC 8461) to MX delivery.
	MTASTS bool
	// MaxConnsPerHost caps the connections to one address (zero: the
	// deliver package's default).
	MaxConnsPerHost int
	Logger          *slog.Logger
}

// DescribeTransport says in a few words where mail goes.
func DescribeTransport(cfg TransportConfig) string {
	switch {
	case cfg.Sandbox != "":
		return "into the sandbox " + cfg.Sandbox
	case len(cfg.Routes) > 0:
		for _, r := range cfg.Routes {
			if strings.HasPrefix(r, "*=") {
				return "by routes " + strings.Join(cfg.Routes, " ")
			}
		}
		return "by routes " + strings.Join(cfg.Routes, " ") + " (then MX)"
	}
	return "by MX"
}

// Transport makes the transport and the function that closes it. With a "*"
// route no resolver is made, so nothing is looked up in DNS.
func Transport(cfg TransportConfig) (deliver.Transport, func(), error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Sandbox != "" {
		sb, err := deliver.NewSandbox(deliver.SandboxConfig{Dir: cfg.Sandbox, Keep: -1})
		return sb, func() {}, err
	}
	client := deliver.ClientConfig{
		Hostname: cfg.Hostname,
		Pool:     deliver.PoolConfig{MaxConnsPerHost: cfg.MaxConnsPerHost},
		Logger:   log.With("part", "deliver"),
	}
	var routes []deliver.StaticRoute
	catchAll := false
	for _, r := range cfg.Routes {
		dom, host, ok := strings.Cut(r, "=")
		if !ok || dom == "" || host == "" {
			return nil, nil, fmt.Errorf("-route %q: want DOMAIN=HOST:PORT", r)
		}
		catchAll = catchAll || dom == "*"
		routes = append(routes, deliver.StaticRoute{Domain: dom, Host: host})
	}
	var mx *deliver.MX
	if !catchAll {
		if cfg.MXPort <= 0 || cfg.MXPort > 65535 {
			return nil, nil, fmt.Errorf("-mx-port %d out of range", cfg.MXPort)
		}
		res, err := resolver.New(resolver.Config{Servers: cfg.DNS})
		if err != nil {
			return nil, nil, fmt.Errorf("resolver: %w", err)
		}
		mcfg := deliver.MXConfig{ClientConfig: client, Resolver: res, Port: uint16(cfg.MXPort)}
		if cfg.MTASTS {
			sts, err := mtasts.New(mtasts.Config{Resolver: res, Logger: log.With("part", "mta-sts")})
			if err != nil {
				return nil, nil, err
			}
			mcfg.STS = sts
		}
		if mx, err = deliver.NewMX(mcfg); err != nil {
			return nil, nil, err
		}
	}
	if len(routes) == 0 {
		return mx, func() { mx.Close() }, nil
	}
	scfg := deliver.StaticConfig{ClientConfig: client, Routes: routes}
	if mx != nil {
		scfg.Fallback = mx
	}
	st, err := deliver.NewStatic(scfg)
	if err != nil {
		if mx != nil {
			mx.Close()
		}
		return nil, nil, err
	}
	return st, func() {
		st.Close()
		if mx != nil {
			mx.Close()
		}
	}, nil
}
