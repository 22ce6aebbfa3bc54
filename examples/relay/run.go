package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/event/prom"
	"github.com/mtakit/mta/examples/internal/setup"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/submit"
)

var errUsage = errors.New("usage")

type options struct {
	listen, submission, routes, dns      setup.Multi
	dkimDomains, dkimSelectors, dkimKeys setup.Multi
	trusted                              setup.Multi
	queueDir, hostname, sandbox          string
	smarthost, dkimCanon                 string
	tlsCert, tlsKey, usersFile, logLevel string
	mxPort, concurrency, destConcurrency int
	maxSize                              int64
	retryMin, retryMax, lifetime         time.Duration
	webhook, webhookSecret, rateLimits   string
	logEvents, noSTS                     bool
	cpuProfile, metrics, suppressions    string
	depthEvery                           time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{dns: setup.Multi{Split: true}, trusted: setup.Multi{Split: true}}
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&o.listen, "listen", "listener `[MODE://]HOST:PORT[?auth][&insecure-auth]`, MODE smtp|starttls|tls (repeatable)")
	fs.Var(&o.submission, "listen-submission", "STARTTLS listener requiring AUTH, `ADDR` (repeatable)")
	fs.StringVar(&o.queueDir, "queue-dir", "", "queue `directory` (embedded durable store); required")
	fs.StringVar(&o.queueDir, "queue", "", "alias of -queue-dir")
	fs.Var(&o.routes, "route", "static route `DOMAIN=HOST:PORT` (DOMAIN, .parent or *; repeatable)")
	fs.StringVar(&o.smarthost, "smarthost", "", "send everything to `HOST:PORT` (same as -route '*=HOST:PORT')")
	fs.Var(&o.dns, "dns", "DNS server(s) `host:port` for MX delivery (default /etc/resolv.conf)")
	fs.IntVar(&o.mxPort, "mx-port", 25, "SMTP `port` of MX hosts")
	fs.StringVar(&o.hostname, "hostname", "", "our host `name` (default: os.Hostname)")
	fs.DurationVar(&o.retryMin, "retry-min", 5*time.Minute, "first retry delay")
	fs.DurationVar(&o.retryMax, "retry-max", 4*time.Hour, "longest retry delay")
	fs.DurationVar(&o.lifetime, "lifetime", 5*24*time.Hour, "how long a message may stay queued before it bounces")
	fs.Var(&o.dkimDomains, "dkim-domain", "DKIM signing `domain` (repeatable, paired with -dkim-selector and -dkim-key)")
	fs.Var(&o.dkimSelectors, "dkim-selector", "DKIM `selector` (repeatable)")
	fs.Var(&o.dkimKeys, "dkim-key", "DKIM private key `file`, PKCS#8 or PKCS#1 PEM (repeatable; missing: generated in the queue directory)")
	fs.StringVar(&o.dkimCanon, "dkim-canon", "relaxed/simple", "DKIM canonicalization `header/body`")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate `file` (PEM) for STARTTLS/TLS listeners")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS key `file` (PEM)")
	fs.StringVar(&o.usersFile, "users", "", "AUTH users `file`: name:bcrypt-hash[:sender,...] per line")
	fs.StringVar(&o.sandbox, "sandbox", "", "deliver nothing; write each message into `DIR`")
	fs.Var(&o.trusted, "trusted", "trusted client `networks` that relay without AUTH (default 127.0.0.0/8,::1/128)")
	fs.IntVar(&o.concurrency, "concurrency", 64, "concurrent outbound deliveries in all (queue workers)")
	fs.IntVar(&o.destConcurrency, "destination-concurrency", 20, "concurrent deliveries per destination (recipient domain, and MX site or route host), like Postfix's default_destination_concurrency_limit")
	fs.Int64Var(&o.maxSize, "max-size", 50<<20, "message size limit in `bytes`")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.logEvents, "log-events", true, "log every delivery event (queued, attempt, delivered, deferred, bounced, ...) at info")
	fs.StringVar(&o.webhook, "webhook", "", "POST every delivery event, signed, to `URL` (outbox in the queue directory)")
	fs.StringVar(&o.webhookSecret, "webhook-secret", "", "HMAC `secret` of -webhook signatures (default: $MTA_WEBHOOK_SECRET)")
	fs.StringVar(&o.suppressions, "suppression-list", "", "suppression list `file`: recipients that failed with a bad-address reply are added and refused from then on (default: suppressions.jsonl in the queue directory; \"none\" turns it off)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on `ADDR` (/metrics)")
	fs.DurationVar(&o.depthEvery, "metrics-depth-interval", 30*time.Second, "how often the queue depth gauges are refreshed (a scan of the queue)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) to `file` until the relay exits")
	fs.BoolVar(&o.noSTS, "no-mta-sts", false, "do not apply MTA-STS policies (RFC 8461) to MX delivery")
	fs.StringVar(&o.rateLimits, "rate-limits", "", "rate-limit policy `file` (ratelimit.ParsePolicy syntax; warm-up counters kept in the queue directory)")
	if err := fs.Parse(args); err != nil {
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relay: unexpected argument %q\n", fs.Arg(0))
		return nil, errUsage
	}
	if o.queueDir == "" {
		fmt.Fprintln(stderr, "relay: -queue-dir is required")
		return nil, errUsage
	}
	if len(o.listen.Vals)+len(o.submission.Vals) == 0 {
		o.listen.Vals = []string{"127.0.0.1:2525"}
	}
	if o.smarthost != "" {
		o.routes.Vals = append(o.routes.Vals, "*="+o.smarthost)
	}
	if len(o.trusted.Vals) == 0 {
		o.trusted.Vals = []string{"127.0.0.0/8", "::1/128"}
	}
	return o, nil
}

func runRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	// GC tuning for a relay: the queue index is small next to the
	// messages flowing through, so trade memory for CPU (GOGC 400, about
	// 5 % less CPU per message with DKIM), with a soft limit so that a
	// large queue makes the GC work harder instead of growing the heap.
	// The environment variables override both.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(1 << 30)
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if o.hostname == "" {
		if o.hostname, err = os.Hostname(); err != nil || o.hostname == "" {
			o.hostname = "localhost"
		}
	}

	var trusted []netip.Prefix
	for _, s := range o.trusted.Vals {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return fmt.Errorf("-trusted %q: %v", s, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		trusted = append(trusted, p.Masked())
	}
	var listeners []submit.ListenerConfig
	for _, s := range o.listen.Vals {
		lc, err := parseListen(s)
		if err != nil {
			return err
		}
		listeners = append(listeners, lc)
	}
	for _, s := range o.submission.Vals {
		listeners = append(listeners, submit.ListenerConfig{Addr: s, Mode: submit.StartTLS, ListenerPolicy: submit.ListenerPolicy{RequireAuth: true}})
	}

	if err := os.MkdirAll(o.queueDir, 0o700); err != nil {
		return err
	}
	ring, err := setup.LoadDKIM(setup.DKIMConfig{
		Domains: o.dkimDomains.Vals, Selectors: o.dkimSelectors.Vals, Keys: o.dkimKeys.Vals,
		Canonicalization: o.dkimCanon, KeyDir: filepath.Join(o.queueDir, "dkim"), Program: "relay",
	}, stdout)
	if err != nil {
		return err
	}
	var tlsConf *tls.Config
	for i := range listeners {
		if listeners[i].Mode == submit.Plain {
			continue
		}
		if tlsConf == nil {
			if tlsConf, err = loadTLS(o, log); err != nil {
				return err
			}
		}
		listeners[i].TLSConfig = tlsConf
	}
	var auth submit.Authenticator
	if o.usersFile != "" {
		if auth, err = loadUsers(o.usersFile); err != nil {
			return err
		}
	}
	tr, closeTransport, err := setup.Transport(transportConfig(o, log))
	if err != nil {
		return err
	}
	defer closeTransport()

	store, err := setup.OpenStore(o.queueDir, log)
	if err != nil {
		return err
	}
	defer store.Close()
	events, metrics, closeEvents, err := buildEvents(o, log)
	if err != nil {
		return err
	}
	defer closeEvents()
	limiter, closeLimiter, err := buildLimiter(o)
	if err != nil {
		return err
	}
	defer closeLimiter()

	var suppressions bounce.SuppressionList
	if o.suppressions != "none" {
		path := o.suppressions
		if path == "" {
			path = filepath.Join(o.queueDir, "suppressions.jsonl")
		}
		fsup, err := bounce.OpenFileSuppressions(path, nil)
		if err != nil {
			return fmt.Errorf("-suppression-list: %w", err)
		}
		defer fsup.Close()
		suppressions = fsup
	}

	q, err := queue.New(queue.Config{
		Suppressions: suppressions,
		Events:       events,
		Limiter:      limiter,
		Store:        store,
		Transport:    tr,
		Hostname:     o.hostname,
		Workers:      o.concurrency,
		// Per destination: every domain behind one smarthost shares its
		// site, so this also caps connections to that host.
		DestinationConcurrency: o.destConcurrency,
		RetryMin:               o.retryMin,
		RetryMax:               o.retryMax,
		Lifetime:               o.lifetime,
		// The retry delays given on the command line also bound how
		// often an idle scheduler looks at the store.
		PollInterval:   min(time.Second, max(o.retryMin/2, 100*time.Millisecond)),
		MaxMessageSize: -1, // submit enforces -max-size on what it receives
		Logger:         log.With("part", "queue"),
	})
	if err != nil {
		return err
	}
	qctx, cancelQueue := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelQueue()
	if err := q.Start(qctx); err != nil {
		return err
	}
	if metrics != nil {
		stopMetrics, err := serveMetrics(qctx, o, q, metrics, log, stdout)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	srv, err := submit.NewServer(submit.Config{
		Hostname:        o.hostname,
		Queue:           q,
		Authenticator:   auth,
		TrustedNetworks: trusted,
		MaxMessageBytes: o.maxSize,
		DKIM:            ring,
		Suppressions:    suppressions,
		TempDir:         o.queueDir,
		Logger:          log.With("part", "submit"),
	})
	if err != nil {
		return err
	}
	started := 0
	for _, lc := range listeners {
		addr, err := srv.Listen(lc)
		if err != nil {
			shutdown(log, srv, q)
			return fmt.Errorf("listen %s: %w", lc.Addr, err)
		}
		started++
		what := "trusted networks relay, others need AUTH"
		switch {
		case lc.RequireAuth:
			what = "AUTH required"
		case auth == nil:
			what = "trusted networks relay, no AUTH (no -users)"
		}
		fmt.Fprintf(stdout, "relay: listening on %s://%s (%s)\n", modeScheme(lc.Mode), addr, what)
	}
	fmt.Fprintf(stdout, "relay: queue %s, delivering %s\n", o.queueDir, setup.DescribeTransport(transportConfig(o, nil)))
	<-ctx.Done()
	fmt.Fprintln(stdout, "relay: shutting down")
	shutdown(log, srv, q)
	return nil
}

func shutdown(log *slog.Logger, srv *submit.Server, q *queue.Queue) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, submit.ErrServerClosed) {
		log.Warn("shutdown: smtp", "err", err)
	}
	if err := q.Shutdown(ctx); err != nil {
		log.Warn("shutdown: queue", "err", err)
	}
}

