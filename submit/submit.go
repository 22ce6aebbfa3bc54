package submit

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/ratelimit"
)

// Queue is what the session needs from the queue: *queue.Queue satisfies
// it. Enqueue must return only once the message is durable, and must read
// body to its end or fail.
type Queue interface {
	Enqueue(ctx context.Context, m *queue.NewMessage, body io.Reader) (string, error)
}

var _ Queue = (*queue.Queue)(nil)

// User is an authenticated identity, as the [Authenticator] returns it.
type User struct {
	// Name identifies the user in logs, limits (ratelimit.Key.Tenant when
	// Tenant is empty) and the AUTH= parameter; required.
	Name string
	// Tenant, when set, is the queue tenant of the user's messages and the
	// rate-limit tenant.
	Tenant string
	// Senders lists the addresses the user may use as MAIL FROM and in
	// the From field: "user@example.com" (exact, case-insensitive) or
	// "@example.com" / "example.com" (any address of that domain). Nil
	// or empty: any address (see Config.AuthorizeSender to change that).
	Senders []string
}

// MaySend reports whether u.Senders allows addr (see [User.Senders]).
func (u *User) MaySend(addr string) bool {
	if len(u.Senders) == 0 {
		return true
	}
	at := strings.LastIndexByte(addr, '@')
	dom := ""
	if at >= 0 {
		dom = addr[at+1:]
	}
	for _, s := range u.Senders {
		switch {
		case strings.HasPrefix(s, "@"):
			if dom != "" && strings.EqualFold(s[1:], dom) {
				return true
			}
		case !strings.Contains(s, "@"):
			if dom != "" && strings.EqualFold(s, dom) {
				return true
			}
		default:
			if strings.EqualFold(s, addr) {
				return true
			}
		}
	}
	return false
}

// ErrBadCredentials is what an Authenticator returns for a wrong user name
// or password; the client gets "535 5.7.8 Authentication failed". Any other
// error is reported as a temporary failure (454 4.7.0).
var ErrBadCredentials = errors.New("submit: bad credentials")

// Authenticator checks a user name and password (from AUTH PLAIN or
// LOGIN) and returns the user. It must be safe for concurrent use.
type Authenticator interface {
	Authenticate(ctx context.Context, username, password string) (*User, error)
}

// AuthenticatorFunc adapts a function to [Authenticator].
type AuthenticatorFunc func(ctx context.Context, username, password string) (*User, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, username, password string) (*User, error) {
	return f(ctx, username, password)
}

var _ Authenticator = AuthenticatorFunc(nil)

// Limiter is the rate limiter consulted at every MAIL FROM;
// *ratelimit.Limiter satisfies it. The key has Source set to the client IP
// and Tenant to the user's tenant (or name) when authenticated, so a
// policy can limit per IP, per user or both.
type Limiter interface {
	Allow(ctx context.Context, key ratelimit.Key, n int) (bool, error)
}

var _ Limiter = (*ratelimit.Limiter)(nil)

// Field says where a sender address comes from, for
// Config.AuthorizeSender.
type Field int

const (
	// MailFrom is the envelope sender (MAIL FROM).
	MailFrom Field = iota
	// HeaderFrom is an address in the From header field.
	HeaderFrom
)

// LineEndings selects what happens to bare LF and bare CR in DATA.
type LineEndings int

const (
	// RejectBare (the zero value) refuses the message with 550 5.6.0.
	RejectBare LineEndings = iota
	// NormalizeBare turns every bare LF and bare CR into CRLF.
	NormalizeBare
)

