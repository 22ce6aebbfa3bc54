// Package smtptest runs SMTP and LMTP servers on loopback for tests: a
// go-smtp server that records what it receives, with hooks to answer each
// command as a test needs and faults that real peers show: greylisting,
// 421 in the middle of a session, a connection reset after the final dot,
// stalls longer than any timeout, missing extensions, STARTTLS that fails,
// endless multi-line replies and a peer that stops reading the body.
//
// # Use
//
//	srv := smtptest.New(t, smtptest.Config{
//		OnRcpt: smtptest.Greylist(),
//	})
//	// deliver to srv.Addr() ...
//	msgs := srv.Messages()
//
// Servers listen on 127.0.0.1 by default. Linux routes all of 127.0.0.0/8
// to the loopback interface, so Config.Addr "127.0.0.2:0" gives a server
// its own address, as an MX host in a dnstest zone would have.
//
// A Server is safe for concurrent use. Stalls end when the server is
// closed.
package smtptest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Fault is a misbehaviour of the server.
type Fault int

// Faults. The zero value is a well-behaved server.
const (
	// NoFault is a well-behaved server.
	NoFault Fault = iota
	// StallGreeting never sends the greeting.
	StallGreeting
	// StallAfterData reads the whole body and never replies to it.
	StallAfterData
	// ResetAfterData reads the whole body, records the message and
	// resets the connection without replying: the client cannot know
	// whether the message was taken.
	ResetAfterData
	// StopReading stops reading in the middle of the body (after the
	// first 4 KiB) and never reads again.
	StopReading
	// EndlessEHLO answers EHLO with "250-" continuation lines that never
	// end.
	EndlessEHLO
)

// ErrClose, returned (or wrapped) by a hook, makes the server reply
// "421 4.4.2 closing connection" and close the connection at once
// (RFC 5321 §3.8).
var ErrClose = errors.New("smtptest: close connection")

// Config describes a server. The zero value is a plain SMTP server on
// 127.0.0.1 that accepts everything.
type Config struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// Hostname is the server's name in its greeting and EHLO reply;
	// default "mx.smtptest.test".
	Hostname string
	// TLS, when set, offers STARTTLS with this configuration (or speaks
	// TLS at once with ImplicitTLS).
	TLS         *tls.Config
	ImplicitTLS bool
	// BrokenTLS offers STARTTLS but fails every handshake.
	BrokenTLS bool
	// LMTP speaks LMTP (RFC 2033).
	LMTP bool
	// MaxSize is the SIZE limit announced and enforced; 0: none announced.
	MaxSize int64
	// SMTPUTF8, DSN and RequireTLS offer those extensions.
	SMTPUTF8, DSN, RequireTLS bool
	// Hide removes extension keywords (e.g. "8BITMIME", "SIZE",
	// "SMTPUTF8", "STARTTLS") from plaintext EHLO replies.
	Hide []string
	// Greeting replaces the greeting line, e.g. "421 4.3.2 try later".
	Greeting string
	// Auth, when not nil, offers AUTH PLAIN and accepts these
	// user/password pairs.
	Auth map[string]string
	// Fault is a misbehaviour.
	Fault Fault

	// OnMail, OnRcpt and OnData decide the replies to MAIL, RCPT and the
	// end of DATA; a nil hook or a nil error is a 250. Return an
	// *smtp.SMTPError for a specific reply, or ErrClose. OnData sees the
	// message before it is recorded; a message is recorded only when
	// OnData accepts it. With LMTP, OnData is called once per recipient
	// (Message.To then holds that one recipient).
	OnMail func(from string, opts *smtp.MailOptions) error
	OnRcpt func(to string, opts *smtp.RcptOptions) error
	OnData func(m *Message) error
}

// Message is a message the server accepted.
type Message struct {
	From     string
	To       []string
	MailOpts smtp.MailOptions
	RcptOpts []smtp.RcptOptions
	Data     []byte
	TLS      bool   // the session was encrypted
	Helo     string // the client's EHLO/HELO name
	Remote   netip.AddrPort
}

// Server is a running test server.
type Server struct {
	cfg  Config
	srv  *smtp.Server
	ln   net.Listener
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	msgs     []Message
	sessions int
	conns    map[net.Conn]bool
	closed   bool
}

