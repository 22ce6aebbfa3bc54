package deliver

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mta/deliver/smtptest"
)

// testHost is our own EHLO name in tests.
const testHost = "client.deliver.test"

func testMessage(extra string) string {
	return "From: <a@sender.test>\r\nTo: <b@example.test>\r\nSubject: test\r\nMessage-ID: <1@sender.test>\r\n\r\nHello.\r\n" + extra
}

func bodyOf(s string) Body { return NewBody(strings.NewReader(s), int64(len(s))) }

func envelope(to ...string) *Envelope {
	env := &Envelope{MessageID: "m1", From: "a@sender.test"}
	for _, r := range to {
		env.Recipients = append(env.Recipients, Recipient{Address: r})
	}
	return env
}

// newStatic returns a Static transport routing everything to srv.
func newStatic(t *testing.T, srv *smtptest.Server, route StaticRoute, cc ClientConfig) *Static {
	t.Helper()
	if route.Domain == "" {
		route.Domain = "*"
	}
	if route.Host == "" {
		route.Host = srv.Addr()
	}
	if cc.Hostname == "" {
		cc.Hostname = testHost
	}
	s, err := NewStatic(StaticConfig{ClientConfig: cc, Routes: []StaticRoute{route}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func deliverOK(t *testing.T, tr Transport, env *Envelope, body string) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := tr.Deliver(ctx, env, bodyOf(body))
	if err := Check(env, res); err != nil {
		t.Fatal(err)
	}
	return res
}

func wantCode(t *testing.T, r Result, code int, enh smtp.EnhancedCode) {
	t.Helper()
	if r.Reply.Code != code || (enh != smtp.EnhancedCode{} && r.Reply.EnhancedCode != enh) {
		t.Fatalf("%s: got %d %v %q (err %v), want %d %v", r.Recipient, r.Reply.Code, r.Reply.EnhancedCode, r.Reply.Message, r.Err, code, enh)
	}
}

func rcptErr(code int, class, subj, det int, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, subj, det}, Message: msg}
}

type netipAddr = netip.Addr

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

var osReadFile = os.ReadFile

func bufioWriter(w io.Writer) *bufio.Writer { return bufio.NewWriter(w) }

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
