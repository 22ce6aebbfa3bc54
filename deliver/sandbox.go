package deliver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// SandboxConfig configures a Sandbox.
type SandboxConfig struct {
	// Dir, when set, receives one .eml file per message: the envelope as
	// X-Sandbox-From and X-Sandbox-To header fields, then the message as
	// given. Files are written to a temporary name, fsynced and renamed,
	// and the directory is fsynced, so a file that exists is complete.
	// Created (mode 0750) when missing.
	Dir string

	// Keep is the number of recent messages kept in memory for
	// Messages. Default 1000; negative keeps none.
	Keep int

	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// SandboxMessage is a message a Sandbox accepted.
type SandboxMessage struct {
	Envelope Envelope
	Data     []byte
	// File is the path of the .eml file, when SandboxConfig.Dir is set.
	File     string
	Received time.Time
}

// Sandbox is a transport that accepts every recipient and keeps the
// message instead of sending it. It never opens a network connection:
// use it in development and tests. Safe for concurrent use.
type Sandbox struct {
	cfg SandboxConfig

	mu   sync.Mutex
	msgs []SandboxMessage
}

// NewSandbox returns a Sandbox, creating cfg.Dir if needed.
func NewSandbox(cfg SandboxConfig) (*Sandbox, error) {
	if cfg.Keep == 0 {
		cfg.Keep = 1000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Dir != "" {
		if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
			return nil, fmt.Errorf("deliver: sandbox: %w", err)
		}
	}
	return &Sandbox{cfg: cfg}, nil
}

// Deliver keeps the message and accepts every recipient with a 250 reply,
// or fails them all with a transient 451 4.3.0 when the file cannot be
// written (or ctx has ended).
func (s *Sandbox) Deliver(ctx context.Context, env *Envelope, body Body) []Result {
	started := s.cfg.Now()
	route := Route{Host: "sandbox"}
	if err := ctx.Err(); err != nil {
		reply := Reply(451, 4, 4, 2, "delivery attempt cancelled")
		return withRoute(Fail(env, reply, &LocalError{Reply: reply, Err: err}, started, s.cfg.Now()), route)
	}
	data := make([]byte, body.Size())
	if _, err := body.ReadAt(data, 0); err != nil && err != io.EOF {
		reply := Reply(451, 4, 3, 0, "sandbox: cannot read message")
		return withRoute(Fail(env, reply, &LocalError{Reply: reply, Err: err}, started, s.cfg.Now()), route)
	}
	m := SandboxMessage{Envelope: *env, Data: data, Received: started}
	m.Envelope.Recipients = append([]Recipient(nil), env.Recipients...)
	text := "sandbox: kept in memory"
	if s.cfg.Dir != "" {
		file, err := s.write(env, data, started)
		if err != nil {
			reply := Reply(451, 4, 3, 0, "sandbox: cannot store message")
			return withRoute(Fail(env, reply, &LocalError{Reply: reply, Err: err}, started, s.cfg.Now()), route)
		}
		m.File = file
		text = "sandbox: stored as " + filepath.Base(file)
	}
	if s.cfg.Keep > 0 {
		s.mu.Lock()
		if len(s.msgs) >= s.cfg.Keep {
			s.msgs = append(s.msgs[:0], s.msgs[len(s.msgs)-s.cfg.Keep+1:]...)
		}
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	}
	reply := &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: text}
	now := s.cfg.Now()
	res := make([]Result, len(env.Recipients))
	for i, r := range env.Recipients {
		res[i] = Result{Recipient: r.Address, Reply: reply, Route: route, Attempted: started, Duration: now.Sub(started)}
	}
	return res
}

func withRoute(res []Result, r Route) []Result {
	for i := range res {
		res[i].Route = r
	}
	return res
}

func (s *Sandbox) write(env *Envelope, data []byte, now time.Time) (string, error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := now.UTC().Format("20060102T150405.000000000") + "-" + hex.EncodeToString(rnd[:]) + ".eml"
	tmp, err := os.CreateTemp(s.cfg.Dir, ".tmp-*")
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var hdr strings.Builder
	fmt.Fprintf(&hdr, "X-Sandbox-From: <%s>\r\n", CleanText(env.From, 998))
	for _, r := range env.Recipients {
		fmt.Fprintf(&hdr, "X-Sandbox-To: <%s>\r\n", CleanText(r.Address, 998))
	}
	if _, err := io.WriteString(tmp, hdr.String()); err != nil {
		return "", err
	}
	if _, err := tmp.Write(data); err != nil {
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	final := filepath.Join(s.cfg.Dir, name)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	ok = true
	if d, err := os.Open(s.cfg.Dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return "", err
		}
	}
	return final, nil
}

// Messages returns the messages kept in memory, oldest first.
func (s *Sandbox) Messages() []SandboxMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SandboxMessage(nil), s.msgs...)
}

// Reset forgets the messages kept in memory (files stay).
func (s *Sandbox) Reset() {
	s.mu.Lock()
	s.msgs = nil
	s.mu.Unlock()
}
