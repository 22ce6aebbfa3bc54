package deliver

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mta/deliver/smtptest"
)

func TestStaticDeliverAndReuse(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	body := testMessage("Line two.\r\n")
	for i := 0; i < 3; i++ {
		res := deliverOK(t, tr, envelope("b@example.test", "c@example.test"), body)
		for _, r := range res {
			wantCode(t, r, 250, smtp.EnhancedCode{2, 0, 0})
			if r.Local || r.Err != nil || r.Uncertain {
				t.Fatalf("unexpected result %+v", r)
			}
			if r.Route.Addr != srv.AddrPort() || r.Route.TLS != nil || r.Route.TLSPolicy != "opportunistic" {
				t.Fatalf("route %+v", r.Route)
			}
		}
	}
	msgs := srv.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	if got := string(msgs[0].Data); got != body {
		t.Fatalf("body changed:\n%q\n%q", got, body)
	}
	if msgs[0].Helo != testHost || len(msgs[0].To) != 2 || msgs[0].From != "a@sender.test" {
		t.Fatalf("message %+v", msgs[0])
	}
	if n := srv.Sessions(); n != 1 {
		t.Fatalf("%d sessions for 3 messages, want 1 (reuse)", n)
	}
}

func TestStaticMaxMessagesPerConnection(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{Pool: PoolConfig{MaxMessages: 2}})
	for i := 0; i < 5; i++ {
		wantCode(t, deliverOK(t, tr, envelope("b@example.test"), testMessage(""))[0], 250, smtp.EnhancedCode{})
	}
	if n := srv.Sessions(); n != 3 {
		t.Fatalf("%d sessions for 5 messages at 2 per connection, want 3", n)
	}
}

func TestStaticDeadPooledConnection(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	wantCode(t, deliverOK(t, tr, envelope("b@example.test"), testMessage(""))[0], 250, smtp.EnhancedCode{})
	srv.DropConnections()
	res := deliverOK(t, tr, envelope("b@example.test"), testMessage(""))
	wantCode(t, res[0], 250, smtp.EnhancedCode{})
	if n := srv.Sessions(); n != 2 {
		t.Fatalf("%d sessions, want 2 (redial after the pooled one died)", n)
	}
}

func TestStaticMixedRcptReplies(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{
		OnRcpt: func(to string, _ *smtp.RcptOptions) error {
			switch {
			case strings.HasPrefix(to, "full"):
				return rcptErr(452, 4, 2, 2, "mailbox full")
			case strings.HasPrefix(to, "nobody"):
				return rcptErr(550, 5, 1, 1, "no such\x01user\x00here")
			}
			return nil
		},
	})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	res := deliverOK(t, tr, envelope("ok@example.test", "full@example.test", "nobody@example.test", "ok2@example.test"), testMessage(""))
	wantCode(t, res[0], 250, smtp.EnhancedCode{2, 0, 0})
	wantCode(t, res[1], 452, smtp.EnhancedCode{4, 2, 2})
	wantCode(t, res[2], 550, smtp.EnhancedCode{5, 1, 1})
	wantCode(t, res[3], 250, smtp.EnhancedCode{2, 0, 0})
	if res[1].Local || res[2].Local || !res[1].Reply.Temporary() || !res[2].Permanent() {
		t.Fatalf("remote replies misclassified: %+v %+v", res[1], res[2])
	}
	if strings.ContainsAny(res[2].Reply.Message, "\x00\x01") {
		t.Fatalf("reply text not cleaned: %q", res[2].Reply.Message)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 2 {
		t.Fatalf("messages %+v", msgs)
	}
}

func TestStaticDataRejected(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{
		OnData: func(*smtptest.Message) error { return rcptErr(554, 5, 7, 1, "spam") },
	})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	res := deliverOK(t, tr, envelope("a@example.test", "b@example.test"), testMessage(""))
	for _, r := range res {
		wantCode(t, r, 554, smtp.EnhancedCode{5, 7, 1})
	}
	// The session stays usable after a refused DATA.
	wantCode(t, deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0], 554, smtp.EnhancedCode{})
	if srv.Sessions() != 1 {
		t.Fatalf("sessions %d", srv.Sessions())
	}
}

