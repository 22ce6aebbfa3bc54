package dkim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"sync"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// Canonicalization is a DKIM canonicalization algorithm (RFC 6376 §3.4).
type Canonicalization string

// The two canonicalization algorithms of RFC 6376 §3.4.
const (
	Simple  Canonicalization = "simple"
	Relaxed Canonicalization = "relaxed"
)

// defaultHeaders are the header fields a [Signer] signs when
// SignerConfig.Headers is nil: the fields RFC 6376 §5.4.1 recommends, plus
// Message-ID, the MIME fields and the list fields whose change would alter
// what a recipient sees or does.
var defaultHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "Sender",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
	"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe",
	"List-Post", "List-Owner", "List-Archive", "Feedback-ID",
}

// defaultOverSign are the fields signed once more than they occur, so
// that adding another instance breaks the signature (RFC 6376 §5.4.2, §8.15).
var defaultOverSign = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "Sender",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"List-Unsubscribe", "List-Unsubscribe-Post",
}

// DefaultHeaders returns a copy of the header field names signed when
// SignerConfig.Headers is nil.
func DefaultHeaders() []string { return append([]string(nil), defaultHeaders...) }

// DefaultOverSign returns a copy of the header field names over-signed
// when SignerConfig.OverSign is nil.
func DefaultOverSign() []string { return append([]string(nil), defaultOverSign...) }

// Limits on the header section, applied before a message reaches
// go-msgauth (whose header reading is slow on pathological input).
const (
	DefaultMaxHeaderBytes  = 1 << 20
	DefaultMaxHeaderFields = 1000
)

// Signing and header errors.
var (
	// ErrConfig reports an unusable SignerConfig or SignKey.
	ErrConfig = errors.New("dkim: bad configuration")
	// ErrHeaderTooLarge reports a header section over the byte limit.
	ErrHeaderTooLarge = errors.New("dkim: header section too large")
	// ErrTooManyFields reports a header section with too many fields.
	ErrTooManyFields = errors.New("dkim: too many header fields")
	// ErrHeaderSyntax reports a header section that is not RFC 5322 shaped
	// (a line that is neither a field, a continuation nor the end).
	ErrHeaderSyntax = errors.New("dkim: malformed header section")
	// ErrNoKey reports that a KeyRing has no key for a domain.
	ErrNoKey = errors.New("dkim: no signing key for domain")
)

// SignKey is one signing identity: each SignKey of a Signer adds one
// DKIM-Signature field.
type SignKey struct {
	// Domain is the signing domain, d=. Required.
	Domain string
	// Selector is s=. Required.
	Selector string
	// Key is an *rsa.PrivateKey, an ed25519.PrivateKey, or any crypto.Signer
	// whose Public() is *rsa.PublicKey or ed25519.PublicKey (e.g. an HSM).
	// RSA keys sign rsa-sha256, Ed25519 keys ed25519-sha256.
	Key crypto.Signer
	// Identifier is i= (the AUID); empty omits the tag (meaning "@Domain").
	Identifier string
}

// SignerConfig configures a [Signer]. The zero value of every field but
// Keys is a usable default.
type SignerConfig struct {
	// Keys lists the signatures to add, top-most first. At least one.
	Keys []SignKey
	// HeaderCanonicalization and BodyCanonicalization: default Relaxed.
	HeaderCanonicalization Canonicalization
	BodyCanonicalization   Canonicalization
	// Headers are the field names to sign, each once per instance present.
	// Nil means [DefaultHeaders]. From is always signed.
	Headers []string
	// OverSign are field names signed one more time than they occur, so a
	// field added in transit breaks the signature (RFC 6376 §8.15). Names
	// here are signed even if absent from Headers. Nil means
	// [DefaultOverSign]; an empty non-nil slice disables over-signing.
	OverSign []string
	// Expiration, when positive, adds x= that far after Now.
	Expiration time.Duration
	// Now supplies the time for x=; nil means time.Now. (t= is written by
	// go-msgauth from the system clock.)
	Now func() time.Time
	// MinRSABits is the smallest RSA key accepted; zero means 2048 (RFC 8301
	// §3.2 says signers SHOULD use 2048 bits). Set 1024 only for test vectors.
	MinRSABits int
	// MaxHeaderBytes and MaxHeaderFields cap the header section; zero means
	// DefaultMaxHeaderBytes / DefaultMaxHeaderFields.
	MaxHeaderBytes  int
	MaxHeaderFields int
}