func modeScheme(m submit.Mode) string {
	if m == submit.Plain {
		return "smtp"
	}
	return m.String()
}

// transportConfig gives the flags to the shared transport builder.
func transportConfig(o *options, log *slog.Logger) setup.TransportConfig {
	return setup.TransportConfig{
		Hostname: o.hostname, Sandbox: o.sandbox, Routes: o.routes.Vals, DNS: o.dns.Vals,
		MXPort: o.mxPort, MTASTS: !o.noSTS, MaxConnsPerHost: o.destConcurrency, Logger: log,
	}
}

// parseListen parses [MODE://]HOST:PORT[?auth][&insecure-auth].
func parseListen(s string) (submit.ListenerConfig, error) {
	var lc submit.ListenerConfig
	rest := s
	if scheme, after, ok := strings.Cut(s, "://"); ok {
		switch strings.ToLower(scheme) {
		case "smtp", "plain":
			lc.Mode = submit.Plain
		case "starttls", "submission":
			lc.Mode = submit.StartTLS
		case "tls", "smtps", "submissions":
			lc.Mode = submit.ImplicitTLS
		default:
			return lc, fmt.Errorf("-listen %q: unknown mode %q (smtp, starttls or tls)", s, scheme)
		}
		rest = after
	}
	addr, query, _ := strings.Cut(rest, "?")
	if addr == "" {
		return lc, fmt.Errorf("-listen %q: no address", s)
	}
	if _, port, ok := strings.Cut(addr[strings.LastIndexByte(addr, ']')+1:], ":"); !ok {
		return lc, fmt.Errorf("-listen %q: want HOST:PORT", s)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return lc, fmt.Errorf("-listen %q: bad port", s)
	}
	lc.Addr = addr
	if query != "" {
		for _, opt := range strings.Split(query, "&") {
			switch opt {
			case "auth":
				lc.RequireAuth = true
			case "insecure-auth":
				lc.AllowInsecureAuth = true
			default:
				return lc, fmt.Errorf("-listen %q: unknown option %q (auth, insecure-auth)", s, opt)
			}
		}
	}
	return lc, nil
}