func TestStaticGreylisting(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{OnRcpt: smtptest.Greylist()})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	res := deliverOK(t, tr, envelope("b@example.test"), testMessage(""))
	wantCode(t, res[0], 451, smtp.EnhancedCode{4, 7, 1})
	if res[0].Local || !res[0].Reply.Temporary() {
		t.Fatalf("greylisting: %+v", res[0])
	}
	res = deliverOK(t, tr, envelope("b@example.test"), testMessage(""))
	wantCode(t, res[0], 250, smtp.EnhancedCode{})
	if len(srv.Messages()) != 1 {
		t.Fatal("message not received after greylisting")
	}
}

func TestStatic421MidSession(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{
		OnRcpt: func(to string, _ *smtp.RcptOptions) error {
			if strings.HasPrefix(to, "second") {
				return smtptest.ErrClose
			}
			return nil
		},
	})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	res := deliverOK(t, tr, envelope("first@example.test", "second@example.test", "third@example.test"), testMessage(""))
	wantCode(t, res[1], 421, smtp.EnhancedCode{4, 4, 2})
	for _, i := range []int{0, 2} {
		if !res[i].Local || !res[i].Reply.Temporary() || res[i].Uncertain {
			t.Fatalf("recipient %d: %+v", i, res[i])
		}
	}
	if len(srv.Messages()) != 0 {
		t.Fatal("message delivered despite 421")
	}
	// The closed session is not reused.
	wantCode(t, deliverOK(t, tr, envelope("first@example.test"), testMessage(""))[0], 250, smtp.EnhancedCode{})
	if srv.Sessions() != 2 {
		t.Fatalf("sessions %d, want 2", srv.Sessions())
	}
}

func TestStaticResetAfterDot(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{Fault: smtptest.ResetAfterData})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	res := deliverOK(t, tr, envelope("a@example.test", "b@example.test"), testMessage(""))
	for _, r := range res {
		if !r.Uncertain || !r.Local || !r.Reply.Temporary() || r.Err == nil {
			t.Fatalf("reset after the dot: %+v", r)
		}
	}
	if len(srv.Messages()) != 1 {
		t.Fatal("the server should have the message (that is why the outcome is uncertain)")
	}
}

func TestStaticTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault smtptest.Fault
		to    Timeouts
		body  string
		unc   bool
	}{
		{"greeting", smtptest.StallGreeting, Timeouts{Greeting: 300 * time.Millisecond}, testMessage(""), false},
		{"final reply", smtptest.StallAfterData, Timeouts{DataFinal: 300 * time.Millisecond}, testMessage(""), true},
		{"peer stops reading", smtptest.StopReading, Timeouts{DataBlock: 300 * time.Millisecond}, testMessage(strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 1<<17)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.New(t, smtptest.Config{Fault: tc.fault})
			tr := newStatic(t, srv, StaticRoute{}, ClientConfig{Timeouts: tc.to})
			res := deliverOK(t, tr, envelope("a@example.test"), tc.body)
			r := res[0]
			if !r.Local || !r.Reply.Temporary() || r.Uncertain != tc.unc || !errors.Is(r.Err, ErrTimeout) {
				t.Fatalf("%+v (err %v)", r, r.Err)
			}
		})
	}
}

func TestStaticEndlessReply(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{Fault: smtptest.EndlessEHLO})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
	if !r.Local || !r.Reply.Temporary() || !errors.Is(r.Err, ErrReplyTooLong) {
		t.Fatalf("%+v (err %v)", r, r.Err)
	}
}

func TestStaticCancel(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{Fault: smtptest.StallAfterData})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	env := envelope("a@example.test")
	res := tr.Deliver(ctx, env, bodyOf(testMessage("")))
	if err := Check(env, res); err != nil {
		t.Fatal(err)
	}
	if !res[0].Reply.Temporary() || !res[0].Uncertain || !errors.Is(res[0].Err, context.DeadlineExceeded) {
		t.Fatalf("%+v (err %v)", res[0], res[0].Err)
	}
}

