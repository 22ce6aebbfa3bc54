package submit

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/deliver/smtptest"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/memstore"
)

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

type env struct {
	q    *queue.Queue
	srv  *Server
	addr string
	tls  *tls.Config // client config trusting the test CA
}

// start runs a Server with cfg (Queue filled in with a real queue on
// memstore) and one listener lc (Addr filled in).
func start(t *testing.T, cfg Config, lc ListenerConfig) *env {
	t.Helper()
	q, err := queue.New(queue.Config{Store: memstore.New(), Hostname: "mta.test"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Queue == nil {
		cfg.Queue = q
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mta.test"
	}
	e := &env{q: q}
	if lc.Mode != Plain && lc.TLSConfig == nil {
		ca, err := smtptest.NewCA()
		if err != nil {
			t.Fatal(err)
		}
		lc.TLSConfig, err = ca.ServerConfig("mta.test")
		if err != nil {
			t.Fatal(err)
		}
		e.tls = &tls.Config{RootCAs: ca.Pool, ServerName: "mta.test"}
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lc.Addr = "127.0.0.1:0"
	a, err := srv.Listen(lc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	e.srv, e.addr = srv, a.String()
	return e
}

func (e *env) dial(t *testing.T) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// send runs one transaction and returns the reply to the end of DATA (or
// the first error).
func send(c *smtp.Client, from string, to []string, msg string) (*smtp.SMTPError, error) {
	if err := c.Mail(from, nil); err != nil {
		return nil, err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return nil, err
		}
	}
	w, err := c.Data()
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return nil, err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return nil, err
	}
	text := resp.StatusText
	ec := smtp.EnhancedCode{}
	if n, _ := fmt.Sscanf(text, "%d.%d.%d ", &ec[0], &ec[1], &ec[2]); n == 3 {
		text = text[strings.IndexByte(text, ' ')+1:]
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: ec, Message: text}, nil
}

func code(err error) int {
	if se, ok := err.(*smtp.SMTPError); ok {
		return se.Code
	}
	return -1
}

// queuedID extracts the queue ID from "OK: queued as <id>".
func queuedID(t *testing.T, r *smtp.SMTPError) string {
	t.Helper()
	if r == nil || r.Code != 250 {
		t.Fatalf("reply %v, want 250", r)
	}
	id, ok := strings.CutPrefix(r.Message, "OK: queued as ")
	if !ok || id == "" {
		t.Fatalf("reply %q carries no queue ID", r.Message)
	}
	return id
}

// body reads a stored message's body.
func (e *env) body(t *testing.T, id string) string {
	t.Helper()
	b, err := e.q.Store().OpenBody(context.Background(), id)
	if err != nil {
		t.Fatalf("message %s not in the store: %v", id, err)
	}
	defer b.Close()
	data, err := io.ReadAll(deliver.Reader(b))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func (e *env) count(t *testing.T) int {
	t.Helper()
	ms, err := e.q.List(context.Background(), queue.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

// raw is a line-level SMTP conversation over TCP.
type raw struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := &raw{t: t, c: c, br: bufio.NewReader(c)}
	r.expect(220)
	return r
}

func (r *raw) write(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// reply reads one (possibly multi-line) reply and returns its code and
// last line.
func (r *raw) reply() (int, string) {
	r.t.Helper()
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("reading reply: %v", err)
		}
		if len(line) < 4 {
			r.t.Fatalf("short reply %q", line)
		}
		if line[3] == ' ' {
			var code int
			fmt.Sscanf(line[:3], "%d", &code)
			return code, strings.TrimRight(line, "\r\n")
		}
	}
}

func (r *raw) expect(want int) string {
	r.t.Helper()
	c, line := r.reply()
	if c != want {
		r.t.Fatalf("got %q, want %d", line, want)
	}
	return line
}

func (r *raw) cmd(s string, want int) string {
	r.t.Helper()
	r.write(s + "\r\n")
	return r.expect(want)
}

const simpleMsg = "From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello.\r\n"
