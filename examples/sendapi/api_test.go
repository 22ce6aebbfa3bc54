package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/deliver/smtptest"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/logstore"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

// instance is the program running in-process, as main runs it.
type instance struct {
	t      *testing.T
	url    string
	key    string
	cancel context.CancelFunc
	done   chan error
	exited bool
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listeningLine = regexp.MustCompile(`^sendapi: listening on (http://\S+)$`)

// start runs the program with args (plus a loopback listener, a host name
// and the API key key, "" for none) until the test ends or stop is called.
func start(t *testing.T, key string, args ...string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{t: t, key: key, cancel: cancel, done: make(chan error, 1), stderr: &lockedBuffer{}}
	pr, pw := io.Pipe()
	args = append([]string{"-http", "127.0.0.1:0", "-hostname", "api.test", "-api-key=" + key}, args...)
	go func() {
		err := run(ctx, args, pw, in.stderr)
		pw.Close()
		in.done <- err
	}()
	url := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				url <- m[1]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case in.url = <-url:
	case err := <-in.done:
		cancel()
		t.Fatalf("sendapi exited at start: %v\n%s", err, in.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("sendapi did not start\n%s", in.stderr)
	}
	t.Cleanup(func() {
		if !in.exited {
			in.stop()
		}
		if t.Failed() {
			t.Logf("sendapi log:\n%s", in.stderr)
		}
	})
	return in
}

// stop ends the program as SIGTERM does and expects a clean exit.
func (in *instance) stop() {
	in.t.Helper()
	in.cancel()
	in.exited = true
	select {
	case err := <-in.done:
		if err != nil {
			in.t.Fatalf("sendapi exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		in.t.Fatal("sendapi did not stop")
	}
}

// request makes an API call and decodes the JSON answer into out (when
// not nil). It returns the status code.
func (in *instance) request(method, path, body string, hdr map[string]string, out any) int {
	in.t.Helper()
	req, err := http.NewRequest(method, in.url+path, strings.NewReader(body))
	if err != nil {
		in.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if in.key != "" {
		req.Header.Set("Authorization", "Bearer "+in.key)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		in.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		in.t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			in.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// send posts a message that must be accepted.
func (in *instance) send(body string, hdr map[string]string) sendReply {
	in.t.Helper()
	var rep sendReply
	if code := in.request("POST", "/v1/messages", body, hdr, &rep); code != http.StatusAccepted {
		in.t.Fatalf("POST: status %d, want 202 (%+v)", code, rep)
	}
	if rep.ID == "" || !strings.HasPrefix(rep.MessageID, "<") || !strings.HasSuffix(rep.MessageID, "@api.test>") {
		in.t.Fatalf("POST answer %+v", rep)
	}
	return rep
}

func (in *instance) status(id string) statusReply {
	in.t.Helper()
	var st statusReply
	if code := in.request("GET", "/v1/messages/"+id, "", nil, &st); code != http.StatusOK {
		in.t.Fatalf("GET %s: status %d", id, code)
	}
	return st
}

// waitState polls the status of id until its state is want.
func (in *instance) waitState(id, want string) statusReply {
	in.t.Helper()
	var st statusReply
	waitFor(in.t, "message "+id+" "+want, func() bool {
		st = in.status(id)
		return st.State == want
	})
	return st
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func rcptByAddr(st statusReply, addr string) rcptReply {
	for _, r := range st.Recipients {
		if r.Address == addr {
			return r
		}
	}
	return rcptReply{}
}

func countEvents(st statusReply, typ event.Type) int {
	n := 0
	for _, e := range st.Events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// emlFiles lists the sandbox's messages.
func emlFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestSandbox: a templated text+HTML message goes through the queue into
// the sandbox, rendered, with the right header fields, Bcc only in the
// envelope, and a DKIM signature that verifies against the key published
// in a loopback DNS server; its status ends delivered.
func TestSandbox(t *testing.T) {
	dir := t.TempDir()
	key, err := dkim.GenerateKey(dkim.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := dkim.MarshalPrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "dkim.pem")
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	record, err := dkim.KeyRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	dns := dnstest.New(t, "")
	dns.AddRR(dnstest.TXT("sel._domainkey.example.test.", 300, record))

	sandbox := filepath.Join(dir, "sandbox")
	in := start(t, "", "-queue-dir", filepath.Join(dir, "queue"), "-sandbox", sandbox,
		"-dkim-domain", "example.test", "-dkim-selector", "sel", "-dkim-key", keyFile)
	rep := in.send(`{
		"from": "Shop <shop@example.test>",
		"to": ["Ann <ann@example.net>"],
		"cc": ["bob@example.net"],
		"bcc": ["audit@example.org"],
		"reply_to": "help@example.test",
		"subject": "Order {{.order}} for {{.name}}",
		"text": "Hello {{.name}},\nTotal: {{.total}}\n{{range .items}}- {{.}}\n{{end}}",
		"html": "<p>Hello {{.name}}</p>",
		"headers": {"X-Campaign": "spring"},
		"variables": {"name": "Zoë <z>", "order": "A-1", "total": "9.50", "items": ["tea", "cups"]},
		"tags": ["receipt"],
		"metadata": {"customer": "42"},
		"priority": "transactional"
	}`, nil)
	if rep.Recipients != 3 {
		t.Errorf("recipients %d, want 3", rep.Recipients)
	}

	// One delivery per recipient domain, so one file for example.net and
	// one for example.org, each with the same message.
	var files []string
	waitFor(t, "the sandbox files", func() bool { files = emlFiles(t, sandbox); return len(files) == 2 })
	var envelope []string
	var data, built []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get("X-Sandbox-From"); got != "<shop@example.test>" {
			t.Errorf("envelope sender %q", got)
		}
		envelope = append(envelope, m.Header["X-Sandbox-To"]...)
		// The message as built starts after the sandbox's envelope fields.
		msg := b
		for bytes.HasPrefix(msg, []byte("X-Sandbox-")) {
			msg = msg[bytes.Index(msg, []byte("\r\n"))+2:]
		}
		if built != nil && !bytes.Equal(msg, built) {
			t.Errorf("the deliveries differ:\n%s\n\n%s", built, msg)
		}
		data, built = b, msg
	}
	slices.Sort(envelope)
	if want := []string{"<ann@example.net>", "<audit@example.org>", "<bob@example.net>"}; !slices.Equal(envelope, want) {
		t.Errorf("envelope recipients %q, want %q", envelope, want)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(built))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Header
	if _, ok := h["Bcc"]; ok || bytes.Contains(built, []byte("audit@")) {
		t.Errorf("the Bcc recipient shows in the message:\n%s", built)
	}
	if _, err := h.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if got := h.Get("Message-ID"); got != rep.MessageID {
		t.Errorf("Message-ID %q, the API said %q", got, rep.MessageID)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
	if err != nil || subject != "Order A-1 for Zoë <z>" {
		t.Errorf("Subject %q (%v)", subject, err)
	}
	for field, want := range map[string]string{"From": "shop@example.test", "To": "ann@example.net", "Cc": "bob@example.net", "Reply-To": "help@example.test"} {
		a, err := mail.ParseAddress(h.Get(field))
		if err != nil || a.Address != want {
			t.Errorf("%s: %q (%v), want %s", field, h.Get(field), err, want)
		}
	}
	if h.Get("X-Campaign") != "spring" || h.Get("MIME-Version") != "1.0" {
		t.Errorf("X-Campaign %q, MIME-Version %q", h.Get("X-Campaign"), h.Get("MIME-Version"))
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q (%v)", h.Get("Content-Type"), err)
	}
	parts := map[string]string{}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
			t.Errorf("part %q not quoted-printable", p.Header.Get("Content-Type"))
		}
		body, err := io.ReadAll(quotedprintable.NewReader(p))
		if err != nil {
			t.Fatal(err)
		}
		parts[p.Header.Get("Content-Type")] = string(body)
	}
	if got, want := parts["text/plain; charset=utf-8"], "Hello Zoë <z>,\r\nTotal: 9.50\r\n- tea\r\n- cups\r\n"; got != want {
		t.Errorf("text part %q, want %q", got, want)
	}
	if got, want := parts["text/html; charset=utf-8"], "<p>Hello Zoë &lt;z&gt;</p>\r\n"; got != want {
		t.Errorf("HTML part %q, want %q", got, want)
	}

	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := dkim.NewVerifier(dkim.VerifierConfig{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	results, err := v.Verify(context.Background(), bytes.NewReader(data))
	if err != nil || len(results) != 1 || results[0].Status != dkim.StatusPass || results[0].Domain != "example.test" {
		t.Errorf("DKIM: %+v %v\n%s", results, err, data)
	}
	// The signature covers the body: a changed byte breaks it.
	tampered := bytes.Replace(data, []byte("Total: 9.50"), []byte("Total: 0.50"), 1)
	if results, err := v.Verify(context.Background(), bytes.NewReader(tampered)); err != nil || len(results) != 1 || results[0].Status == dkim.StatusPass {
		t.Errorf("DKIM of a tampered message: %+v %v", results, err)
	}

	st := in.waitState(rep.ID, "delivered")
	if st.MessageID != rep.MessageID || !slices.Equal(st.Tags, []string{"receipt"}) || st.Metadata["customer"] != "42" {
		t.Errorf("status %+v", st)
	}
	if len(st.Recipients) != 3 {
		t.Fatalf("status recipients %+v", st.Recipients)
	}
	for _, r := range st.Recipients {
		if r.State != "delivered" || r.Attempts != 1 || r.Reply == nil || r.Reply.Code != 250 || r.Updated == "" {
			t.Errorf("recipient %+v", r)
		}
	}
	if countEvents(st, event.Queued) != 1 || countEvents(st, event.Delivered) != 3 {
		t.Errorf("events %+v", st.Events)
	}
}

// TestSMTPPeer delivers through a smarthost that refuses one recipient
// with 550 5.1.1 and greylists another with 451: the first message ends
// partially delivered (with a DSN to the sender), the second delivered on
// retry.
func TestSMTPPeer(t *testing.T) {
	grey := smtptest.Greylist()
	peer := smtptest.New(t, smtptest.Config{
		OnRcpt: func(to string, opts *smtp.RcptOptions) error {
			switch {
			case strings.HasPrefix(to, "nobody@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			case strings.HasPrefix(to, "grey@"):
				return grey(to, opts)
			}
			return nil
		},
	})
	dir := t.TempDir()
	in := start(t, "", "-queue-dir", dir, "-smarthost", peer.Addr(), "-retry-min", "200ms", "-retry-max", "1s")

	rep := in.send(`{"from": "shop@example.test", "to": ["ok@example.net", "nobody@example.net"],
		"subject": "two", "text": "hello"}`, nil)
	st := in.waitState(rep.ID, "partially_delivered")
	ok, nobody := rcptByAddr(st, "ok@example.net"), rcptByAddr(st, "nobody@example.net")
	if ok.State != "delivered" || ok.Reply == nil || ok.Reply.Code != 250 {
		t.Errorf("ok@: %+v", ok)
	}
	if nobody.State != "bounced" || nobody.Reply == nil || *nobody.Reply != (replyJSON{Code: 550, Enhanced: "5.1.1", Text: "no such user"}) || nobody.Attempts != 1 {
		t.Errorf("nobody@: %+v (reply %+v)", nobody, nobody.Reply)
	}
	var got smtptest.Message
	for _, m := range peer.Messages() {
		if slices.Contains(m.To, "ok@example.net") {
			got = m
		}
	}
	if got.From != "shop@example.test" || !slices.Equal(got.To, []string{"ok@example.net"}) || !bytes.Contains(got.Data, []byte("Subject: two\r\n")) {
		t.Errorf("the peer received from %q to %q:\n%s", got.From, got.To, got.Data)
	}
	waitFor(t, "the DSN to the sender", func() bool {
		for _, m := range peer.Messages() {
			if m.From == "" && slices.Contains(m.To, "shop@example.test") && bytes.Contains(m.Data, []byte("nobody@example.net")) {
				return true
			}
		}
		return false
	})

	rep = in.send(`{"from": "shop@example.test", "to": ["grey@example.net"], "text": "hello"}`, nil)
	st = in.waitState(rep.ID, "delivered")
	r := rcptByAddr(st, "grey@example.net")
	if r.State != "delivered" || r.Attempts != 2 || r.Reply == nil || r.Reply.Code != 250 {
		t.Errorf("grey@: %+v", r)
	}
	deferred := false
	for _, e := range st.Events {
		if e.Type == event.Deferred && e.Reply != nil && e.Reply.Code == 451 {
			deferred = true
		}
	}
	if !deferred {
		t.Errorf("no deferred event with the 451 in %+v", st.Events)
	}
}

// TestBadRequests: each invalid request gets its status code and a JSON
// error naming the field, and none of them queues anything.
func TestBadRequests(t *testing.T) {
	dir := t.TempDir()
	queueDir, sandbox := filepath.Join(dir, "queue"), filepath.Join(dir, "sandbox")
	in := start(t, "s3cret", "-queue-dir", queueDir, "-sandbox", sandbox)
	const good = `"from": "a@example.test", "to": ["b@example.net"]`
	cases := []struct {
		name   string
		body   string
		hdr    map[string]string
		code   int
		field  string
		errHas string
	}{
		{"missing from", `{"to": ["b@example.net"], "text": "x"}`, nil, 422, "from", "required"},
		{"bad address", `{"from": "a@example.test", "to": ["b@example.net", "not an address"], "text": "x"}`, nil, 422, "to[1]", "not an address"},
		{"bad from", `{"from": "Ann <ann@>", "to": ["b@example.net"], "text": "x"}`, nil, 422, "from", ""},
		{"quoted local part", `{"from": "a@example.test", "to": ["\"b c\"@example.net"], "text": "x"}`, nil, 422, "to[0]", "dot-atom"},
		{"no recipient", `{"from": "a@example.test", "text": "x"}`, nil, 422, "to", "recipient"},
		{"no body", `{` + good + `, "subject": "s"}`, nil, 422, "text", "text or html"},
		{"header injection in name", `{` + good + `, "text": "x", "headers": {"Subject\r\nBcc": "evil@example.org"}}`, nil, 422, "headers", "not a valid header field name"},
		{"header injection in value", `{` + good + `, "text": "x", "headers": {"X-Note": "x\r\nBcc: evil@example.org"}}`, nil, 422, "headers", "line break"},
		{"header injection in subject", `{` + good + `, "text": "x", "subject": "hi\nBcc: evil@example.org"}`, nil, 422, "subject", "line break"},
		{"header injection through a variable", `{` + good + `, "text": "x", "subject": "{{.s}}", "variables": {"s": "hi\r\nBcc: evil@example.org"}}`, nil, 422, "subject", "line break"},
		{"header injection in display name", `{"from": "Ann\r\nBcc: evil@example.org <a@example.test>", "to": ["b@example.net"], "text": "x"}`, nil, 422, "from", "line break"},
		{"reserved header", `{` + good + `, "text": "x", "headers": {"bcc": "evil@example.org"}}`, nil, 422, "headers", "set by the API"},
		{"missing variable", `{` + good + `, "text": "Hello {{.name}}", "variables": {"nmae": "Ann"}}`, nil, 422, "text", `missing variable "name"`},
		{"missing variable in html", `{` + good + `, "html": "<p>{{.user.email}}</p>", "variables": {"user": {}}}`, nil, 422, "html", `missing variable "email"`},
		{"template syntax", `{` + good + `, "text": "Hello {{.name"}`, nil, 422, "text", "template"},
		{"counting loop", `{` + good + `, "text": "{{range 1000000000}}{{end}}"}`, nil, 422, "text", "range works only over a field"},
		{"unknown field", `{` + good + `, "text": "x", "bogus": 1}`, nil, 400, "bogus", "unknown field"},
		{"wrong type", `{"from": "a@example.test", "to": "b@example.net", "text": "x"}`, nil, 400, "to", "wrong type"},
		{"not JSON", `{"from": `, nil, 400, "", "JSON"},
		{"trailing data", `{` + good + `, "text": "x"} {}`, nil, 400, "", "trailing data"},
		{"bad priority", `{` + good + `, "text": "x", "priority": "urgent"}`, nil, 422, "priority", "transactional"},
		{"bad send_at", `{` + good + `, "text": "x", "send_at": "tomorrow"}`, nil, 422, "send_at", "RFC 3339"},
		{"bad idempotency key", `{` + good + `, "text": "x"}`, map[string]string{"Idempotency-Key": "a b"}, 422, "Idempotency-Key", ""},
		{"wrong API key", `{` + good + `, "text": "x"}`, map[string]string{"Authorization": "Bearer guess"}, 401, "", "API key"},
		{"no API key", `{` + good + `, "text": "x"}`, map[string]string{"Authorization": ""}, 401, "", "API key"},
		{"not JSON content", `{` + good + `, "text": "x"}`, map[string]string{"Content-Type": "text/plain"}, 415, "", "application/json"},
		{"too big", `{` + good + `, "text": "` + strings.Repeat("x", maxRequest) + `"}`, nil, 413, "", "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in.t = t
			var e errorReply
			code := in.request("POST", "/v1/messages", c.body, c.hdr, &e)
			if code != c.code || e.Field != c.field || !strings.Contains(e.Error, c.errHas) || e.Error == "" {
				t.Errorf("got %d %+v, want %d field %q error containing %q", code, e, c.code, c.field, c.errHas)
			}
		})
	}
	in.t = t
	var e errorReply
	if code := in.request("GET", "/v1/messages/06h0jq0646en5m9a214g", "", nil, &e); code != 404 || e.Field != "id" {
		t.Errorf("GET of an unknown ID: %d %+v", code, e)
	}
	in.key = ""
	if code := in.request("GET", "/v1/messages/06h0jq0646en5m9a214g", "", nil, &e); code != 401 {
		t.Errorf("GET without the API key: %d %+v", code, e)
	}
	in.stop()

	// Nothing was queued, recorded or delivered.
	store, err := logstore.Open(queueDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	msgs, err := store.List(context.Background(), queue.Filter{})
	if err != nil || len(msgs) != 0 {
		t.Errorf("queue holds %d messages (%v)", len(msgs), err)
	}
	status, err := os.ReadFile(filepath.Join(queueDir, "status.jsonl"))
	if err != nil || len(status) != 0 {
		t.Errorf("status file: %q (%v)", status, err)
	}
	if files := emlFiles(t, sandbox); len(files) != 0 {
		t.Errorf("sandbox holds %q", files)
	}
}

// TestRestart: statuses come back after a restart on the same queue
// directory: a delivered message's from the status file, a scheduled
// one's from the queue.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	args := []string{"-queue-dir", filepath.Join(dir, "queue"), "-sandbox", filepath.Join(dir, "sandbox")}
	in := start(t, "k", args...)
	done := in.send(`{"from": "a@example.test", "to": ["b@example.net", "c@example.org"], "text": "x", "tags": ["t1"]}`, nil)
	later := in.send(`{"from": "a@example.test", "to": ["d@example.net"], "text": "x", "send_at": "`+
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`, nil)
	before := in.waitState(done.ID, "delivered")
	if st := in.status(later.ID); st.State != "scheduled" || rcptByAddr(st, "d@example.net").State != "scheduled" {
		t.Errorf("scheduled message: %+v", st)
	}
	in.stop()

	in = start(t, "k", args...)
	after := in.status(done.ID)
	if after.State != "delivered" || after.MessageID != done.MessageID || !slices.Equal(after.Tags, []string{"t1"}) {
		t.Errorf("after the restart: %+v", after)
	}
	if !slices.EqualFunc(before.Recipients, after.Recipients, func(a, b rcptReply) bool {
		return a.Address == b.Address && a.State == b.State && a.Attempts == b.Attempts && a.Updated == b.Updated && *a.Reply == *b.Reply
	}) {
		t.Errorf("recipients before %+v, after %+v", before.Recipients, after.Recipients)
	}
	if len(after.Events) != len(before.Events) {
		t.Errorf("%d events before, %d after", len(before.Events), len(after.Events))
	}
	if st := in.status(later.ID); st.State != "scheduled" || st.MessageID != later.MessageID {
		t.Errorf("scheduled message after the restart: %+v", st)
	}
}

// TestIdempotencyKey: a request repeated with the same key gets the first
// one's IDs and sends nothing more; another key sends again.
func TestIdempotencyKey(t *testing.T) {
	dir := t.TempDir()
	sandbox := filepath.Join(dir, "sandbox")
	in := start(t, "", "-queue-dir", filepath.Join(dir, "queue"), "-sandbox", sandbox)
	const body = `{"from": "a@example.test", "to": ["b@example.net"], "text": "once"}`
	first := in.send(body, map[string]string{"Idempotency-Key": "order-1"})
	second := in.send(body, map[string]string{"Idempotency-Key": "order-1"})
	if second != first {
		t.Errorf("repeated request: %+v, first %+v", second, first)
	}
	st := in.waitState(first.ID, "delivered")
	if n := countEvents(st, event.Queued); n != 1 {
		t.Errorf("%d queued events", n)
	}
	third := in.send(body, map[string]string{"Idempotency-Key": "order-2"})
	if third.ID == first.ID || third.MessageID == first.MessageID {
		t.Errorf("another key gave the same message: %+v", third)
	}
	in.waitState(third.ID, "delivered")
	if files := emlFiles(t, sandbox); len(files) != 2 {
		t.Errorf("%d messages delivered, want 2", len(files))
	}
}

// TestLoopbackOnly: without an API key, clients off loopback and requests
// naming another host (DNS rebinding) are refused.
func TestLoopbackOnly(t *testing.T) {
	h := (&api{}).handler()
	for _, c := range []struct {
		remote, host string
		code         int
	}{
		{"192.0.2.1:4000", "127.0.0.1:8025", http.StatusForbidden},
		{"[2001:db8::1]:4000", "[::1]:8025", http.StatusForbidden},
		{"127.0.0.1:4000", "evil.example:8025", http.StatusForbidden},
		{"127.0.0.1:4000", "127.0.0.1:8025", http.StatusNotFound}, // through to the mux
		{"[::1]:4000", "localhost:8025", http.StatusNotFound},
	} {
		req := httptest.NewRequest("GET", "/nothing-here", nil)
		req.RemoteAddr, req.Host = c.remote, c.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var e errorReply
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != c.code || e.Error == "" {
			t.Errorf("from %s to %s: %d %s, want %d", c.remote, c.host, w.Code, w.Body, c.code)
		}
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-queue-dir", "q", "extra"},
		{"-queue-dir", "q", "-sandbox", "s", "-smarthost", "127.0.0.1:25"},
		{"-queue-dir", "q", "-dkim-domain", "example.test"},
		{"-queue-dir", "q", "-status-retention", "0s"},
	} {
		var stderr bytes.Buffer
		if err := run(context.Background(), args, io.Discard, &stderr); err != errUsage || stderr.Len() == 0 {
			t.Errorf("%q: %v, stderr %q", args, err, stderr.String())
		}
	}
	err := run(context.Background(), []string{"-queue-dir", t.TempDir(), "-hostname", "bad host"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-hostname") {
		t.Errorf("bad host name: %v", err)
	}
}
