// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (MTA-STS, RFC 8461): discovery through the `_mta-sts` TXT
// record, the policy fetched over HTTPS, parsing, MX host matching and a
// cache that honours max_age and the record's id.
//
// # Fetching
//
// A policy is fetched from https://mta-sts.DOMAIN/.well-known/mta-sts.txt
// (RFC 8461 §3.3) with the certificate checked against Config.RootCAs,
// no redirects followed, a 200 status and a text/plain media type
// required, at most 64 KiB read and Config.Timeout for the whole fetch.
//
// # Caching
//
// A fetched policy is kept for its max_age. Before a cached policy is
// used, the TXT record is looked up again: the same id keeps the cached
// policy, a new id fetches a new one, and a missing record or a failed
// lookup or fetch keeps using the cached policy until it expires
// (RFC 8461 §5.1).
package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mtakit/mta/resolver"
)

// Mode is a policy mode (RFC 8461 §5).
type Mode string

// Policy modes.
const (
	ModeEnforce Mode = "enforce"
	ModeTesting Mode = "testing"
	ModeNone    Mode = "none"
)

// Errors. Fetch and parse failures wrap one of them.
var (
	ErrNoRecord = errors.New("mtasts: no MTA-STS TXT record")
	ErrRecord   = errors.New("mtasts: bad MTA-STS TXT record")
	ErrFetch    = errors.New("mtasts: policy fetch failed")
	ErrPolicy   = errors.New("mtasts: bad policy")
)

// MaxPolicySize is the largest policy body read (RFC 8461 §3.3 suggests
// 64 KiB).
const MaxPolicySize = 64 << 10

// Policy is a parsed MTA-STS policy.
type Policy struct {
	Mode   Mode
	MX     []string // patterns, lower case: "mx.example.com" or "*.example.com"
	MaxAge time.Duration
	// ID is the id of the TXT record the policy was fetched under.
	ID string
	// Fetched is when the policy was fetched.
	Fetched time.Time
}

// Match reports whether an MX host name matches one of the policy's mx
// patterns (RFC 8461 §4.1): exactly, or by a "*." wildcard standing for
// exactly one leftmost label.
func (p *Policy) Match(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// Parse parses a policy body (RFC 8461 §3.2): "key: value" lines ending
// in CRLF or LF; version STSv1, a mode, max_age of at most 31557600 s,
// and at least one mx unless the mode is none. Unknown keys are ignored.
func Parse(text string) (*Policy, error) {
	p := &Policy{}
	var version, maxAge string
	seenMode := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%w: line without colon", ErrPolicy)
		}
		k = strings.TrimSpace(k)
		v = strings.TrimSpace(v)
		switch k {
		case "version":
			if version == "" {
				version = v
			}
		case "mode":
			if !seenMode {
				p.Mode = Mode(v)
				seenMode = true
			}
		case "max_age":
			if maxAge == "" {
				maxAge = v
			}
		case "mx":
			if v == "" || strings.ContainsAny(v, " \t") {
				return nil, fmt.Errorf("%w: bad mx %q", ErrPolicy, v)
			}
			p.MX = append(p.MX, strings.TrimSuffix(strings.ToLower(v), "."))
		}
	}
	if version != "STSv1" {
		return nil, fmt.Errorf("%w: version %q", ErrPolicy, version)
	}
	switch p.Mode {
	case ModeEnforce, ModeTesting, ModeNone:
	default:
		return nil, fmt.Errorf("%w: mode %q", ErrPolicy, p.Mode)
	}
	if maxAge == "" || len(maxAge) > 10 {
		return nil, fmt.Errorf("%w: max_age %q", ErrPolicy, maxAge)
	}
	n, err := strconv.ParseUint(maxAge, 10, 64)
	if err != nil || n > 31557600 {
		return nil, fmt.Errorf("%w: max_age %q", ErrPolicy, maxAge)
	}
	p.MaxAge = time.Duration(n) * time.Second
	if p.Mode != ModeNone && len(p.MX) == 0 {
		return nil, fmt.Errorf("%w: no mx", ErrPolicy)
	}
	return p, nil
}

// ParseRecord parses the TXT record of `_mta-sts.DOMAIN` (RFC 8461 §3.1),
// "v=STSv1; id=...;", returning its id (1 to 32 letters and digits).
func ParseRecord(txt string) (string, error) {
	fields := strings.Split(txt, ";")
	if strings.TrimSpace(fields[0]) != "v=STSv1" {
		return "", fmt.Errorf("%w: %q", ErrRecord, txt)
	}
	id := ""
	for _, f := range fields[1:] {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return "", fmt.Errorf("%w: %q", ErrRecord, txt)
		}
		if k == "id" && id == "" {
			id = v
		}
	}
	if id == "" || len(id) > 32 {
		return "", fmt.Errorf("%w: bad id in %q", ErrRecord, txt)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return "", fmt.Errorf("%w: bad id in %q", ErrRecord, txt)
		}
	}
	return id, nil
}

