package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func testConfig() buildConfig {
	return buildConfig{
		Hostname:  "api.test",
		Now:       time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Rand:      rand.NewChaCha8([32]byte{1}),
		MaxOutput: 1 << 16,
	}
}

// verifyBuilt checks what every built message must satisfy: CRLF line
// endings only, no line over 998 octets, exactly the header fields the
// request asks for (never Bcc, nothing injected), and a From field that
// parses to the envelope sender.
func verifyBuilt(req *request, m *message) error {
	d := m.Data
	for i, c := range d {
		if c == '\n' && (i == 0 || d[i-1] != '\r') || c == '\r' && (i+1 == len(d) || d[i+1] != '\n') {
			return fmt.Errorf("bare CR or LF at byte %d", i)
		}
	}
	for line := range bytes.SplitSeq(d, []byte("\r\n")) {
		if len(line) > 998 {
			return fmt.Errorf("line of %d octets", len(line))
		}
	}
	head, _, ok := bytes.Cut(d, []byte("\r\n\r\n"))
	if !ok {
		return errors.New("no end of the header section")
	}
	var names []string
	for line := range strings.SplitSeq(string(head), "\r\n") {
		if line == "" {
			return errors.New("empty line in the header section")
		}
		if line[0] == ' ' || line[0] == '\t' {
			if strings.TrimLeft(line, " \t") == "" {
				return errors.New("a continuation line holds only white space")
			}
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("header line without a colon: %q", line)
		}
		names = append(names, name)
	}
	want := []string{"Date", "Message-ID", "From", "MIME-Version", "Content-Type"}
	if len(req.To) > 0 {
		want = append(want, "To")
	}
	if len(req.Cc) > 0 {
		want = append(want, "Cc")
	}
	if req.ReplyTo != "" {
		want = append(want, "Reply-To")
	}
	// Subject is left out when it renders empty.
	subject, err := renderText("subject", req.Subject, req.Variables, testConfig().MaxOutput)
	if err != nil {
		return fmt.Errorf("the subject renders only once: %v", err)
	}
	if subject != "" {
		want = append(want, "Subject")
	}
	if req.Text == "" || req.HTML == "" {
		want = append(want, "Content-Transfer-Encoding")
	}
	for name := range req.Headers {
		want = append(want, name)
	}
	slices.Sort(want)
	slices.Sort(names)
	if !slices.Equal(names, want) {
		return fmt.Errorf("header fields %q, want %q", names, want)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(d))
	if err != nil {
		return fmt.Errorf("net/mail cannot read it: %v", err)
	}
	from, err := mail.ParseAddress(msg.Header.Get("From"))
	if err != nil || from.Address != m.From {
		return fmt.Errorf("From %q parses to %v (%v), want %s", msg.Header.Get("From"), from, err, m.From)
	}
	// Readers drop the white space around a field's value.
	if got, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil ||
		strings.Trim(got, " \t") != strings.Trim(subject, " \t") && utf8.ValidString(subject) {
		return fmt.Errorf("Subject %q decodes to %q (%v), want %q", msg.Header.Get("Subject"), got, err, subject)
	}
	if msg.Header.Get("Message-ID") != m.MessageID {
		return fmt.Errorf("Message-ID %q, want %q", msg.Header.Get("Message-ID"), m.MessageID)
	}
	return nil
}

func buildJSON(t *testing.T, js string) (*request, *message, error) {
	t.Helper()
	var req request
	if err := decodeRequest(strings.NewReader(js), &req); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	m, err := build(&req, testConfig())
	return &req, m, err
}

