package bounce

import (
	"net/mail"
	"strings"

	"github.com/emersion/go-smtp"
)

// originalMarkers start the part of a plain-text bounce that quotes the
// original message; nothing after them describes the failure.
var originalMarkers = []string{
	"copy of the message", "copy of your message", "original message", "message follows",
	"returned message", "undelivered message", "headers of the original", "original headers",
	"message headers follow", "header of the original", "copy of the original", "text of the message",
	"content of the original", "----- message header", "the original message was received",
	"below this line", "rfc822", "original mail", "unsent message",
}

// cutOriginal returns text up to the first line that starts the quoted
// original message: a marker line, or a run of header fields starting
// with Received:, Return-Path: or similar after the first few lines.
func cutOriginal(text string) string {
	lines := strings.SplitAfter(text, "\n")
	pos := 0
	for i, l := range lines {
		t := strings.ToLower(strings.TrimSpace(l))
		if i > 0 && len(t) > 0 {
			for _, m := range originalMarkers {
				if strings.Contains(t, m) && (strings.HasPrefix(t, "-") || strings.HasPrefix(t, "=") || strings.HasPrefix(t, "*") ||
					strings.HasPrefix(t, "_") || strings.HasPrefix(t, "[") || strings.HasSuffix(t, ":") || len(t) <= 40 && !strings.Contains(t, "@")) &&
					!strings.Contains(t, "following") {
					return text[:pos]
				}
			}
			if isHeaderStart(t) && i+1 < len(lines) && looksLikeHeaderLine(lines[i+1]) {
				return text[:pos]
			}
		}
		pos += len(l)
	}
	return text
}

func isHeaderStart(t string) bool {
	for _, p := range []string{"received: ", "return-path: ", "return-path:<", "dkim-signature: ", "x-received: ",
		"message-id: ", "delivered-to: "} {
		if strings.HasPrefix(t, p) {
			return true
		}
	}
	return false
}

func looksLikeHeaderLine(l string) bool {
	if l == "" {
		return false
	}
	if l[0] == ' ' || l[0] == '\t' {
		return true
	}
	k, _, ok := strings.Cut(l, ":")
	return ok && k != "" && !strings.ContainsAny(k, " \t")
}

// addrSpan finds the first e-mail address in s at or after from, returning
// its start and end, or -1.
func addrSpan(s string, from int) (int, int) {
	for {
		at := strings.IndexByte(s[from:], '@')
		if at < 0 {
			return -1, -1
		}
		at += from
		start := at
		for start > from && isLocalChar(s[start-1]) {
			start--
		}
		end := at + 1
		if end < len(s) && s[end] == '[' {
			if j := strings.IndexByte(s[end:], ']'); j > 0 {
				end += j + 1
			}
		} else {
			for end < len(s) && isDomainChar(s[end]) {
				end++
			}
			for end > at+1 && (s[end-1] == '.' || s[end-1] == '-') {
				end--
			}
		}
		for start < at && s[start] == '.' {
			start++
		}
		dom := s[at+1 : end]
		if start < at && (strings.Contains(dom, ".") || strings.HasPrefix(dom, "[")) {
			return start, end
		}
		from = at + 1
	}
}

func isLocalChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+/=?^_`{|}~.-", c) >= 0 || c >= 0x80
}

func isDomainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c >= 0x80
}

// recipientLabels introduce an address that is the subject of a line.
var recipientLabels = []string{
	"original-recipient:", "final-recipient:", "recipient address:", "recipient:", "failed recipient:",
	"failed recipients:", "intended recipient:", "addressed to:", "to:", "rcpt to:", "email address:",
	"e-mail address:", "address:", "destination:", "mailbox:", "user:", "unknown recipient:",
	"original recipient:", "recipients:", "the following recipient", "could not be delivered to:",
	"delivery to the following recipient", "to the following address", "to the following recipients",
}

// recipientLineLabel returns the address if line is about one recipient:
// an address at the start (optionally in angle brackets, quoted, or after
// a label such as "Recipient:") followed by nothing, ':' or a reason. It
// also returns the label that introduced the address ("" for none).
func recipientLineLabel(line string) (addr, rest, label string, ok bool) {
	t := strings.TrimSpace(line)
	if t == "" {
		return "", "", "", false
	}
	lt := strings.ToLower(t)
	for _, lab := range recipientLabels {
		if strings.HasPrefix(lt, lab) {
			label = lab
			t = strings.TrimSpace(t[len(lab):])
			t = strings.TrimPrefix(t, "rfc822;")
			t = strings.TrimPrefix(t, "RFC822;")
			t = strings.TrimSpace(t)
			break
		}
	}
	t = strings.TrimLeft(t, `<"'(*-•[ `)
	s, e := addrSpan(t, 0)
	if s != 0 {
		return "", "", "", false
	}
	addr = t[:e]
	rest = strings.TrimLeft(t[e:], `>"')]`)
	switch {
	case rest == "":
	case rest[0] == ':' || rest[0] == ',' || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t':
	case strings.HasPrefix(rest, "..."), strings.HasPrefix(strings.ToLower(rest), "<mailto:"):
	default:
		return "", "", "", false
	}
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(strings.TrimLeft(rest, ":"))), "from ") {
		return "", "", "", false
	}
	return addr, strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(rest), ":.;,")), label, true
}

