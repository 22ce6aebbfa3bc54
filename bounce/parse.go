package bounce

import (
	"bytes"
	"fmt"
	"io"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Kind says what an incoming message is.
type Kind string

// Kinds of parsed messages.
const (
	KindDSN       Kind = "dsn"       // a bounce or delay notice (RFC 3464 or plain text)
	KindARF       Kind = "arf"       // a feedback report (RFC 5965)
	KindAutoReply Kind = "autoreply" // an auto-reply (RFC 3834): not a bounce
	KindUnknown   Kind = "unknown"   // anything else
)

// Report is what [Parse] found in a message.
type Report struct {
	// Kind is what the message is.
	Kind Kind
	// ReportingMTA is the host that wrote the report, when stated.
	ReportingMTA string
	// EnvelopeID is the Original-Envelope-Id (RFC 3464 §2.2.1), if any.
	EnvelopeID string
	// ArrivalDate is the Arrival-Date of the original, if stated.
	ArrivalDate time.Time
	// Recipients lists the reported recipients in the order of the report
	// (at most 1000). Empty for auto-replies and complaints.
	Recipients []RecipientReport
	// OriginalMessageID is the Message-ID (without angle brackets) of the
	// returned original message, when the report includes its header.
	OriginalMessageID string
	// OriginalReturnPath is the envelope sender of the original message
	// (its Return-Path, else the report's To), when known. A signed return
	// path ([VERP]) found here identifies message and recipient.
	OriginalReturnPath string
	// OriginalHeader holds the returned original header fields (at most
	// the parser's header limits), when present.
	OriginalHeader map[string][]string
	// Complaint is set for KindARF.
	Complaint *Complaint
	// Subject is the report's decoded Subject.
	Subject string
}

// RecipientReport is the outcome for one recipient.
type RecipientReport struct {
	// Recipient is the final recipient address.
	Recipient string
	// OriginalRecipient is the ORCPT address, when stated.
	OriginalRecipient string
	// Action is the DSN action; text bounces give failed or delayed.
	Action Action
	// Status is the enhanced status code; when the bounce has none, the
	// class is derived from the reply code or the wording (X.0.0).
	Status smtp.EnhancedCode
	// ReplyCode is the remote SMTP reply code, 0 when not stated.
	ReplyCode int
	// Diagnostic is the remote reply or error text, cleaned of control
	// characters and capped in length.
	Diagnostic string
	// RemoteMTA is the remote host, when stated.
	RemoteMTA string
	// Command is the SMTP command the reply answered ("RCPT", "DATA",
	// "MAIL", ...), when the bounce says.
	Command  string
	diagType string // Diagnostic-Code type, lower case ("smtp", "x-unix")
	derived  bool   // Status was derived, not stated
	// Classification is the verdict on Status, ReplyCode and Diagnostic,
	// refined by what the bounce adds: a reply to MAIL FROM is
	// CategorySenderRejected; a local program's failure (x-unix) is
	// CategorySystem; a 500-504 reply is CategoryProtocol unless the
	// status is X.1.x; unknown-user wording after DATA, or terse wording
	// ("User unknown") without an X.1.x status, a reply to RCPT TO or the
	// reporting MTA's own judgement, is CategoryPolicy without BadAddress,
	// because content filters use that wording too.
	Classification Classification
}

// Parser parses bounces with limits. The zero value is ready to use with
// the documented defaults and is safe for concurrent use.
type Parser struct {
	// MaxBytes caps the input size. Zero: 16 MiB.
	MaxBytes int64
	// MaxHeaderBytes caps each header section. Zero: 256 KiB.
	MaxHeaderBytes int
	// MaxHeaderFields caps the fields of each header section. Zero: 2000.
	MaxHeaderFields int
	// MaxDepth caps MIME nesting. Zero: 16.
	MaxDepth int
	// MaxParts caps the number of MIME entities. Zero: 500.
	MaxParts int
	// Classifier classifies recipients. Nil: the default rules.
	Classifier *Classifier
}

var defaultClassifier = sync.OnceValue(DefaultClassifier)

// maxRecipients caps the recipients reported per message, bounding the
// work spent on inputs that list huge numbers of addresses.
const maxRecipients = 1000

// Parse parses a bounce with a zero [Parser]. See [Parser.Parse].
func Parse(r io.Reader) (*Report, error) {
	var p Parser
	return p.Parse(r)
}

func (p *Parser) limits() *limits {
	l := &limits{maxHeaderBytes: p.MaxHeaderBytes, maxHeaderFields: p.MaxHeaderFields,
		maxDepth: p.MaxDepth, maxParts: p.MaxParts}
	if l.maxHeaderBytes <= 0 {
		l.maxHeaderBytes = 256 << 10
	}
	if l.maxHeaderFields <= 0 {
		l.maxHeaderFields = 2000
	}
	if l.maxDepth <= 0 {
		l.maxDepth = 16
	}
	if l.maxParts <= 0 {
		l.maxParts = 500
	}
	return l
}

func (p *Parser) classifier() *Classifier {
	if p.Classifier != nil {
		return p.Classifier
	}
	return defaultClassifier()
}

// readAll reads r up to the byte limit.
func (p *Parser) readAll(r io.Reader) ([]byte, error) {
	max := p.MaxBytes
	if max <= 0 {
		max = 16 << 20
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("bounce: reading message: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: message over %d bytes", ErrTooLarge, max)
	}
	return b, nil
}

// Parse reads one message and says what it is. For bounces it returns
// one RecipientReport per reported recipient, for ARF reports the
// Complaint. A message that is none of these is KindUnknown with no error.
// Errors wrap [ErrTooLarge], [ErrTooComplex] or [ErrMalformed], or come
// from reading r.
//
// An mbox holding several bounces (messages separated by "From " lines)
// yields one report with the recipients of all of them.
func (p *Parser) Parse(r io.Reader) (*Report, error) {
	raw, err := p.readAll(r)
	if err != nil {
		return nil, err
	}
	msgs := splitMbox(raw)
	rep, err := p.parse(msgs[0], 0)
	if err != nil || rep.Kind != KindDSN {
		return rep, err
	}
	for _, m := range msgs[1:] {
		if more, err := p.parse(m, 1); err == nil && more.Kind == KindDSN {
			rep.Recipients = append(rep.Recipients, more.Recipients...)
		}
		if len(rep.Recipients) >= maxRecipients {
			rep.Recipients = rep.Recipients[:maxRecipients]
			break
		}
	}
	return rep, nil
}

// splitMbox splits raw at mbox separators: a "From " line after a blank
// line. At most 100 messages are returned; the last holds the rest.
func splitMbox(raw []byte) [][]byte {
	var out [][]byte
	start := 0
	for i := 0; len(out) < 99; {
		j := bytes.Index(raw[i:], []byte("\n\nFrom "))
		if j < 0 {
			break
		}
		k := i + j + 2
		line, _, _ := bytes.Cut(raw[k:], []byte("\n"))
		if f := bytes.Fields(line); len(f) >= 3 && bytes.Contains(raw[k:], []byte("\n\n")) && !bytes.HasSuffix(f[1], []byte(":")) {
			out = append(out, raw[start:k])
			start = k
		}
		i = k
	}
	return append(out, raw[start:])
}

func (p *Parser) parse(raw []byte, depth int) (*Report, error) {
	l := p.limits()
	root, err := l.parseEntity(raw, 0, "text/plain")
	if err != nil {
		return nil, err
	}
	if len(root.header) == 0 {
		return nil, fmt.Errorf("%w: no header section", ErrMalformed)
	}
	rep := &Report{Kind: KindUnknown, Subject: clean(decodeWords(root.header.get("Subject")), maxTextLen)}
	var dsnPart, arfPart, origPart *entity
	var texts []*entity
	var htmls []*entity
	root.walk(func(e *entity) bool {
		switch e.mediaTyp {
		case "message/delivery-status", "message/global-delivery-status":
			if dsnPart == nil {
				dsnPart = e
			}
		case "message/feedback-report":
			if arfPart == nil {
				arfPart = e
			}
		case "message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers",
			"text/rfc822-header", "message/global-headers":
			if origPart == nil {
				origPart = e
			}
			return false // do not look for bounce text inside the original
		case "text/plain":
			if len(e.children) == 0 {
				texts = append(texts, e)
			}
		case "text/html":
			htmls = append(htmls, e)
		}
		return true
	})
	if origPart != nil {
		p.readOriginal(l, origPart, rep)
	}
	if arfPart != nil {
		c := parseFeedback(arfPart.body)
		if origPart != nil {
			c.OriginalMessageID = rep.OriginalMessageID
			c.OriginalHeader = rep.OriginalHeader
		}
		rep.Kind = KindARF
		rep.Complaint = c
		return rep, nil
	}
	// The human-readable text, at most about 1 MiB of it.
	var tb strings.Builder
	for _, t := range texts {
		if tb.Len() > 1<<20 {
			break
		}
		tb.Write(t.body)
		tb.WriteByte('\n')
	}
	if strings.TrimSpace(tb.String()) == "" {
		for _, h := range htmls {
			if tb.Len() > 1<<20 {
				break
			}
			tb.WriteString(stripHTML(h.body))
			tb.WriteByte('\n')
		}
	}
	text := strings.ReplaceAll(tb.String(), "\r\n", "\n")
	if dsnPart != nil {
		p.parseDeliveryStatus(dsnPart.body, rep)
		if len(rep.Recipients) > 0 {
			rep.Kind = KindDSN
			p.enrichFromText(rep, text)
			p.finish(rep, root.header, text)
			return rep, nil
		}
	}
	if dsnPart == nil {
		// Delivery-status fields inline in a text part (a stripped or
		// mislabelled multipart/report).
		if i := indexFieldLine(text, "Final-Recipient:"); i >= 0 {
			start := i
			if j := indexFieldLine(text[:i], "Reporting-MTA:"); j >= 0 {
				start = j
			}
			p.parseDeliveryStatus([]byte(text[start:]), rep)
			if len(rep.Recipients) > 0 {
				rep.Kind = KindDSN
				p.enrichFromText(rep, text[:start])
				p.finish(rep, root.header, text)
				return rep, nil
			}
		}
	}
	if depth < 2 && origPart != nil && len(origPart.children) > 0 && looksLikeBounce(origPart.children[0].header) {
		// A bounce forwarded as an attachment.
		if inner, err := p.parse(origPart.body, depth+1); err == nil && inner.Kind == KindDSN {
			return inner, nil
		}
	}
	if i := indexFieldLine(text, "Feedback-Type:"); i >= 0 && dsnPart == nil {
		// Feedback fields in a text part: an ARF report whose
		// message/feedback-report part lost its content type.
		rep.Kind = KindARF
		rep.Complaint = parseFeedback([]byte(text[i:]))
		rep.Complaint.OriginalMessageID = rep.OriginalMessageID
		rep.Complaint.OriginalHeader = rep.OriginalHeader
		return rep, nil
	}
	if jmrp := jmrpRecipient(root, origPart); jmrp != "" {
		// Microsoft's JMRP complaints: the reported message attached,
		// the complainer in X-HmXmrOriginalRecipient, no ARF part.
		rep.Kind = KindARF
		rep.Complaint = &Complaint{FeedbackType: "abuse", UserAgent: "JMRP", OriginalRcptTo: []string{jmrp},
			OriginalMessageID: rep.OriginalMessageID, OriginalHeader: rep.OriginalHeader}
		return rep, nil
	}
	if isUnsubscribe(root.header) {
		// A List-Unsubscribe mailto request (RFC 2369 §3.2), such as
		// Apple Mail's: an opt-out, reported like an ARF complaint.
		rep.Kind = KindARF
		rep.Complaint = &Complaint{FeedbackType: "opt-out", UserAgent: clean(root.header.get("X-Mailer"), 200)}
		if a, err := mail.ParseAddress(root.header.get("From")); err == nil {
			rep.Complaint.OriginalRcptTo = []string{cleanAddr(a.Address)}
		}
		return rep, nil
	}
	bounceish := looksLikeBounce(root.header)
	if isAutoReply(root.header, rep.Subject) && !bounceish {
		rep.Kind = KindAutoReply
		return rep, nil
	}
	p.parseText(rep, root.header, text, bounceish)
	if len(rep.Recipients) > 0 {
		rep.Kind = KindDSN
		p.finish(rep, root.header, text)
		return rep, nil
	}
	if depth < 2 {
		// A bounce forwarded or quoted inside another message.
		if i := embeddedMessage(text); i >= 0 {
			if inner, err := p.parse([]byte(text[i:]), depth+1); err == nil && inner.Kind == KindDSN {
				return inner, nil
			}
		}
	}
	if isAutoReply(root.header, rep.Subject) {
		rep.Kind = KindAutoReply
	}
	return rep, nil
}

// jmrpRecipient returns the X-HmXmrOriginalRecipient address of the
// message or of its attached original, or "".
func jmrpRecipient(root, orig *entity) string {
	v := root.header.get("X-HmXmrOriginalRecipient")
	if v == "" && orig != nil && len(orig.children) > 0 {
		v = orig.children[0].header.get("X-HmXmrOriginalRecipient")
	}
	return cleanAddr(v)
}

// isUnsubscribe recognises unsubscribe requests sent to a List-Unsubscribe
// mailto address.
func isUnsubscribe(h header) bool {
	if strings.EqualFold(strings.TrimSpace(h.get("X-Apple-Unsubscribe")), "true") {
		return true
	}
	return strings.EqualFold(strings.TrimSpace(h.get("Subject")), "unsubscribe") && !looksLikeBounce(h)
}

// indexFieldLine returns the index of the first line of s that starts
// with the given field name (case-insensitive), or -1.
func indexFieldLine(s, name string) int {
	ls := strings.ToLower(s)
	name = strings.ToLower(name)
	for i := 0; ; {
		j := strings.Index(ls[i:], name)
		if j < 0 {
			return -1
		}
		j += i
		if j == 0 || ls[j-1] == '\n' {
			return j
		}
		i = j + len(name)
	}
}

// embeddedMessage finds the start of a message quoted in a text: an mbox
// "From MAILER-DAEMON" line or a header block opened by "Return-Path: <>".
func embeddedMessage(text string) int {
	for _, m := range []string{"\nFrom MAILER-DAEMON", "\nReturn-Path: <>", "\nFrom: Mail Delivery", "\nFrom: MAILER-DAEMON"} {
		if i := strings.Index(text, m); i >= 0 {
			return i + 1
		}
	}
	return -1
}

// readOriginal records the returned original's Message-ID, Return-Path
// and header.
func (p *Parser) readOriginal(l *limits, e *entity, rep *Report) {
	var h header
	if len(e.children) > 0 {
		h = e.children[0].header
	} else {
		h, _, _ = l.readHeader(e.body)
	}
	if len(h) == 0 {
		return
	}
	rep.OriginalHeader = map[string][]string{}
	for _, f := range h {
		k := canonicalKey(f.name)
		rep.OriginalHeader[k] = append(rep.OriginalHeader[k], clean(f.value, maxTextLen))
	}
	rep.OriginalMessageID = strings.Trim(clean(h.get("Message-ID"), 250), "<> ")
	if rp := h.get("Return-Path"); rp != "" {
		rep.OriginalReturnPath = cleanAddr(rp)
	}
}

func canonicalKey(k string) string {
	b := []byte(strings.ToLower(k))
	up := true
	for i, c := range b {
		if up && c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		up = c == '-'
	}
	return string(b)
}

// parseDeliveryStatus reads the fields of a message/delivery-status body
// (RFC 3464 §2): per-message fields, then one block per recipient.
func (p *Parser) parseDeliveryStatus(body []byte, rep *Report) {
	body = bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	var cur *RecipientReport
	inRecipient := false
	flush := func() {
		if cur != nil && (cur.Recipient != "" || cur.OriginalRecipient != "") && len(rep.Recipients) < maxRecipients {
			if cur.Recipient == "" {
				cur.Recipient = cur.OriginalRecipient
			}
			rep.Recipients = append(rep.Recipients, *cur)
		}
		cur = nil
	}
	var fields []field
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.TrimSpace(line) == "" {
			fields = append(fields, field{}) // block separator
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 && fields[len(fields)-1].name != "" {
			fields[len(fields)-1].value += " " + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields = append(fields, field{strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)})
	}
	for _, f := range fields {
		if f.name == "" {
			if cur != nil && cur.Recipient != "" {
				flush()
			}
			continue
		}
		switch f.name {
		case "reporting-mta":
			if !inRecipient {
				rep.ReportingMTA = clean(typedValue(f.value), maxHostLen)
			}
			continue
		case "original-envelope-id":
			rep.EnvelopeID = clean(f.value, maxIDLen)
			continue
		case "arrival-date":
			if t, ok := parseDate(f.value); ok {
				rep.ArrivalDate = t
			}
			continue
		case "final-recipient", "original-recipient", "x-actual-recipient":
			if cur != nil && ((f.name == "final-recipient" && cur.Recipient != "") ||
				(f.name == "original-recipient" && cur.OriginalRecipient != "")) {
				flush()
			}
		}
		if cur == nil {
			switch f.name {
			case "final-recipient", "original-recipient", "action", "status", "diagnostic-code",
				"remote-mta", "x-actual-recipient":
				cur = &RecipientReport{}
				inRecipient = true
			default:
				continue
			}
		}
		switch f.name {
		case "final-recipient":
			cur.Recipient = decodeAddrField(f.value)
		case "original-recipient":
			cur.OriginalRecipient = decodeAddrField(f.value)
		case "x-actual-recipient":
			if cur.Recipient == "" {
				cur.Recipient = decodeAddrField(f.value)
			}
		case "action":
			a, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(f.value)), " ")
			switch a {
			case "deliverable": // RFC 2852 §4 (DELIVERBY) and some MTAs
				a = string(ActionDelivered)
			case "undeliverable", "failure", "bounced", "bounce":
				a = string(ActionFailed)
			}
			cur.Action = Action(clean(a, 20))
		case "status":
			if st, ok := findStatus(f.value); ok {
				cur.Status = st
			}
		case "remote-mta":
			cur.RemoteMTA = clean(typedValue(f.value), maxHostLen)
		case "diagnostic-code":
			if t, _, ok := strings.Cut(f.value, ";"); ok {
				cur.diagType = strings.ToLower(strings.TrimSpace(t))
			}
			d := typedValue(f.value)
			if cur.Diagnostic == "" || len(d) > len(cur.Diagnostic) {
				cur.Diagnostic = clean(d, maxTextLen)
			}
		}
	}
	flush()
}

