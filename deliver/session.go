package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Timeouts bounds each phase of an SMTP session. A zero field takes the
// default, which for the SMTP phases is the value RFC 5321 §4.5.3.2
// recommends. Each timeout bounds one reply (or one write of a data
// block), not the whole session; the caller's ctx bounds the whole.
type Timeouts struct {
	Connect   time.Duration // TCP connect; default 30 s
	Greeting  time.Duration // 220 greeting; default 5 min (§4.5.3.2.1)
	Hello     time.Duration // EHLO/HELO, STARTTLS, AUTH replies; default 5 min
	TLS       time.Duration // TLS handshake; default 1 min
	Mail      time.Duration // MAIL FROM reply; default 5 min (§4.5.3.2.2)
	Rcpt      time.Duration // each RCPT TO reply; default 5 min (§4.5.3.2.3)
	DataInit  time.Duration // 354 reply to DATA; default 2 min (§4.5.3.2.4)
	DataBlock time.Duration // each write of the body; default 3 min (§4.5.3.2.5)
	DataFinal time.Duration // reply after the final dot; default 10 min (§4.5.3.2.6)
	Reset     time.Duration // RSET/NOOP/QUIT on a pooled connection; default 1 min
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Connect, 30*time.Second)
	def(&t.Greeting, 5*time.Minute)
	def(&t.Hello, 5*time.Minute)
	def(&t.TLS, time.Minute)
	def(&t.Mail, 5*time.Minute)
	def(&t.Rcpt, 5*time.Minute)
	def(&t.DataInit, 2*time.Minute)
	def(&t.DataBlock, 3*time.Minute)
	def(&t.DataFinal, 10*time.Minute)
	def(&t.Reset, time.Minute)
	return t
}

// tlsMode says whether and how a session encrypts.
type tlsMode int

const (
	tlsOpportunistic tlsMode = iota // STARTTLS when offered, plaintext otherwise or after a failed handshake
	tlsNone                         // never STARTTLS
	tlsRequired                     // STARTTLS must succeed and pass verify
	tlsImplicit                     // TLS from the first byte, must pass verify
)

// tlsPolicy is the TLS policy for one destination host.
type tlsPolicy struct {
	name string // TLSInfo.Policy
	mode tlsMode
	// verify checks the handshake; nil accepts any certificate. With
	// tlsOpportunistic it is not used.
	verify func(cs tls.ConnectionState) error
	// roots are used to report whether an opportunistic session's
	// certificate would have passed PKIX validation (TLSInfo.Verified).
	roots *x509.CertPool
	// reportFailures makes an opportunistic session record why the
	// certificate did not pass verify (MTA-STS "testing", RFC 8461 §5).
	reportFailures bool
	// minVersion of TLS; default TLS 1.2 (RFC 8996 retires 1.0 and 1.1,
	// RFC 7672 §8.1 asks for at least 1.2 with DANE).
	minVersion uint16
	// failure is reported in Route.TLSFailure when nothing more specific
	// is: "sts-policy-fetch-error" when an announced MTA-STS policy could
	// not be fetched and the mail went out as if there were none (RFC 8460
	// §4.3.2.2, RFC 8461 §5).
	failure string
}

// target is one host address to try.
type target struct {
	host   string // MX host name or smarthost; SNI and certificate name
	addr   netip.AddrPort
	site   string
	src    netip.Addr // zero: any
	ehlo   string
	policy tlsPolicy
	auth   func(mechs string) sasl.Client // given the AUTH mechanisms offered
	authID string                         // pool key part for auth identity
	lmtp   bool
	self   []string // our own names: a peer greeting with one is a loop
}

// ErrLoop is wrapped when a destination turns out to be this MTA itself.
var ErrLoop = errors.New("deliver: mail loops back to myself")

// ErrTLS is wrapped by TLS failures: STARTTLS not offered where required,
// refused, a failed handshake or a certificate that did not verify.
var ErrTLS = errors.New("deliver: TLS failure")

// ErrProtocol is wrapped when the peer breaks the protocol (unsolicited
// data, an unparsable reply).
var ErrProtocol = errors.New("deliver: protocol error")

// tlsError is a TLS failure; retryPlain is set when the policy allows the
// host to be tried again without STARTTLS.
type tlsError struct {
	err        error
	retryPlain bool
	kind       string // RFC 8460 §4.3 result type
}