// New starts a server and closes it when the test ends. It fails the test
// when the server cannot start.
func New(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Start starts a server. Close it when done.
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.smtptest.test"
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ln: ln, done: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	srv.LMTP = cfg.LMTP
	srv.MaxMessageBytes = cfg.MaxSize
	srv.EnableSMTPUTF8 = cfg.SMTPUTF8
	srv.EnableDSN = cfg.DSN
	srv.EnableREQUIRETLS = cfg.RequireTLS
	srv.AllowInsecureAuth = true
	srv.ErrorLog = discardLogger{}
	switch {
	case cfg.BrokenTLS:
		srv.TLSConfig = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, errors.New("smtptest: broken TLS")
		}}
	case cfg.TLS != nil:
		srv.TLSConfig = cfg.TLS
	}
	s.srv = srv
	var l net.Listener = &listener{Listener: ln, s: s}
	if cfg.ImplicitTLS && cfg.TLS != nil {
		l = tls.NewListener(l, cfg.TLS)
		srv.TLSConfig = nil
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = srv.Serve(l)
	}()
	return s, nil
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...interface{}) {}
func (discardLogger) Println(...interface{})        {}

// Addr returns the listening address, "127.0.0.1:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AddrPort returns the listening address.
func (s *Server) AddrPort() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(s.Addr())
	return ap
}

// Port returns the listening port.
func (s *Server) Port() uint16 { return s.AddrPort().Port() }

// Messages returns a copy of the messages accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Sessions returns the number of connections accepted so far.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Close stops the server, ends stalls and closes all connections.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	err := s.srv.Close()
	s.wg.Wait()
	return err
}

// Greylist returns an OnRcpt hook that answers each recipient's first
// RCPT with "451 4.7.1 greylisted" and later ones with 250 (as greylisting
// servers do for a triplet seen before).
func Greylist() func(to string, opts *smtp.RcptOptions) error {
	var mu sync.Mutex
	seen := make(map[string]bool)
	return func(to string, _ *smtp.RcptOptions) error {
		mu.Lock()
		defer mu.Unlock()
		if seen[to] {
			return nil
		}
		seen[to] = true
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted, try again later"}
	}
}

// listener wraps accepted connections to inject faults.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok && l.s.cfg.Fault == StopReading {
		_ = tc.SetReadBuffer(4096)
	}
	fc := &faultConn{Conn: c, s: l.s}
	l.s.mu.Lock()
	l.s.sessions++
	if l.s.conns == nil {
		l.s.conns = make(map[net.Conn]bool)
	}
	l.s.conns[fc] = true
	l.s.mu.Unlock()
	return fc, nil
}

