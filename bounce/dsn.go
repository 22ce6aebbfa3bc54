package bounce

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Action is the Action field of a per-recipient DSN block (RFC 3464 §2.3.3).
type Action string

// Actions defined by RFC 3464 §2.3.3.
const (
	ActionFailed    Action = "failed"    // the message could not be delivered
	ActionDelayed   Action = "delayed"   // delivery is still being retried
	ActionDelivered Action = "delivered" // delivered to the recipient's mailbox
	ActionRelayed   Action = "relayed"   // handed to a system that sends no DSNs
	ActionExpanded  Action = "expanded"  // delivered and forwarded to several addresses
)

// ErrInvalidDSN is returned (wrapped, with details) by [NewDSN] when the
// report lacks a required field.
var ErrInvalidDSN = errors.New("bounce: invalid DSN")

// DSN describes a delivery status notification for [NewDSN].
type DSN struct {
	// ReportingMTA is our host name, written as "Reporting-MTA: dns; NAME".
	// Required.
	ReportingMTA string
	// From is the header From address of the report. Zero:
	// "MAILER-DAEMON@" + ReportingMTA.
	From string
	// To is where the report goes: the original envelope sender. Required;
	// no DSN is ever sent to a null reverse path (RFC 5321 §4.5.5).
	To string
	// EnvelopeID is the ENVID of the original message (RFC 3461 §4.4),
	// written as Original-Envelope-Id. Optional.
	EnvelopeID string
	// ArrivalDate is when the original message was queued. Optional.
	ArrivalDate time.Time
	// Date is the Date header of the report. Required, so that the output
	// is a function of the input only.
	Date time.Time
	// MessageID is the Message-ID of the report, with or without angle
	// brackets. Zero: a random ID at ReportingMTA.
	MessageID string
	// Subject overrides the subject chosen from the recipients' actions.
	// Optional.
	Subject string
	// Recipients lists one entry per reported recipient; at least one.
	Recipients []DSNRecipient
	// Return says how much of the original to include: smtp.DSNReturnHeaders
	// (the default when empty) or smtp.DSNReturnFull.
	Return smtp.DSNReturn
	// Original is the original message (header and body). Nil: the report
	// has no third part. It is read once, streamed, and not closed.
	Original io.Reader
	// MaxOriginalBytes caps how much of the original is copied with
	// RET=FULL; the rest is cut at a line boundary. Zero: no cap.
	MaxOriginalBytes int64
}

// DSNRecipient is one per-recipient block of a [DSN].
type DSNRecipient struct {
	// OriginalRecipient is the ORCPT value as given ("rfc822;addr") or
	// empty. A value without an address type is taken as rfc822.
	OriginalRecipient string
	// FinalRecipient is the recipient address. Required.
	FinalRecipient string
	// Action is what happened. Zero: derived from Status (5: failed,
	// 4: delayed, 2: delivered).
	Action Action
	// Status is the RFC 3463 status, e.g. {5,1,1}. Zero: derived from
	// Diagnostic, else from Action (5.0.0, 4.0.0 or 2.0.0).
	Status smtp.EnhancedCode
	// RemoteMTA is the host name of the remote MTA. Optional.
	RemoteMTA string
	// Diagnostic is the remote reply. Optional.
	Diagnostic *smtp.SMTPError
	// LastAttempt is the time of the last attempt. Optional.
	LastAttempt time.Time
	// WillRetryUntil is when retries end, for delayed recipients. Optional.
	WillRetryUntil time.Time
}