func TestStaticLineEndingsAndDots(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	for _, tc := range []struct{ in, want string }{
		{"a\r.\r\nb\r\n", "a\r\n..\r\nb\r\n"},
		{"a\n.\nb\n", "a\r\n..\r\nb\r\n"},
		{"a\r\n.\r\nb", "a\r\n..\r\nb\r\n"},
		{"x\rfoo\r\rbar\r", "x\r\nfoo\r\n\r\nbar\r\n"},
		{".lead\r\n..two\r\n", "..lead\r\n...two\r\n"},
	} {
		wantCode(t, deliverOK(t, tr, envelope("a@example.test"), tc.in)[0], 250, smtp.EnhancedCode{})
		msgs := srv.Messages()
		// go-smtp's server removes the dot-stuffing again.
		got := string(msgs[len(msgs)-1].Data)
		want := strings.ReplaceAll(tc.want, "\r\n..", "\r\n.")
		if strings.HasPrefix(want, "..") {
			want = want[1:]
		}
		if got != want {
			t.Errorf("%q: server got %q, want %q", tc.in, got, want)
		}
	}
}

func TestStaticExtensions(t *testing.T) {
	utf8Env := envelope("rené@example.test")
	eightBit := testMessage("caf\xc3\xa9\r\n")
	for _, tc := range []struct {
		name string
		cfg  smtptest.Config
		env  *Envelope
		body string
		code int
		enh  smtp.EnhancedCode
	}{
		{"size over limit", smtptest.Config{MaxSize: 100}, envelope("a@example.test"), testMessage(strings.Repeat("x", 200)), 552, smtp.EnhancedCode{5, 3, 4}},
		{"size under limit", smtptest.Config{MaxSize: 10000}, envelope("a@example.test"), testMessage(""), 250, smtp.EnhancedCode{}},
		{"no SMTPUTF8", smtptest.Config{}, utf8Env, testMessage(""), 550, smtp.EnhancedCode{5, 6, 7}},
		{"SMTPUTF8", smtptest.Config{SMTPUTF8: true}, utf8Env, testMessage(""), 250, smtp.EnhancedCode{}},
		{"no 8BITMIME, 8-bit body", smtptest.Config{Hide: []string{"8BITMIME"}}, envelope("a@example.test"), eightBit, 554, smtp.EnhancedCode{5, 6, 3}},
		{"no 8BITMIME, 7-bit body", smtptest.Config{Hide: []string{"8BITMIME"}}, envelope("a@example.test"), testMessage(""), 250, smtp.EnhancedCode{}},
		{"8BITMIME", smtptest.Config{}, envelope("a@example.test"), eightBit, 250, smtp.EnhancedCode{}},
		{"no SIZE", smtptest.Config{Hide: []string{"SIZE"}}, envelope("a@example.test"), testMessage(""), 250, smtp.EnhancedCode{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.New(t, tc.cfg)
			tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
			r := deliverOK(t, tr, tc.env, tc.body)[0]
			wantCode(t, r, tc.code, tc.enh)
			if tc.code/100 == 5 && (!r.Local || len(srv.Messages()) != 0) {
				t.Fatalf("%+v", r)
			}
		})
	}
}

func TestStaticDSNParameters(t *testing.T) {
	notify := []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}
	env := &Envelope{From: "a@sender.test",
		Mail:       smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "env-1"},
		Recipients: []Recipient{{Address: "b@example.test", Options: smtp.RcptOptions{Notify: notify, OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "b@example.test"}}}}
	for _, dsn := range []bool{true, false} {
		srv := smtptest.New(t, smtptest.Config{DSN: dsn})
		tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
		wantCode(t, deliverOK(t, tr, env, testMessage(""))[0], 250, smtp.EnhancedCode{})
		m := srv.Messages()[0]
		got := m.MailOpts.EnvelopeID != "" && len(m.RcptOpts[0].Notify) == 2 && m.RcptOpts[0].OriginalRecipient != "" && m.MailOpts.Return == smtp.DSNReturnHeaders
		if got != dsn {
			t.Errorf("DSN offered %v: parameters passed %v (%+v %+v)", dsn, got, m.MailOpts, m.RcptOpts)
		}
	}
}