// typedValue strips the "type;" prefix of a DSN field value (RFC 3464
// §2.1.2: address-type, mta-name-type, diagnostic-type).
func typedValue(v string) string {
	if t, rest, ok := strings.Cut(v, ";"); ok && !strings.ContainsAny(t, " <@") {
		return strings.TrimSpace(rest)
	}
	return strings.TrimSpace(v)
}

// decodeAddrField decodes "rfc822; addr" or "utf-8; addr" (RFC 6533 §3,
// including the \x{HEX} escapes of utf-8-addr-xtext).
func decodeAddrField(v string) string {
	a := typedValue(v)
	if strings.Contains(a, `\x{`) {
		a = decodeUTF8Xtext(a)
	}
	if i := strings.IndexByte(a, '<'); i >= 0 {
		if j := strings.IndexByte(a[i:], '>'); j > 0 {
			a = a[i+1 : i+j]
		}
	}
	return cleanAddr(a)
}

func decodeUTF8Xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && strings.HasPrefix(s[i:], `\x{`) {
			if end := strings.IndexByte(s[i:], '}'); end > 3 && end < 12 {
				if n, err := strconv.ParseUint(s[i+3:i+end], 16, 32); err == nil {
					b.WriteRune(rune(n))
					i += end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// finish fills in derived fields and classifies each recipient.
func (p *Parser) finish(rep *Report, h header, text string) {
	if rep.OriginalReturnPath == "" {
		if to := h.get("To"); to != "" {
			if a, err := mail.ParseAddress(to); err == nil {
				rep.OriginalReturnPath = cleanAddr(a.Address)
			}
		}
	}
	c := p.classifier()
	text = maskForClassify(firstN(text, 4000))
	for i := range rep.Recipients {
		r := &rep.Recipients[i]
		diag := r.Diagnostic
		code, st, cmd := scanReply(diag)
		if ic, ist, ok := nestedReply(diag); ok {
			// "554 4.4.7 Message expired <421 4.4.2 Connection timed
			// out>": the nested reply is the remote cause.
			code, st = ic, ist
		}
		if code/100 == 2 && r.Status[0] != 2 && r.Action != ActionDelivered && r.Action != ActionRelayed && r.Action != ActionExpanded {
			code = 0 // a 2xx in a failure's text is a transcript or noise
		}
		if r.ReplyCode == 0 {
			r.ReplyCode = code
		}
		if r.Command == "" {
			r.Command = cmd
		}
		// The remote reply's own status is more specific than the one
		// the reporting MTA put in the Status field, when the class
		// agrees (or the reply code's class does), unless it is X.0.0.
		generic := st[1] == 0 && st[2] == 0
		if st != (smtp.EnhancedCode{}) && (r.Status == (smtp.EnhancedCode{}) ||
			!generic && (st[0] == r.Status[0] || r.ReplyCode/100 == st[0] && r.Status[0] != 2)) {
			r.Status = st
		}
		diag = maskForClassify(diag)
		cl := c.classify(r.ReplyCode, r.Status, diag)
		if cl.Category == CategoryUnclassified && r.Status[1] == 0 {
			// The recipient's own text says too little: use the
			// whole bounce text, for summaries like "retry timeout
			// exceeded" or "been in the queue too long".
			if cl2 := c.classify(r.ReplyCode, r.Status, text); cl2.Category != CategoryUnclassified {
				cl2.Rule += "(text)"
				cl = cl2
			}
		}
		if r.Status[0] == 0 {
			r.derived = true
			switch {
			case r.ReplyCode/100 == 2 || r.ReplyCode/100 == 4 || r.ReplyCode/100 == 5:
				r.Status = smtp.EnhancedCode{r.ReplyCode / 100, 0, 0}
			case r.Action == ActionDelayed || strings.Contains(strings.ToLower(diag), "temporary failure") ||
				cl.Category == CategoryExpired && !cl.Permanent:
				r.Status = smtp.EnhancedCode{4, 0, 0}
			case r.Action == ActionDelivered || r.Action == ActionRelayed || r.Action == ActionExpanded:
				r.Status = smtp.EnhancedCode{2, 0, 0}
			default:
				r.Status = smtp.EnhancedCode{5, 0, 0}
			}
			cl = c.classify(r.ReplyCode, r.Status, diag)
			if cl.Category == CategoryUnclassified {
				if cl2 := c.classify(r.ReplyCode, r.Status, text); cl2.Category != CategoryUnclassified {
					cl2.Rule += "(text)"
					cl = cl2
				}
			}
		}
		if r.Action == "" {
			switch r.Status[0] {
			case 2:
				r.Action = ActionDelivered
			case 4:
				r.Action = ActionDelayed
			default:
				r.Action = ActionFailed
			}
		}
		cl = adjust(cl, r)
		r.Classification = cl
	}
}

func isTerseRule(name string) bool {
	return strings.HasPrefix(name, "nouser-terse") || strings.HasPrefix(name, "nouser-weak") ||
		strings.HasPrefix(name, "nouser-rejected")
}

// nestedReply finds a reply quoted inside angle brackets, such as
// "<421 4.4.2 Connection timed out>".
func nestedReply(s string) (int, smtp.EnhancedCode, bool) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] != '<' || (s[i+1] != '4' && s[i+1] != '5') {
			continue
		}
		end := strings.IndexByte(s[i:], '>')
		if end < 0 {
			return 0, smtp.EnhancedCode{}, false
		}
		inner := s[i+1 : i+end]
		if replyCodeIndex(inner) == 0 {
			c, st, _ := scanReply(inner)
			if st[0] != 0 {
				return c, st, true
			}
		}
	}
	return 0, smtp.EnhancedCode{}, false
}