type textBlock struct {
	addr string
	text string
	weak bool // introduced by "To:", which may quote the original header
}

// textBlocks splits a bounce text into per-recipient blocks, in order of
// first appearance; repeated addresses merge.
func textBlocks(text string, exclude map[string]bool) []textBlock {
	lines := strings.Split(text, "\n")
	var blocks []textBlock
	idx := map[string]int{}
	cur := -1
	for _, l := range lines {
		if addr, rest, label, ok := recipientLineLabel(l); ok && !isSystemAddr(addr) {
			key := strings.ToLower(addr)
			if i, seen := idx[key]; seen {
				cur = i
				blocks[i].weak = blocks[i].weak && label == "to:"
			} else if len(blocks) >= maxRecipients {
				cur = -1
				continue
			} else {
				idx[key] = len(blocks)
				cur = len(blocks)
				blocks = append(blocks, textBlock{addr: addr, weak: label == "to:"})
			}
			if rest != "" && len(blocks[cur].text) < 8000 {
				blocks[cur].text += rest + "\n"
			}
			continue
		}
		if cur >= 0 && len(blocks[cur].text) < 8000 {
			blocks[cur].text += l + "\n"
		}
	}
	// Addresses of the report's own header (the sender being notified)
	// and those only seen after "To:" are dropped when other candidates
	// exist.
	var kept []textBlock
	for _, b := range blocks {
		if !exclude[strings.ToLower(b.addr)] && !b.weak {
			kept = append(kept, b)
		}
	}
	if len(kept) == 0 {
		for _, b := range blocks {
			if !exclude[strings.ToLower(b.addr)] {
				kept = append(kept, b)
			}
		}
	}
	if len(kept) > 0 {
		return kept
	}
	return blocks
}

// unquote removes one level of "> " quoting when most lines carry it (a
// forwarded bounce).
func unquote(text string) string {
	lines := strings.Split(text, "\n")
	quoted, nonEmpty := 0, 0
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		nonEmpty++
		if strings.HasPrefix(l, ">") {
			quoted++
		}
	}
	if nonEmpty == 0 || quoted*2 < nonEmpty {
		return text
	}
	for i, l := range lines {
		if strings.HasPrefix(l, ">") {
			l = l[1:]
			l = strings.TrimPrefix(l, " ")
			lines[i] = l
		}
	}
	return strings.Join(lines, "\n")
}

// sentenceRecipients finds addresses named inside a failure sentence, such
// as "There was an error delivering your mail to <a@b.example>." The block
// is the rest of the text.
func sentenceRecipients(body string, exclude map[string]bool) []textBlock {
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		ll := strings.ToLower(l)
		if !strings.Contains(ll, "@") || !mentionsFailure(ll) && !strings.Contains(ll, "deliver") {
			continue
		}
		for from := 0; ; {
			s, e := addrSpan(l, from)
			if s < 0 {
				break
			}
			from = e
			a := l[s:e]
			if exclude[strings.ToLower(a)] || isSystemAddr(a) {
				continue
			}
			return []textBlock{{addr: a, text: strings.Join(lines[i+1:], "\n")}}
		}
	}
	return nil
}

