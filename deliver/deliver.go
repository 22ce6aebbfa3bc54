// Package deliver is the transport layer: it takes one message (an
// envelope and a body) and reports one result per recipient.
//
// # The contract
//
// A [Transport] receives an [Envelope] and a [Body] and returns exactly one
// [Result] per recipient, in the order of Envelope.Recipients. A result
// always carries an SMTP reply as go-smtp's *smtp.SMTPError: the remote
// server's own reply when the server answered, or a reply made locally with
// the code an MTA would use (4.4.x for network and DNS trouble, 5.1.2 for a
// domain that does not exist, and so on) when the failure is ours. The queue
// reads results as data and never needs to know which transport produced
// them; the bounce package classifies Result.Reply unchanged.
//
// A transport reports; it does not retry. Deciding whether and when to try
// again is the queue's job.
//
// Transports are safe for concurrent use unless their documentation says
// otherwise.
//
// # Transports
//
//   - [MX] delivers over SMTP to the MX hosts of each recipient domain
//     (RFC 5321 §5.1): preference order with equal preferences shuffled,
//     implicit MX, null MX (RFC 7505), loop detection, next address and
//     next host on connection, greeting and TLS failures.
//   - [Static] sends to fixed hosts per recipient domain or "*"
//     (smarthosts, relays, LMTP servers, RFC 2033), with implicit TLS or
//     STARTTLS and SMTP AUTH (PLAIN, LOGIN).
//   - [Sandbox] accepts everything and keeps the message in memory or as
//     an .eml file; it never opens a connection.
//
// # TLS policy
//
// The MX transport applies, for each MX host, the first of: DANE
// (RFC 7672) when the MX answer and the host's TLSA answer are DNSSEC
// validated; MTA-STS (RFC 8461, package mtasts) when configured and the
// domain publishes a policy; otherwise opportunistic STARTTLS (RFC 3207,
// RFC 7435), retried in plaintext after a failed handshake. DANE and
// MTA-STS "enforce" failures are transient (4.7.x) and never fall back to
// plaintext. A message with REQUIRETLS (RFC 8689) goes only over a
// verified session to a server that offers REQUIRETLS, else it fails with
// 5.7.30; Envelope.TLSOptional ("TLS-Required: No") lifts DANE, MTA-STS
// and REQUIRETLS for a message. Route.TLSPolicy, Route.TLS and
// Route.TLSFailure report what applied, for TLS-RPT (RFC 8460).
//
// # Sessions
//
// Sessions are pooled per destination address, source address, TLS policy
// and EHLO name, with an idle timeout and a message limit, and bounded per
// destination address ([PoolConfig]). All recipients of one domain (MX) or
// route (Static) go in one transaction; per-recipient RCPT replies are
// kept and the reply to the data applies to the accepted recipients.
// SIZE (RFC 1870) is checked before sending (5.3.4); a message that needs
// SMTPUTF8 (RFC 6531) or 8BITMIME (RFC 6152) fails with 5.6.7 or 5.6.3
// when the server lacks it (no downgrade is done); DSN parameters
// (RFC 3461) are passed on only to servers that offer DSN.
//
// # Hostile peers
//
// Every read and write has a deadline for its phase ([Timeouts], RFC 5321
// §4.5.3.2), also while the body is written; a reply may not exceed
// ClientConfig.MaxReplyBytes (64 KiB), so a server that sends endless
// "250-" lines or stops reading costs one failed attempt. Bare CR and bare
// LF in the body are sent as CRLF, so no "\r.\r\n" or "\n.\n" reaches the
// wire. Text read from peers is passed through [CleanText].
//
// A connection lost after the final dot and before the reply leaves the
// outcome unknown: the result is transient with Uncertain set.
package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/emersion/go-smtp"
)

// Envelope is the SMTP envelope of one delivery attempt.
type Envelope struct {
	// MessageID is the queue's ID of the message. Transports use it only in
	// logs and trace fields; it may be empty.
	MessageID string

	// From is the reverse-path (MAIL FROM) without angle brackets. The
	// empty string is the null sender <>, used for DSNs.
	From string

	// Mail holds the MAIL FROM parameters: BODY, SMTPUTF8, RET, ENVID,
	// REQUIRETLS, AUTH and SIZE. Size, when set, is the size the client
	// declared; transports use Body.Size() for the SIZE parameter.
	Mail smtp.MailOptions

	// Recipients are the forward-paths of this attempt. A transport returns
	// one Result for each, in this order.
	Recipients []Recipient

	// Tenant and SourcePool select where the message is sent from (a
	// source-IP pool and its EHLO name). Both may be empty.
	Tenant     string
	SourcePool string

	// TLSOptional is set when the message carries "TLS-Required: No"
	// (RFC 8689 §5): the sender asks that TLS policy failures (MTA-STS
	// enforce, DANE, REQUIRETLS) not stop delivery. Transports then deliver
	// as if no policy applied, opportunistic TLS still being tried.
	TLSOptional bool
}