func TestBuild(t *testing.T) {
	long := strings.Repeat("Grüße aus Köln, ", 40)
	var many []string
	for i := range 150 {
		many = append(many, fmt.Sprintf(`"Person Number %d <p%d@example.net>"`, i, i))
	}
	cases := []struct {
		name  string
		js    string
		check func(t *testing.T, m *message, h mail.Header, body string)
	}{
		{"text only", `{"from": "a@example.test", "to": ["b@example.net"], "subject": "Hi", "text": "line 1\nline {{.n}}", "variables": {"n": 12345678901}}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				if h.Get("Content-Type") != "text/plain; charset=utf-8" || body != "line 1\r\nline 12345678901\r\n" {
					t.Errorf("Content-Type %q, body %q", h.Get("Content-Type"), body)
				}
			}},
		{"html only", `{"from": "a@example.test", "bcc": ["b@example.net"], "html": "<b>{{.x}}</b>", "variables": {"x": "&"}}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				if h.Get("Content-Type") != "text/html; charset=utf-8" || body != "<b>&amp;</b>\r\n" || h.Get("To") != "" {
					t.Errorf("Content-Type %q, To %q, body %q", h.Get("Content-Type"), h.Get("To"), body)
				}
			}},
		{"long non-ASCII subject", `{"from": "a@example.test", "to": ["b@example.net"], "subject": "` + long + `", "text": "x"}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				got, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
				if err != nil || got != long {
					t.Errorf("Subject decodes to %q (%v)", got, err)
				}
			}},
		{"long recipient list", `{"from": "a@example.test", "to": [` + strings.Join(many, ",") + `], "text": "x"}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				l, err := h.AddressList("To")
				if err != nil || len(l) != 150 || l[149].Address != "p149@example.net" || l[149].Name != "Person Number 149" {
					t.Errorf("To: %d addresses (%v)", len(l), err)
				}
			}},
		{"long body line", `{"from": "a@example.test", "to": ["b@example.net"], "text": "` + strings.Repeat("0123456789", 300) + `"}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				if body != strings.Repeat("0123456789", 300)+"\r\n" {
					t.Errorf("body %q", body)
				}
			}},
		{"duplicates", `{"from": "a@example.test", "to": ["b@example.net", "b@EXAMPLE.net"], "cc": ["B@example.net"], "bcc": ["b@example.NET"], "text": "x"}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				if len(m.Recipients) != 2 || m.Recipients[0].Address != "b@example.net" || m.Recipients[1].Address != "B@example.net" {
					t.Errorf("recipients %+v", m.Recipients)
				}
			}},
		{"scheduled", `{"from": "a@example.test", "to": ["b@example.net"], "text": "x", "send_at": "2026-03-02T08:00:00+01:00", "priority": "bulk"}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				if !m.NotBefore.Equal(time.Date(2026, 3, 2, 7, 0, 0, 0, time.UTC)) || m.Priority != -10 {
					t.Errorf("NotBefore %v, priority %d", m.NotBefore, m.Priority)
				}
			}},
		{"send_at in the past", `{"from": "a@example.test", "to": ["b@example.net"], "text": "x", "send_at": "2020-01-01T00:00:00Z"}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				if !m.NotBefore.IsZero() {
					t.Errorf("NotBefore %v", m.NotBefore)
				}
			}},
		{"display names", `{"from": "\"Smith, Ann\" <a@example.test>", "to": ["Zoë <b@example.net>"], "text": "x"}`,
			func(t *testing.T, m *message, h mail.Header, body string) {
				from, err1 := h.AddressList("From")
				to, err2 := h.AddressList("To")
				if err1 != nil || err2 != nil || from[0].Name != "Smith, Ann" || to[0].Name != "Zoë" {
					t.Errorf("From %q, To %q (%v, %v)", h.Get("From"), h.Get("To"), err1, err2)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, m, err := buildJSON(t, c.js)
			if err != nil {
				t.Fatal(err)
			}
			if err := verifyBuilt(req, m); err != nil {
				t.Fatalf("%v\n%s", err, m.Data)
			}
			msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
			if err != nil {
				t.Fatal(err)
			}
			var r io.Reader = msg.Body
			if msg.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
				r = quotedprintable.NewReader(r)
			}
			body, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, m, msg.Header, string(body))
		})
	}
}