func TestStaticLoopGreeting(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{Hostname: testHost})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
	wantCode(t, r, 554, smtp.EnhancedCode{5, 4, 6})
	if !errors.Is(r.Err, ErrLoop) {
		t.Fatalf("err %v", r.Err)
	}
}

func TestStaticGreeting4xx(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{Greeting: "421 4.3.2 busy, try later"})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
	r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
	wantCode(t, r, 421, smtp.EnhancedCode{4, 3, 2})
	if r.Local {
		t.Fatal("the peer's greeting should be reported as its reply")
	}
}

func TestStaticTLS(t *testing.T) {
	ca, err := smtptest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := ca.ServerConfig("relay.example.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("required and verified", func(t *testing.T) {
		srv := smtptest.New(t, smtptest.Config{TLS: srvTLS})
		tr := newStatic(t, srv, StaticRoute{TLS: TLSRequired}, ClientConfig{RootCAs: ca.Pool})
		r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
		wantCode(t, r, 250, smtp.EnhancedCode{})
		if r.Route.TLS == nil || !r.Route.TLS.Verified || r.Route.TLS.Policy != "tls" || r.Route.TLS.Version == "" {
			t.Fatalf("TLS %+v", r.Route.TLS)
		}
		if !srv.Messages()[0].TLS {
			t.Fatal("server saw no TLS")
		}
	})
	t.Run("required, untrusted", func(t *testing.T) {
		srv := smtptest.New(t, smtptest.Config{TLS: srvTLS})
		tr := newStatic(t, srv, StaticRoute{TLS: TLSRequired}, ClientConfig{})
		r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
		wantCode(t, r, 451, smtp.EnhancedCode{4, 7, 5})
		if r.Route.TLSFailure != "certificate-not-trusted" || len(srv.Messages()) != 0 {
			t.Fatalf("route %+v", r.Route)
		}
	})
	t.Run("opportunistic", func(t *testing.T) {
		srv := smtptest.New(t, smtptest.Config{TLS: srvTLS})
		tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
		r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
		wantCode(t, r, 250, smtp.EnhancedCode{})
		if r.Route.TLS == nil || r.Route.TLS.Verified || r.Route.TLS.Policy != "opportunistic" || !srv.Messages()[0].TLS {
			t.Fatalf("TLS %+v", r.Route.TLS)
		}
	})
	t.Run("implicit", func(t *testing.T) {
		srv := smtptest.New(t, smtptest.Config{TLS: srvTLS, ImplicitTLS: true})
		tr := newStatic(t, srv, StaticRoute{TLS: TLSImplicit}, ClientConfig{RootCAs: ca.Pool})
		r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
		wantCode(t, r, 250, smtp.EnhancedCode{})
		if r.Route.TLS == nil || !r.Route.TLS.Verified {
			t.Fatalf("TLS %+v", r.Route.TLS)
		}
	})
	t.Run("broken STARTTLS, opportunistic falls back to plaintext", func(t *testing.T) {
		srv := smtptest.New(t, smtptest.Config{BrokenTLS: true})
		tr := newStatic(t, srv, StaticRoute{}, ClientConfig{})
		r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
		wantCode(t, r, 250, smtp.EnhancedCode{})
		if r.Route.TLS != nil || srv.Messages()[0].TLS || srv.Sessions() != 2 {
			t.Fatalf("route %+v, sessions %d", r.Route, srv.Sessions())
		}
	})
	t.Run("broken STARTTLS, required", func(t *testing.T) {
		srv := smtptest.New(t, smtptest.Config{BrokenTLS: true})
		tr := newStatic(t, srv, StaticRoute{TLS: TLSRequired}, ClientConfig{})
		r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
		wantCode(t, r, 451, smtp.EnhancedCode{4, 7, 5})
		if !errors.Is(r.Err, ErrTLS) || len(srv.Messages()) != 0 {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("no STARTTLS, required", func(t *testing.T) {
		srv := smtptest.New(t, smtptest.Config{})
		tr := newStatic(t, srv, StaticRoute{TLS: TLSRequired}, ClientConfig{})
		r := deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
		wantCode(t, r, 451, smtp.EnhancedCode{4, 7, 4})
		if r.Route.TLSFailure != "starttls-not-supported" {
			t.Fatalf("%+v", r.Route)
		}
	})
}

func TestStaticAuth(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{Auth: map[string]string{"user": "secret"}})
	tr := newStatic(t, srv, StaticRoute{TLS: TLSNone, Username: "user", Password: "secret"}, ClientConfig{})
	wantCode(t, deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0], 250, smtp.EnhancedCode{})
	bad := newStatic(t, srv, StaticRoute{TLS: TLSNone, Username: "user", Password: "wrong"}, ClientConfig{})
	r := deliverOK(t, bad, envelope("a@example.test"), testMessage(""))[0]
	wantCode(t, r, 451, smtp.EnhancedCode{4, 7, 0})
	if !errors.Is(r.Err, ErrAuth) {
		t.Fatalf("err %v", r.Err)
	}
	// Opportunistic TLS with AUTH does not send the password in clear.
	clear := newStatic(t, srv, StaticRoute{Username: "user", Password: "secret"}, ClientConfig{})
	wantCode(t, deliverOK(t, clear, envelope("a@example.test"), testMessage(""))[0], 451, smtp.EnhancedCode{4, 7, 4})
}