// buildEvents makes the event sinks the flags ask for: the log, a signed
// webhook with its durable outbox in the queue directory, and Prometheus
// metrics.
func buildEvents(o *options, log *slog.Logger) (event.Sink, *prom.Metrics, func(), error) {
	var sinks []event.Sink
	var wh *event.Webhook
	var metrics *prom.Metrics
	if o.logEvents {
		sinks = append(sinks, event.LogSink{Logger: log.With("part", "event")})
	}
	if o.webhook != "" {
		secret := o.webhookSecret
		if secret == "" {
			secret = os.Getenv("MTA_WEBHOOK_SECRET")
		}
		if secret == "" {
			return nil, nil, nil, errors.New("-webhook needs -webhook-secret or $MTA_WEBHOOK_SECRET")
		}
		var err error
		wh, err = event.NewWebhook(event.WebhookConfig{
			Dir:       filepath.Join(o.queueDir, "webhook"),
			Endpoints: []event.Endpoint{{Name: "webhook", URL: o.webhook, Secret: []byte(secret)}},
			Logger:    log.With("part", "webhook"),
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("-webhook: %w", err)
		}
		sinks = append(sinks, wh)
	}
	if o.metrics != "" {
		metrics = prom.New(prom.Config{Webhook: wh})
		sinks = append(sinks, metrics)
	}
	if len(sinks) == 0 {
		return nil, nil, func() {}, nil
	}
	f := event.NewFanout(event.FanoutConfig{Sinks: sinks})
	return f, metrics, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.Close(ctx)
		if wh != nil {
			_ = wh.Close(ctx)
		}
	}, nil
}

// serveMetrics serves /metrics on o.metrics and refreshes the queue depth
// gauges every o.depthEvery by scanning the queue.
func serveMetrics(ctx context.Context, o *options, q *queue.Queue, m *prom.Metrics, log *slog.Logger, stdout io.Writer) (func(), error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.metrics)
	if err != nil {
		return nil, fmt.Errorf("-metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Fprintf(stdout, "relay: metrics on http://%s/metrics\n", ln.Addr())
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		every := max(o.depthEvery, time.Second)
		for {
			if err := refreshDepth(ctx, q, m); err != nil && ctx.Err() == nil {
				log.Warn("relay: queue depth", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	}()
	return func() {
		cancel()
		<-done
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

// refreshDepth counts the queue's deliveries by state and lane
// ("transactional" for a positive priority, else "bulk") and sets the
// depth gauges, zeros included.
func refreshDepth(ctx context.Context, q *queue.Queue, m *prom.Metrics) error {
	states := []queue.DeliveryState{queue.StateQueued, queue.StateDeferred, queue.StateActive, queue.StateHeld}
	lanes := []string{"transactional", "bulk"}
	counts := map[queue.DeliveryState]map[string]int{}
	for _, st := range states {
		counts[st] = map[string]int{}
	}
	now := time.Now()
	after := ""
	for {
		msgs, err := q.List(ctx, queue.Filter{Now: now, After: after, Limit: 10000})
		if err != nil {
			return err
		}
		for _, msg := range msgs {
			lane := "bulk"
			if msg.Priority > 0 {
				lane = "transactional"
			}
			for i := range msg.Deliveries {
				if c, ok := counts[msg.Deliveries[i].State(now)]; ok {
					c[lane]++
				}
			}
		}
		if len(msgs) < 10000 {
			break
		}
		after = msgs[len(msgs)-1].ID
	}
	for _, st := range states {
		for _, lane := range lanes {
			m.SetDepth(st.String(), lane, counts[st][lane])
		}
	}
	return nil
}

// buildLimiter loads the -rate-limits policy, if any.
func buildLimiter(o *options) (queue.Limiter, func(), error) {
	if o.rateLimits == "" {
		return nil, func() {}, nil
	}
	text, err := os.ReadFile(o.rateLimits)
	if err != nil {
		return nil, nil, err
	}
	p, err := ratelimit.ParsePolicy(string(text))
	if err != nil {
		return nil, nil, fmt.Errorf("-rate-limits %s: %w", o.rateLimits, err)
	}
	ws, err := ratelimit.OpenFileWarmupStore(filepath.Join(o.queueDir, "warmup"))
	if err != nil {
		return nil, nil, err
	}
	l, err := ratelimit.New(ratelimit.Config{Policy: p, WarmupStore: ws})
	if err != nil {
		ws.Close()
		return nil, nil, err
	}
	return &queue.RateLimits{Limiter: l}, func() { l.Close(); ws.Close() }, nil
}