// adjust refines a reply's classification with what the bounce adds: the
// SMTP command the reply answered and the kind of diagnostic.
//
//   - A reply to MAIL FROM is about the sender, never the recipient.
//   - A syntax error reply (500-504) is about the command, unless the
//     status says the address is malformed (X.1.x).
//   - A local delivery program's failure (Diagnostic-Code type x-unix) is
//     a system problem even when its text says "no such user".
//   - A refusal after DATA that reads like an unknown user comes from a
//     content or policy filter (the address was accepted at RCPT TO),
//     unless the status says the address is bad (X.1.x).
//   - Terse wording ("User unknown", "No such user": rules nouser-terse and
//     nouser-weak), which content filters imitate, counts as a bad address
//     only with corroboration: an X.1.x status or a reply to RCPT TO, or
//     no remote reply at all (the reporting MTA judged its own user).
//     Explicit wording ("recipient not found", "account does not exist")
//     does not need it.
func adjust(cl Classification, r *RecipientReport) Classification {
	switch {
	case r.Command == "MAIL" && (cl.Category == CategoryBadMailbox || cl.Category == CategoryBadDomain ||
		cl.Category == CategoryUnclassified || cl.Category == CategoryPolicy):
		return Classification{Category: CategorySenderRejected, Permanent: cl.Permanent, Rule: cl.Rule + "+mail-from"}
	case r.ReplyCode >= 500 && r.ReplyCode <= 504 && cl.BadAddress && r.Status[1] != 1:
		// A syntax error reply is about the command, not the mailbox,
		// unless the status says the address is malformed (X.1.3).
		return Classification{Category: CategoryProtocol, Permanent: cl.Permanent, Rule: cl.Rule + "+syntax-reply"}
	case r.diagType == "x-unix" && cl.Category != CategoryMailboxFull:
		return Classification{Category: CategorySystem, Permanent: cl.Permanent, Rule: cl.Rule + "+x-unix"}
	case cl.Category == CategoryBadMailbox && cl.BadAddress && r.Status[1] != 1 &&
		(r.Command == "DATA" || r.Command != "RCPT" && isTerseRule(cl.Rule) && !(r.derived && r.ReplyCode == 0)):
		return Classification{Category: CategoryPolicy, Permanent: cl.Permanent, Rule: cl.Rule + "+unconfirmed"}
	}
	return cl
}