// labelledRecipients finds lines "Reason words: addr" (a short label of
// at most six words, then an address that ends the line), such as
// "Unknown user: bob@example.net". The label is the block's text.
func labelledRecipients(body string, exclude map[string]bool) []textBlock {
	var out []textBlock
	for _, l := range strings.Split(body, "\n") {
		label, rest, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok || label == "" || len(strings.Fields(label)) > 6 || strings.Contains(label, "@") {
			continue
		}
		rest = strings.Trim(strings.TrimSpace(rest), "<>")
		s, e := addrSpan(rest, 0)
		if s != 0 || e != len(rest) || exclude[strings.ToLower(rest)] || isSystemAddr(rest) {
			continue
		}
		switch strings.ToLower(label) {
		case "from", "reply-to", "sender", "return-path", "cc", "bcc", "original sender", "sender address":
			continue
		}
		out = append(out, textBlock{addr: rest, text: label})
		if len(out) >= maxRecipients {
			break
		}
	}
	return out
}

func isSystemAddr(a string) bool {
	l := strings.ToLower(a)
	return strings.HasPrefix(l, "mailer-daemon@") || strings.HasPrefix(l, "postmaster@")
}

// parseText finds recipients and reasons in a plain-text bounce.
func (p *Parser) parseText(rep *Report, h header, text string, bounceish bool) {
	full := unquote(text)
	body := cutOriginal(full)
	exclude := map[string]bool{}
	for _, k := range []string{"From", "To", "Reply-To", "Sender", "Return-Path"} {
		if v := h.get(k); v != "" {
			if list, err := mail.ParseAddressList(v); err == nil {
				for _, a := range list {
					exclude[strings.ToLower(a.Address)] = true
				}
			} else if s, e := addrSpan(v, 0); s >= 0 {
				exclude[strings.ToLower(v[s:e])] = true
			}
		}
	}
	if rep.OriginalHeader != nil {
		for _, v := range rep.OriginalHeader["From"] {
			if s, e := addrSpan(v, 0); s >= 0 {
				exclude[strings.ToLower(v[s:e])] = true
			}
		}
	}
	failed := map[string]bool{}
	var failedList []string
	for _, v := range headerValues(h, "X-Failed-Recipients") {
		for _, a := range strings.Split(v, ",") {
			a = cleanAddr(strings.TrimSpace(a))
			if a != "" && !failed[strings.ToLower(a)] {
				failed[strings.ToLower(a)] = true
				failedList = append(failedList, a)
			}
		}
	}
	if !bounceish && len(failedList) == 0 && !mentionsFailure(body) {
		return
	}
	blocks := textBlocks(body, exclude)
	if len(failedList) > 0 {
		// The header is authoritative for which addresses failed.
		var kept []textBlock
		for _, b := range blocks {
			if failed[strings.ToLower(b.addr)] {
				kept = append(kept, b)
			}
		}
		for _, a := range failedList {
			found := false
			for _, b := range kept {
				found = found || strings.EqualFold(b.addr, a)
			}
			if !found {
				kept = append(kept, textBlock{addr: a, text: body})
			}
		}
		blocks = kept
	}
	if len(blocks) == 0 {
		// Transcripts: RCPT TO:<addr> lines.
		lower := strings.ToLower(body)
		for i := 0; ; {
			j := strings.Index(lower[i:], "rcpt to:")
			if j < 0 {
				break
			}
			i += j + 8
			if s, e := addrSpan(body, i); s >= 0 && s-i < 3 {
				blocks = append(blocks, textBlock{addr: body[s:e], text: body})
				break
			}
		}
	}
	if len(blocks) == 0 {
		blocks = sentenceRecipients(body, exclude)
	}
	if len(blocks) == 0 {
		blocks = labelledRecipients(body, exclude)
	}
	if len(blocks) == 0 && rep.OriginalHeader != nil && mentionsFailure(body) {
		for _, v := range rep.OriginalHeader["To"] {
			if s, e := addrSpan(v, 0); s >= 0 {
				blocks = append(blocks, textBlock{addr: v[s:e], text: body})
				break
			}
		}
	}
	if len(blocks) == 0 && mentionsFailure(body) {
		// The quoted original's To: line.
		rest := full[len(body):]
		if i := indexFieldLine(rest, "To:"); i >= 0 {
			line, _, _ := strings.Cut(rest[i+3:], "\n")
			if s, e := addrSpan(line, 0); s >= 0 && !exclude[strings.ToLower(line[s:e])] {
				blocks = append(blocks, textBlock{addr: line[s:e], text: body})
			}
		}
	}
	transcript := ""
	if i := strings.Index(strings.ToLower(body), "transcript of session"); i >= 0 {
		transcript = body[i:]
	}
	for _, b := range blocks {
		t := b.text
		if len(blocks) == 1 && transcript != "" && !strings.Contains(t, transcript) {
			t += "\n" + transcript
		}
		if strings.TrimSpace(t) == "" {
			t = body
		}
		diag := diagnosticOf(t)
		if c, st, _ := scanReply(diag); c == 0 && st == (smtp.EnhancedCode{}) {
			// The reason may stand apart from the address list ("Could
			// not be delivered because of: 550 ..."): use the first reply
			// line of the text.
			if i := replyCodeIndex(body); i >= 0 {
				line, _, _ := strings.Cut(body[i:], "\n")
				diag = clean(line+" "+diag, maxTextLen)
			}
		}
		r := RecipientReport{Recipient: cleanAddr(b.addr), Diagnostic: diag}
		r.Command = commandOf(t)
		if subj := strings.ToLower(rep.Subject); strings.Contains(subj, "delayed") || strings.Contains(subj, "warning") {
			r.Action = ActionDelayed
		}
		rep.Recipients = append(rep.Recipients, r)
	}
}

