package submit

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

func users() Authenticator {
	return AuthenticatorFunc(func(ctx context.Context, u, p string) (*User, error) {
		if u == "alice" && p == "secret" {
			return &User{Name: "alice", Tenant: "t1", Senders: []string{"@example.test"}}, nil
		}
		return nil, ErrBadCredentials
	})
}

func TestTrustedRelayQueuesAndCompletes(t *testing.T) {
	e := start(t, Config{TrustedNetworks: loopback}, ListenerConfig{})
	c := e.dial(t)
	r, err := send(c, "alice@example.test", []string{"bob@example.net"}, simpleMsg)
	if err != nil {
		t.Fatal(err)
	}
	if r.EnhancedCode != (smtp.EnhancedCode{2, 0, 0}) {
		t.Errorf("enhanced code %v", r.EnhancedCode)
	}
	id := queuedID(t, r)
	// The 250 has arrived: the message must already be in the store.
	m, err := e.q.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s) right after 250: %v", id, err)
	}
	if m.From != "alice@example.test" || m.Recipients() != 1 || m.Deliveries[0].Recipients[0].Address != "bob@example.net" {
		t.Errorf("envelope %+v", m)
	}
	body := e.body(t, id)
	for _, re := range []string{
		`^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby mta\.test with ESMTP id [0-9A-Z]+\r\n\tfor <bob@example\.net>; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n`,
		`\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} `,
		`\r\nMessage-ID: <[0-9A-Z.]+@mta\.test>\r\n`,
		`\r\nFrom: Alice <alice@example\.test>\r\nTo: bob@example\.net\r\nSubject: hi\r\n\r\nHello\.\r\n$`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("body does not match %s:\n%s", re, body)
		}
	}

	// Existing Date and Message-ID are kept, not duplicated; two
	// recipients: no "for".
	msg := "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x@y.test>\r\n" + simpleMsg
	r, err = send(c, "alice@example.test", []string{"bob@example.net", "carol@example.org"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	body = e.body(t, queuedID(t, r))
	if strings.Count(body, "Date:") != 1 || strings.Count(body, "Message-ID:") != 1 || strings.Contains(body, "\tfor <") {
		t.Errorf("completion changed a complete message:\n%s", body)
	}
}

func TestRelayRefusedForUntrusted(t *testing.T) {
	t.Run("no AUTH offered", func(t *testing.T) {
		e := start(t, Config{}, ListenerConfig{})
		c := e.dial(t)
		err := c.Mail("alice@example.test", nil)
		if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
			t.Fatalf("MAIL: %v, want 554 5.7.1", err)
		}
		if e.count(t) != 0 {
			t.Fatal("message queued")
		}
	})
	t.Run("AUTH offered", func(t *testing.T) {
		e := start(t, Config{Authenticator: users()}, ListenerConfig{ListenerPolicy: ListenerPolicy{AllowInsecureAuth: true}})
		c := e.dial(t)
		err := c.Mail("alice@example.test", nil)
		if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 530 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 0}) {
			t.Fatalf("MAIL: %v, want 530 5.7.0", err)
		}
	})
	t.Run("trusted network on a RequireAuth listener", func(t *testing.T) {
		e := start(t, Config{Authenticator: users(), TrustedNetworks: loopback}, ListenerConfig{ListenerPolicy: ListenerPolicy{RequireAuth: true, AllowInsecureAuth: true}})
		c := e.dial(t)
		if err := c.Mail("alice@example.test", nil); code(err) != 530 {
			t.Fatalf("MAIL: %v, want 530", err)
		}
	})
	t.Run("RCPT without permission", func(t *testing.T) {
		// Defence in depth: a session that is neither trusted nor
		// authenticated never gets a recipient accepted.
		s := &Session{b: &Backend{cfg: Config{MaxRecipients: 10}}, hasFrom: true}
		if err := s.Rcpt("bob@example.net", nil); err != ErrRelayDenied {
			t.Fatalf("Rcpt: %v", err)
		}
	})
}