// Signer adds DKIM signatures. It is immutable after [NewSigner] and safe
// for concurrent use.
type Signer struct {
	keys       []SignKey
	hcanon     msgdkim.Canonicalization
	bcanon     msgdkim.Canonicalization
	headers    []string       // names to sign, From first
	index      map[string]int // lower-case name -> index in headers
	overSign   []bool         // parallel to headers
	expiration time.Duration
	now        func() time.Time
	limits     limits
	scratch    sync.Pool // of *[]byte, for the first write
}

type limits struct{ bytes, fields int }

func (l limits) orDefault() limits {
	if l.bytes <= 0 {
		l.bytes = DefaultMaxHeaderBytes
	}
	if l.fields <= 0 {
		l.fields = DefaultMaxHeaderFields
	}
	return l
}

// NewSigner checks cfg and returns a Signer. Errors wrap [ErrConfig] or
// [ErrKeyTooSmall] / [ErrKeyType].
func NewSigner(cfg SignerConfig) (*Signer, error) {
	if len(cfg.Keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrConfig)
	}
	minBits := cfg.MinRSABits
	if minBits <= 0 {
		minBits = 2048
	}
	for i, k := range cfg.Keys {
		if k.Domain == "" || k.Selector == "" || k.Key == nil {
			return nil, fmt.Errorf("%w: key %d needs Domain, Selector and Key", ErrConfig, i)
		}
		if hasCtl(k.Domain) || hasCtl(k.Selector) || hasCtl(k.Identifier) ||
			strings.ContainsAny(k.Domain+k.Selector+k.Identifier, ";= ") {
			return nil, fmt.Errorf("%w: key %d: Domain, Selector or Identifier holds a forbidden character", ErrConfig, i)
		}
		switch pub := k.Key.Public().(type) {
		case *rsa.PublicKey:
			if pub.N.BitLen() < minBits {
				return nil, fmt.Errorf("%w: key %d (%s) has %d bits, need %d", ErrKeyTooSmall, i, k.Selector, pub.N.BitLen(), minBits)
			}
		case ed25519.PublicKey:
		default:
			return nil, fmt.Errorf("%w: key %d is %T", ErrKeyType, i, pub)
		}
	}
	s := &Signer{
		keys:       append([]SignKey(nil), cfg.Keys...),
		expiration: cfg.Expiration,
		now:        cfg.Now,
		limits:     limits{cfg.MaxHeaderBytes, cfg.MaxHeaderFields}.orDefault(),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.scratch.New = func() any { b := make([]byte, 0, 32<<10); return &b }
	var err error
	if s.hcanon, err = canon(cfg.HeaderCanonicalization); err != nil {
		return nil, err
	}
	if s.bcanon, err = canon(cfg.BodyCanonicalization); err != nil {
		return nil, err
	}
	headers := cfg.Headers
	if headers == nil {
		headers = defaultHeaders
	}
	over := cfg.OverSign
	if over == nil {
		over = defaultOverSign
	}
	s.index = map[string]int{}
	add := func(h string) int {
		h = strings.TrimSpace(h)
		if i, ok := s.index[strings.ToLower(h)]; ok {
			return i
		}
		s.index[strings.ToLower(h)] = len(s.headers)
		s.headers = append(s.headers, h)
		s.overSign = append(s.overSign, false)
		return len(s.headers) - 1
	}
	add("From")
	for _, h := range headers {
		if !validFieldName(h) {
			return nil, fmt.Errorf("%w: bad header field name %q", ErrConfig, h)
		}
		add(h)
	}
	for _, h := range over {
		if !validFieldName(h) {
			return nil, fmt.Errorf("%w: bad header field name %q", ErrConfig, h)
		}
		s.overSign[add(h)] = true
	}
	return s, nil
}

func canon(c Canonicalization) (msgdkim.Canonicalization, error) {
	switch c {
	case "", Relaxed:
		return msgdkim.CanonicalizationRelaxed, nil
	case Simple:
		return msgdkim.CanonicalizationSimple, nil
	}
	return "", fmt.Errorf("%w: canonicalization %q", ErrConfig, c)
}

