package main

import (
	"bytes"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/queue"
)

// request is the JSON body of POST /v1/messages.
type request struct {
	From      string            `json:"from"`
	To        []string          `json:"to"`
	Cc        []string          `json:"cc"`
	Bcc       []string          `json:"bcc"`
	ReplyTo   string            `json:"reply_to"`
	Subject   string            `json:"subject"`
	Text      string            `json:"text"`
	HTML      string            `json:"html"`
	Headers   map[string]string `json:"headers"`
	Variables map[string]any    `json:"variables"`
	Tags      []string          `json:"tags"`
	Metadata  map[string]string `json:"metadata"`
	Priority  string            `json:"priority"`
	SendAt    string            `json:"send_at"`
}

// Limits on a request. Tags and metadata are copied into every delivery
// event and every line of the status file, so they are kept small.
const (
	maxRecipients    = 1000
	maxTags          = 20
	maxTagLen        = 100
	maxMetadata      = 20
	maxMetaKeyLen    = 100
	maxMetaValueLen  = 1000
	maxHeaders       = 50
	maxHeaderWordLen = 900 // an unfoldable run of characters in a header value
	maxIdemKeyLen    = 255
)

// apiError is a request error: an HTTP status, the request field at
// fault ("" when none is) and a message for the client.
type apiError struct {
	Status int
	Field  string
	Msg    string
}