// Config configures a [Backend]. Only Queue is required.
type Config struct {
	// Hostname is our name in the greeting, Received fields and
	// Message-IDs. Zero: os.Hostname(), else "localhost".
	Hostname string

	// Queue stores accepted messages. Required.
	Queue Queue

	// Authenticator checks AUTH credentials. Nil: AUTH is not offered,
	// and only trusted networks may relay.
	Authenticator Authenticator

	// TrustedNetworks may relay without AUTH (on listeners without
	// RequireAuth). Nil: nobody.
	TrustedNetworks []netip.Prefix

	// AuthorizeSender decides whether an authenticated user may use
	// address (the null sender is "" for MailFrom) in field. A non-nil
	// error refuses: an *smtp.SMTPError is sent as is, anything else as
	// "553 5.7.1 Sender address not owned by user". Nil: [User.MaySend],
	// with the null sender always allowed. Trusted clients that did not
	// authenticate are not checked.
	AuthorizeSender func(ctx context.Context, u *User, field Field, address string) error

	// MaxMessageBytes is the SIZE limit, advertised and enforced on the
	// message as received. Zero: 50 MiB.
	MaxMessageBytes int64

	// MaxRecipients caps RCPT TO per message. Zero: 1000 (Postfix's
	// smtpd_recipient_limit).
	MaxRecipients int

	// MaxLineLength caps a DATA line in octets including CRLF. Zero: 1000
	// (RFC 5321 §4.5.3.1.6); negative: no limit.
	MaxLineLength int

	// MaxHeaderBytes and MaxHeaderFields cap the header section. Zero:
	// 256 KiB and 1000.
	MaxHeaderBytes  int
	MaxHeaderFields int

	// BareLineEndings: reject (default) or normalise bare LF and CR.
	BareLineEndings LineEndings

	// DKIM, when set, signs every message whose From domain (or a parent)
	// has keys in the ring. Messages of other domains go unsigned.
	DKIM *dkim.KeyRing

	// Limiter, when set, is asked once per MAIL FROM; a refusal is "450
	// 4.7.1 rate limit exceeded".
	Limiter Limiter

	// Suppressions, when set, is consulted at each RCPT; a listed
	// recipient gets "550 5.7.1 recipient is on the suppression list".
	// bounce.SuppressionList satisfies it.
	Suppressions queue.Suppressions

	// SpoolMemory is how much of a message is kept in memory before DATA
	// spills to a temporary file. Zero: 128 KiB; negative: always a file.
	SpoolMemory int64

	// TempDir holds the spool files. Zero: os.TempDir().
	TempDir string

	// Timeout bounds reading a command or data chunk and writing a reply.
	// Zero: 5 minutes (RFC 5321 §4.5.3.2.7 server timeout).
	Timeout time.Duration

	// Logger gets one line per accepted or refused message. Nil: discard.
	Logger *slog.Logger

	// Now is the clock for Date and Received. Nil: time.Now.
	Now func() time.Time
}

// Backend is the go-smtp backend. Make it with [NewBackend]; it is safe for
// concurrent use, and one Backend may serve several smtp.Servers (use
// [Backend.ForListener] to give each its listener's policy), or use
// [Server] to run listeners.
type Backend struct {
	cfg Config
	log *slog.Logger
}

// ErrConfig reports an unusable Config.
var ErrConfig = errors.New("submit: invalid config")

// NewBackend checks cfg and fills in the defaults.
func NewBackend(cfg Config) (*Backend, error) {
	if cfg.Queue == nil {
		return nil, fmt.Errorf("%w: Queue is required", ErrConfig)
	}
	if cfg.Hostname == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			cfg.Hostname = h
		} else {
			cfg.Hostname = "localhost"
		}
	}
	if !cleanToken(cfg.Hostname) {
		return nil, fmt.Errorf("%w: bad Hostname %q", ErrConfig, cfg.Hostname)
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = 50 << 20
	}
	if cfg.MaxRecipients == 0 {
		cfg.MaxRecipients = 1000
	}
	if cfg.MaxLineLength == 0 {
		cfg.MaxLineLength = 1000
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = 256 << 10
	}
	if cfg.MaxHeaderFields == 0 {
		cfg.MaxHeaderFields = 1000
	}
	if cfg.SpoolMemory == 0 {
		cfg.SpoolMemory = 128 << 10
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Backend{cfg: cfg, log: log}, nil
}

// Config returns the backend's configuration with defaults filled in.
func (b *Backend) Config() Config { return b.cfg }

// ListenerPolicy is what a listener decides about its clients.
type ListenerPolicy struct {
	// RequireAuth ignores TrustedNetworks: every client must AUTH to
	// relay (a submission port).
	RequireAuth bool
	// AllowInsecureAuth offers AUTH without TLS. Use it only on loopback
	// or for tests: the password travels in clear.
	AllowInsecureAuth bool
}

// NewSession implements smtp.Backend with the default listener policy
// (trusted networks relay, AUTH only on TLS).
func (b *Backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return b.newSession(c, ListenerPolicy{})
}

// ForListener returns an smtp.Backend applying p. Set the smtp.Server's
// AllowInsecureAuth to p.AllowInsecureAuth as well.
func (b *Backend) ForListener(p ListenerPolicy) smtp.Backend {
	return smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return b.newSession(c, p) })
}

func (b *Backend) newSession(c *smtp.Conn, p ListenerPolicy) (smtp.Session, error) {
	if !cleanToken(c.Hostname()) {
		return nil, badArgs("EHLO")
	}
	s := &Session{b: b, conn: c, policy: p}
	if ap, err := netip.ParseAddrPort(c.Conn().RemoteAddr().String()); err == nil {
		s.ip = ap.Addr().Unmap()
	} else if tcp, ok := c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(tcp.IP); ok {
			s.ip = a.Unmap()
		}
	}
	if !p.RequireAuth {
		for _, n := range b.cfg.TrustedNetworks {
			if s.ip.IsValid() && n.Contains(s.ip) {
				s.trusted = true
				break
			}
		}
	}
	return s, nil
}