func TestBuildErrors(t *testing.T) {
	const good = `"from": "a@example.test", "to": ["b@example.net"]`
	cases := []struct {
		name, js, field string
		status          int
	}{
		{"unfoldable subject", `{` + good + `, "text": "x", "subject": "` + strings.Repeat("x", 1000) + `"}`, "subject", 422},
		{"unfoldable header", `{` + good + `, "text": "x", "headers": {"X-Long": "` + strings.Repeat("x", 1000) + `"}}`, "headers", 422},
		{"field name with a space", `{` + good + `, "text": "x", "headers": {"X Y": "z"}}`, "headers", 422},
		{"field name with a colon", `{` + good + `, "text": "x", "headers": {"X-Y:": "z"}}`, "headers", 422},
		{"reserved field, other case", `{` + good + `, "text": "x", "headers": {"content-TYPE": "text/html"}}`, "headers", 422},
		{"too many recipients", `{"from": "a@example.test", "to": [` + recipients(maxRecipients+1) + `], "text": "x"}`, "to", 422},
		{"tag with a newline", `{` + good + `, "text": "x", "tags": ["a\nb"]}`, "tags[0]", 422},
		{"huge metadata value", `{` + good + `, "text": "x", "metadata": {"k": "` + strings.Repeat("v", maxMetaValueLen+1) + `"}}`, "metadata", 422},
		{"non-ASCII address", `{"from": "a@example.test", "to": ["zoë@example.net"], "text": "x"}`, "to[0]", 422},
		{"bad domain", `{"from": "a@example.test", "to": ["b@-example.net"], "text": "x"}`, "to[0]", 422},
		{"bad reply_to", `{` + good + `, "text": "x", "reply_to": "nobody"}`, "reply_to", 422},
		{"template call", `{` + good + `, "text": "{{define \"x\"}}{{template \"x\"}}{{end}}{{template \"x\"}}"}`, "text", 422},
		{"redefined main template", `{` + good + `, "text": "{{define \"text\"}}{{range 1000000000}}{{end}}{{end}}"}`, "text", 422},
		{"range over dot", `{` + good + `, "text": "{{with 5}}{{range .}}{{end}}{{end}}"}`, "text", 422},
		{"range over a bare variable", `{` + good + `, "text": "{{$n := 1000000000}}{{range $n}}{{end}}"}`, "text", 422},
		{"nested ranges over a long list", `{` + good + `, "text": "{{range .a}}{{range $.a}}{{range $.a}}{{end}}{{end}}{{end}}", "variables": {"a": [` + strings.Repeat("0,", 999) + `0]}}`, "text", 422},
		{"output over the limit", `{` + good + `, "text": "{{range .a}}{{$.s}}{{end}}", "variables": {"s": "` + strings.Repeat("x", 1000) + `", "a": [` + strings.Repeat("0,", 99) + `0]}}`, "text", 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, m, err := buildJSON(t, c.js)
			var ae *apiError
			if !errors.As(err, &ae) || ae.Field != c.field || ae.Status != c.status {
				t.Fatalf("got %v (%+v), want %d for %s", err, m, c.status, c.field)
			}
		})
	}
}

func recipients(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf(`"r%d@example.net"`, i)
	}
	return strings.Join(s, ",")
}

// TestTemplateCost: nested ranges are fine while the lists are short.
func TestTemplateCost(t *testing.T) {
	_, m, err := buildJSON(t, `{"from": "a@example.test", "to": ["b@example.net"],
		"text": "{{range $r := .rows}}{{range $.cols}}{{.}}{{$r}} {{end}}\n{{else}}none{{end}}",
		"variables": {"rows": ["1", "2"], "cols": ["a", "b", "c"]}}`)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := bytes.Cut(m.Data, []byte("\r\n\r\n"))
	got, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
	if err != nil || string(got) != "a1 b1 c1 \r\na2 b2 c2 \r\n" {
		t.Errorf("body %q (%v):\n%s", got, err, m.Data)
	}
}

