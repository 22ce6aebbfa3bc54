// Command sendapi is an HTTP JSON email API, like the ones cloud senders
// offer, on this module's durable queue: a client POSTs a message as JSON,
// the API renders its templates, builds and DKIM-signs an RFC 5322
// message, stores it in the embedded queue (queue/logstore) and answers
// 202 with the queue ID once the message is on disk. Delivery then runs
// in the background, by MX, over static routes or into a sandbox folder,
// with retries; GET on the ID tells what became of each recipient.
//
// Quick start (a sandbox: nothing leaves the machine):
//
//	go run ./examples/sendapi -queue-dir /tmp/sendapi-queue -sandbox /tmp/sendapi-sandbox
//
//	curl -s http://127.0.0.1:8025/v1/messages -H 'Content-Type: application/json' -d '{
//	  "from": "Shop <shop@example.test>",
//	  "to": ["Ann <ann@example.test>"],
//	  "subject": "Your order, {{.name}}",
//	  "text": "Hello {{.name}},\nyour order {{.order}} has shipped.\n",
//	  "html": "<p>Hello {{.name}},</p><p>your order <b>{{.order}}</b> has shipped.</p>",
//	  "variables": {"name": "Ann", "order": "A-1001"},
//	  "tags": ["shipping"]
//	}'
//	# {"id": "0FQ8...", "message_id": "<...@host>", "recipients": 1}
//
//	curl -s http://127.0.0.1:8025/v1/messages/0FQ8...
//	# {"id": "0FQ8...", "state": "delivered", "recipients": [...], "events": [...]}
//
// The message lands as an .eml file in /tmp/sendapi-sandbox.
//
// # Requests
//
// POST /v1/messages takes a JSON object with the fields from, to, cc, bcc,
// reply_to, subject, text, html, headers, variables, tags, metadata,
// priority (transactional, normal or bulk) and send_at (RFC 3339); an
// Idempotency-Key header makes a repeated request return the first one's
// ID instead of sending twice. Subject and text are Go text/template
// templates and html an html/template template, executed with variables;
// a variable they use but the request lacks is an error. Errors are JSON,
// {"error": "...", "field": "..."}: 400 for malformed JSON or unknown
// fields, 401 for a wrong API key, 413 for a body over 10 MiB, 415
// without Content-Type application/json, 422 for invalid values, 503 when
// the queue cannot store the message.
//
// GET /v1/messages/{id} answers with the message's state and each
// recipient's state, last SMTP reply and attempts, and the latest delivery
// events. The queue forgets a message once it is finished, so the API
// keeps the events in <queue-dir>/status.jsonl, read back at start-up and
// pruned of messages older than -status-retention.
//
// # Access
//
// With -api-key (default: $MTA_API_KEY) every request needs the header
// "Authorization: Bearer KEY". Without a key only loopback clients are
// served, and only when the Host header is an IP address or localhost (a
// web page cannot then use a browser on the same machine to send).
//
// # Delivery
//
// -sandbox DIR delivers nothing and writes every message to DIR.
// Otherwise -route DOMAIN=HOST:PORT (repeatable; DOMAIN is a domain,
// ".parent" for its subdomains, or "*") sends mail to fixed hosts, and
// -smarthost HOST:PORT is -route '*=HOST:PORT'; recipients no route covers
// are delivered by MX, resolved with -dns servers (default
// /etc/resolv.conf), to -mx-port. Messages from a domain given with
// -dkim-domain, -dkim-selector and -dkim-key (a PEM file) are signed.
//
// The program stays in the foreground, logs to standard error, and on
// SIGINT or SIGTERM stops taking requests, finishes the ones and the
// deliveries in flight (up to 20 s) and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/examples/internal/setup"
	"github.com/mtakit/mta/queue"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "sendapi:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