// Session is one SMTP session. go-smtp calls its methods from the
// connection's goroutine only.
type Session struct {
	b       *Backend
	conn    *smtp.Conn
	policy  ListenerPolicy
	ip      netip.Addr
	trusted bool
	user    *User

	from     string
	hasFrom  bool
	mailOpts smtp.MailOptions
	rcpts    []deliver.Recipient
}

var (
	_ smtp.Session     = (*Session)(nil)
	_ smtp.AuthSession = (*Session)(nil)
)

func reply(code int, ec smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

func badArgs(what string) *smtp.SMTPError {
	return reply(501, smtp.EnhancedCode{5, 5, 2}, what+" argument contains forbidden characters")
}

// Replies the session sends; exported so that callers and tests can
// compare (with errors.Is against the same pointer, or by Code).
var (
	// ErrAuthRequired: an untrusted client on a listener that offers AUTH.
	ErrAuthRequired = reply(530, smtp.EnhancedCode{5, 7, 0}, "Authentication required")
	// ErrRelayDenied: an untrusted client where no AUTH is possible.
	ErrRelayDenied = reply(554, smtp.EnhancedCode{5, 7, 1}, "Relay access denied")
	// ErrSenderNotOwned: an authenticated user used an address not theirs.
	ErrSenderNotOwned = reply(553, smtp.EnhancedCode{5, 7, 1}, "Sender address not owned by user")
	// ErrRateLimited: the Limiter refused.
	ErrRateLimited = reply(450, smtp.EnhancedCode{4, 7, 1}, "Rate limit exceeded, try again later")
	// ErrSuppressedRecipient: the recipient is on the suppression list.
	ErrSuppressedRecipient = reply(550, smtp.EnhancedCode{5, 7, 1}, "Recipient is on the suppression list")
	// ErrTempFailure: a store, limiter or list failed.
	ErrTempFailure = reply(451, smtp.EnhancedCode{4, 3, 0}, "Temporary local problem, try again later")
)

func (s *Session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.b.cfg.Timeout)
}

// authPossible reports whether this connection can offer AUTH now.
func (s *Session) authPossible() bool {
	if s.b.cfg.Authenticator == nil {
		return false
	}
	_, tls := s.conn.TLSConnectionState()
	return tls || s.policy.AllowInsecureAuth
}