func TestCheckEnvelopeAddress(t *testing.T) {
	for _, good := range []string{"a@example.net", "first.last+tag@sub.example.net", "a@[192.0.2.1]", "a@[IPv6:2001:db8::1]", "x!#$%&'*+-/=?^_`{|}~@a-b.c"} {
		if err := checkEnvelopeAddress(good); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	for _, bad := range []string{"", "a", "@example.net", "a@", "a..b@example.net", ".a@example.net", "a b@example.net",
		"a@exa mple.net", "a@example..net", "a@-a.net", "a@[192.0.2.1", "a@[IPv6:192.0.2.1]", "a@[2001:db8::1]",
		strings.Repeat("a", 65) + "@example.net", "ü@example.net", "a@bü.net"} {
		if err := checkEnvelopeAddress(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestFold: folding keeps lines short and unfolds to the value.
func TestFold(t *testing.T) {
	for _, v := range []string{"", "short", "a  b", " lead", "trail ", strings.Repeat("word ", 50), strings.Repeat("x", 100) + " y"} {
		var b bytes.Buffer
		h := headerWriter{b: &b}
		h.raw("X-Test", v)
		if h.err != nil {
			t.Fatal(h.err)
		}
		out := b.String()
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("%q", out)
		}
		for line := range strings.SplitSeq(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			// A line may only be folded after its first word (and, on
			// the first line, never right after the field name).
			words := strings.TrimSpace(strings.TrimPrefix(line, "X-Test: "))
			if len(line) > 78 && strings.Contains(words, " ") {
				t.Errorf("%q: line %q could have been folded", v, line)
			}
			if strings.TrimSpace(line) == "" {
				t.Errorf("%q: blank line in %q", v, out)
			}
		}
		if got := strings.ReplaceAll(strings.TrimSuffix(out, "\r\n"), "\r\n", ""); got != "X-Test: "+v {
			t.Errorf("%q unfolds to %q", v, got)
		}
	}
}

// FuzzBuild: any JSON request either gives a client error or a message
// with CRLF line endings, short lines and no header field it did not ask
// for.
func FuzzBuild(f *testing.F) {
	for _, s := range []string{
		`{"from": "a@example.test", "to": ["b@example.net"], "subject": "Hi {{.n}}", "text": "Hello {{.n}}", "variables": {"n": "Ann"}}`,
		`{"from": "Ann <a@example.test>", "to": ["b@example.net"], "cc": ["c@example.net"], "bcc": ["d@example.org"], "reply_to": "r@example.test", "subject": "Grüße", "text": "a\r\nb", "html": "<p>{{.x}}</p>", "variables": {"x": "<&>"}}`,
		`{"from": "a@example.test", "to": ["b@example.net"], "text": "x", "headers": {"Subject\r\nBcc": "evil@example.org"}}`,
		`{"from": "a@example.test", "to": ["b@example.net"], "text": "x", "headers": {"X-Note": "a\nBcc: evil@example.org"}}`,
		`{"from": "=?utf-8?q?a=0D=0ABcc:_evil@example.org?= <a@example.test>", "to": ["b@example.net"], "text": "x"}`,
		`{"from": "a@example.test", "to": ["b@example.net"], "subject": "{{.s}}", "text": "x", "variables": {"s": "a\u0000b\u001b c"}}`,
		`{"from": "a@example.test", "to": ["\"x\ny\"@example.net"], "text": "x"}`,
		`{"from": "a@example.test", "to": ["b@example.net"], "text": "{{range .a}}{{.}}{{end}}", "variables": {"a": [1, "x", {"k": "v"}]}}`,
		`{"from": "a@example.test", "to": ["b@example.net"], "html": "<a href=\"{{.u}}\">x</a>", "variables": {"u": "javascript:alert(1)"}, "headers": {"List-Unsubscribe": "<https://example.test/u>"}}`,
		`{"from": "a@example.test", "to": ["b@example.net"], "text": "x", "subject": "` + strings.Repeat("é", 200) + `"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, js string) {
		var req request
		if err := decodeRequest(strings.NewReader(js), &req); err != nil {
			return
		}
		m, err := build(&req, testConfig())
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status < http.StatusBadRequest || ae.Status >= 500 || ae.Msg == "" {
				t.Fatalf("%v is not a client error", err)
			}
			return
		}
		if err := verifyBuilt(&req, m); err != nil {
			t.Fatalf("%v\n%s", err, m.Data)
		}
	})
}

// FuzzBuildFields is FuzzBuild with the request's strings as separate
// inputs, so that mutations reach the builder instead of breaking the
// JSON syntax.
func FuzzBuildFields(f *testing.F) {
	f.Add("Ann <a@example.test>", "b@example.net", "Hi {{.v}}", "Hello {{.v}}\n", "<p>{{.v}}</p>", "X-Tag", "x", "Zoë")
	f.Add("=?utf-8?q?a=0D=0ABcc:_e@example.org?= <a@example.test>", "\"q\"@example.net", "{{.v}}", "", "<a href=\"{{.v}}\">", "Subject\r\nBcc", "e@example.org", "a\r\nBcc: e@example.org")
	f.Add("a@[192.0.2.1]", "b@[IPv6:2001:db8::1]", strings.Repeat("Grüße ", 30), strings.Repeat("x", 2000), "", "List-Unsubscribe", "<https://example.test/u>", "\x00\x1b")
	f.Fuzz(func(t *testing.T, from, to, subject, text, html, hname, hvalue, v string) {
		req := &request{
			From: from, To: []string{to}, Cc: []string{"c@example.net"}, Bcc: []string{"d@example.org"},
			Subject: subject, Text: text, HTML: html,
			Headers:   map[string]string{hname: hvalue},
			Variables: map[string]any{"v": v},
		}
		m, err := build(req, testConfig())
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status < http.StatusBadRequest || ae.Status >= 500 || ae.Msg == "" {
				t.Fatalf("%v is not a client error", err)
			}
			return
		}
		if err := verifyBuilt(req, m); err != nil {
			t.Fatalf("%v\n%s", err, m.Data)
		}
	})
}