// NewDSN writes the complete RFC 3464 report described by d to w, with CRLF
// line endings. It returns an error wrapping [ErrInvalidDSN] when a
// required field is missing, or the first write or read error. The
// original message is streamed; long lines in it are copied as they are.
//
// Non-ASCII addresses (SMTPUTF8) are written with the "utf-8" address type
// inside a message/global-delivery-status part (RFC 6533 §3, §6); headers
// then carry raw UTF-8 as RFC 6532 allows. A recipient with no ORCPT gets
// no Original-Recipient field.
func NewDSN(w io.Writer, d *DSN) error {
	if d == nil {
		return fmt.Errorf("%w: nil DSN", ErrInvalidDSN)
	}
	mta := clean(d.ReportingMTA, maxHostLen)
	switch {
	case mta == "":
		return fmt.Errorf("%w: ReportingMTA is required", ErrInvalidDSN)
	case cleanAddr(d.To) == "":
		return fmt.Errorf("%w: To is required (no DSN to a null sender)", ErrInvalidDSN)
	case d.Date.IsZero():
		return fmt.Errorf("%w: Date is required", ErrInvalidDSN)
	case len(d.Recipients) == 0:
		return fmt.Errorf("%w: at least one recipient is required", ErrInvalidDSN)
	}
	switch d.Return {
	case "", smtp.DSNReturnHeaders, smtp.DSNReturnFull:
	default:
		return fmt.Errorf("%w: unknown Return %q", ErrInvalidDSN, d.Return)
	}
	rcpts := make([]dsnRcpt, len(d.Recipients))
	global := !isASCII(mta)
	for i := range d.Recipients {
		r, err := prepareRecipient(&d.Recipients[i])
		if err != nil {
			return fmt.Errorf("%w: recipient %d: %v", ErrInvalidDSN, i+1, err)
		}
		rcpts[i] = r
		if !isASCII(r.final) || !isASCII(r.orcpt) || !isASCII(r.diag) || !isASCII(r.remote) {
			global = true
		}
	}

	from := cleanAddr(d.From)
	if from == "" {
		from = "MAILER-DAEMON@" + mta
	}
	msgID := strings.Trim(clean(d.MessageID, 250), "<>")
	if msgID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("bounce: message ID: %w", err)
		}
		msgID = hex.EncodeToString(b[:]) + "@" + mta
	}
	subject := clean(d.Subject, 200)
	if subject == "" {
		subject = dsnSubject(rcpts)
	}
	boundary := dsnBoundary(msgID, d.Date)

	bw := bufio.NewWriter(w)
	h := &fieldWriter{w: bw}
	h.field("From", "Mail Delivery System <"+from+">")
	h.field("To", "<"+cleanAddr(d.To)+">")
	h.field("Subject", subject)
	h.field("Date", d.Date.Format(time.RFC1123Z))
	h.field("Message-ID", "<"+msgID+">")
	h.field("Auto-Submitted", "auto-replied") // RFC 3834 §5
	h.field("MIME-Version", "1.0")
	h.field("Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`)
	h.line("")
	h.line("This is a MIME-encapsulated delivery status notification.")
	h.line("")

	// Part 1: human readable (RFC 6522 §3).
	h.line("--" + boundary)
	h.field("Content-Description", "Notification")
	h.field("Content-Type", "text/plain; charset=utf-8")
	text := humanText(mta, rcpts)
	if isASCII(text) {
		h.field("Content-Transfer-Encoding", "7bit")
	} else {
		h.field("Content-Transfer-Encoding", "8bit")
	}
	h.line("")
	for _, l := range strings.Split(text, "\n") {
		h.line(l)
	}

	// Part 2: machine readable (RFC 3464 §2).
	h.line("--" + boundary)
	h.field("Content-Description", "Delivery report")
	if global {
		h.field("Content-Type", "message/global-delivery-status")
		h.field("Content-Transfer-Encoding", "8bit")
	} else {
		h.field("Content-Type", "message/delivery-status")
		h.field("Content-Transfer-Encoding", "7bit")
	}
	h.line("")
	h.field("Reporting-MTA", "dns; "+mta)
	if id := clean(d.EnvelopeID, maxIDLen); id != "" {
		h.field("Original-Envelope-Id", id)
	}
	if !d.ArrivalDate.IsZero() {
		h.field("Arrival-Date", d.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, r := range rcpts {
		h.line("")
		if r.orcpt != "" {
			h.field("Original-Recipient", r.orcpt)
		}
		h.field("Final-Recipient", addrType(r.final)+"; "+r.final)
		h.field("Action", string(r.action))
		h.field("Status", formatStatus(r.status))
		if r.remote != "" {
			h.field("Remote-MTA", "dns; "+r.remote)
		}
		if r.diag != "" {
			h.field("Diagnostic-Code", "smtp; "+r.diag)
		}
		if !r.last.IsZero() {
			h.field("Last-Attempt-Date", r.last.Format(time.RFC1123Z))
		}
		if !r.until.IsZero() {
			h.field("Will-Retry-Until", r.until.Format(time.RFC1123Z))
		}
	}
	h.line("")

	// Part 3: the original (RFC 3462/6522 §3).
	if d.Original != nil && h.err == nil {
		h.line("--" + boundary)
		if d.Return == smtp.DSNReturnFull {
			h.field("Content-Description", "Undelivered message")
			h.field("Content-Type", "message/rfc822")
		} else {
			h.field("Content-Description", "Undelivered message headers")
			h.field("Content-Type", "text/rfc822-headers")
		}
		// RFC 2046 §5.2.1: message/rfc822 may be 8bit; we cannot know in a
		// single pass that the original is 7-bit, so declare the superset.
		h.field("Content-Transfer-Encoding", "8bit")
		h.line("")
		if h.err == nil {
			limit := d.MaxOriginalBytes
			if d.Return != smtp.DSNReturnFull {
				limit = 0
			}
			h.err = copyCRLF(bw, d.Original, d.Return != smtp.DSNReturnFull, limit)
		}
		// The CRLF before a delimiter belongs to the delimiter (RFC 2046
		// §5.1.1), so end the content with a line of its own: for HDRS
		// this is the blank line that closes the header section.
		h.line("")
	}
	h.line("--" + boundary + "--")
	if h.err != nil {
		return h.err
	}
	return bw.Flush()
}

type dsnRcpt struct {
	orcpt, final, diag, remote string
	action                     Action
	status                     smtp.EnhancedCode
	last, until                time.Time
	code                       int
}

func prepareRecipient(in *DSNRecipient) (dsnRcpt, error) {
	r := dsnRcpt{
		final:  cleanAddr(in.FinalRecipient),
		remote: clean(in.RemoteMTA, maxHostLen),
		action: in.Action,
		status: in.Status,
		last:   in.LastAttempt,
		until:  in.WillRetryUntil,
	}
	if r.final == "" {
		return r, errors.New("FinalRecipient is required")
	}
	if o := clean(in.OriginalRecipient, maxAddrLen+20); o != "" {
		typ, addr, ok := strings.Cut(o, ";")
		if !ok {
			typ, addr = "", o
		}
		addr = cleanAddr(addr)
		typ = strings.ToLower(strings.TrimSpace(typ))
		if typ == "" || (typ == "rfc822" && !isASCII(addr)) {
			typ = addrType(addr)
		}
		if addr != "" {
			r.orcpt = typ + "; " + addr
		}
	}
	if in.Diagnostic != nil {
		r.code = in.Diagnostic.Code
		if r.status == (smtp.EnhancedCode{}) && validStatus(in.Diagnostic.EnhancedCode) {
			r.status = in.Diagnostic.EnhancedCode
		}
		r.diag = formatReply(in.Diagnostic)
	}
	if r.action == "" {
		switch r.status[0] {
		case 2:
			r.action = ActionDelivered
		case 4:
			r.action = ActionDelayed
		case 5:
			r.action = ActionFailed
		default:
			if r.code/100 == 4 {
				r.action = ActionDelayed
			} else {
				r.action = ActionFailed
			}
		}
	}
	switch r.action {
	case ActionFailed, ActionDelayed, ActionDelivered, ActionRelayed, ActionExpanded:
	default:
		return r, fmt.Errorf("unknown action %q", r.action)
	}
	if !validStatus(r.status) {
		switch {
		case r.status != (smtp.EnhancedCode{}):
			return r, fmt.Errorf("invalid status %v", r.status)
		case r.action == ActionFailed:
			r.status = smtp.EnhancedCode{5, 0, 0}
		case r.action == ActionDelayed:
			r.status = smtp.EnhancedCode{4, 0, 0}
		default:
			r.status = smtp.EnhancedCode{2, 0, 0}
		}
	}
	return r, nil
}

// validStatus reports whether c is a usable RFC 3463 status: class 2, 4 or 5
// and non-negative subject and detail.
func validStatus(c smtp.EnhancedCode) bool {
	return (c[0] == 2 || c[0] == 4 || c[0] == 5) && c[1] >= 0 && c[1] < 1000 && c[2] >= 0 && c[2] < 1000
}

func formatStatus(c smtp.EnhancedCode) string {
	return strconv.Itoa(c[0]) + "." + strconv.Itoa(c[1]) + "." + strconv.Itoa(c[2])
}

// formatReply renders a reply as "550 5.1.1 text" (RFC 3464 §2.3.6
// diagnostic-code with type smtp).
func formatReply(e *smtp.SMTPError) string {
	var b strings.Builder
	if e.Code >= 200 && e.Code < 600 {
		b.WriteString(strconv.Itoa(e.Code))
	}
	if validStatus(e.EnhancedCode) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(formatStatus(e.EnhancedCode))
	}
	msg := clean(e.Message, maxTextLen)
	if msg != "" {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(msg)
	}
	return b.String()
}

func addrType(addr string) string {
	if isASCII(addr) {
		return "rfc822"
	}
	return "utf-8" // RFC 6533 §3
}

func dsnSubject(rs []dsnRcpt) string {
	var failed, delayed bool
	for _, r := range rs {
		switch r.action {
		case ActionFailed:
			failed = true
		case ActionDelayed:
			delayed = true
		}
	}
	switch {
	case failed:
		return "Undelivered Mail Returned to Sender"
	case delayed:
		return "Delayed Mail (still being retried)"
	default:
		return "Successful Mail Delivery Report"
	}
}

// dsnBoundary derives a boundary from the report's identity, so that output
// is deterministic. "=_" cannot occur in base64 or quoted-printable text
// (RFC 2045 §6.7, §6.8), which keeps encoded originals from colliding.
func dsnBoundary(msgID string, date time.Time) string {
	sum := sha256.Sum256([]byte(msgID + "\x00" + date.UTC().Format(time.RFC3339Nano)))
	return "=_dsn_" + hex.EncodeToString(sum[:12])
}

func humanText(mta string, rs []dsnRcpt) string {
	var failed, delayed, ok []dsnRcpt
	for _, r := range rs {
		switch r.action {
		case ActionFailed:
			failed = append(failed, r)
		case ActionDelayed:
			delayed = append(delayed, r)
		default:
			ok = append(ok, r)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "This is the mail system at host %s.\n", mta)
	list := func(title string, rs []dsnRcpt) {
		if len(rs) == 0 {
			return
		}
		b.WriteString("\n" + title + "\n\n")
		for _, r := range rs {
			fmt.Fprintf(&b, "  <%s>: %s (status %s)\n", r.final, r.action, formatStatus(r.status))
			if r.remote != "" {
				fmt.Fprintf(&b, "    remote host: %s\n", r.remote)
			}
			if r.diag != "" {
				fmt.Fprintf(&b, "    reply: %s\n", r.diag)
			}
			if !r.until.IsZero() {
				fmt.Fprintf(&b, "    will retry until: %s\n", r.until.Format(time.RFC1123Z))
			}
		}
	}
	list("Your message could not be delivered to the following recipients:", failed)
	list("Delivery to the following recipients has been delayed; the mail system\nwill keep trying. You do not need to resend the message:", delayed)
	list("Your message was delivered (or handed on) for the following recipients:", ok)
	return b.String()
}

// fieldWriter writes CRLF lines and folded header fields, keeping the first
// error.
type fieldWriter struct {
	w   *bufio.Writer
	err error
}

func (f *fieldWriter) line(s string) {
	if f.err != nil {
		return
	}
	if _, err := f.w.WriteString(s); err != nil {
		f.err = err
		return
	}
	_, f.err = f.w.WriteString("\r\n")
}

// field writes "Name: value", folding at spaces so lines stay near 78
// characters (RFC 5322 §2.2.3). Values were cleaned of CR and LF already.
func (f *fieldWriter) field(name, value string) {
	value = clean(value, 4*maxTextLen)
	line := name + ":"
	words := strings.Split(value, " ")
	first := true
	for _, w := range words {
		if !first && len(line)+1+len(w) > 78 {
			f.line(line)
			line = "\t" + w
			continue
		}
		line += " " + w
		first = false
	}
	f.line(line)
}

// copyCRLF copies r to w turning bare LF into CRLF. With headersOnly it stops
// after the blank line that ends the header. With limit > 0 it stops at the
// first line boundary past limit bytes.
func copyCRLF(w *bufio.Writer, r io.Reader, headersOnly bool, limit int64) error {
	br := bufio.NewReaderSize(r, 4096)
	lineStart := true
	var n int64
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			complete := chunk[len(chunk)-1] == '\n'
			body := chunk
			if complete {
				body = chunk[:len(chunk)-1]
				if len(body) > 0 && body[len(body)-1] == '\r' {
					body = body[:len(body)-1]
				}
			}
			if headersOnly && lineStart && complete && len(body) == 0 {
				return nil
			}
			if _, werr := w.Write(body); werr != nil {
				return werr
			}
			n += int64(len(chunk))
			if complete {
				if _, werr := w.WriteString("\r\n"); werr != nil {
					return werr
				}
				if limit > 0 && n >= limit {
					return nil
				}
			}
			lineStart = complete
		}
		switch {
		case err == nil, err == bufio.ErrBufferFull:
		case err == io.EOF:
			if !lineStart {
				_, err := w.WriteString("\r\n")
				return err
			}
			return nil
		default:
			return fmt.Errorf("bounce: reading original: %w", err)
		}
	}
}