func (e *tlsError) Error() string { return e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// sconn is one open SMTP session.
type sconn struct {
	c         *smtp.Client
	g         *guardConn
	raw       net.Conn
	key       poolKey
	route     Route
	ext       map[string]string
	msgs      int
	idleSince time.Time
	dirty     bool // a transaction was left open: RSET before reuse
	reused    bool
}

// dialer opens sessions.
type dialer struct {
	dial     func(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error)
	timeouts Timeouts
	maxReply int64
	now      func() time.Time
}

func (d *dialer) netDial(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	if d.dial != nil {
		return d.dial(ctx, src, dst)
	}
	nd := net.Dialer{Timeout: d.timeouts.Connect}
	if src.IsValid() {
		nd.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	return nd.DialContext(ctx, "tcp", dst.String())
}

// open dials t and runs the session up to and including EHLO (and STARTTLS
// and AUTH). The returned error is a *smtp.SMTPError when the peer refused
// (greeting, EHLO), a *tlsError for TLS trouble, or a network error.
func (d *dialer) open(ctx context.Context, t *target) (*sconn, error) {
	to := d.timeouts
	dctx, cancel := context.WithTimeout(ctx, to.Connect)
	raw, err := d.netDial(dctx, t.src, t.addr)
	cancel()
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	sc, err := d.handshake(ctx, raw, t)
	if !stop() {
		raw.Close()
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	return sc, nil
}

func (d *dialer) handshake(ctx context.Context, raw net.Conn, t *target) (*sconn, error) {
	to := d.timeouts
	g := newGuardConn(raw, d.maxReply)
	var conn net.Conn = g
	var state *tls.ConnectionState
	var info *TLSInfo

	if t.policy.mode == tlsImplicit {
		g.setPhase("TLS handshake", to.TLS)
		tc := tls.Client(g, d.tlsConfig(t))
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, &tlsError{err: fmt.Errorf("%w: handshake with %s: %w", ErrTLS, t.host, err), kind: tlsFailureType(err)}
		}
		cs := tc.ConnectionState()
		state, conn = &cs, tc
	}

	tp := textproto.NewConn(conn)
	g.setPhase("greeting", to.Greeting)
	code, msg, err := readReply(&tp.Reader)
	if err != nil {
		return nil, err
	}
	if code != 220 {
		return nil, replyFrom(code, msg)
	}
	if isSelf(firstWord(msg), t.self) {
		return nil, fmt.Errorf("%w: %s greeted us with our own name %q", ErrLoop, t.host, CleanText(firstWord(msg), 255))
	}
	ext, err := ehlo(tp, g, t, to)
	if err != nil {
		return nil, err
	}
	if state == nil && t.policy.mode != tlsNone {
		_, offered := ext["STARTTLS"]
		switch {
		case !offered && t.policy.mode == tlsRequired:
			return nil, &tlsError{err: fmt.Errorf("%w: %s does not offer STARTTLS", ErrTLS, t.host), kind: "starttls-not-supported"}
		case offered:
			g.setPhase("STARTTLS", to.Hello)
			if err := tp.PrintfLine("STARTTLS"); err != nil {
				return nil, err
			}
			code, msg, err := readReply(&tp.Reader)
			if err != nil {
				return nil, err
			}
			if code != 220 {
				if t.policy.mode == tlsRequired {
					return nil, &tlsError{err: fmt.Errorf("%w: %s refused STARTTLS: %w", ErrTLS, t.host, replyFrom(code, msg)), kind: "starttls-not-supported"}
				}
				// Opportunistic: carry on in plaintext on this session.
				break
			}
			// Anything the server sent after its 220 was sent before the
			// handshake and must not be read as coming over TLS (the
			// STARTTLS injection of CVE-2011-0411).
			if tp.R.Buffered() > 0 {
				return nil, fmt.Errorf("%w: %s sent data after 220 to STARTTLS", ErrProtocol, t.host)
			}
			g.setPhase("TLS handshake", to.TLS)
			tc := tls.Client(g, d.tlsConfig(t))
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, &tlsError{
					err:        fmt.Errorf("%w: handshake with %s: %w", ErrTLS, t.host, err),
					retryPlain: t.policy.mode == tlsOpportunistic,
					kind:       tlsFailureType(err),
				}
			}
			cs := tc.ConnectionState()
			state, conn = &cs, tc
			tp = textproto.NewConn(conn)
			// RFC 3207 §4.2: forget what was learnt before TLS; EHLO again.
			if ext, err = ehlo(tp, g, t, to); err != nil {
				return nil, err
			}
		}
	}
	if tp.R.Buffered() > 0 {
		return nil, fmt.Errorf("%w: %s sent unsolicited data", ErrProtocol, t.host)
	}
	var failure string
	if state != nil {
		info = &TLSInfo{
			Version:     tls.VersionName(state.Version),
			CipherSuite: tls.CipherSuiteName(state.CipherSuite),
			Policy:      t.policy.name,
		}
		if t.policy.mode == tlsRequired || t.policy.mode == tlsImplicit {
			// The handshake already enforced verify, if any.
			info.Verified = t.policy.verify != nil
		} else {
			// Opportunistic: nothing was enforced, but say whether the
			// certificate passes the policy's check (PKIX when it has
			// none), for REQUIRETLS and for TLS-RPT with testing policies.
			check := t.policy.verify
			if check == nil {
				check = func(cs tls.ConnectionState) error { return verifyPKIX(cs, t.host, t.policy.roots) }
			}
			if err := check(*state); err != nil {
				if t.policy.reportFailures {
					failure = tlsFailureType(err)
				}
			} else {
				info.Verified = true
			}
		}
	} else if t.policy.reportFailures && t.policy.mode != tlsNone {
		failure = "starttls-not-supported"
	}
	if failure == "" {
		failure = t.policy.failure
	}

	// Hand the session to go-smtp. It expects a greeting; give it the one
	// already read (as a bare 220) and let it EHLO, which also fills its
	// view of the extensions.
	var c *smtp.Client
	pc := &prefixConn{Conn: conn, prefix: []byte("220 ok\r\n")}
	if t.lmtp {
		c = smtp.NewClientLMTP(pc)
	} else {
		c = smtp.NewClient(pc)
	}
	c.CommandTimeout = 0 // guardConn owns deadlines
	c.SubmissionTimeout = 0
	g.setPhase("EHLO", to.Hello)
	if err := c.Hello(t.ehlo); err != nil {
		return nil, err
	}
	if t.auth != nil {
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return nil, fmt.Errorf("%w: %s does not offer AUTH", ErrAuth, t.host)
		}
		if err := c.Auth(t.auth(mechs)); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAuth, err)
		}
	}
	src, _ := netip.ParseAddrPort(raw.LocalAddr().String())
	return &sconn{
		c:   c,
		g:   g,
		raw: raw,
		ext: ext,
		route: Route{
			Site:       t.site,
			Host:       t.host,
			Addr:       t.addr,
			Source:     src.Addr().Unmap(),
			TLS:        info,
			TLSPolicy:  t.policy.name,
			TLSFailure: failure,
		},
	}, nil
}