func headerValues(h header, name string) []string {
	var out []string
	for _, f := range h {
		if strings.EqualFold(f.name, name) {
			out = append(out, f.value)
		}
	}
	return out
}

// mentionsFailure reports whether a text talks about a failed delivery.
func mentionsFailure(s string) bool {
	l := strings.ToLower(firstN(s, 8000))
	for _, w := range []string{"could not be delivered", "undeliver", "permanent", "delivery failed", "failed",
		"not delivered", "unable to deliver", "returned", "rejected", "error", "delivery to the following",
		"was not delivered", "couldn't be delivered", "delayed", "did not reach"} {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

// diagnosticOf picks the informative part of a recipient's block: from the
// first remote reply code on, else the whole block, cleaned.
func diagnosticOf(block string) string {
	b := strings.ReplaceAll(block, "\n", " ")
	if i := replyCodeIndex(b); i >= 0 {
		// Keep a little context before the code, such as "said:".
		b = b[i:]
	}
	b = strings.TrimPrefix(strings.TrimSpace(b), "(reason: ")
	return clean(b, maxTextLen)
}

// replyCodeIndex finds the first SMTP failure reply code in s: three
// digits 4xx or 5xx standing alone and followed by a space, '-', ':' and a
// space, or the end.
func replyCodeIndex(s string) int {
	return codeIndex(s, '4', '5')
}

func codeIndex(s string, lo, hi byte) int {
	for i := 0; i+3 <= len(s); i++ {
		c := s[i]
		if c < lo || c > hi || c == '3' || !isDigit(s[i+1]) || !isDigit(s[i+2]) {
			continue
		}
		if i > 0 {
			p := s[i-1]
			if isDigit(p) || p == '.' || p == '#' || p == '-' || p == ':' && i > 1 && isDigit(s[i-2]) || isAlpha(p) || p == '/' || p == '=' || p == '+' || p == '_' {
				continue
			}
		}
		if i+3 < len(s) {
			n := s[i+3]
			if n == ':' && (i+4 >= len(s) || s[i+4] == ' ') && (i == 0 || s[i-1] == ' ' || s[i-1] == '\n') {
				return i
			}
			if n != ' ' && n != '-' && n != '\t' && n != '\n' && n != ')' && n != '"' && n != '\'' && n != ',' {
				continue
			}
			if n == '-' && (i+4 >= len(s) || !(isDigit(s[i+4]) || isAlpha(s[i+4]))) {
				continue
			}
		}
		return i
	}
	return -1
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// findStatus finds the first RFC 3463 status code (class 2, 4 or 5) in s,
// not part of a longer dotted number such as an IP address.
func findStatus(s string) (smtp.EnhancedCode, bool) {
	for i := 0; i+5 <= len(s); i++ {
		c := s[i]
		if c != '2' && c != '4' && c != '5' || s[i+1] != '.' {
			continue
		}
		if i > 0 && (isDigit(s[i-1]) || s[i-1] == '.' || isAlpha(s[i-1])) {
			continue
		}
		j := i + 2
		a, j, ok := readNum(s, j)
		if !ok || j >= len(s) || s[j] != '.' {
			continue
		}
		b, k, ok := readNum(s, j+1)
		if !ok {
			continue
		}
		if k < len(s) && (s[k] == '.' && k+1 < len(s) && isDigit(s[k+1]) || isAlpha(s[k])) {
			continue
		}
		return smtp.EnhancedCode{int(c - '0'), a, b}, true
	}
	return smtp.EnhancedCode{}, false
}

func readNum(s string, i int) (int, int, bool) {
	n, start := 0, i
	for i < len(s) && isDigit(s[i]) && i-start < 3 {
		n = n*10 + int(s[i]-'0')
		i++
	}
	if i == start || i < len(s) && isDigit(s[i]) {
		return 0, i, false
	}
	return n, i, true
}

// scanReply extracts the reply code, status and SMTP command from a
// diagnostic text.
func scanReply(s string) (int, smtp.EnhancedCode, string) {
	code := 0
	i := replyCodeIndex(s)
	if i < 0 {
		i = codeIndex(s, '2', '2')
	}
	if i >= 0 {
		code = int(s[i]-'0')*100 + int(s[i+1]-'0')*10 + int(s[i+2]-'0')
	}
	st, _ := findStatus(s)
	return code, st, commandOf(s)
}

// commandOf says which SMTP command a failure answered, from wording such
// as "(in reply to RCPT TO command)", "after RCPT TO:<...>" or a
// transcript's ">>> DATA".
func commandOf(s string) string {
	l := normText(s)
	type pat struct{ p, cmd string }
	for _, x := range []pat{
		{"in reply to end of data", "DATA"}, {"after end of data", "DATA"}, {"in reply to data", "DATA"},
		{"after data", "DATA"}, {"in reply to rcpt to", "RCPT"}, {"after rcpt to", "RCPT"},
		{"in reply to mail from", "MAIL"}, {"after mail from", "MAIL"}, {"rcpt to response", "RCPT"},
		{"[rcpt_to]", "RCPT"}, {"in reply to rcpt", "RCPT"}, {"after rcpt", "RCPT"},
		{"after pipelined data", "DATA"}, {"after pipelined rcpt", "RCPT"}, {"after pipelined mail", "MAIL"},
		{"does not like recipient", "RCPT"}, {"does not like sender", "MAIL"}, {"smtp:rcpt", "RCPT"}, {"smtp:data", "DATA"}, {"smtp:mail", "MAIL"}, {"smtp command data", "DATA"}, {"our final data", "DATA"}, {"in reply to helo", "HELO"}, {"in reply to ehlo", "EHLO"}, {"after initial connection", "CONN"},
		{"after connect", "CONN"}, {"in reply to starttls", "STARTTLS"},
	} {
		if strings.Contains(l, x.p) {
			return x.cmd
		}
	}
	// A transcript: the last command sent before the first error reply.
	last := ""
	for _, line := range strings.Split(strings.ToLower(s), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, ">>> ") {
			f := strings.Fields(t[4:])
			if len(f) > 0 {
				last = strings.ToUpper(strings.TrimRight(f[0], ":"))
			}
		}
		if strings.HasPrefix(t, "<<< 4") || strings.HasPrefix(t, "<<< 5") {
			break
		}
	}
	switch last {
	case "RCPT", "MAIL", "HELO", "EHLO":
		return last
	}
	// ">>> DATA" is not evidence: with PIPELINING (RFC 2920) the replies
	// to RCPT TO arrive after DATA was sent.
	return ""
}

// enrichFromText adds what the human-readable part says to recipients of
// a delivery-status part that lack a diagnostic or command.
func (p *Parser) enrichFromText(rep *Report, text string) {
	if text == "" {
		return
	}
	body := cutOriginal(text)
	blocks := textBlocks(body, nil)
	byAddr := map[string]string{}
	for _, b := range blocks {
		byAddr[strings.ToLower(b.addr)] = b.text
	}
	for i := range rep.Recipients {
		r := &rep.Recipients[i]
		t, ok := byAddr[strings.ToLower(r.Recipient)]
		if !ok {
			t, ok = byAddr[strings.ToLower(r.OriginalRecipient)]
		}
		if !ok && len(rep.Recipients) == 1 {
			t, ok = body, true
		}
		if !ok {
			continue
		}
		if r.Diagnostic == "" {
			r.Diagnostic = diagnosticOf(t)
		} else if replyCodeIndex(r.Diagnostic) < 0 {
			// The Diagnostic-Code holds no SMTP reply (an exit
			// status of a local program, say); the text's transcript
			// may have the reply line.
			if d := diagnosticOf(t); replyCodeIndex(d) == 0 {
				r.Diagnostic = clean(r.Diagnostic+" "+d, maxTextLen)
			}
		}
		if r.Command == "" {
			r.Command = commandOf(t)
		}
	}
}