func TestStaticLMTP(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{LMTP: true,
		OnData: func(m *smtptest.Message) error {
			if m.To[0] == "full@example.test" {
				return rcptErr(452, 4, 2, 2, "over quota")
			}
			return nil
		},
		OnRcpt: func(to string, _ *smtp.RcptOptions) error {
			if to == "nobody@example.test" {
				return rcptErr(550, 5, 1, 1, "unknown")
			}
			return nil
		}})
	tr := newStatic(t, srv, StaticRoute{LMTP: true, TLS: TLSNone}, ClientConfig{})
	res := deliverOK(t, tr, envelope("ok@example.test", "full@example.test", "nobody@example.test"), testMessage(""))
	wantCode(t, res[0], 250, smtp.EnhancedCode{})
	wantCode(t, res[1], 452, smtp.EnhancedCode{4, 2, 2})
	wantCode(t, res[2], 550, smtp.EnhancedCode{5, 1, 1})
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages", n)
	}
	// Second message over the same LMTP session.
	wantCode(t, deliverOK(t, tr, envelope("ok@example.test"), testMessage(""))[0], 250, smtp.EnhancedCode{})
	if srv.Sessions() != 1 {
		t.Fatalf("sessions %d", srv.Sessions())
	}
}

func TestStaticRoutesAndFallback(t *testing.T) {
	a := smtptest.New(t, smtptest.Config{})
	b := smtptest.New(t, smtptest.Config{Addr: "127.0.0.2:0"})
	sb, _ := NewSandbox(SandboxConfig{})
	tr, err := NewStatic(StaticConfig{
		ClientConfig: ClientConfig{Hostname: testHost},
		Routes: []StaticRoute{
			{Domain: "a.test", Host: a.Addr()},
			{Domain: ".b.test", Host: b.Addr()},
		},
		Fallback: sb,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res := deliverOK(t, tr, envelope("x@a.test", "y@sub.b.test", "z@other.test", "w@A.TEST"), testMessage(""))
	for _, r := range res {
		wantCode(t, r, 250, smtp.EnhancedCode{})
	}
	if res[0].Route.Addr != a.AddrPort() || res[1].Route.Addr != b.AddrPort() || res[2].Route.Host != "sandbox" || res[3].Route.Addr != a.AddrPort() {
		t.Fatalf("routes %+v", res)
	}
	if len(a.Messages()) != 1 || len(a.Messages()[0].To) != 2 || len(b.Messages()) != 1 || len(sb.Messages()) != 1 {
		t.Fatal("wrong split of recipients")
	}
	noFallback, _ := NewStatic(StaticConfig{Routes: []StaticRoute{{Domain: "a.test", Host: a.Addr()}}})
	wantCode(t, deliverOK(t, noFallback, envelope("z@other.test"), testMessage(""))[0], 554, smtp.EnhancedCode{5, 4, 4})
	if _, err := NewStatic(StaticConfig{Routes: []StaticRoute{{Domain: "x", Host: "bad:port:x"}}}); err == nil {
		t.Fatal("bad host accepted")
	}
}

func TestStaticSourcePool(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{SourcePools: map[string]SourcePool{
		"blue": {Addrs: []netipAddr{mustAddr("127.0.0.7")}, Hostname: "blue.sender.test"},
	}})
	env := envelope("a@example.test")
	env.SourcePool = "blue"
	r := deliverOK(t, tr, env, testMessage(""))[0]
	wantCode(t, r, 250, smtp.EnhancedCode{})
	m := srv.Messages()[0]
	if m.Remote.Addr().String() != "127.0.0.7" || m.Helo != "blue.sender.test" || r.Route.Source.String() != "127.0.0.7" {
		t.Fatalf("source %v helo %q route %+v", m.Remote, m.Helo, r.Route)
	}
	r = deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0]
	if r.Route.Source.String() == "127.0.0.7" || srv.Messages()[1].Helo != testHost {
		t.Fatalf("default pool used the blue source: %+v", r.Route)
	}
}