// ErrAuth is wrapped when SMTP AUTH with a smarthost fails. Results carry
// a transient 4.7.0 reply: a wrong password is an operator's problem that
// must not bounce mail (as Postfix's smtp_sasl_auth_soft_bounce).
var ErrAuth = errors.New("deliver: SMTP AUTH failed")

func (d *dialer) tlsConfig(t *target) *tls.Config {
	minV := t.policy.minVersion
	if minV == 0 {
		minV = tls.VersionTLS12
	}
	cfg := &tls.Config{
		ServerName: t.host,
		MinVersion: minV,
		// Verification is the policy's: PKIX against the configured roots,
		// DANE or none (opportunistic TLS, RFC 7435).
		InsecureSkipVerify: true,
	}
	if t.policy.mode == tlsRequired || t.policy.mode == tlsImplicit {
		if v := t.policy.verify; v != nil {
			cfg.VerifyConnection = v
		}
	}
	if _, err := netip.ParseAddr(t.host); err == nil {
		cfg.ServerName = "" // no SNI for address literals (RFC 6066 §3)
	}
	return cfg
}

// verifyPKIX checks the peer's chain against roots (nil: system roots) and
// host name.
func verifyPKIX(cs tls.ConnectionState, host string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: host, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}

// tlsFailureType names a verification failure with an RFC 8460 §4.3
// result type.
func tlsFailureType(err error) string {
	var he x509.HostnameError
	var ie x509.CertificateInvalidError
	var ue x509.UnknownAuthorityError
	var de *daneError
	switch {
	case errors.As(err, &de):
		return "validation-failure"
	case errors.As(err, &he):
		return "certificate-host-mismatch"
	case errors.As(err, &ie) && ie.Reason == x509.Expired:
		return "certificate-expired"
	case errors.As(err, &ue):
		return "certificate-not-trusted"
	default:
		return "validation-failure"
	}
}