// ParseCanonicalization parses "header/body" as in c= ("relaxed/simple");
// a single word means word/simple (RFC 6376 §3.5).
func ParseCanonicalization(s string) (header, body Canonicalization, err error) {
	h, b, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "/")
	if !ok {
		b = string(Simple)
	}
	for _, c := range []string{h, b} {
		if c != string(Simple) && c != string(Relaxed) {
			return "", "", fmt.Errorf("%w: canonicalization %q", ErrConfig, s)
		}
	}
	return Canonicalization(h), Canonicalization(b), nil
}

// Sign reads a whole message (header section and body, CRLF or LF line
// endings) from r once and returns the DKIM-Signature field(s) to prepend
// to it, top-most first, each ending in the message's line ending. The
// message is not copied: a caller storing it on disk writes the returned
// header and then the unchanged file.
//
// Errors: [ErrHeaderTooLarge], [ErrTooManyFields] or [ErrHeaderSyntax] for
// a hostile or broken header section, the reader's error, or ctx.Err()
// (unwrapped) when ctx ends first.
func (s *Signer) Sign(ctx context.Context, r io.Reader) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	bp := s.scratch.Get().(*[]byte)
	defer s.scratch.Put(bp)
	h, err := readHeader(r, s.limits, *bp)
	if err != nil {
		return "", err
	}
	*bp = h.raw[:0] // keep a grown buffer for next time
	return s.signParsed(ctx, h, r, bp)
}

// signParsed signs a message whose header h was already read; body is the
// rest. bp, when not nil, is the pooled buffer h.raw lives in; it may be
// extended in place.
func (s *Signer) signParsed(ctx context.Context, h *header, body io.Reader, bp *[]byte) (string, error) {
	keys := s.headerKeys(h)
	var exp time.Time
	if s.expiration > 0 {
		exp = s.now().Add(s.expiration)
	}
	signers := make([]*msgdkim.Signer, 0, len(s.keys))
	closeAll := func() {
		for _, sg := range signers {
			sg.Close()
		}
	}
	for _, k := range s.keys {
		sg, err := msgdkim.NewSigner(&msgdkim.SignOptions{
			Domain:                 k.Domain,
			Selector:               k.Selector,
			Identifier:             k.Identifier,
			Signer:                 k.Key,
			HeaderCanonicalization: s.hcanon,
			BodyCanonicalization:   s.bcanon,
			HeaderKeys:             keys,
			Expiration:             exp,
		})
		if err != nil {
			closeAll()
			return "", fmt.Errorf("%w: %v", ErrConfig, err)
		}
		signers = append(signers, sg)
	}
	var w io.Writer
	if len(signers) == 1 {
		w = signers[0]
	} else {
		ws := make([]io.Writer, len(signers))
		for i, sg := range signers {
			ws[i] = sg
		}
		w = io.MultiWriter(ws...)
	}
	// One write for the header and whatever body is already buffered:
	// every write to a go-msgauth signer is a hand-off to its goroutine.
	// One write for the header and the body octets already read: every
	// write to a go-msgauth signer is a hand-off to its goroutine.
	var first []byte
	if bp != nil {
		// Sign read the header into *bp: h.raw and h.rest are adjacent at
		// its start (rest is empty when the header is incomplete).
		first = (*bp)[:len(h.raw)+len(h.rest)]
	} else {
		bp = s.scratch.Get().(*[]byte)
		defer s.scratch.Put(bp)
		first = append(append((*bp)[:0], h.raw...), h.rest...)
	}
	if !h.complete {
		first = append(first, "\r\n"...)
	}
	_, err := w.Write(first)
	*bp = first[:0]
	if err != nil {
		closeAll()
		return "", fmt.Errorf("dkim: sign: %w", err)
	}
	if _, err := io.Copy(&ctxWriter{ctx: ctx, w: w}, body); err != nil {
		closeAll()
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("dkim: sign: %w", err)
	}
	var out strings.Builder
	for i, sg := range signers {
		if err := sg.Close(); err != nil {
			for _, rest := range signers[i+1:] {
				rest.Close()
			}
			return "", fmt.Errorf("dkim: sign with %s: %w", s.keys[i].Selector, err)
		}
		sig := sg.Signature()
		if h.lf {
			sig = strings.ReplaceAll(sig, "\r\n", "\n")
		}
		out.WriteString(sig)
	}
	return out.String(), nil
}

