package bounce

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// Resource errors returned (wrapped) by the parsers.
var (
	// ErrTooLarge means the input or one of its header sections exceeded a
	// size limit of the [Parser].
	ErrTooLarge = errors.New("bounce: input too large")
	// ErrTooComplex means the MIME structure exceeded the nesting depth or
	// part count limit of the [Parser].
	ErrTooComplex = errors.New("bounce: MIME structure too complex")
	// ErrMalformed means the input is not a message at all (no header).
	ErrMalformed = errors.New("bounce: malformed message")
)

// field is one unfolded header field.
type field struct{ name, value string }

// header is a parsed header section, in order.
type header []field

func (h header) get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.name, name) {
			return f.value
		}
	}
	return ""
}

func (h header) has(name string) bool {
	for _, f := range h {
		if strings.EqualFold(f.name, name) {
			return true
		}
	}
	return false
}

// limits bound the work done on one input.
type limits struct {
	maxHeaderBytes  int
	maxHeaderFields int
	maxDepth        int
	maxParts        int
	parts           int
}

// readHeader splits b into its header section and body. Both LF and CRLF
// line endings are accepted. Lines that are not fields end the header
// (lenient, as bounces are often mangled) unless strict is set.
func (l *limits) readHeader(b []byte) (header, []byte, error) {
	var h header
	pos := 0
	for pos < len(b) {
		lineStart := pos
		i := bytes.IndexByte(b[pos:], '\n')
		var line []byte
		if i < 0 {
			line, pos = b[pos:], len(b)
		} else {
			line, pos = b[pos:pos+i], pos+i+1
		}
		if pos > l.maxHeaderBytes {
			return nil, nil, fmt.Errorf("%w: header section over %d bytes", ErrTooLarge, l.maxHeaderBytes)
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return h, b[pos:], nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(h) > 0 {
				v := &h[len(h)-1].value
				if len(*v) < l.maxHeaderBytes {
					*v += " " + string(bytes.TrimSpace(line))
				}
			}
			continue
		}
		if len(h) == 0 && bytes.HasPrefix(line, []byte("From ")) {
			continue // mbox separator
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || bytes.ContainsAny(line[:colon], " \t") {
			// Not a header line: the body starts here.
			if len(h) == 0 {
				return nil, b, nil
			}
			return h, b[lineStart:], nil
		}
		if len(h) >= l.maxHeaderFields {
			return nil, nil, fmt.Errorf("%w: more than %d header fields", ErrTooLarge, l.maxHeaderFields)
		}
		h = append(h, field{string(line[:colon]), string(bytes.TrimSpace(line[colon+1:]))})
	}
	return h, nil, nil
}

// entity is one MIME entity with a decoded body.
type entity struct {
	header   header
	mediaTyp string            // lower case, "text/plain" when absent
	params   map[string]string // Content-Type parameters
	body     []byte            // transfer-decoded
	children []*entity         // multipart parts or the encapsulated message
}

// parseEntity parses b as a MIME entity, recursing into multiparts and
// encapsulated messages up to the depth limit.
func (l *limits) parseEntity(b []byte, depth int, defaultType string) (*entity, error) {
	if depth > l.maxDepth {
		return nil, fmt.Errorf("%w: nesting deeper than %d", ErrTooComplex, l.maxDepth)
	}
	l.parts++
	if l.parts > l.maxParts {
		return nil, fmt.Errorf("%w: more than %d parts", ErrTooComplex, l.maxParts)
	}
	h, body, err := l.readHeader(b)
	if err != nil {
		return nil, err
	}
	e := &entity{header: h, mediaTyp: defaultType}
	if ct := h.get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			// Salvage the media type from a broken header.
			mt, _, _ = strings.Cut(ct, ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
			params = map[string]string{}
			if bi := strings.Index(strings.ToLower(ct), "boundary="); bi >= 0 {
				v := ct[bi+len("boundary="):]
				v, _, _ = strings.Cut(v, ";")
				params["boundary"] = strings.Trim(strings.TrimSpace(v), `"`)
			}
		}
		if mt != "" {
			e.mediaTyp = mt
		}
		e.params = params
	}
	switch {
	case strings.HasPrefix(e.mediaTyp, "multipart/"):
		boundary := e.params["boundary"]
		if boundary == "" {
			boundary = guessBoundary(body)
		}
		if boundary == "" {
			e.body = body
			e.mediaTyp = "text/plain"
			return e, nil
		}
		sub := "text/plain"
		if e.mediaTyp == "multipart/digest" {
			sub = "message/rfc822"
		}
		parts := splitMultipart(body, boundary)
		if len(parts) == 0 {
			// Mangled bounces sometimes declare a boundary the body does
			// not use: take the first delimiter-like line that repeats.
			if b := guessBoundary(body); b != "" {
				parts = splitMultipart(body, b)
			}
		}
		for _, p := range parts {
			c, err := l.parseEntity(p, depth+1, sub)
			if err != nil {
				return nil, err
			}
			e.children = append(e.children, c)
		}
		if len(e.children) == 0 {
			// No usable parts: read the body as text.
			e.body = body
			e.mediaTyp = "text/plain"
		}
	case e.mediaTyp == "message/rfc822" || e.mediaTyp == "message/global":
		dec := decodeCTE(h.get("Content-Transfer-Encoding"), body)
		c, err := l.parseEntity(dec, depth+1, "text/plain")
		if err != nil {
			return nil, err
		}
		e.children = []*entity{c}
		e.body = dec
	default:
		e.body = decodeCTE(h.get("Content-Transfer-Encoding"), body)
	}
	return e, nil
}