// TXTResolver looks up TXT records; *resolver.Resolver satisfies it.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) (resolver.Result[string], error)
}

// Config configures a Client.
type Config struct {
	// Resolver looks up the `_mta-sts` TXT records. Required.
	Resolver TXTResolver
	// Dial opens the TCP connection for a fetch (addr is
	// "mta-sts.DOMAIN:443"). Nil: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs verify the policy server's certificate. Nil: system roots.
	RootCAs *x509.CertPool
	// Timeout bounds one fetch. Default 30 s.
	Timeout time.Duration
	// CacheSize bounds the number of cached policies. Default 10000.
	CacheSize int
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// Logger receives a line per fetch. Nil: discard.
	Logger *slog.Logger
}

// Client discovers, fetches and caches policies. Safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client

	mu    sync.Mutex
	cache map[string]*Policy
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("mtasts: Config.Resolver is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dial := cfg.Dial
	if dial == nil {
		d := &net.Dialer{}
		dial = d.DialContext
	}
	tr := &http.Transport{
		DialContext:         dial,
		TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: cfg.Timeout,
		MaxIdleConns:        10,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
		Proxy:               nil,
	}
	hc := &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		// RFC 8461 §3.3: redirects must not be followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Client{cfg: cfg, http: hc, cache: make(map[string]*Policy)}, nil
}

// Get returns the policy for domain, from the cache when its id is
// current. It returns (nil, nil) for a domain without MTA-STS, and
// (nil, err) when a policy is announced but cannot be fetched or parsed
// and none is cached; callers then deliver as without MTA-STS and may
// report the error (TLS-RPT "sts-policy-fetch-error").
func (c *Client) Get(ctx context.Context, domain string) (*Policy, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	now := c.cfg.Now()
	c.mu.Lock()
	cached := c.cache[domain]
	if cached != nil && now.Sub(cached.Fetched) >= cached.MaxAge {
		delete(c.cache, domain)
		cached = nil
	}
	c.mu.Unlock()

	id, err := c.record(ctx, domain)
	if err != nil {
		if cached != nil {
			return cached, nil
		}
		if errors.Is(err, ErrNoRecord) {
			return nil, nil
		}
		return nil, err
	}
	if cached != nil && cached.ID == id {
		return cached, nil
	}
	p, err := c.Fetch(ctx, domain)
	if err != nil {
		if cached != nil {
			return cached, nil
		}
		return nil, err
	}
	p.ID = id
	p.Fetched = now
	c.mu.Lock()
	if len(c.cache) >= c.cfg.CacheSize {
		for k := range c.cache { // evict an arbitrary entry
			delete(c.cache, k)
			break
		}
	}
	c.cache[domain] = p
	c.mu.Unlock()
	return p, nil
}

// record returns the id of domain's MTA-STS TXT record. Several records
// starting with v=STSv1 are an error (RFC 8461 §3.1).
func (c *Client) record(ctx context.Context, domain string) (string, error) {
	res, err := c.cfg.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		if resolver.IsNotFound(err) {
			return "", ErrNoRecord
		}
		return "", fmt.Errorf("%w: %w", ErrRecord, err)
	}
	var ids []string
	var firstErr error
	for _, txt := range res.Records {
		if !strings.HasPrefix(txt, "v=STSv1") {
			continue
		}
		id, err := ParseRecord(txt)
		if err != nil {
			firstErr = err
			continue
		}
		ids = append(ids, id)
	}
	switch {
	case len(ids) == 1:
		return ids[0], nil
	case len(ids) > 1:
		return "", fmt.Errorf("%w: %d records", ErrRecord, len(ids))
	case firstErr != nil:
		return "", firstErr
	default:
		return "", ErrNoRecord
	}
}

// Fetch fetches and parses domain's policy over HTTPS, without the cache.
func (c *Client) Fetch(ctx context.Context, domain string) (*Policy, error) {
	started := c.cfg.Now()
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: HTTP status %d", ErrFetch, resp.StatusCode)
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("%w: content type %q", ErrFetch, resp.Header.Get("Content-Type"))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	if len(data) > MaxPolicySize {
		return nil, fmt.Errorf("%w: policy larger than %d bytes", ErrFetch, MaxPolicySize)
	}
	p, err := Parse(string(data))
	c.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "mtasts: fetch", slog.String("domain", domain),
		slog.Duration("duration", c.cfg.Now().Sub(started)), slog.Any("err", err))
	return p, err
}