func (c *faultConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// DropConnections closes every open connection without a word, as a
// server restart or a NAT timeout would; the server keeps listening.
func (s *Server) DropConnections() {
	s.mu.Lock()
	var cs []net.Conn
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

// faultConn rewrites or withholds what the server writes.
type faultConn struct {
	net.Conn
	s      *Server
	writes int
	held   []byte
}

func (c *faultConn) Write(p []byte) (int, error) {
	c.writes++
	cfg := &c.s.cfg
	if c.writes == 1 {
		switch {
		case cfg.Fault == StallGreeting:
			<-c.s.done
			return 0, net.ErrClosed
		case cfg.Greeting != "":
			if _, err := c.Conn.Write([]byte(cfg.Greeting + "\r\n")); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	if c.writes == 2 && cfg.Fault == EndlessEHLO && bytes.HasPrefix(p, []byte("250")) {
		chunk := bytes.Repeat([]byte("250-ENDLESS-EXTENSION-LINE\r\n"), 64)
		for {
			if _, err := c.Conn.Write(chunk); err != nil {
				return 0, err
			}
			select {
			case <-c.s.done:
				return 0, net.ErrClosed
			default:
			}
		}
	}
	if len(cfg.Hide) > 0 {
		return c.writeHiding(p)
	}
	return c.Conn.Write(p)
}

// writeHiding drops the lines of hidden extension keywords from 250
// replies. go-smtp writes a reply line by line, so a continuation line is
// held back until the next line shows whether it has become the last.
func (c *faultConn) writeHiding(p []byte) (int, error) {
	is250 := bytes.HasPrefix(p, []byte("250-")) || bytes.HasPrefix(p, []byte("250 "))
	if !is250 {
		if err := c.flushHeld(false); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	kw := strings.Fields(string(p[4:]) + " x")[0]
	hidden := false
	for _, h := range c.s.cfg.Hide {
		if strings.EqualFold(h, kw) {
			hidden = true
		}
	}
	last := p[3] == ' '
	switch {
	case hidden && last:
		if err := c.flushHeld(true); err != nil {
			return 0, err
		}
	case hidden:
	case last:
		if err := c.flushHeld(false); err != nil {
			return 0, err
		}
		if _, err := c.Conn.Write(p); err != nil {
			return 0, err
		}
	default:
		if err := c.flushHeld(false); err != nil {
			return 0, err
		}
		c.held = append([]byte(nil), p...)
	}
	return len(p), nil
}

func (c *faultConn) flushHeld(asLast bool) error {
	if c.held == nil {
		return nil
	}
	h := c.held
	c.held = nil
	if asLast {
		h[3] = ' '
	}
	_, err := c.Conn.Write(h)
	return err
}

// session is one SMTP session.
type session struct {
	s    *Server
	c    *smtp.Conn
	msg  Message
	auth bool
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	ss := &session{s: s, c: c}
	if s.cfg.Auth != nil {
		return &authSession{ss}, nil
	}
	return ss, nil
}

func (ss *session) closeNow() error {
	_, _ = ss.c.Conn().Write([]byte("421 4.4.2 closing connection\r\n"))
	_ = ss.c.Conn().Close()
	return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "closing connection"}
}

func (ss *session) hook(err error) error {
	if errors.Is(err, ErrClose) {
		return ss.closeNow()
	}
	return err
}

func (ss *session) Reset()        { ss.msg = Message{} }
func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.s.cfg.Auth != nil && !ss.auth {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	if h := ss.s.cfg.OnMail; h != nil {
		if err := ss.hook(h(from, opts)); err != nil {
			return err
		}
	}
	ss.msg = Message{From: from, Helo: ss.c.Hostname()}
	if opts != nil {
		ss.msg.MailOpts = *opts
	}
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if h := ss.s.cfg.OnRcpt; h != nil {
		if err := ss.hook(h(to, opts)); err != nil {
			return err
		}
	}
	ss.msg.To = append(ss.msg.To, to)
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	ss.msg.RcptOpts = append(ss.msg.RcptOpts, o)
	return nil
}

func (ss *session) readBody(r io.Reader) ([]byte, error) {
	if ss.s.cfg.Fault == StopReading {
		buf := make([]byte, 4096)
		_, _ = io.ReadFull(r, buf)
		<-ss.s.done
		return nil, ss.closeNow()
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	_, isTLS := ss.c.TLSConnectionState()
	ss.msg.Data = data
	ss.msg.TLS = isTLS
	if ap, err := netip.ParseAddrPort(ss.c.Conn().RemoteAddr().String()); err == nil {
		ss.msg.Remote = ap
	}
	switch ss.s.cfg.Fault {
	case StallAfterData:
		<-ss.s.done
		return nil, ss.closeNow()
	case ResetAfterData:
		ss.s.record(ss.msg)
		if tc, ok := ss.c.Conn().(interface{ SetLinger(int) error }); ok {
			_ = tc.SetLinger(0)
		} else if fc, ok := ss.c.Conn().(*faultConn); ok {
			if tc, ok := fc.Conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		}
		_ = ss.c.Conn().Close()
		return nil, errors.New("smtptest: connection reset")
	}
	return data, nil
}

func (ss *session) Data(r io.Reader) error {
	if _, err := ss.readBody(r); err != nil {
		return err
	}
	m := ss.msg
	if h := ss.s.cfg.OnData; h != nil {
		if err := ss.hook(h(&m)); err != nil {
			return err
		}
	}
	ss.s.record(m)
	return nil
}

// LMTPData gives each recipient its own reply (RFC 2033 §4.2).
func (ss *session) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	if _, err := ss.readBody(r); err != nil {
		return err
	}
	for i, to := range ss.msg.To {
		m := ss.msg
		m.To = []string{to}
		m.RcptOpts = []smtp.RcptOptions{ss.msg.RcptOpts[i]}
		var err error
		if h := ss.s.cfg.OnData; h != nil {
			err = h(&m)
		}
		if err == nil {
			ss.s.record(m)
		}
		status.SetStatus(to, err)
	}
	return nil
}

func (s *Server) record(m Message) {
	m.To = append([]string(nil), m.To...)
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
}

// authSession adds AUTH PLAIN.
type authSession struct{ *session }

func (a *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (a *authSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, fmt.Errorf("smtptest: unsupported mechanism %s", mech)
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if p, ok := a.s.cfg.Auth[user]; ok && p == pass && (identity == "" || identity == user) {
			a.auth = true
			return nil
		}
		return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
	}), nil
}

// LMTPData forwards to the session.
func (a *authSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	return a.session.LMTPData(r, status)
}