func (e *apiError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func invalid(field, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusUnprocessableEntity, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// reserved are the header fields a request may not set through "headers":
// the builder writes them itself (or, for Bcc, never), and a second copy
// would either be ignored by readers or change the message's meaning
// (RFC 5322 §3.6 allows most of them only once). Return-Path and
// Received are added by the MTAs on the way, not by the author.
var reserved = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "reply-to": true,
	"subject": true, "date": true, "message-id": true, "sender": true,
	"mime-version": true, "content-type": true, "content-transfer-encoding": true,
	"dkim-signature": true, "return-path": true, "received": true,
}

// message is a request turned into what the queue takes.
type message struct {
	From       string // envelope sender: the From address
	FromDomain string
	Recipients []deliver.Recipient // To, Cc and Bcc, without duplicates
	MessageID  string              // with angle brackets
	Data       []byte              // the RFC 5322 message, CRLF line endings
	Priority   queue.Priority
	NotBefore  time.Time
}

// buildConfig is what build needs besides the request.
type buildConfig struct {
	Hostname  string    // right-hand side of Message-ID
	Now       time.Time // Date field, and send_at in the past
	Rand      io.Reader // Message-ID and MIME boundary
	MaxOutput int       // size limit of each rendered part, in bytes
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// build validates req, renders its templates and writes the message. It
// returns an *apiError for anything the client must fix, and another
// error only when cfg.Rand fails.
func build(req *request, cfg buildConfig) (*message, error) {
	m := &message{}
	if strings.TrimSpace(req.From) == "" {
		return nil, invalid("from", "required")
	}
	from, err := parseAddress("from", req.From)
	if err != nil {
		return nil, err
	}
	m.From = from.Address
	m.FromDomain = strings.ToLower(from.Address[strings.LastIndexByte(from.Address, '@')+1:])
	var replyTo *mail.Address
	if req.ReplyTo != "" {
		if replyTo, err = parseAddress("reply_to", req.ReplyTo); err != nil {
			return nil, err
		}
	}
	lists := [3][]*mail.Address{}
	seen := map[string]bool{}
	for i, l := range [3]struct {
		field string
		addrs []string
	}{{"to", req.To}, {"cc", req.Cc}, {"bcc", req.Bcc}} {
		for j, s := range l.addrs {
			a, err := parseAddress(fmt.Sprintf("%s[%d]", l.field, j), s)
			if err != nil {
				return nil, err
			}
			lists[i] = append(lists[i], a)
			// The queue keeps one copy of each address, comparing the
			// domain without case; so do we, to report the real count.
			at := strings.LastIndexByte(a.Address, '@')
			key := a.Address[:at+1] + strings.ToLower(a.Address[at+1:])
			if !seen[key] {
				seen[key] = true
				m.Recipients = append(m.Recipients, deliver.Recipient{Address: a.Address})
			}
		}
	}
	if len(m.Recipients) == 0 {
		return nil, invalid("to", "at least one recipient in to, cc or bcc is required")
	}
	if len(m.Recipients) > maxRecipients {
		return nil, invalid("to", "%d recipients; at most %d per message", len(m.Recipients), maxRecipients)
	}
	if req.Text == "" && req.HTML == "" {
		return nil, invalid("text", "text or html (or both) is required")
	}
	if err := checkLabels(req); err != nil {
		return nil, err
	}
	switch req.Priority {
	case "", "normal":
		m.Priority = queue.PriorityNormal
	case "transactional":
		m.Priority = queue.PriorityTransactional
	case "bulk":
		m.Priority = queue.PriorityBulk
	default:
		return nil, invalid("priority", "%q: want transactional, normal or bulk", req.Priority)
	}
	if req.SendAt != "" {
		t, err := time.Parse(time.RFC3339, req.SendAt)
		if err != nil {
			return nil, invalid("send_at", "not an RFC 3339 time: %q", req.SendAt)
		}
		if t.After(cfg.Now) {
			m.NotBefore = t
		}
	}
	names, err := checkHeaders(req.Headers)
	if err != nil {
		return nil, err
	}

	subject, err := renderText("subject", req.Subject, req.Variables, cfg.MaxOutput)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(subject, "\r\n") {
		return nil, invalid("subject", "contains a line break (after rendering)")
	}
	var text, html string
	if req.Text != "" {
		if text, err = renderText("text", req.Text, req.Variables, cfg.MaxOutput); err != nil {
			return nil, err
		}
	}
	if req.HTML != "" {
		if html, err = renderHTML("html", req.HTML, req.Variables, cfg.MaxOutput); err != nil {
			return nil, err
		}
	}

	var rnd [16]byte
	if _, err := io.ReadFull(cfg.Rand, rnd[:]); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}
	m.MessageID = "<" + strings.ToLower(b32.EncodeToString(rnd[:])) + "@" + cfg.Hostname + ">"

	var b bytes.Buffer
	h := headerWriter{b: &b}
	h.raw("Date", cfg.Now.Format(time.RFC1123Z))
	h.raw("Message-ID", m.MessageID)
	h.addresses("from", "From", []*mail.Address{from})
	h.addresses("to", "To", lists[0])
	h.addresses("cc", "Cc", lists[1])
	// Bcc recipients are in the envelope only: a Bcc field would show them
	// to every recipient (RFC 5322 §3.6.3 allows leaving it out).
	if replyTo != nil {
		h.addresses("reply_to", "Reply-To", []*mail.Address{replyTo})
	}
	if subject != "" {
		h.text("subject", "Subject", subject)
	}
	h.raw("MIME-Version", "1.0")
	for _, name := range names {
		h.text("headers", name, req.Headers[name])
	}
	if h.err != nil {
		return nil, h.err
	}

	switch {
	case text != "" && html != "":
		var rb [24]byte
		if _, err := io.ReadFull(cfg.Rand, rb[:]); err != nil {
			return nil, fmt.Errorf("random: %w", err)
		}
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		if err := mw.SetBoundary(b32.EncodeToString(rb[:])); err != nil {
			return nil, err
		}
		h.raw("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()}))
		b.WriteString("\r\n")
		// RFC 2046 §5.1.4: the last part is the preferred one.
		for _, p := range []struct{ typ, content string }{{"text/plain", text}, {"text/html", html}} {
			w, err := mw.CreatePart(textproto.MIMEHeader{
				"Content-Type":              {p.typ + "; charset=utf-8"},
				"Content-Transfer-Encoding": {"quoted-printable"},
			})
			if err != nil {
				return nil, err
			}
			if err := writeQP(w, p.content); err != nil {
				return nil, err
			}
		}
		if err := mw.Close(); err != nil {
			return nil, err
		}
		b.Write(body.Bytes())
	default:
		typ, content := "text/plain", text
		if text == "" {
			typ, content = "text/html", html
		}
		h.raw("Content-Type", typ+"; charset=utf-8")
		h.raw("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		if err := writeQP(&b, content); err != nil {
			return nil, err
		}
	}
	m.Data = b.Bytes()
	return m, nil
}

// writeQP writes s quoted-printable: line breaks become CRLF and no line is
// longer than 76 characters, whatever the input (RFC 2045 §6.7).
func writeQP(w io.Writer, s string) error {
	qw := quotedprintable.NewWriter(w)
	if _, err := io.WriteString(qw, s); err != nil {
		return err
	}
	if err := qw.Close(); err != nil {
		return err
	}
	// A body that does not end in a line break gets one, so the multipart
	// delimiter or the end of the message starts a line of its own.
	if !strings.HasSuffix(s, "\n") && !strings.HasSuffix(s, "\r") {
		_, err := io.WriteString(w, "\r\n")
		return err
	}
	return nil
}

// checkLabels checks tags and metadata.
func checkLabels(req *request) error {
	if len(req.Tags) > maxTags {
		return invalid("tags", "%d tags; at most %d", len(req.Tags), maxTags)
	}
	for i, t := range req.Tags {
		if t == "" || len(t) > maxTagLen || hasControl(t) {
			return invalid(fmt.Sprintf("tags[%d]", i), "a tag is 1 to %d bytes without control characters", maxTagLen)
		}
	}
	if len(req.Metadata) > maxMetadata {
		return invalid("metadata", "%d keys; at most %d", len(req.Metadata), maxMetadata)
	}
	for k, v := range req.Metadata {
		if k == "" || len(k) > maxMetaKeyLen || hasControl(k) {
			return invalid("metadata", "key %q: keys are 1 to %d bytes without control characters", k, maxMetaKeyLen)
		}
		if len(v) > maxMetaValueLen {
			return invalid("metadata", "value of %q: at most %d bytes", k, maxMetaValueLen)
		}
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// checkHeaders checks the custom header fields and returns their names in
// a fixed order (JSON objects have none).
func checkHeaders(hs map[string]string) ([]string, error) {
	if len(hs) > maxHeaders {
		return nil, invalid("headers", "%d fields; at most %d", len(hs), maxHeaders)
	}
	names := make([]string, 0, len(hs))
	for name, value := range hs {
		// RFC 5322 §2.2: a field name is printable ASCII other than ":".
		// This also refuses "Subject\r\nBcc", an attempt to inject a
		// field through the name.
		if name == "" || len(name) > 76 || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r > '~' || r == ':' }) {
			return nil, invalid("headers", "%q is not a valid header field name", name)
		}
		if reserved[strings.ToLower(name)] {
			return nil, invalid("headers", "%s is set by the API and cannot be given in headers", name)
		}
		if strings.ContainsAny(value, "\r\n") {
			return nil, invalid("headers", "the value of %s contains a line break", name)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// parseAddress parses one "Name <local@domain>" or "local@domain" and
// checks that the address can go into an SMTP envelope as it is.
func parseAddress(field, s string) (*mail.Address, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, invalid(field, "contains a line break")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, invalid(field, "%q is not an address: %v", s, strings.TrimPrefix(err.Error(), "mail: "))
	}
	if err := checkEnvelopeAddress(a.Address); err != nil {
		return nil, invalid(field, "%q: %v", a.Address, err)
	}
	return a, nil
}

// checkEnvelopeAddress accepts the addresses this program can send to:
// a dot-atom local part (RFC 5321 §4.1.2; quoted local parts are legal but
// rare and badly supported) at a domain name or an address literal, in
// ASCII (internationalized addresses need SMTPUTF8, not offered here).
func checkEnvelopeAddress(addr string) error {
	if len(addr) > 254 {
		return errors.New("longer than 254 octets")
	}
	for _, c := range addr {
		if c >= 0x80 {
			return errors.New("non-ASCII addresses (SMTPUTF8) are not supported")
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return errors.New("want local@domain")
	}
	local, domain := addr[:at], addr[at+1:]
	if len(local) > 64 {
		return errors.New("local part longer than 64 octets")
	}
	for _, atom := range strings.Split(local, ".") {
		if atom == "" || strings.ContainsFunc(atom, func(r rune) bool { return !isAtext(r) }) {
			return errors.New("only plain (dot-atom) local parts are supported")
		}
	}
	if strings.HasPrefix(domain, "[") {
		lit, ok := strings.CutSuffix(domain[1:], "]")
		var ip netip.Addr
		var err error
		if v6, is6 := strings.CutPrefix(lit, "IPv6:"); is6 {
			ip, err = netip.ParseAddr(v6)
			ok = ok && err == nil && ip.Is6() && ip.Zone() == ""
		} else {
			ip, err = netip.ParseAddr(lit)
			ok = ok && err == nil && ip.Is4()
		}
		if !ok {
			return errors.New("invalid address literal")
		}
		return nil
	}
	if len(domain) > 253 {
		return errors.New("domain longer than 253 octets")
	}
	for _, label := range strings.Split(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.ContainsFunc(label, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
			}) {
			return errors.New("invalid domain")
		}
	}
	return nil
}

// isAtext reports whether r is an atext character (RFC 5322 §3.2.3).
func isAtext(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
}

// headerWriter writes header fields with CRLF endings, folded at spaces
// so that lines stay near 78 characters (RFC 5322 §2.1.1). The first
// error is kept in err and the rest of the writes are skipped.
type headerWriter struct {
	b   *bytes.Buffer
	err error
}

// raw writes a field whose value is made by this program: ASCII without
// line breaks.
func (h *headerWriter) raw(name, value string) {
	h.fold("", name, value)
}

// text writes an unstructured field (Subject, custom fields), encoding it
// as RFC 2047 encoded-words when it holds anything but printable ASCII.
func (h *headerWriter) text(field, name, value string) {
	h.fold(field, name, mime.QEncoding.Encode("utf-8", value))
}

// addresses writes an address list; net/mail quotes or encodes the
// display names.
func (h *headerWriter) addresses(field, name string, addrs []*mail.Address) {
	if len(addrs) == 0 {
		return
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	h.fold(field, name, strings.Join(s, ", "))
}

// fold writes "name: value" CRLF, breaking the line before a space when it
// would pass 78 characters. Unfolding (removing each CRLF) gives back the
// value exactly: folding only ever replaces a space with CRLF + space.
// A run of more than maxHeaderWordLen characters without a space cannot be
// folded and is refused; encoded-words are at most 75 characters, so this
// only happens to long ASCII words.
func (h *headerWriter) fold(field, name, value string) {
	if h.err != nil {
		return
	}
	h.b.WriteString(name)
	h.b.WriteString(":")
	line := len(name) + 1
	for i, word := range strings.Split(value, " ") {
		if len(word) > maxHeaderWordLen {
			h.err = invalid(field, "%s holds a word of more than %d characters, which cannot be folded into header lines", name, maxHeaderWordLen)
			return
		}
		// Fold only before a non-empty word, so that no line is blank, and
		// never right after the field name.
		if i > 0 && word != "" && line+1+len(word) > 78 {
			h.b.WriteString("\r\n")
			line = 0
		}
		h.b.WriteString(" ")
		h.b.WriteString(word)
		line += 1 + len(word)
	}
	h.b.WriteString("\r\n")
}