// ehlo sends EHLO (HELO when EHLO is not understood) and returns the
// extensions offered, keyed by upper-case keyword.
func ehlo(tp *textproto.Conn, g *guardConn, t *target, to Timeouts) (map[string]string, error) {
	g.setPhase("EHLO", to.Hello)
	verb := "EHLO"
	if t.lmtp {
		verb = "LHLO"
	}
	if err := tp.PrintfLine("%s %s", verb, t.ehlo); err != nil {
		return nil, err
	}
	code, msg, err := readReply(&tp.Reader)
	if err != nil {
		return nil, err
	}
	if (code == 500 || code == 502) && !t.lmtp {
		if err := tp.PrintfLine("HELO %s", t.ehlo); err != nil {
			return nil, err
		}
		code, msg, err = readReply(&tp.Reader)
		if err != nil {
			return nil, err
		}
		if code != 250 {
			return nil, replyFrom(code, msg)
		}
		return map[string]string{}, nil
	}
	if code != 250 {
		return nil, replyFrom(code, msg)
	}
	lines := strings.Split(msg, "\n")
	if isSelf(firstWord(lines[0]), t.self) {
		return nil, fmt.Errorf("%w: %s answered EHLO with our own name", ErrLoop, t.host)
	}
	ext := make(map[string]string, len(lines))
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		ext[strings.ToUpper(k)] = v
	}
	return ext, nil
}

// readReply reads one possibly multi-line reply. A malformed reply is an
// ErrProtocol error.
func readReply(r *textproto.Reader) (int, string, error) {
	code, msg, err := r.ReadResponse(0)
	if err != nil {
		var pe textproto.ProtocolError
		if errors.As(err, &pe) {
			return 0, "", fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		var te *textproto.Error
		if errors.As(err, &te) {
			return te.Code, te.Msg, nil
		}
		return 0, "", err
	}
	return code, msg, nil
}

// replyFrom makes an SMTP reply from a code and text as read from a peer,
// parsing an enhanced status code (RFC 3463) at its start. The text is
// cleaned with CleanText.
func replyFrom(code int, msg string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code}
	first, rest, _ := strings.Cut(msg, " ")
	if ec, ok := parseEnhanced(first); ok && ec[0] == code/100 {
		e.EnhancedCode = ec
		msg = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	} else {
		e.EnhancedCode = smtp.NoEnhancedCode
	}
	e.Message = CleanText(msg, maxReplyText)
	return e
}

func parseEnhanced(s string) (smtp.EnhancedCode, bool) {
	var ec smtp.EnhancedCode
	parts := strings.SplitN(s, ".", 4)
	if len(parts) != 3 {
		return ec, false
	}
	for i, p := range parts {
		if p == "" || len(p) > 3 {
			return ec, false
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return ec, false
		}
		ec[i] = n
	}
	if ec[0] < 2 || ec[0] > 5 {
		return ec, false
	}
	return ec, true
}

// cleanReply copies a reply received through go-smtp, cleaning its text.
func cleanReply(e *smtp.SMTPError) *smtp.SMTPError {
	c := *e
	c.Message = CleanText(c.Message, maxReplyText)
	if c.EnhancedCode == (smtp.EnhancedCode{}) {
		c.EnhancedCode = smtp.NoEnhancedCode
	}
	return &c
}

func firstWord(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	w, _, _ := strings.Cut(strings.TrimSpace(s), " ")
	return w
}

func isSelf(name string, self []string) bool {
	name = strings.TrimSuffix(name, ".")
	for _, s := range self {
		if s != "" && strings.EqualFold(name, s) {
			return true
		}
	}
	return false
}

// txn is the outcome of one transaction on a session.
type txn struct {
	// reusable is true when the session can carry another message.
	reusable bool
	// stale is true when the session failed before the peer saw anything
	// of this message (a pooled connection the peer had closed): the
	// caller may redial and try again.
	stale bool
}

var errCancelled = errors.New("deliver: delivery cancelled")