// headerKeys builds h=: each configured field once per instance present,
// plus one more for over-signed fields (RFC 6376 §5.4.2).
func (s *Signer) headerKeys(h *header) []string {
	var countsArr [64]int
	var counts []int
	if len(s.headers) <= len(countsArr) {
		counts = countsArr[:len(s.headers)]
	} else {
		counts = make([]int, len(s.headers))
	}
	var buf [64]byte
	for i := 0; i < h.len(); i++ {
		if n := h.lowerName(i, buf[:]); n != nil {
			if idx, ok := s.index[string(n)]; ok {
				counts[idx]++
			}
		}
	}
	keys := make([]string, 0, len(s.headers)+8)
	for idx, name := range s.headers {
		n := counts[idx]
		if s.overSign[idx] {
			n++
		}
		for range n {
			keys = append(keys, name)
		}
	}
	return keys
}

// ctxWriter fails writes once ctx ends, so a long copy stops promptly.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// KeyRing holds the signing keys of many sending domains and picks them by
// domain: the exact domain first, then the nearest parent domain holding
// keys (a key for example.com signs mail from news.example.com, which
// DMARC aligns in relaxed mode). It is safe for concurrent use; Set
// replaces a domain's keys atomically, for key rotation.
type KeyRing struct {
	template SignerConfig
	mu       sync.RWMutex
	signers  map[string]*Signer
}

// NewKeyRing returns an empty KeyRing whose signers use template's
// settings (template.Keys is ignored).
func NewKeyRing(template SignerConfig) *KeyRing {
	template.Keys = nil
	return &KeyRing{template: template, signers: map[string]*Signer{}}
}

// Set replaces the keys used for domain (one signature per key). Errors
// are NewSigner's.
func (k *KeyRing) Set(domain string, keys ...SignKey) error {
	cfg := k.template
	cfg.Keys = keys
	s, err := NewSigner(cfg)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.signers[normDomain(domain)] = s
	k.mu.Unlock()
	return nil
}

// Remove forgets the keys of domain.
func (k *KeyRing) Remove(domain string) {
	k.mu.Lock()
	delete(k.signers, normDomain(domain))
	k.mu.Unlock()
}

// SignerFor returns the Signer for domain or its nearest parent with keys,
// or nil.
func (k *KeyRing) SignerFor(domain string) *Signer {
	d := normDomain(domain)
	k.mu.RLock()
	defer k.mu.RUnlock()
	for d != "" {
		if s, ok := k.signers[d]; ok {
			return s
		}
		_, rest, ok := strings.Cut(d, ".")
		if !ok {
			break
		}
		d = rest
	}
	return nil
}

// Sign signs the message in r with the keys of domain (typically the
// envelope sender's domain). With domain empty, the domain of the single
// address in the message's From field is used; a From field that is
// missing, repeated or holds several addresses gives an error wrapping
// [ErrNoKey]. Otherwise it behaves like [Signer.Sign].
func (k *KeyRing) Sign(ctx context.Context, domain string, r io.Reader) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	h, err := readHeader(r, limits{k.template.MaxHeaderBytes, k.template.MaxHeaderFields}.orDefault(), nil)
	if err != nil {
		return "", err
	}
	if domain == "" {
		froms := h.values("from")
		if len(froms) != 1 {
			return "", fmt.Errorf("%w: message has %d From fields", ErrNoKey, len(froms))
		}
		addr, err := mail.ParseAddress(froms[0])
		if err != nil {
			return "", fmt.Errorf("%w: From: %v", ErrNoKey, err)
		}
		at := strings.LastIndexByte(addr.Address, '@')
		domain = addr.Address[at+1:]
	}
	s := k.SignerFor(domain)
	if s == nil {
		return "", fmt.Errorf("%w: %s", ErrNoKey, domain)
	}
	return s.signParsed(ctx, h, r, nil)
}

func normDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\' {
			return true
		}
	}
	return false
}

// validFieldName: RFC 5322 §3.6.8 ftext, printable ASCII except ":".
func validFieldName(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 || s[i] == ':' {
			return false
		}
	}
	return true
}

// header is a message's header section as read by readHeader. Fields are
// kept as offsets into raw, so reading a header allocates little.
type header struct {
	raw      []byte // the bytes read, including the blank line when complete
	rest     []byte // body octets read past the header section
	spans    []span // one per field, in order
	lf       bool   // the first line ended in a bare LF
	complete bool   // the blank line ending the header section was seen
}

// span locates one field in raw: raw[start:end] is the whole field
// (folding and line ending included), raw[start:name] its name as written.
type span struct{ start, name, end int }

func (h *header) len() int { return len(h.spans) }

