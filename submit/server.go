package submit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Mode is how a listener uses TLS.
type Mode int

const (
	// Plain offers no TLS (the zero value). With a TLSConfig it behaves as
	// StartTLS.
	Plain Mode = iota
	// StartTLS offers STARTTLS (RFC 3207); AUTH is offered after it.
	StartTLS
	// ImplicitTLS speaks TLS from the first byte (port 465, RFC 8314 §3.3).
	ImplicitTLS
)

// String returns "plain", "starttls" or "tls".
func (m Mode) String() string {
	switch m {
	case Plain:
		return "plain"
	case StartTLS:
		return "starttls"
	case ImplicitTLS:
		return "tls"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ListenerConfig describes one listening socket.
type ListenerConfig struct {
	// Addr is "host:port" for TCP. Required.
	Addr string
	// Mode is the TLS mode; StartTLS and ImplicitTLS need TLSConfig.
	Mode      Mode
	TLSConfig *tls.Config
	// ListenerPolicy: RequireAuth (a submission port where trusted
	// networks count for nothing) and AllowInsecureAuth.
	ListenerPolicy
}

// Server runs a Backend on any number of listeners. Its methods are safe
// for concurrent use.
type Server struct {
	be *Backend

	mu     sync.Mutex
	srvs   []*smtp.Server
	closed bool
	done   chan struct{} // closed by Shutdown
	wg     sync.WaitGroup
}

// ErrServerClosed is returned by Listen after Shutdown.
var ErrServerClosed = errors.New("submit: server closed")

// NewServer returns a Server for a new Backend made from cfg.
func NewServer(cfg Config) (*Server, error) {
	be, err := NewBackend(cfg)
	if err != nil {
		return nil, err
	}
	return &Server{be: be, done: make(chan struct{})}, nil
}

// Backend returns the server's backend.
func (s *Server) Backend() *Backend { return s.be }

// Listen opens lc.Addr and serves it in the background until Shutdown. It
// returns the bound address (useful with port 0).
func (s *Server) Listen(lc ListenerConfig) (net.Addr, error) {
	if lc.Mode != Plain && lc.TLSConfig == nil {
		return nil, fmt.Errorf("%w: listener %s: mode %v needs a TLSConfig", ErrConfig, lc.Addr, lc.Mode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrServerClosed
	}
	ln, err := net.Listen("tcp", lc.Addr)
	if err != nil {
		return nil, err
	}
	cfg := s.be.cfg
	srv := smtp.NewServer(s.be.ForListener(lc.ListenerPolicy))
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	srv.AllowInsecureAuth = lc.AllowInsecureAuth
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ReadTimeout = cfg.Timeout
	srv.WriteTimeout = cfg.Timeout
	srv.ErrorLog = slogLogger{s.be.log}
	var l net.Listener = ln
	switch lc.Mode {
	case ImplicitTLS:
		l = tls.NewListener(ln, lc.TLSConfig)
	default:
		srv.TLSConfig = lc.TLSConfig
	}
	s.srvs = append(s.srvs, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.be.log.Error("submit: listener stopped", "addr", ln.Addr(), "err", err)
		}
	}()
	s.be.log.Info("submit: listening", "addr", ln.Addr(), "mode", lc.Mode, "require_auth", lc.RequireAuth)
	return ln.Addr(), nil
}

// ListenAndServe is Listen, then waits until ctx ends (and shuts the
// whole server down with a fresh 30 s budget) or Shutdown is called (and
// returns ErrServerClosed).
func (s *Server) ListenAndServe(ctx context.Context, lc ListenerConfig) error {
	if _, err := s.Listen(lc); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.done:
		return ErrServerClosed
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil && !errors.Is(err, ErrServerClosed) {
		return err
	}
	return ctx.Err()
}

// Shutdown stops accepting connections and waits until the sessions in
// progress have ended or ctx is done, then closes the rest. A message
// whose 250 was sent is in the queue; one in the middle of DATA is not.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.closed = true
	close(s.done)
	srvs := s.srvs
	s.mu.Unlock()
	var errs []error
	for _, srv := range srvs {
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			errs = append(errs, err)
			_ = srv.Close()
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// slogLogger adapts the backend's logger to go-smtp's ErrorLog.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Printf(format string, v ...any) { s.l.Warn("smtp: " + fmt.Sprintf(format, v...)) }
func (s slogLogger) Println(v ...any)               { s.l.Warn("smtp: " + fmt.Sprintln(v...)) }
