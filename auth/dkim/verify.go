package dkim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mtakit/mta/resolver"
)

// Status is the verdict on one signature, named as in RFC 8601 §2.7.1.
type Status string

// Verification statuses.
const (
	// StatusNone: the message carries no signature (never in a Result;
	// Verify returns no results then).
	StatusNone Status = "none"
	// StatusPass: the signature verified.
	StatusPass Status = "pass"
	// StatusFail: the signature did not verify (body hash or signature
	// mismatch), or it carries l= (see [Result.BodyLength]).
	StatusFail Status = "fail"
	// StatusTempError: the key could not be fetched for now (DNS SERVFAIL,
	// timeout); trying later may succeed.
	StatusTempError Status = "temperror"
	// StatusPermError: the signature or key record is unusable (syntax,
	// missing key, revoked key, unsupported algorithm, expired, over the
	// per-message limit).
	StatusPermError Status = "permerror"
)

// DefaultMaxSignatures is how many signatures Verify checks per message
// when VerifierConfig.MaxSignatures is zero.
const DefaultMaxSignatures = 8

// Result is the outcome for one DKIM-Signature field, in message order
// (top-most first). It carries the identities DMARC needs.
type Result struct {
	Status Status
	// Reason says why a signature did not pass, in plain words; empty on pass.
	Reason string
	// Err is the underlying error (from go-msgauth or the resolver), nil on pass.
	Err error

	Domain     string // d=, lower case (the SDID)
	Selector   string // s=
	Algorithm  string // a=, e.g. "rsa-sha256"
	Identifier string // i=, or "@"+Domain when absent (the AUID)
	HeaderKeys []string
	// Canonicalization is c= as written ("relaxed/simple"), "simple/simple" when absent.
	Canonicalization string
	// BodyLength is l=, or -1 when absent. Policy: a signature with l= never
	// passes. RFC 6376 §8.2 lets anyone append content after the signed
	// length (and go-msgauth refuses l= outright), so such signatures are
	// reported as StatusFail and never count for DMARC.
	BodyLength int64
	// BodyAppended is true when l= covers fewer octets than the
	// canonicalized body: content was added after signing.
	BodyAppended bool
	// SignatureB is the start of b= (RFC 6008 header.b), at most 12 characters.
	SignatureB string
	Time       time.Time // t=, zero when absent
	Expiration time.Time // x=, zero when absent
}

// VerifierConfig configures a [Verifier]. Only Resolver is required.
type VerifierConfig struct {
	// Resolver fetches key records. Required.
	Resolver *resolver.Resolver
	// MaxSignatures is how many signatures are verified per message; the
	// rest are reported as StatusPermError without a DNS query. Zero means
	// DefaultMaxSignatures.
	MaxSignatures int
	// MaxHeaderBytes and MaxHeaderFields cap the header section (zero:
	// DefaultMaxHeaderBytes, DefaultMaxHeaderFields); a message over them
	// makes Verify return ErrHeaderTooLarge / ErrTooManyFields.
	MaxHeaderBytes  int
	MaxHeaderFields int
	// KeyCacheSize is how many key records are kept in memory (zero: 1024;
	// negative: none). Entries live for the record's TTL, at most
	// MaxKeyCacheTTL (zero: 1h).
	KeyCacheSize   int
	MaxKeyCacheTTL time.Duration
	// Now is the clock for x= expiry and the cache; nil means time.Now.
	Now func() time.Time
	// Logger gets one debug line per message; nil discards.
	Logger *slog.Logger
}

// Verifier checks DKIM signatures (RFC 6376, RFC 8463) with go-msgauth,
// fetching keys through the project's resolver. It is safe for concurrent
// use.
type Verifier struct {
	res     *resolver.Resolver
	maxSigs int
	limits  limits
	now     func() time.Time
	log     *slog.Logger
	cache   *keyCache
}

// NewVerifier returns a Verifier for cfg. It fails when cfg.Resolver is nil.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Resolver == nil {
		return nil, fmt.Errorf("%w: VerifierConfig.Resolver is nil", ErrConfig)
	}
	v := &Verifier{
		res:     cfg.Resolver,
		maxSigs: cfg.MaxSignatures,
		limits:  limits{cfg.MaxHeaderBytes, cfg.MaxHeaderFields}.orDefault(),
		now:     cfg.Now,
		log:     cfg.Logger,
	}
	if v.maxSigs <= 0 {
		v.maxSigs = DefaultMaxSignatures
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	size := cfg.KeyCacheSize
	if size == 0 {
		size = 1024
	}
	if size > 0 {
		maxTTL := cfg.MaxKeyCacheTTL
		if maxTTL <= 0 {
			maxTTL = time.Hour
		}
		v.cache = &keyCache{size: size, maxTTL: maxTTL, m: map[string]keyEntry{}}
	}
	return v, nil
}