type options struct {
	http, queueDir, sandbox, smarthost, hostname, apiKey string
	routes, dns, dkimDomains, dkimSelectors, dkimKeys    setup.Multi
	mxPort                                               int
	retryMin, retryMax, lifetime, retention              time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{dns: setup.Multi{Split: true}}
	fs := flag.NewFlagSet("sendapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.http, "http", "127.0.0.1:8025", "listen `address` of the HTTP API")
	fs.StringVar(&o.queueDir, "queue-dir", "", "queue `directory` (embedded durable store, and status.jsonl); required")
	fs.StringVar(&o.sandbox, "sandbox", "", "deliver nothing; write each message into `DIR`")
	fs.Var(&o.routes, "route", "static route `DOMAIN=HOST:PORT` (DOMAIN, .parent or *; repeatable)")
	fs.StringVar(&o.smarthost, "smarthost", "", "send everything to `HOST:PORT` (same as -route '*=HOST:PORT')")
	fs.Var(&o.dns, "dns", "DNS server(s) `host:port` for MX delivery (default /etc/resolv.conf)")
	fs.IntVar(&o.mxPort, "mx-port", 25, "SMTP `port` of MX hosts")
	fs.StringVar(&o.hostname, "hostname", "", "our host `name`: EHLO, Message-ID, DSNs (default: os.Hostname)")
	fs.DurationVar(&o.retryMin, "retry-min", 5*time.Minute, "first retry delay")
	fs.DurationVar(&o.retryMax, "retry-max", 4*time.Hour, "longest retry delay")
	fs.DurationVar(&o.lifetime, "lifetime", 5*24*time.Hour, "how long a message may stay queued before it bounces")
	fs.DurationVar(&o.retention, "status-retention", 7*24*time.Hour, "how long the status of a message is kept after its last event")
	fs.Var(&o.dkimDomains, "dkim-domain", "DKIM signing `domain` (repeatable, paired with -dkim-selector and -dkim-key)")
	fs.Var(&o.dkimSelectors, "dkim-selector", "DKIM `selector` (repeatable)")
	fs.Var(&o.dkimKeys, "dkim-key", "DKIM private key `file`, PKCS#8 or PKCS#1 PEM (repeatable)")
	fs.StringVar(&o.apiKey, "api-key", os.Getenv("MTA_API_KEY"), "API `key` clients send as Authorization: Bearer KEY (default $MTA_API_KEY; none: loopback clients only)")
	if err := fs.Parse(args); err != nil {
		return nil, errUsage
	}
	usage := func(msg string) (*options, error) {
		fmt.Fprintln(stderr, "sendapi:", msg)
		return nil, errUsage
	}
	switch {
	case fs.NArg() > 0:
		return usage(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	case o.queueDir == "":
		return usage("-queue-dir is required")
	case o.sandbox != "" && (o.smarthost != "" || len(o.routes.Vals) > 0):
		return usage("-sandbox delivers nothing: it cannot be combined with -route or -smarthost")
	case len(o.dkimSelectors.Vals) != len(o.dkimDomains.Vals) || len(o.dkimKeys.Vals) != len(o.dkimDomains.Vals):
		return usage("give -dkim-domain, -dkim-selector and -dkim-key the same number of times")
	case o.retention <= 0:
		return usage("-status-retention must be positive")
	case o.mxPort <= 0 || o.mxPort > 65535:
		return usage(fmt.Sprintf("-mx-port %d out of range", o.mxPort))
	}
	if o.smarthost != "" {
		o.routes.Vals = append(o.routes.Vals, "*="+o.smarthost)
	}
	return o, nil
}

// run runs the API until ctx ends, then shuts it down.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if o.hostname == "" {
		if o.hostname, err = os.Hostname(); err != nil || o.hostname == "" {
			o.hostname = "localhost"
		}
	}
	// The host name goes into every Message-ID: it must be a domain name.
	if err := checkEnvelopeAddress("x@" + o.hostname); err != nil || strings.HasPrefix(o.hostname, "[") {
		return fmt.Errorf("-hostname %q is not a domain name; give one with -hostname", o.hostname)
	}
	if err := os.MkdirAll(o.queueDir, 0o700); err != nil {
		return err
	}
	ring, err := setup.LoadDKIM(setup.DKIMConfig{Domains: o.dkimDomains.Vals, Selectors: o.dkimSelectors.Vals, Keys: o.dkimKeys.Vals, Program: "sendapi"}, stdout)
	if err != nil {
		return err
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
	status, err := openStatus(filepath.Join(o.queueDir, "status.jsonl"), o.retention, time.Now, log.With("part", "status"))
	if err != nil {
		return err
	}
	defer func() {
		if err := status.Close(); err != nil {
			log.Error("status file", "err", err)
		}
	}()
	events := event.NewFanout(event.FanoutConfig{Sinks: []event.Sink{status, event.LogSink{Logger: log.With("part", "event")}}})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		events.Close(ctx)
	}()

	q, err := queue.New(queue.Config{
		Store:     store,
		Transport: tr,
		Events:    events,
		Hostname:  o.hostname,
		RetryMin:  o.retryMin,
		RetryMax:  o.retryMax,
		Lifetime:  o.lifetime,
		// Short retry delays (tests, demos) also shorten how long an idle
		// scheduler waits before it looks at the store again.
		PollInterval: min(time.Second, max(o.retryMin/2, 100*time.Millisecond)),
		Logger:       log.With("part", "queue"),
	})
	if err != nil {
		return err
	}
	// The queue outlives ctx (the signal) by the graceful shutdown below.
	qctx, cancelQueue := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelQueue()
	if err := q.Start(qctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := q.Shutdown(sctx); err != nil {
			log.Warn("shutdown: queue", "err", err)
		}
	}()

	a := &api{q: q, status: status, ring: ring, hostname: o.hostname, apiKey: o.apiKey, now: time.Now, log: log.With("part", "api")}
	ln, err := net.Listen("tcp", o.http)
	if err != nil {
		return fmt.Errorf("-http: %w", err)
	}
	srv := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	fmt.Fprintf(stdout, "sendapi: queue %s, delivering %s\n", o.queueDir, setup.DescribeTransport(transportConfig(o, nil)))
	if o.apiKey == "" {
		fmt.Fprintln(stdout, "sendapi: no API key (-api-key or $MTA_API_KEY): only loopback clients are served")
	} else {
		fmt.Fprintln(stdout, "sendapi: requests need Authorization: Bearer <API key>")
	}
	fmt.Fprintf(stdout, "sendapi: listening on http://%s\n", ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("http: %w", err)
	}
	fmt.Fprintln(stdout, "sendapi: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown: http", "err", err)
	}
	return nil
}

// transportConfig gives the flags to the shared transport builder.
// MTA-STS (RFC 8461) applies to MX delivery.
func transportConfig(o *options, log *slog.Logger) setup.TransportConfig {
	return setup.TransportConfig{Hostname: o.hostname, Sandbox: o.sandbox, Routes: o.routes.Vals, DNS: o.dns.Vals, MXPort: o.mxPort, MTASTS: true, Logger: log}
}