func TestAuthOnlyAfterSTARTTLS(t *testing.T) {
	e := start(t, Config{Authenticator: users(), TrustedNetworks: loopback},
		ListenerConfig{Mode: StartTLS, ListenerPolicy: ListenerPolicy{RequireAuth: true}})
	c := e.dial(t)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before STARTTLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", "secret")); err == nil {
		t.Fatal("AUTH accepted in clear")
	}
	if err := c.Mail("alice@example.test", nil); code(err) != 530 {
		t.Fatalf("MAIL before AUTH: %v, want 530", err)
	}
	c, err := smtp.DialStartTLS(e.addr, e.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	ok, mechs := c.Extension("AUTH")
	if !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "LOGIN") {
		t.Fatalf("AUTH after STARTTLS: %v %q", ok, mechs)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", "wrong")); code(err) != 535 {
		t.Fatalf("bad password: %v, want 535", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", "secret")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	r, err := send(c, "alice@example.test", []string{"bob@example.net"}, simpleMsg)
	if err != nil {
		t.Fatal(err)
	}
	id := queuedID(t, r)
	body := e.body(t, id)
	if !strings.Contains(body, "with ESMTPSA id ") {
		t.Errorf("Received protocol not ESMTPSA:\n%s", body)
	}
	m, _ := e.q.Get(context.Background(), id)
	if m.Tenant != "t1" || m.Metadata["user"] != "alice" {
		t.Errorf("tenant %q metadata %v", m.Tenant, m.Metadata)
	}
}

func TestAuthLoginImplicitTLS(t *testing.T) {
	e := start(t, Config{Authenticator: users()}, ListenerConfig{Mode: ImplicitTLS})
	c, err := smtp.DialTLS(e.addr, e.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewLoginClient("alice", "secret")); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	r, err := send(c, "alice@example.test", []string{"bob@example.net"}, simpleMsg)
	if err != nil {
		t.Fatal(err)
	}
	queuedID(t, r)
}

func TestSenderAuthorisation(t *testing.T) {
	e := start(t, Config{Authenticator: users()}, ListenerConfig{ListenerPolicy: ListenerPolicy{AllowInsecureAuth: true}})
	c := e.dial(t)
	if err := c.Auth(sasl.NewPlainClient("", "alice", "secret")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("mallory@evil.test", nil); code(err) != 553 {
		t.Fatalf("foreign MAIL FROM: %v, want 553", err)
	}
	_ = c.Reset()
	msg := strings.Replace(simpleMsg, "alice@example.test", "ceo@evil.test", 1)
	if _, err := send(c, "alice@example.test", []string{"bob@example.net"}, msg); code(err) != 553 {
		t.Fatalf("foreign From field: %v, want 553", err)
	}
	if _, err := send(c, "", []string{"bob@example.net"}, simpleMsg); err != nil {
		t.Fatalf("null sender with own From: %v", err)
	}
}

func TestSizeLimit(t *testing.T) {
	e := start(t, Config{TrustedNetworks: loopback, MaxMessageBytes: 2000}, ListenerConfig{})
	c := e.dial(t)
	if ok, v := c.Extension("SIZE"); !ok || v != "2000" {
		t.Fatalf("SIZE %v %q", ok, v)
	}
	if err := c.Mail("a@example.test", &smtp.MailOptions{Size: 5000}); code(err) != 552 {
		t.Fatalf("MAIL SIZE=5000: %v, want 552", err)
	}
	_ = c.Reset()
	big := simpleMsg + strings.Repeat("0123456789012345678901234567890123456789\r\n", 60)
	if _, err := send(c, "a@example.test", []string{"b@example.net"}, big); code(err) != 552 {
		t.Fatalf("big DATA: %v, want 552", err)
	}
	if e.count(t) != 0 {
		t.Fatal("oversized message queued")
	}
	// The connection is still usable.
	r, err := send(c, "a@example.test", []string{"b@example.net"}, simpleMsg)
	if err != nil {
		t.Fatal(err)
	}
	queuedID(t, r)
}

func TestMaxRecipients(t *testing.T) {
	e := start(t, Config{TrustedNetworks: loopback, MaxRecipients: 2}, ListenerConfig{})
	c := e.dial(t)
	if err := c.Mail("a@example.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"b1@example.net", "b2@example.net"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Rcpt("b3@example.net", nil); code(err) != 452 {
		t.Fatalf("third RCPT: %v, want 452", err)
	}
}

func TestFromRules(t *testing.T) {
	e := start(t, Config{TrustedNetworks: loopback}, ListenerConfig{})
	c := e.dial(t)
	for name, msg := range map[string]string{
		"missing":  "To: b@example.net\r\nSubject: x\r\n\r\nbody\r\n",
		"two":      "From: a@example.test\r\nFrom: c@example.test\r\n\r\nbody\r\n",
		"garbage":  "From: <<<\r\n\r\nbody\r\n",
		"no colon": "From a@example.test\r\n\r\nbody\r\n",
	} {
		_, err := send(c, "a@example.test", []string{"b@example.net"}, msg)
		se, ok := err.(*smtp.SMTPError)
		if !ok || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 6, 0}) {
			t.Errorf("%s: %v, want 550 5.6.0", name, err)
		}
	}
	if e.count(t) != 0 {
		t.Fatal("bad message queued")
	}
}