// Verify reads the message (CRLF or LF line endings) from r and verifies
// each DKIM-Signature field. A message without signatures gives no
// results and no error (DKIM result "none"). The error is non-nil only
// when the message as a whole cannot be checked: [ErrHeaderTooLarge],
// [ErrTooManyFields], [ErrHeaderSyntax], a read error, or ctx.Err()
// (unwrapped).
func (v *Verifier) Verify(ctx context.Context, r io.Reader) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := readHeader(r, v.limits, nil)
	if err != nil {
		return nil, err
	}
	return v.verify(ctx, h, r)
}

// verify checks the signatures of a message whose header h was read from
// r; r holds the body after h.rest.
func (v *Verifier) verify(ctx context.Context, h *header, r io.Reader) ([]Result, error) {
	var br io.Reader = r
	if len(h.rest) > 0 {
		br = io.MultiReader(bytes.NewReader(h.rest), r)
	}
	start := v.now()
	var sigIdx []int
	for i := 0; i < h.len(); i++ {
		if h.nameIs(i, "dkim-signature") {
			sigIdx = append(sigIdx, i)
		}
	}
	if len(sigIdx) == 0 {
		return nil, nil
	}
	results := make([]Result, len(sigIdx))
	var counters []*bodyCounter
	for i, fi := range sigIdx {
		results[i] = describe(h.field(fi))
		if results[i].BodyLength >= 0 && i < v.maxSigs {
			c := newBodyCounter(results[i].Canonicalization)
			counters = append(counters, c)
		}
	}
	var body io.Reader = br
	if len(counters) > 0 {
		ws := make([]io.Writer, len(counters))
		for i, c := range counters {
			ws[i] = c
		}
		body = io.TeeReader(br, io.MultiWriter(ws...))
	}
	hdr := h.raw
	if !h.complete {
		hdr = append(bytes.Clone(hdr), "\r\n"...)
	}
	body = &ctxReader{ctx: ctx, r: body}
	verifs, err := msgdkim.VerifyWithOptions(io.MultiReader(bytes.NewReader(hdr), body), &msgdkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return v.lookupTXT(ctx, name) },
		MaxVerifications: v.maxSigs,
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err != nil && !errors.Is(err, msgdkim.ErrTooManySignatures) {
		return nil, fmt.Errorf("dkim: verify: %w", err)
	}
	// go-msgauth may stop reading early; drain so every counter saw the
	// whole body.
	if len(counters) > 0 {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return nil, fmt.Errorf("dkim: verify: %w", err)
		}
	}
	ci := 0
	for i := range results {
		res := &results[i]
		if i >= len(verifs) || i >= v.maxSigs {
			res.Status = StatusPermError
			res.Reason = fmt.Sprintf("not verified: more than %d signatures in the message", v.maxSigs)
			continue
		}
		vf := verifs[i]
		res.Err = vf.Err
		switch {
		case vf.Err == nil:
			res.Status = StatusPass
		case msgdkim.IsTempFail(vf.Err):
			res.Status = StatusTempError
		case msgdkim.IsPermFail(vf.Err):
			res.Status = StatusPermError
		default:
			res.Status = StatusFail
		}
		if vf.Err != nil {
			res.Reason = strings.TrimPrefix(vf.Err.Error(), "dkim: ")
		}
		if !vf.Expiration.IsZero() && v.now().After(vf.Expiration) && res.Status != StatusPermError {
			res.Status, res.Reason = StatusPermError, "signature has expired (x=)"
		}
		if res.BodyLength >= 0 {
			n := counters[ci].total()
			ci++
			if res.Status == StatusPass || res.Status == StatusFail {
				res.Status = StatusFail
				res.BodyAppended = n > res.BodyLength
				if res.BodyAppended {
					res.Reason = fmt.Sprintf("body length limit l=%d does not cover the whole body (%d octets): content was appended after signing", res.BodyLength, n)
				} else {
					res.Reason = fmt.Sprintf("signature has a body length limit l=%d, which this verifier does not accept", res.BodyLength)
				}
			}
		}
	}
	v.log.Debug("dkim verify", "signatures", len(results), "duration", v.now().Sub(start))
	return results, nil
}