// send runs one transaction for the recipients idx of env, filling res[i]
// for each i in idx.
func (sc *sconn) send(ctx context.Context, to Timeouts, env *Envelope, idx []int, body Body, res []Result, tlsOK func(*TLSInfo) bool, now func() time.Time) txn {
	started := now()
	set := func(i int, reply *smtp.SMTPError, local bool, err error, uncertain bool) {
		res[i] = Result{
			Recipient: env.Recipients[i].Address,
			Reply:     reply,
			Local:     local,
			Err:       err,
			Uncertain: uncertain,
			Route:     sc.route,
			Attempted: started,
			Duration:  now().Sub(started),
		}
	}
	setAll := func(ids []int, reply *smtp.SMTPError, local bool, err error, uncertain bool) {
		for _, i := range ids {
			set(i, reply, local, err, uncertain)
		}
	}
	localFail := func(reply *smtp.SMTPError, err error) txn {
		setAll(idx, reply, true, &LocalError{Reply: reply, Err: err}, false)
		return txn{reusable: true}
	}

	// Checks before the first byte (RFC 3030/6152/6531/8689).
	opts := env.Mail
	opts.Size = body.Size()
	if limit, ok := sizeLimit(sc.ext); ok && limit > 0 && body.Size() > limit {
		return localFail(Reply(552, 5, 3, 4, fmt.Sprintf("message size %d exceeds the limit %d of %s", body.Size(), limit, sc.route.Host)), ErrTooBig)
	}
	if needsUTF8(env, idx) {
		if _, ok := sc.ext["SMTPUTF8"]; !ok {
			// RFC 6531 §3.2: without SMTPUTF8 at the server the message
			// cannot be sent; no downgrade is done here.
			return localFail(Reply(550, 5, 6, 7, sc.route.Host+" does not support SMTPUTF8, required by this message"), ErrExtension)
		}
		opts.UTF8 = true
	}
	if opts.Body == smtp.BodyBinaryMIME {
		return localFail(Reply(554, 5, 6, 3, "BINARYMIME content cannot be sent by this client"), ErrExtension)
	}
	if _, ok := sc.ext["8BITMIME"]; !ok && opts.Body != smtp.Body7Bit {
		if opts.Body == smtp.Body8BitMIME || has8Bit(body) {
			// RFC 6152 §3: 8-bit content must not go to a server without
			// 8BITMIME; conversion to 7 bit is not done here.
			return localFail(Reply(554, 5, 6, 3, sc.route.Host+" does not support 8BITMIME, required by this message"), ErrExtension)
		}
	}
	if opts.RequireTLS && !env.TLSOptional {
		_, offered := sc.ext["REQUIRETLS"]
		if !offered || !tlsOK(sc.route.TLS) {
			// RFC 8689 §5: 5.7.30 when the requirement cannot be met.
			return localFail(Reply(550, 5, 7, 30, "REQUIRETLS: no verified TLS path with REQUIRETLS support to "+sc.route.Host), ErrRequireTLS)
		}
	} else {
		opts.RequireTLS = false
	}

	stop := context.AfterFunc(ctx, func() { sc.raw.Close() })
	defer stop()
	netFail := func(ids []int, err error, uncertain bool) txn {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", errCancelled, ctx.Err())
		}
		reply := Reply(451, 4, 4, 2, "connection to "+sc.route.Host+" lost: "+err.Error())
		if errors.Is(err, ErrTimeout) {
			reply = Reply(451, 4, 4, 2, "timeout talking to "+sc.route.Host+": "+err.Error())
		}
		if uncertain {
			reply = Reply(451, 4, 4, 2, "connection to "+sc.route.Host+" lost after the message was sent, outcome unknown: "+err.Error())
		}
		setAll(ids, reply, true, &LocalError{Reply: reply, Err: err}, uncertain)
		return txn{}
	}

	if sc.dirty {
		sc.g.setPhase("RSET", to.Reset)
		if err := sc.c.Reset(); err != nil {
			if sc.reused && !isReply(err) && ctx.Err() == nil {
				return txn{stale: true}
			}
			return netFail(idx, err, false)
		}
		sc.dirty = false
	}
	sc.g.setPhase("MAIL", to.Mail)
	if err := sc.c.Mail(env.From, &opts); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			setAll(idx, cleanReply(se), false, nil, false)
			sc.dirty = true
			return txn{reusable: se.Code != 421}
		}
		if sc.reused && ctx.Err() == nil {
			return txn{stale: true}
		}
		return netFail(idx, err, false)
	}
	sc.dirty = true
	accepted := make([]int, 0, len(idx))
	for k, i := range idx {
		r := &env.Recipients[i]
		sc.g.setPhase("RCPT", to.Rcpt)
		ropts := r.Options
		if err := sc.c.Rcpt(r.Address, &ropts); err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				set(i, cleanReply(se), false, nil, false)
				if se.Code == 421 {
					// RFC 5321 §3.8: the server is closing the session.
					netFail(append(accepted, idx[k+1:]...), fmt.Errorf("%w: %s closed the session: %s", ErrProtocol, sc.route.Host, CleanText(se.Message, 200)), false)
					return txn{}
				}
				continue
			}
			return netFail(append(accepted, idx[k:]...), err, false)
		}
		accepted = append(accepted, i)
	}
	if len(accepted) == 0 {
		return txn{reusable: true}
	}
	sc.g.setPhase("DATA", to.DataInit)
	w, err := sc.c.Data()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			setAll(accepted, cleanReply(se), false, nil, false)
			return txn{reusable: se.Code != 421}
		}
		return netFail(accepted, err, false)
	}
	sc.g.setPhase("data block", to.DataBlock)
	cw := crlfWriter{w: w}
	bufp := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(&cw, io.NewSectionReader(body, 0, body.Size()), *bufp)
	copyBufs.Put(bufp)
	if err != nil {
		return netFail(accepted, err, false)
	}
	if err := cw.Close(); err != nil {
		return netFail(accepted, err, false)
	}
	sc.g.setPhase("end of data", to.DataFinal)
	sc.msgs++
	if sc.c != nil && isLMTP(sc) {
		resp, err := w.CloseWithLMTPResponse()
		var lerr smtp.LMTPDataError
		errors.As(err, &lerr)
		var missing []int
		for _, i := range accepted {
			addr := env.Recipients[i].Address
			if r, ok := resp[addr]; ok {
				set(i, okReply(r.StatusText), false, nil, false)
			} else if se, ok := lerr[addr]; ok {
				set(i, cleanReply(se), false, nil, false)
			} else {
				missing = append(missing, i)
			}
		}
		if len(missing) > 0 {
			if err == nil {
				err = fmt.Errorf("%w: no LMTP reply", ErrProtocol)
			}
			netFail(missing, err, true)
			return txn{}
		}
		sc.dirty = false
		return txn{reusable: true}
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			setAll(accepted, cleanReply(se), false, nil, false)
			sc.dirty = false
			return txn{reusable: se.Code != 421}
		}
		// The final dot may have reached the peer: the outcome is unknown.
		return netFail(accepted, err, true)
	}
	setAll(accepted, okReply(resp.StatusText), false, nil, false)
	sc.dirty = false
	return txn{reusable: true}
}