// Recipient is one RCPT TO with its DSN parameters (ORCPT, NOTIFY).
type Recipient struct {
	// Address is the forward-path without angle brackets.
	Address string

	// Options holds the RCPT TO parameters. Only NOTIFY and ORCPT are
	// passed on, and only to servers that offer DSN (RFC 3461).
	Options smtp.RcptOptions
}

// Domain returns the domain of an address: the part after the last '@',
// or "" when there is none.
func Domain(address string) string {
	for i := len(address) - 1; i >= 0; i-- {
		if address[i] == '@' {
			return address[i+1:]
		}
	}
	return ""
}

// Body is the message content (header and body as they go on the wire after
// DATA, lines ending in CRLF or LF). A transport may read it more than once,
// for example when it falls back to a second MX host, and from several
// goroutines at once; io.ReaderAt allows both. *os.File, *bytes.Reader and
// *strings.Reader satisfy it.
type Body interface {
	io.ReaderAt
	// Size returns the length of the content in bytes.
	Size() int64
}

// NewBody returns a Body for content held as an io.ReaderAt of the given
// size, such as an open queue file.
func NewBody(r io.ReaderAt, size int64) Body { return sizedReaderAt{r, size} }

type sizedReaderAt struct {
	io.ReaderAt
	n int64
}

func (s sizedReaderAt) Size() int64 { return s.n }

// Reader returns a fresh reader over the whole of b, independent of any
// other reader of b.
func Reader(b Body) io.Reader { return io.NewSectionReader(b, 0, b.Size()) }

// Transport delivers a message. Deliver must return exactly one Result per
// recipient of env, in order, whatever happens: a transport that cannot even
// start (no route, DNS failure) returns the same locally made reply for every
// recipient. It must honour ctx: when ctx ends, Deliver returns promptly with
// transient results for the recipients whose outcome is not known.
type Transport interface {
	Deliver(ctx context.Context, env *Envelope, body Body) []Result
}

// TransportFunc adapts a function to the Transport interface.
type TransportFunc func(ctx context.Context, env *Envelope, body Body) []Result

// Deliver calls f(ctx, env, body).
func (f TransportFunc) Deliver(ctx context.Context, env *Envelope, body Body) []Result {
	return f(ctx, env, body)
}

var _ Transport = TransportFunc(nil)

// Result is the outcome of one recipient in one delivery attempt.
type Result struct {
	// Recipient is the address, as in the Envelope.
	Recipient string

	// Reply is the reply that decided this recipient: the remote server's
	// reply to RCPT TO when it refused the recipient, its reply to the end
	// of DATA when it accepted, or a reply made locally when the failure
	// happened on our side (see Local). It is never nil.
	Reply *smtp.SMTPError

	// Local is true when Reply was made by this side rather than received
	// from the remote server, for example after a DNS or connection
	// failure. Err then holds the underlying error.
	Local bool

	// Err is the underlying local error (DNS, dial, TLS, timeout, I/O), or
	// nil when Reply came from the remote server.
	Err error

	// Uncertain is true when the outcome is not known: the connection was
	// lost after the body was sent and before the final reply arrived. The
	// Reply is then transient; a retry may deliver a duplicate (RFC 5321
	// §6.1 accepts that over losing the message).
	Uncertain bool

	// Route describes where the attempt went.
	Route Route

	// Attempted is when the attempt for this recipient started, and
	// Duration how long it took until Reply.
	Attempted time.Time
	Duration  time.Duration
}

// Delivered reports whether the recipient was accepted (a 2xx reply).
func (r *Result) Delivered() bool { return r.Reply != nil && r.Reply.Code/100 == 2 }

// Permanent reports whether the reply was a permanent failure (5xx), as
// the remote server or this side stated it. Whether the queue gives up is
// decided by the queue, which may treat some 5xx replies (a full mailbox)
// as transient.
func (r *Result) Permanent() bool { return r.Reply != nil && r.Reply.Code/100 == 5 }

