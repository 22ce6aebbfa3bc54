package submit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/queue"
)

// DATA replies.
var (
	// ErrBareLineEnding: a bare LF or CR in DATA (RFC 5321 §2.3.8).
	ErrBareLineEnding = reply(550, smtp.EnhancedCode{5, 6, 0}, "Message contains bare CR or LF; lines must end with CRLF")
	// ErrNUL: a NUL octet in DATA (RFC 5321 §4.5.2 / RFC 5322 §2.3).
	ErrNUL = reply(550, smtp.EnhancedCode{5, 6, 0}, "Message contains NUL characters")
	// ErrLineTooLong: a line over Config.MaxLineLength.
	ErrLineTooLong = reply(500, smtp.EnhancedCode{5, 5, 2}, "Line too long (RFC 5321 4.5.3.1.6)")
	// ErrHeaderTooLarge: the header section is over the byte or field limit.
	ErrHeaderTooLarge = reply(552, smtp.EnhancedCode{5, 3, 4}, "Header section too large")
	// ErrBadHeader: the header section is not RFC 5322 shaped.
	ErrBadHeader = reply(550, smtp.EnhancedCode{5, 6, 0}, "Malformed header section")
	// ErrFromCount: not exactly one From field (RFC 5322 §3.6).
	ErrFromCount = reply(550, smtp.EnhancedCode{5, 6, 0}, "Message must have exactly one From header field (RFC 5322 3.6)")
	// ErrBadFrom: the From field is not a valid address list.
	ErrBadFrom = reply(550, smtp.EnhancedCode{5, 6, 0}, "From header field is not a valid address list")
	// ErrTooBig: the message is over the size limit.
	ErrTooBig = reply(552, smtp.EnhancedCode{5, 3, 4}, "Message size exceeds fixed limit")
)