func TestSandbox(t *testing.T) {
	dir := t.TempDir()
	sb, err := NewSandbox(SandboxConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	body := testMessage("")
	res := deliverOK(t, sb, envelope("a@example.test", "b@example.test"), body)
	for _, r := range res {
		wantCode(t, r, 250, smtp.EnhancedCode{2, 0, 0})
	}
	msgs := sb.Messages()
	if len(msgs) != 1 || string(msgs[0].Data) != body || msgs[0].File == "" {
		t.Fatalf("%+v", msgs)
	}
	data, err := osReadFile(msgs[0].File)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(data, []byte(body)) || !bytes.Contains(data, []byte("X-Sandbox-To: <b@example.test>\r\n")) {
		t.Fatalf("file %q", data)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	env := envelope("a@example.test")
	if r := sb.Deliver(ctx, env, bodyOf(body)); !r[0].Reply.Temporary() {
		t.Fatalf("cancelled: %+v", r[0])
	}
}

func TestStaticIdleTimeout(t *testing.T) {
	srv := smtptest.New(t, smtptest.Config{})
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{Now: clock, Pool: PoolConfig{IdleTimeout: time.Minute}})
	wantCode(t, deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0], 250, smtp.EnhancedCode{})
	if tr.e.p.idleCount() != 1 {
		t.Fatalf("idle %d", tr.e.p.idleCount())
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	wantCode(t, deliverOK(t, tr, envelope("a@example.test"), testMessage(""))[0], 250, smtp.EnhancedCode{})
	if srv.Sessions() != 2 {
		t.Fatalf("sessions %d: the expired idle session was reused", srv.Sessions())
	}
	tr.Close()
	if tr.e.p.idleCount() != 0 {
		t.Fatal("Close left idle sessions")
	}
}

func TestStaticConcurrencyLimit(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	srv := smtptest.New(t, smtptest.Config{OnData: func(*smtptest.Message) error {
		entered <- struct{}{}
		<-release
		return nil
	}})
	tr := newStatic(t, srv, StaticRoute{}, ClientConfig{Pool: PoolConfig{MaxConnsPerHost: 1}})
	done := make(chan []Result, 2)
	go func() { done <- deliverOK(t, tr, envelope("a@example.test"), testMessage("")) }()
	<-entered
	go func() { done <- deliverOK(t, tr, envelope("b@example.test"), testMessage("")) }()
	// The first delivery holds the only slot: one with a short deadline
	// cannot get it.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := tr.Deliver(ctx, envelope("x@example.test"), bodyOf(testMessage("")))[0]
	if !r.Reply.Temporary() || !errors.Is(r.Err, context.DeadlineExceeded) || !r.Local {
		t.Fatalf("%+v", r)
	}
	close(release)
	for i := 0; i < 2; i++ {
		wantCode(t, (<-done)[0], 250, smtp.EnhancedCode{})
	}
	if srv.Sessions() != 1 {
		t.Fatalf("sessions %d with MaxConnsPerHost 1", srv.Sessions())
	}
}