// AuthMechanisms implements smtp.AuthSession: PLAIN and LOGIN when an
// Authenticator is configured and the connection is encrypted (or the
// listener allows AUTH in clear).
func (s *Session) AuthMechanisms() []string {
	if !s.authPossible() || s.user != nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (s *Session) Auth(mech string) (sasl.Server, error) {
	if !s.authPossible() {
		return nil, reply(538, smtp.EnhancedCode{5, 7, 11}, "Encryption required for requested authentication mechanism")
	}
	check := func(identity, username, password string) error {
		if identity != "" && identity != username {
			return reply(535, smtp.EnhancedCode{5, 7, 8}, "Authorization identity not supported")
		}
		ctx, cancel := s.ctx()
		defer cancel()
		u, err := s.b.cfg.Authenticator.Authenticate(ctx, username, password)
		switch {
		case errors.Is(err, ErrBadCredentials) || (err == nil && u == nil):
			s.b.log.Info("submit: auth failed", "ip", s.ip, "user", sanitize(username))
			return smtp.ErrAuthFailed
		case err != nil:
			s.b.log.Warn("submit: authenticator error", "ip", s.ip, "err", err)
			return reply(454, smtp.EnhancedCode{4, 7, 0}, "Temporary authentication failure")
		}
		s.user = u
		return nil
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(check), nil
	case sasl.Login:
		return newLoginServer(func(u, p string) error { return check("", u, p) }), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// Mail implements smtp.Session: it checks the EHLO name and the sender,
// who may relay, the user's right to the address and the rate limit.
func (s *Session) Mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	if !cleanToken(s.conn.Hostname()) {
		return badArgs("EHLO")
	}
	if hasCtl(from) || !utf8.ValidString(from) {
		return badArgs("MAIL FROM")
	}
	if opts != nil && (hasCtl(opts.EnvelopeID) || (opts.Auth != nil && hasCtl(*opts.Auth))) {
		return badArgs("MAIL FROM")
	}
	if s.user == nil && !s.trusted {
		if s.b.cfg.Authenticator != nil {
			return ErrAuthRequired
		}
		return ErrRelayDenied
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if s.user != nil {
		if err := s.authorize(ctx, MailFrom, from); err != nil {
			return err
		}
	}
	if l := s.b.cfg.Limiter; l != nil {
		key := ratelimit.Key{Source: s.ip.String()}
		if s.user != nil {
			key.Tenant = s.user.tenant()
		}
		ok, err := l.Allow(ctx, key, 1)
		if err != nil {
			s.b.log.Warn("submit: limiter", "err", err)
			return ErrTempFailure
		}
		if !ok {
			s.b.log.Info("submit: rate limited", "ip", s.ip, "user", s.userName())
			return ErrRateLimited
		}
	}
	s.from, s.hasFrom = from, true
	if opts != nil {
		s.mailOpts = *opts
	}
	s.mailOpts.Size = 0
	// RFC 4954 §5: a client's AUTH= parameter is not trusted; it is not
	// passed on.
	s.mailOpts.Auth = nil
	if !s.mailOpts.UTF8 && !isASCII(from) {
		s.hasFrom = false
		return reply(553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address requires SMTPUTF8 (RFC 6531 3.5)")
	}
	return nil
}

func (u *User) tenant() string {
	if u.Tenant != "" {
		return u.Tenant
	}
	return u.Name
}

func (s *Session) userName() string {
	if s.user == nil {
		return ""
	}
	return s.user.Name
}

func (s *Session) authorize(ctx context.Context, f Field, addr string) error {
	var err error
	if a := s.b.cfg.AuthorizeSender; a != nil {
		err = a(ctx, s.user, f, addr)
	} else if !(f == MailFrom && addr == "") && !s.user.MaySend(addr) {
		err = ErrSenderNotOwned
	}
	if err == nil {
		return nil
	}
	s.b.log.Info("submit: sender refused", "user", s.user.Name, "field", f, "address", sanitize(addr))
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	return ErrSenderNotOwned
}

// Rcpt implements smtp.Session: relay permission, address hygiene and the
// suppression list.
func (s *Session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !s.hasFrom {
		return reply(503, smtp.EnhancedCode{5, 5, 1}, "MAIL first")
	}
	if hasCtl(to) || !utf8.ValidString(to) || (opts != nil && hasCtl(opts.OriginalRecipient)) {
		return badArgs("RCPT TO")
	}
	if s.user == nil && !s.trusted {
		return ErrRelayDenied
	}
	if len(s.rcpts) >= s.b.cfg.MaxRecipients {
		return reply(452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients")
	}
	if !s.mailOpts.UTF8 && !isASCII(to) {
		return reply(553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address requires SMTPUTF8 (RFC 6531 3.5)")
	}
	if at := strings.LastIndexByte(to, '@'); at <= 0 || at == len(to)-1 {
		return reply(553, smtp.EnhancedCode{5, 1, 3}, "Recipient address must be a full address (local@domain)")
	}
	if sup := s.b.cfg.Suppressions; sup != nil {
		ctx, cancel := s.ctx()
		defer cancel()
		_, listed, err := sup.Lookup(ctx, to)
		if err != nil {
			s.b.log.Warn("submit: suppression lookup", "err", err)
			return ErrTempFailure
		}
		if listed {
			s.b.log.Info("submit: suppressed recipient", "rcpt", to, "user", s.userName(), "ip", s.ip)
			return ErrSuppressedRecipient
		}
	}
	r := deliver.Recipient{Address: to}
	if opts != nil {
		r.Options = *opts
	}
	s.rcpts = append(s.rcpts, r)
	return nil
}

// Reset implements smtp.Session.
func (s *Session) Reset() {
	s.from, s.hasFrom, s.mailOpts, s.rcpts = "", false, smtp.MailOptions{}, nil
}

// Logout implements smtp.Session.
func (s *Session) Logout() error { return nil }

// hasCtl reports whether s contains an ASCII control character (CR, LF,
// NUL and the rest of C0, and DEL).
func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// cleanToken reports whether s is safe as an EHLO name in a Received
// field: non-empty UTF-8 without controls, spaces, parentheses,
// backslashes, quotes or semicolons (RFC 5321 §4.4 Extended-Domain is a
// domain or address literal; we refuse what could break the field).
func cleanToken(s string) bool {
	if s == "" || len(s) > 255 || !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c == 0x7f, c == '(' || c == ')' || c == '\\' || c == '"' || c == ';' || c == '<' || c == '>':
			return false
		}
	}
	return true
}

// sanitize makes client-supplied text safe for logs.
func sanitize(s string) string {
	return deliver.CleanText(s, 256)
}

var idEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// randomID returns n random bytes as Crockford-style base32.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return idEncoding.EncodeToString(b)
}