// maskForClassify hides e-mail addresses and URL paths, whose words (a
// mailbox named "spam", a link to a page on "#filtered") say nothing
// about the failure. URL host names are kept: they name blocklists.
func maskForClassify(s string) string {
	if !strings.Contains(s, "@") && !strings.Contains(s, "://") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if j := strings.Index(s[i:], "://"); j >= 0 {
			if k, e := addrSpan(s[i:i+j], 0); k >= 0 {
				b.WriteString(s[i : i+k])
				b.WriteString("<addr>")
				i += e
				continue
			}
			// Write up to the scheme, keep the host, drop the path.
			start := i + j + 3
			end := start
			for end < len(s) && s[end] != ' ' && s[end] != '\n' && s[end] != '>' && s[end] != ')' {
				end++
			}
			host, _, _ := strings.Cut(s[start:end], "/")
			b.WriteString(s[i:start])
			b.WriteString(host)
			i = end
			continue
		}
		k, e := addrSpan(s, i)
		if k < 0 {
			b.WriteString(s[i:])
			break
		}
		b.WriteString(s[i:k])
		b.WriteString("<addr>")
		i = e
	}
	return b.String()
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// looksLikeBounce reports whether the header says the message comes from
// a mail system about a delivery (sender or subject wording).
func looksLikeBounce(h header) bool {
	from := strings.ToLower(h.get("From"))
	for _, s := range []string{"mailer-daemon", "postmaster", "mail delivery", "mail administrator",
		"mailadmin", "mail-daemon", "maildaemon", "mail system", "bounce", "delivery"} {
		if strings.Contains(from, s) {
			return true
		}
	}
	subj := strings.ToLower(decodeWords(h.get("Subject")))
	for _, s := range []string{"undeliver", "undelivered", "returned mail", "delivery fail", "delivery status",
		"failure notice", "delivery notification", "not delivered", "could not be delivered", "mail delivery",
		"delivery problem", "nondeliver", "non-deliver", "bounce", "rejected", "delayed mail", "delivery report",
		"mail system error", "returned to sender", "warning: could not send", "unable to deliver"} {
		if strings.Contains(subj, s) {
			return true
		}
	}
	return false
}