// field returns field i as written.
func (h *header) field(i int) string {
	sp := h.spans[i]
	return string(h.raw[sp.start:sp.end])
}

// nameIs reports whether field i is named lower (ASCII case-insensitive,
// whitespace before the colon ignored).
func (h *header) nameIs(i int, lower string) bool {
	sp := h.spans[i]
	return strings.EqualFold(string(bytes.TrimRight(h.raw[sp.start:sp.name], " \t")), lower)
}

// lowerName writes field i's name, lower-cased and without trailing
// whitespace, into buf and returns it (or nil when it does not fit).
func (h *header) lowerName(i int, buf []byte) []byte {
	sp := h.spans[i]
	n := bytes.TrimRight(h.raw[sp.start:sp.name], " \t")
	if len(n) > len(buf) {
		return nil
	}
	for j, c := range n {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[j] = c
	}
	return buf[:len(n)]
}

// values returns the values of all fields named lower, unfolded.
func (h *header) values(lower string) []string {
	var out []string
	for i := range h.spans {
		if h.nameIs(i, lower) {
			_, v, _ := strings.Cut(h.field(i), ":")
			v = strings.ReplaceAll(strings.ReplaceAll(v, "\r\n", ""), "\n", "")
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// readHeader reads the header section from r with size and field-count
// caps, so a hostile header never reaches go-msgauth's quadratic
// unfolding. It reads straight into dst (which may be nil; a caller can
// pass a pooled buffer): h.raw is the header section at the start of the
// buffer, and h.rest holds the body octets read past it, which the caller
// must use before reading r further.
func readHeader(r io.Reader, lim limits, dst []byte) (*header, error) {
	h := &header{spans: make([]span, 0, 32)}
	buf := dst[:0]
	if cap(buf) < 4096 {
		buf = make([]byte, 0, 16<<10)
	}
	off := 0 // start of the next line
	eof := false
	first := true
	for {
		// Find the end of the next line, reading more as needed.
		nl := -1
		for {
			if i := bytes.IndexByte(buf[off:], '\n'); i >= 0 {
				nl = off + i
				break
			}
			if eof {
				break
			}
			if len(buf)-off > lim.bytes || off > lim.bytes {
				return nil, fmt.Errorf("%w: over %d bytes", ErrHeaderTooLarge, lim.bytes)
			}
			if cap(buf)-len(buf) < 4096 {
				buf = append(buf, make([]byte, max(4096, cap(buf)))...)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				eof = true
			} else if err != nil {
				return nil, fmt.Errorf("dkim: reading header: %w", err)
			}
		}
		end := len(buf) // a last line without LF runs to the end
		if nl >= 0 {
			end = nl + 1
		}
		if end > lim.bytes {
			return nil, fmt.Errorf("%w: over %d bytes", ErrHeaderTooLarge, lim.bytes)
		}
		start := off
		l := buf[start:end]
		off = end
		if len(l) == 0 {
			break // EOF
		}
		if first {
			h.lf = l[len(l)-1] == '\n' && (len(l) < 2 || l[len(l)-2] != '\r')
			first = false
		}
		content := bytes.TrimRight(l, "\r\n")
		switch {
		case len(content) == 0 && l[len(l)-1] == '\n':
			h.complete = true
		case len(content) == 0:
			// A lone CR at EOF: nothing to keep.
		case content[0] == ' ' || content[0] == '\t':
			if len(h.spans) == 0 {
				return nil, fmt.Errorf("%w: continuation line before the first field", ErrHeaderSyntax)
			}
			h.spans[len(h.spans)-1].end = end
		default:
			colon := bytes.IndexByte(content, ':')
			if colon < 0 {
				return nil, fmt.Errorf("%w: line without colon", ErrHeaderSyntax)
			}
			if len(h.spans) >= lim.fields {
				return nil, fmt.Errorf("%w: over %d", ErrTooManyFields, lim.fields)
			}
			h.spans = append(h.spans, span{start: start, name: start + colon, end: end})
		}
		if h.complete || nl < 0 {
			break
		}
	}
	h.raw = buf[:off]
	h.rest = buf[off:]
	if !h.complete && len(h.raw) > 0 && h.raw[len(h.raw)-1] != '\n' {
		// A last line without a line ending: terminate it so the signer
		// sees a well-formed header section. (rest is empty here.)
		h.raw = append(h.raw, "\r\n"...)
		h.rest = nil
	}
	return h, nil
}