// splitMultipart returns the bodies of the parts of a multipart body
// (RFC 2046 §5.1.1). A missing close delimiter is tolerated.
func splitMultipart(body []byte, boundary string) [][]byte {
	delim := []byte("--" + boundary)
	var parts [][]byte
	start := -1
	pos := 0
	for pos <= len(body) {
		end := bytes.IndexByte(body[pos:], '\n')
		var line []byte
		next := len(body) + 1
		if end < 0 {
			line = body[pos:]
		} else {
			line = body[pos : pos+end]
			next = pos + end + 1
		}
		if bytes.HasPrefix(line, delim) {
			rest := bytes.TrimRight(line[len(delim):], " \t\r")
			closing := bytes.Equal(rest, []byte("--"))
			if len(rest) == 0 || closing {
				if start >= 0 {
					p := body[start:pos]
					p = bytes.TrimSuffix(p, []byte("\n"))
					p = bytes.TrimSuffix(p, []byte("\r"))
					parts = append(parts, p)
				}
				start = next
				if closing {
					return parts
				}
			}
		}
		pos = next
	}
	if start >= 0 && start < len(body) {
		parts = append(parts, body[start:])
	}
	return parts
}

// decodeCTE undoes a Content-Transfer-Encoding leniently: undecodable input
// is returned as far as it decoded, or unchanged.
func decodeCTE(cte string, b []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		clean := make([]byte, 0, len(b))
		for _, c := range b {
			if c == '=' || c == '+' || c == '/' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
				clean = append(clean, c)
			}
		}
		clean = bytes.TrimRight(clean, "=")
		out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
		n, err := base64.RawStdEncoding.Decode(out, clean)
		if err != nil && n == 0 {
			return b
		}
		return out[:n]
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(b)))
		if err != nil && len(out) == 0 {
			return b
		}
		return out
	}
	return b
}

// decodeWords decodes RFC 2047 encoded words where the charset is known to
// the standard library, and leaves the text unchanged otherwise.
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d := mime.WordDecoder{CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
		// Unknown charsets: pass the bytes through; the ASCII parts are
		// what the parsers look at.
		return input, nil
	}}
	out, err := d.DecodeHeader(s)
	if err != nil {
		return s
	}
	return out
}

// walk calls fn for e and every descendant, depth first.
func (e *entity) walk(fn func(*entity) bool) {
	if !fn(e) {
		return
	}
	for _, c := range e.children {
		c.walk(fn)
	}
}

// guessBoundary returns the first "--token" line of body that occurs at
// least twice, without its leading dashes, or "".
func guessBoundary(body []byte) string {
	seen := map[string]int{}
	for _, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimRight(line, " \t\r")
		if len(line) < 6 || !bytes.HasPrefix(line, []byte("--")) || bytes.ContainsAny(line, " \t") {
			continue
		}
		b := string(bytes.TrimSuffix(line[2:], []byte("--")))
		seen[b]++
		if seen[b] == 2 {
			return b
		}
		if len(seen) > 50 {
			break
		}
	}
	return ""
}