// isAutoReply recognises RFC 3834 auto-replies and the common non-standard
// markers of vacation responders.
func isAutoReply(h header, subject string) bool {
	if v := strings.ToLower(h.get("Auto-Submitted")); strings.HasPrefix(v, "auto-replied") {
		return true
	}
	if h.has("X-Autoreply") || h.has("X-Autorespond") || h.has("X-Auto-Response-Suppress") && strings.Contains(strings.ToLower(subject), "auto") {
		return true
	}
	if v := strings.ToLower(h.get("Precedence")); v == "auto_reply" {
		return true
	}
	s := strings.ToLower(subject)
	for _, p := range []string{"out of office", "out of the office", "automatic reply", "auto reply", "autoreply",
		"auto-reply", "auto:", "vacation", "abwesenheit", "absence", "away from", "automatische antwort",
		"réponse automatique", "respuesta automática"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// stripHTML turns HTML into rough text: tags become line breaks or spaces.
func stripHTML(b []byte) string {
	var out strings.Builder
	in := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '<':
			in = true
			rest := strings.ToLower(string(b[i+1 : min(i+4, len(b))]))
			if strings.HasPrefix(rest, "br") || strings.HasPrefix(rest, "p") || strings.HasPrefix(rest, "/p") ||
				strings.HasPrefix(rest, "div") || strings.HasPrefix(rest, "/di") || strings.HasPrefix(rest, "tr") ||
				strings.HasPrefix(rest, "/tr") || strings.HasPrefix(rest, "li") {
				out.WriteByte('\n')
			}
		case c == '>' && in:
			in = false
		case !in:
			out.WriteByte(c)
		}
	}
	s := out.String()
	r := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "&nbsp;", " ", "&quot;", `"`, "&#39;", "'")
	return r.Replace(s)
}