// Data implements smtp.Session: it checks and spools the message, parses
// its header section, completes and signs it, and enqueues it. The reply
// is "250 2.0.0 OK: queued as <id>" once the queue has stored it.
func (s *Session) Data(r io.Reader) error {
	start := s.b.cfg.Now()
	if !s.hasFrom || len(s.rcpts) == 0 {
		return reply(503, smtp.EnhancedCode{5, 5, 1}, "MAIL and RCPT first")
	}
	cfg := &s.b.cfg
	sp := &spool{memLimit: cfg.SpoolMemory, dir: cfg.TempDir}
	defer sp.Close()
	lf := lineFilter{w: sp, maxLine: cfg.MaxLineLength, normalize: cfg.BareLineEndings == NormalizeBare}
	if err := lf.copy(r); err != nil {
		return s.refuse(err, "data")
	}
	if sp.n > cfg.MaxMessageBytes {
		return s.refuse(ErrTooBig, "size")
	}
	h, err := parseHeader(sp.reader(), cfg.MaxHeaderBytes, cfg.MaxHeaderFields)
	if err != nil {
		return s.refuse(err, "header")
	}
	froms := h.values("from")
	if len(froms) != 1 {
		return s.refuse(ErrFromCount, "from")
	}
	addrs, err := mail.ParseAddressList(froms[0])
	if err != nil || len(addrs) == 0 {
		return s.refuse(ErrBadFrom, "from")
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if s.user != nil {
		for _, a := range addrs {
			if err := s.authorize(ctx, HeaderFrom, a.Address); err != nil {
				return err
			}
		}
	}
	fromDomain := ""
	if at := strings.LastIndexByte(addrs[0].Address, '@'); at >= 0 {
		fromDomain = addrs[0].Address[at+1:]
	}

	txid := randomID(10)
	now := s.b.cfg.Now()
	var pre strings.Builder
	s.writeReceived(&pre, txid, now)
	if len(h.values("date")) == 0 {
		// RFC 6409 §8.2 / RFC 5322 §3.6.1.
		fmt.Fprintf(&pre, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	if len(h.values("message-id")) == 0 {
		// RFC 6409 §8.3 / RFC 5322 §3.6.4.
		fmt.Fprintf(&pre, "Message-ID: <%s.%s@%s>\r\n", now.UTC().Format("20060102150405"), randomID(10), cfg.Hostname)
	}
	prefix := pre.String()

	var sig string
	if cfg.DKIM != nil && fromDomain != "" {
		if signer := cfg.DKIM.SignerFor(fromDomain); signer != nil {
			sig, err = signer.Sign(ctx, io.MultiReader(strings.NewReader(prefix), sp.reader()))
			switch {
			case errors.Is(err, dkim.ErrHeaderTooLarge) || errors.Is(err, dkim.ErrTooManyFields):
				return s.refuse(ErrHeaderTooLarge, "dkim")
			case errors.Is(err, dkim.ErrHeaderSyntax):
				return s.refuse(ErrBadHeader, "dkim")
			case err != nil:
				s.b.log.Error("submit: dkim signing failed", "domain", fromDomain, "err", err)
				return ErrTempFailure
			}
		}
	}

	m := &queue.NewMessage{
		From:       s.from,
		Mail:       s.mailOpts,
		Recipients: s.rcpts,
		Metadata:   map[string]string{"submit-id": txid},
	}
	if s.user != nil {
		m.Tenant = s.user.Tenant
		m.Metadata["user"] = s.user.Name
	}
	body := io.MultiReader(strings.NewReader(sig), strings.NewReader(prefix), sp.reader())
	id, err := cfg.Queue.Enqueue(ctx, m, body)
	if err != nil {
		return s.enqueueError(err)
	}
	s.b.log.Info("submit: queued", "id", id, "txid", txid, "from", s.from, "rcpts", len(s.rcpts),
		"size", sp.n, "user", s.userName(), "ip", s.ip, "signed", sig != "", "dur", s.b.cfg.Now().Sub(start))
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK: queued as " + id}
}

func (s *Session) refuse(err error, stage string) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		s.b.log.Warn("submit: reading data", "ip", s.ip, "err", err)
		return reply(451, smtp.EnhancedCode{4, 3, 0}, "Error reading message data")
	}
	if se.Code == smtp.ErrDataTooLarge.Code {
		se = ErrTooBig
	}
	s.b.log.Info("submit: refused", "stage", stage, "code", se.Code, "reply", se.Message, "ip", s.ip, "user", s.userName())
	return se
}

func (s *Session) enqueueError(err error) error {
	s.b.log.Warn("submit: enqueue failed", "ip", s.ip, "user", s.userName(), "err", err)
	switch {
	case errors.Is(err, queue.ErrTooBig):
		return ErrTooBig
	case errors.Is(err, queue.ErrInvalidSender):
		return reply(553, smtp.EnhancedCode{5, 1, 7}, "Invalid sender address")
	case errors.Is(err, queue.ErrInvalidRecipient):
		return reply(553, smtp.EnhancedCode{5, 1, 3}, "Invalid recipient address")
	case errors.Is(err, queue.ErrSuppressed):
		return ErrSuppressedRecipient
	case errors.Is(err, queue.ErrNoRecipients):
		return reply(554, smtp.EnhancedCode{5, 5, 1}, "No valid recipients")
	}
	return ErrTempFailure
}

// writeReceived writes the trace field of RFC 5321 §4.4:
//
//	Received: from <helo> ([ip]) by <host> with <proto> id <txid> for <rcpt>; <date>
//
// The protocol keyword is from RFC 3848 (ESMTPA, ESMTPS, ESMTPSA) and RFC
// 6531 §3.7.3 (UTF8SMTP...).
func (s *Session) writeReceived(b *strings.Builder, txid string, now time.Time) {
	proto := "ESMTP"
	if s.mailOpts.UTF8 {
		proto = "UTF8SMTP"
	}
	_, tls := s.conn.TLSConnectionState()
	if tls {
		proto += "S"
	}
	if s.user != nil {
		proto += "A"
	}
	ip := "unknown"
	if s.ip.IsValid() {
		ip = "[" + s.ip.String() + "]"
		if s.ip.Is6() {
			ip = "[IPv6:" + s.ip.String() + "]"
		}
	}
	fmt.Fprintf(b, "Received: from %s (%s)\r\n\tby %s with %s id %s", s.conn.Hostname(), ip, s.b.cfg.Hostname, proto, txid)
	if len(s.rcpts) == 1 {
		fmt.Fprintf(b, "\r\n\tfor <%s>", s.rcpts[0].Address)
	}
	fmt.Fprintf(b, "; %s\r\n", now.Format(time.RFC1123Z))
}

// lineFilter copies DATA to w, enforcing CRLF line endings, no NUL and the
// line length limit (RFC 5321 §2.3.8, §4.5.3.1.6).
type lineFilter struct {
	w         io.Writer
	maxLine   int // octets including CRLF; <= 0: none
	normalize bool

	cr      bool // the previous octet was a CR not yet followed by LF
	lineLen int
	out     []byte
}

func (f *lineFilter) copy(r io.Reader) error {
	buf := make([]byte, 32<<10)
	f.out = make([]byte, 0, len(buf)+64)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if ferr := f.feed(buf[:n]); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return f.finish()
		}
		if err != nil {
			return err
		}
	}
}