// describe fills a Result's identity fields from a raw DKIM-Signature
// field, as far as it parses; go-msgauth decides the status.
func describe(field string) Result {
	res := Result{BodyLength: -1, Canonicalization: "simple/simple"}
	_, value, _ := strings.Cut(field, ":")
	tags, err := ParseTags(value)
	if err != nil {
		// Parse what we can for reporting; go-msgauth reports the error.
		tags = nil
		for _, spec := range strings.Split(value, ";") {
			if n, val, ok := strings.Cut(spec, "="); ok {
				n = trimFWS(n)
				if _, dup := tags.Get(n); !dup {
					tags = append(tags, Tag{Name: n, Value: trimFWS(val)})
				}
			}
		}
	}
	get := func(n string) string { s, _ := tags.Get(n); return removeFWS(s) }
	res.Domain = strings.ToLower(strings.TrimSuffix(get("d"), "."))
	res.Selector = get("s")
	res.Algorithm = strings.ToLower(get("a"))
	res.Identifier = get("i")
	if res.Identifier == "" && res.Domain != "" {
		res.Identifier = "@" + res.Domain
	}
	if c := get("c"); c != "" {
		hc, bc, ok := strings.Cut(strings.ToLower(c), "/")
		if !ok {
			bc = "simple"
		}
		res.Canonicalization = hc + "/" + bc
	}
	if h := get("h"); h != "" {
		res.HeaderKeys = strings.Split(h, ":")
	}
	if l, ok := tags.Get("l"); ok {
		n, err := strconv.ParseInt(removeFWS(l), 10, 64)
		if err != nil || n < 0 {
			n = 0
		}
		res.BodyLength = n
	}
	if b := get("b"); b != "" {
		res.SignatureB = b[:min(12, len(b))]
	}
	if t, err := strconv.ParseInt(get("t"), 10, 64); err == nil {
		res.Time = time.Unix(t, 0)
	}
	if x, err := strconv.ParseInt(get("x"), 10, 64); err == nil {
		res.Expiration = time.Unix(x, 0)
	}
	return res
}

// lookupTXT bridges go-msgauth's ctx-less LookupTXT hook to the resolver:
// a temporary DNS failure becomes a net.Error with Temporary() true, which
// go-msgauth reports as a temporary failure; anything else is permanent.
func (v *Verifier) lookupTXT(ctx context.Context, name string) ([]string, error) {
	if recs, ok := v.cache.get(name, v.now()); ok {
		return recs, nil
	}
	res, err := v.res.LookupTXT(ctx, name)
	if err != nil {
		return nil, &net.DNSError{
			Err:         err.Error(),
			Name:        name,
			IsTemporary: resolver.IsTemporary(err),
			IsNotFound:  resolver.IsNotFound(err),
		}
	}
	v.cache.put(name, res.Records, res.TTL, v.now())
	return res.Records, nil
}

// ctxReader fails reads once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// keyCache holds key records by DNS name. A nil *keyCache caches nothing.
type keyCache struct {
	size   int
	maxTTL time.Duration
	mu     sync.Mutex
	m      map[string]keyEntry
}

type keyEntry struct {
	recs    []string
	expires time.Time
}

func (c *keyCache) get(name string, now time.Time) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	name = strings.ToLower(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok {
		return nil, false
	}
	if !now.Before(e.expires) {
		delete(c.m, name)
		return nil, false
	}
	return e.recs, true
}

func (c *keyCache) put(name string, recs []string, ttl time.Duration, now time.Time) {
	if c == nil || ttl <= 0 {
		return
	}
	ttl = min(ttl, c.maxTTL)
	name = strings.ToLower(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.size {
		// Drop expired entries, then an arbitrary one if still full.
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.size {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[name] = keyEntry{recs: recs, expires: now.Add(ttl)}
}

// bodyCounter counts the length of the canonicalized body (RFC 6376
// §3.4.3, §3.4.4), to compare with l=.
type bodyCounter struct {
	relaxed bool
	n       int64 // octets of canonical body so far (excluding pending blank lines)
	blank   int64 // blank lines seen but not yet known to be inside the body
	line    []byte
}

func newBodyCounter(c string) *bodyCounter {
	_, bc, _ := strings.Cut(c, "/")
	return &bodyCounter{relaxed: bc == "relaxed"}
}

func (c *bodyCounter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.line = append(c.line, p...)
			break
		}
		c.line = append(c.line, p[:i]...)
		c.endLine()
		p = p[i+1:]
	}
	return total, nil
}

// endLine accounts for one complete line (without its LF; a CR before it
// is dropped, lines are counted as ending in CRLF).
func (c *bodyCounter) endLine() {
	l := bytes.TrimSuffix(c.line, []byte("\r"))
	n := int64(len(l))
	if c.relaxed {
		n = relaxedLen(l)
	}
	if n == 0 {
		c.blank++
	} else {
		c.n += c.blank*2 + n + 2
		c.blank = 0
	}
	c.line = c.line[:0]
}

func relaxedLen(l []byte) int64 {
	l = bytes.TrimRight(l, " \t")
	var n int64
	ws := false
	for _, b := range l {
		if b == ' ' || b == '\t' {
			ws = true
			continue
		}
		if ws {
			n++
			ws = false
		}
		n++
	}
	return n
}

// total returns the canonical body length, closing the last line.
func (c *bodyCounter) total() int64 {
	if len(c.line) > 0 {
		c.endLine()
	}
	if c.n == 0 && !c.relaxed {
		return 2 // simple: an empty body is one CRLF
	}
	return c.n
}