func TestDKIMSignatureVerifies(t *testing.T) {
	key, err := dkim.GenerateKey(dkim.RSA, nil)
	if err != nil {
		t.Fatal(err)
	}
	txt, err := dkim.KeyRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	dns := dnstest.New(t, "")
	dns.AddRR(dnstest.TXT("sel._domainkey.example.test.", 300, txt))
	ring := dkim.NewKeyRing(dkim.SignerConfig{HeaderCanonicalization: dkim.Relaxed, BodyCanonicalization: dkim.Simple})
	if err := ring.Set("example.test", dkim.SignKey{Domain: "example.test", Selector: "sel", Key: key}); err != nil {
		t.Fatal(err)
	}
	e := start(t, Config{TrustedNetworks: loopback, DKIM: ring}, ListenerConfig{})
	c := e.dial(t)
	r, err := send(c, "a@example.test", []string{"b@example.net"}, simpleMsg)
	if err != nil {
		t.Fatal(err)
	}
	body := e.body(t, queuedID(t, r))
	if !strings.HasPrefix(body, "DKIM-Signature: ") {
		t.Fatalf("not signed:\n%s", body)
	}
	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := dkim.NewVerifier(dkim.VerifierConfig{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	results, err := v.Verify(context.Background(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Status != dkim.StatusPass || results[0].Domain != "example.test" {
		t.Fatalf("verify: %+v", results)
	}
	for _, h := range []string{"date", "message-id"} {
		if !containsFold(results[0].HeaderKeys, h) {
			t.Errorf("added %s not signed: h=%v", h, results[0].HeaderKeys)
		}
	}
	// A domain without a key goes unsigned.
	other := strings.ReplaceAll(simpleMsg, "alice@example.test", "alice@other.test")
	r, err = send(c, "alice@other.test", []string{"b@example.net"}, other)
	if err != nil {
		t.Fatal(err)
	}
	if body := e.body(t, queuedID(t, r)); strings.Contains(body, "DKIM-Signature") {
		t.Fatal("signed without a key for the domain")
	}
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// TestSmuggling sends, over raw TCP, a message with an "<LF>.<LF>" end of
// data followed by a second transaction in the same DATA, as the 2023 SMTP
// smuggling attacks do. No message may be queued for the smuggled
// envelope, and with RejectBare no message at all.
func TestSmuggling(t *testing.T) {
	smuggle := func(end string) string {
		return "From: a@example.test\r\nSubject: one\r\n\r\nfirst" + end +
			"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n" +
			"From: ceo@example.test\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\n"
	}
	// go-smtp's DATA reader drops the CR of a "." CR <not LF> line (as
	// net/textproto does), so "\r\n.\r" reaches us as a plain line
	// break: the smuggled text is then body text of one clean message.
	// Every other variant carries a bare LF or CR and is refused.
	for _, tc := range []struct {
		end    string
		reject bool
	}{{"\n.\n", true}, {"\r\n.\n", true}, {"\n.\r\n", true}, {"\r.\r", true}, {"\r\n.\r", false}} {
		t.Run(strings.NewReplacer("\r", "CR", "\n", "LF").Replace(tc.end), func(t *testing.T) {
			e := start(t, Config{TrustedNetworks: loopback}, ListenerConfig{})
			r := dialRaw(t, e.addr)
			r.cmd("EHLO client.test", 250)
			r.cmd("MAIL FROM:<a@example.test>", 250)
			r.cmd("RCPT TO:<b@example.net>", 250)
			r.cmd("DATA", 354)
			r.write(smuggle(tc.end))
			c, line := r.reply()
			switch {
			case tc.reject && (c != 550 || !strings.Contains(line, "5.6.0")):
				t.Fatalf("end of DATA: %q, want 550 5.6.0", line)
			case !tc.reject && c != 250:
				t.Fatalf("end of DATA: %q, want 250", line)
			}
			// The session goes on normally: the smuggled commands were
			// data, and nothing of them was executed.
			r.cmd("RSET", 250)
			r.cmd("QUIT", 221)
			ms, err := e.q.List(context.Background(), queue.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if tc.reject {
				want = 0
			}
			if len(ms) != want {
				t.Fatalf("%d messages queued, want %d", len(ms), want)
			}
			for _, m := range ms {
				if m.From != "a@example.test" || m.Recipients() != 1 || m.Deliveries[0].Recipients[0].Address != "b@example.net" {
					t.Fatalf("smuggled envelope queued: %+v", m)
				}
				if b := strings.ReplaceAll(e.body(t, m.ID), "\r\n", ""); strings.ContainsAny(b, "\r\n") {
					t.Fatalf("bare line ending stored: %q", b)
				}
			}
		})
	}
	t.Run("normalised", func(t *testing.T) {
		e := start(t, Config{TrustedNetworks: loopback, BareLineEndings: NormalizeBare}, ListenerConfig{})
		r := dialRaw(t, e.addr)
		r.cmd("EHLO client.test", 250)
		r.cmd("MAIL FROM:<a@example.test>", 250)
		r.cmd("RCPT TO:<b@example.net>", 250)
		r.cmd("DATA", 354)
		r.write(smuggle("\n.\n"))
		line := r.expect(250)
		r.cmd("QUIT", 221)
		ms, err := e.q.List(context.Background(), queue.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 1 || ms[0].From != "a@example.test" || ms[0].Deliveries[0].Recipients[0].Address != "b@example.net" {
			t.Fatalf("want exactly the one message of the first envelope; got %d (%s)", len(ms), line)
		}
		body := e.body(t, ms[0].ID)
		if strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\n") || strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\r") {
			t.Fatalf("bare line ending stored:\n%q", body)
		}
	})
}

func TestForbiddenCharacters(t *testing.T) {
	e := start(t, Config{TrustedNetworks: loopback}, ListenerConfig{})
	r := dialRaw(t, e.addr)
	r.cmd("EHLO bad\x00name", 501)
	r.cmd("EHLO bad(name)", 501)
	r.cmd("EHLO client.test", 250)
	r.cmd("MAIL FROM:<a\rb@example.test>", 501)
	r.cmd("MAIL FROM:<a\x00b@example.test>", 501)
	r.cmd("MAIL FROM:<a@example.test>", 250)
	r.cmd("RCPT TO:<b\x00c@example.net>", 501)
	r.cmd("RCPT TO:<b\rc@example.net>", 501)
	r.cmd("RCPT TO:<b@example.net>", 250)
	r.cmd("DATA", 354)
	r.write("From: a@example.test\r\n\r\nnul\x00here\r\n.\r\n")
	r.expect(550)
	// A line over 1000 octets including CRLF.
	r.cmd("MAIL FROM:<a@example.test>", 250)
	r.cmd("RCPT TO:<b@example.net>", 250)
	r.cmd("DATA", 354)
	r.write("From: a@example.test\r\n\r\n" + strings.Repeat("x", 999) + "\r\n.\r\n")
	if c, line := r.reply(); c != 500 || !strings.Contains(line, "5.5.2") {
		t.Fatalf("long line: %q", line)
	}
	// Exactly 1000 with CRLF is fine.
	r.cmd("MAIL FROM:<a@example.test>", 250)
	r.cmd("RCPT TO:<b@example.net>", 250)
	r.cmd("DATA", 354)
	r.write("From: a@example.test\r\n\r\n" + strings.Repeat("x", 998) + "\r\n.\r\n")
	r.expect(250)
	if n := e.count(t); n != 1 {
		t.Fatalf("%d messages queued, want 1", n)
	}
}

func TestSuppressedRecipient(t *testing.T) {
	sup := bounce.NewMemorySuppressions(nil)
	if err := sup.Add(context.Background(), bounce.Entry{Address: "gone@example.net", Source: bounce.Source("manual")}); err != nil {
		t.Fatal(err)
	}
	e := start(t, Config{TrustedNetworks: loopback, Suppressions: sup}, ListenerConfig{})
	c := e.dial(t)
	if err := c.Mail("a@example.test", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("Gone@Example.NET", nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 550 || !strings.Contains(se.Message, "suppression") {
		t.Fatalf("RCPT: %v", err)
	}
	if err := c.Rcpt("ok@example.net", nil); err != nil {
		t.Fatal(err)
	}
}

func TestRateLimit(t *testing.T) {
	pol, err := ratelimit.ParsePolicy("limit per=source rate=1/h burst=2")
	if err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.New(ratelimit.Config{Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	e := start(t, Config{TrustedNetworks: loopback, Limiter: lim}, ListenerConfig{})
	c := e.dial(t)
	for i := 0; i < 2; i++ {
		if _, err := send(c, "a@example.test", []string{"b@example.net"}, simpleMsg); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := c.Mail("a@example.test", nil); code(err) != 450 {
		t.Fatalf("third MAIL: %v, want 450", err)
	}
}

type failingQueue struct{}

func (failingQueue) Enqueue(ctx context.Context, m *queue.NewMessage, body io.Reader) (string, error) {
	_, _ = io.Copy(io.Discard, body)
	return "", errors.New("disk on fire")
}

func TestStoreFailureIs451(t *testing.T) {
	e := start(t, Config{TrustedNetworks: loopback, Queue: failingQueue{}}, ListenerConfig{})
	c := e.dial(t)
	_, err := send(c, "a@example.test", []string{"b@example.net"}, simpleMsg)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Fatalf("%v, want 451 4.3.0", err)
	}
}

func TestLargeMessageSpoolsToFile(t *testing.T) {
	e := start(t, Config{TrustedNetworks: loopback, SpoolMemory: 1024, TempDir: t.TempDir()}, ListenerConfig{})
	c := e.dial(t)
	msg := simpleMsg + strings.Repeat(strings.Repeat("y", 76)+"\r\n", 2000)
	r, err := send(c, "a@example.test", []string{"b@example.net"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	body := e.body(t, queuedID(t, r))
	if !strings.HasSuffix(body, msg[strings.Index(msg, "From:"):]) {
		t.Fatal("spooled message changed")
	}
}

func TestImplicitTLSNeedsConfig(t *testing.T) {
	srv, err := NewServer(Config{Queue: failingQueue{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Listen(ListenerConfig{Addr: "127.0.0.1:0", Mode: ImplicitTLS}); !errors.Is(err, ErrConfig) {
		t.Fatalf("%v", err)
	}
	_ = tls.VersionTLS13
}