func (f *lineFilter) newline() {
	f.out = append(f.out, '\r', '\n')
	f.lineLen = 0
}

func (f *lineFilter) feed(p []byte) error {
	f.out = f.out[:0]
	for _, c := range p {
		if f.cr {
			f.cr = false
			if c == '\n' {
				f.newline()
				continue
			}
			if !f.normalize {
				return ErrBareLineEnding
			}
			f.newline()
		}
		switch c {
		case 0:
			return ErrNUL
		case '\r':
			f.cr = true
			continue
		case '\n':
			if !f.normalize {
				return ErrBareLineEnding
			}
			f.newline()
			continue
		}
		f.out = append(f.out, c)
		f.lineLen++
		if f.maxLine > 0 && f.lineLen+2 > f.maxLine {
			return ErrLineTooLong
		}
	}
	_, err := f.w.Write(f.out)
	return err
}

func (f *lineFilter) finish() error {
	if f.cr {
		if !f.normalize {
			return ErrBareLineEnding
		}
		f.cr = false
		_, err := f.w.Write([]byte("\r\n"))
		return err
	}
	return nil
}

// spool holds a message in memory up to memLimit bytes, then in an
// unlinked temporary file.
type spool struct {
	memLimit int64
	dir      string
	mem      []byte
	f        *os.File
	n        int64
}

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && s.memLimit >= 0 && int64(len(s.mem)+len(p)) <= s.memLimit {
		s.mem = append(s.mem, p...)
		s.n += int64(len(p))
		return len(p), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "submit-*.eml")
		if err != nil {
			return 0, err
		}
		_ = os.Remove(f.Name()) // unlinked: nothing is left behind after a crash
		s.f = f
		if _, err := f.Write(s.mem); err != nil {
			return 0, err
		}
		s.mem = nil
	}
	n, err := s.f.Write(p)
	s.n += int64(n)
	return n, err
}

func (s *spool) reader() io.Reader {
	if s.f != nil {
		return io.NewSectionReader(s.f, 0, s.n)
	}
	return bytes.NewReader(s.mem)
}

func (s *spool) Close() error {
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}

// header is a parsed header section: field names in lower case and their
// unfolded values, in order.
type header struct {
	names []string
	vals  []string
}

func (h *header) values(lower string) []string {
	var v []string
	for i, n := range h.names {
		if n == lower {
			v = append(v, h.vals[i])
		}
	}
	return v
}

// parseHeader reads the header section (RFC 5322 §2.2) up to the empty line
// or the end of the message, within the limits. Lines end in CRLF (the
// lineFilter saw to that).
func parseHeader(r io.Reader, maxBytes, maxFields int) (*header, error) {
	br := bufio.NewReaderSize(r, 4096)
	h := &header{}
	total := 0
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: only possible without a
			// line length limit. Read the rest of it.
			long := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				if total+len(long) > maxBytes {
					return nil, ErrHeaderTooLarge
				}
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		total += len(line)
		if total > maxBytes {
			return nil, ErrHeaderTooLarge
		}
		if len(line) == 0 && err == io.EOF {
			return h, nil
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		text := strings.TrimRight(string(line), "\r\n")
		if text == "" {
			return h, nil // end of the header section
		}
		if text[0] == ' ' || text[0] == '\t' {
			if len(h.names) == 0 {
				return nil, ErrBadHeader
			}
			h.vals[len(h.vals)-1] += " " + strings.TrimLeft(text, " \t")
		} else {
			name, value, ok := strings.Cut(text, ":")
			if !ok || !validFieldName(name) {
				return nil, ErrBadHeader
			}
			if len(h.names) >= maxFields {
				return nil, ErrHeaderTooLarge
			}
			h.names = append(h.names, strings.ToLower(name))
			h.vals = append(h.vals, strings.TrimSpace(value))
		}
		if err == io.EOF {
			return h, nil
		}
	}
}

// validFieldName: printable US-ASCII except colon (RFC 5322 §3.6.8).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 {
			return false
		}
	}
	return true
}