// copyBufs holds the buffers the body is copied through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func isLMTP(sc *sconn) bool { return sc.key.lmtp }

func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// okReply makes the 250 reply of a successful DATA from its text.
func okReply(text string) *smtp.SMTPError {
	return replyFrom(250, text)
}

// Errors behind locally made permanent failures of one transaction.
var (
	ErrTooBig     = errors.New("deliver: message larger than the server accepts")
	ErrExtension  = errors.New("deliver: server lacks an SMTP extension the message needs")
	ErrRequireTLS = errors.New("deliver: REQUIRETLS cannot be satisfied")
	ErrNoRoute    = errors.New("deliver: no route")
	ErrNullMX     = errors.New("deliver: domain accepts no mail (null MX)")
	ErrNoSuchHost = errors.New("deliver: domain does not exist")
	ErrDNS        = errors.New("deliver: DNS lookup failed")
	ErrPolicy     = errors.New("deliver: TLS policy not satisfied")
)

func sizeLimit(ext map[string]string) (int64, bool) {
	v, ok := ext["SIZE"]
	if !ok || v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// needsUTF8 reports whether the envelope needs SMTPUTF8: the client said
// so, or an address is not ASCII.
func needsUTF8(env *Envelope, idx []int) bool {
	if env.Mail.UTF8 || !isASCII(env.From) {
		return true
	}
	for _, i := range idx {
		if !isASCII(env.Recipients[i].Address) {
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

// has8Bit reports whether the body has a byte with the high bit set.
func has8Bit(b Body) bool {
	r := Reader(b)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c >= 0x80 {
				return true
			}
		}
		if err != nil {
			return false
		}
	}
}

// quit ends a session politely and closes it.
func (sc *sconn) quit(to Timeouts) {
	sc.g.setPhase("QUIT", to.Reset)
	_ = sc.c.Quit()
	sc.raw.Close()
}

func (sc *sconn) close() { sc.raw.Close() }