// Route says which host, address and TLS state one attempt used.
type Route struct {
	// Site identifies the destination for rate limits: recipients whose
	// domains share MX hosts share a site. Empty when not known.
	Site string
	// Host is the MX host name (or the smarthost) that was used, and Addr
	// its address and port.
	Host string
	Addr netip.AddrPort
	// Source is the local address the connection was made from.
	Source netip.Addr
	// TLS is nil when the session was not encrypted.
	TLS *TLSInfo

	// TLSPolicy names the TLS policy that applied to the destination
	// ("opportunistic", "none", "tls", "mta-sts", "mta-sts-testing",
	// "dane"), also when the session was not encrypted or failed.
	TLSPolicy string
	// TLSFailure, when not empty, says why the policy was not satisfied
	// (for TLS-RPT, RFC 8460), e.g. "starttls-not-supported",
	// "certificate-host-mismatch", "tlsa-invalid", "validation-failure".
	// With a "testing" MTA-STS policy the message may still have been
	// delivered.
	TLSFailure string
}

// TLSInfo describes an encrypted session.
type TLSInfo struct {
	Version     string // e.g. "TLS 1.3"
	CipherSuite string
	// Verified is true when the server's certificate was checked by the
	// policy named in Policy.
	Verified bool
	// Policy is the policy that applied: "none" (opportunistic, certificate
	// not checked), "mta-sts", "dane", "tls" (verified against the system
	// roots), as deliver's TLS policy documentation lists.
	Policy string
}

// Reply makes a locally generated reply, e.g. Reply(451, 4, 4, 1, "connection
// refused"). The text must be a single line; line breaks and NUL are
// replaced by spaces.
func Reply(code, class, subject, detail int, text string) *smtp.SMTPError {
	return &smtp.SMTPError{
		Code:         code,
		EnhancedCode: smtp.EnhancedCode{class, subject, detail},
		Message:      CleanText(text, maxReplyText),
	}
}

const maxReplyText = 512

// CleanText returns s with CR, LF, NUL and other C0 controls (except
// tab) replaced by spaces and cut to at most max bytes on a UTF-8 boundary.
// Everything read from a peer that ends up in a header, a DSN or an event
// goes through it.
func CleanText(s string, max int) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			clean = false
			break
		}
	}
	if !clean {
		b := []byte(s)
		for i, c := range b {
			if (c < 0x20 && c != '\t') || c == 0x7f {
				b[i] = ' '
			}
		}
		s = string(b)
	}
	if len(s) > max {
		cut := max
		for cut > 0 && cut < len(s) && s[cut]&0xc0 == 0x80 {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// LocalError wraps a local failure with the reply made for it, so that an
// error chain carries the SMTP reply as well as the cause.
type LocalError struct {
	Reply *smtp.SMTPError
	Err   error
}

func (e *LocalError) Error() string {
	return fmt.Sprintf("%d %d.%d.%d %s: %v", e.Reply.Code,
		e.Reply.EnhancedCode[0], e.Reply.EnhancedCode[1], e.Reply.EnhancedCode[2], e.Reply.Message, e.Err)
}

// Unwrap returns the cause and the reply, so that errors.As finds either.
func (e *LocalError) Unwrap() []error { return []error{e.Err, e.Reply} }

// Temporary reports whether the reply is transient.
func (e *LocalError) Temporary() bool { return e.Reply.Temporary() }

// Fail returns one Result per recipient of env, all carrying the same
// locally made reply and cause. Transports use it when an attempt fails
// before any recipient was tried.
func Fail(env *Envelope, reply *smtp.SMTPError, cause error, started time.Time, now time.Time) []Result {
	res := make([]Result, len(env.Recipients))
	for i, rcpt := range env.Recipients {
		res[i] = Result{
			Recipient: rcpt.Address,
			Reply:     reply,
			Local:     true,
			Err:       cause,
			Attempted: started,
			Duration:  now.Sub(started),
		}
	}
	return res
}

// ErrResultCount is reported (by the queue, through Check) when a transport
// breaks the contract by returning the wrong number of results.
var ErrResultCount = errors.New("deliver: transport returned a wrong number of results")

// Check verifies that results match env: one per recipient, in order, each
// with a reply. It returns an error wrapping ErrResultCount otherwise.
func Check(env *Envelope, results []Result) error {
	if len(results) != len(env.Recipients) {
		return fmt.Errorf("%w: %d results for %d recipients", ErrResultCount, len(results), len(env.Recipients))
	}
	for i := range results {
		if results[i].Recipient != env.Recipients[i].Address {
			return fmt.Errorf("%w: result %d is for %q, recipient is %q", ErrResultCount, i, results[i].Recipient, env.Recipients[i].Address)
		}
		if results[i].Reply == nil {
			return fmt.Errorf("%w: result %d has no reply", ErrResultCount, i)
		}
	}
	return nil
}
