// Package auth checks inbound mail with SPF, DKIM and DMARC together and
// writes the Authentication-Results header field (RFC 8601); it also
// checks a sending domain's own DNS setup ([CheckDomain]).
//
// # Inbound verification
//
// [Verifier.Verify] reads a message once: the header section is read with
// caps (size and field count) before anything parses it, DKIM signatures
// are verified (auth/dkim, on go-msgauth), SPF is checked for the MAIL
// FROM identity (auth/spf, RFC 7208), and DMARC (auth/dmarc, RFC 9989)
// combines both with the From field. [Results.Header] formats the
// Authentication-Results field with go-msgauth's authres package; every
// value placed in it is cleaned first (control characters, CR, LF,
// backslashes, quotes and non-ASCII become "?", ";" becomes ","), so a crafted d=, sender or
// HELO cannot inject a header field.
//
// # Sending-domain check
//
// [CheckDomain] looks at what a domain publishes for the mail it sends:
// SPF covering every source IP and within the lookup limit, DKIM keys
// published and matching the private keys, a DMARC policy, resolvable MX
// hosts and a well-formed MTA-STS record. Each finding comes with the
// exact record to publish when something is wrong.
package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/auth/dmarc"
	"github.com/mtakit/mta/auth/spf"
	"github.com/mtakit/mta/resolver"
)

// Config configures a [Verifier]. Resolver is required; every other
// field's zero value is a usable default.
type Config struct {
	// Resolver answers every DNS query. Required.
	Resolver *resolver.Resolver
	// Hostname is the authserv-id written in Authentication-Results
	// (RFC 8601 §2.5), normally this host's name. "" means "localhost".
	Hostname string
	// MaxHeaderBytes and MaxHeaderFields cap the header section read before
	// any parser sees it (zero: dkim.DefaultMaxHeaderBytes,
	// dkim.DefaultMaxHeaderFields).
	MaxHeaderBytes  int
	MaxHeaderFields int
	// MaxSignatures caps the DKIM signatures verified per message (zero:
	// dkim.DefaultMaxSignatures).
	MaxSignatures int
	// SPFTimeout bounds the SPF check (zero: spf.DefaultTimeout).
	SPFTimeout time.Duration
	// Now is the clock (DKIM x= expiry); nil means time.Now.
	Now func() time.Time
	// Logger gets one debug line per message; nil discards.
	Logger *slog.Logger
}

// Verifier runs SPF, DKIM and DMARC on inbound messages. It is safe for
// concurrent use.
type Verifier struct {
	hostname string
	limits   [2]int
	spf      *spf.Checker
	dkim     *dkim.Verifier
	dmarc    *dmarc.Evaluator
	log      *slog.Logger
}

// NewVerifier returns a Verifier; it fails when cfg.Resolver is nil.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("auth: Config.Resolver is nil")
	}
	v := &Verifier{hostname: cfg.Hostname, limits: [2]int{cfg.MaxHeaderBytes, cfg.MaxHeaderFields}, log: cfg.Logger}
	if v.hostname == "" {
		v.hostname = "localhost"
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	v.spf = &spf.Checker{Resolver: cfg.Resolver, Hostname: v.hostname, Timeout: cfg.SPFTimeout, Now: cfg.Now, Logger: cfg.Logger}
	var err error
	v.dkim, err = dkim.NewVerifier(dkim.VerifierConfig{
		Resolver: cfg.Resolver, MaxSignatures: cfg.MaxSignatures,
		MaxHeaderBytes: cfg.MaxHeaderBytes, MaxHeaderFields: cfg.MaxHeaderFields,
		Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	v.dmarc, err = dmarc.New(dmarc.Config{Resolver: cfg.Resolver, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Results holds the outcome of [Verifier.Verify].
type Results struct {
	// AuthServID is the Verifier's Hostname.
	AuthServID string
	// SPF is the SPF result for MAIL FROM (for a null reverse-path, for
	// postmaster@HELO).
	SPF spf.Result
	// DKIM has one result per signature, top-most first; empty when the
	// message is unsigned.
	DKIM []dkim.Result
	// HeaderErr is set when the header section was refused (too large, too
	// many fields, malformed): DKIM and DMARC are then permerror.
	HeaderErr error
	// DMARC is the DMARC verdict.
	DMARC *dmarc.Result
}

// Verify checks message (the whole message, CRLF or LF line endings, read
// once) received from clientIP with the given HELO name and MAIL FROM
// address ("" or "<>" for a null reverse-path). Verdicts, including
// temporary and permanent errors, are in Results; the error is non-nil
// only when reading the message fails or ctx ends (then ctx.Err()).
func (v *Verifier) Verify(ctx context.Context, message io.Reader, clientIP netip.Addr, helo, mailFrom string) (*Results, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	res := &Results{AuthServID: v.hostname}
	res.SPF = v.spf.CheckMailFrom(ctx, clientIP, helo, mailFrom)

	h, err := dkim.ReadHeader(message, v.limits[0], v.limits[1])
	in := dmarc.Input{SPF: dmarc.Identifier{Result: res.SPF.Status.String(), Domain: res.SPF.Domain}}
	switch {
	case err == nil:
		res.DKIM, err = v.dkim.VerifyHeader(ctx, h, message)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("auth: %w", err)
		}
		for _, f := range h.Fields() {
			if strings.EqualFold(strings.TrimRight(f.Name, " \t"), "From") {
				in.From = append(in.From, dmarc.FromField{Name: f.Name, Value: f.Value})
			}
		}
		for _, d := range res.DKIM {
			in.DKIM = append(in.DKIM, dmarc.Identifier{Result: string(d.Status), Domain: d.Domain})
		}
		res.DMARC, err = v.dmarc.Evaluate(ctx, in)
		if err != nil {
			return nil, err
		}
	case errors.Is(err, dkim.ErrHeaderTooLarge), errors.Is(err, dkim.ErrTooManyFields), errors.Is(err, dkim.ErrHeaderSyntax):
		res.HeaderErr = err
		res.DMARC = &dmarc.Result{Status: dmarc.StatusPermError, Reason: "header section refused: " + err.Error(), Disposition: dmarc.PolicyReject}
	default:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("auth: reading message: %w", err)
	}
	v.log.Debug("auth verify", "spf", res.SPF.Status.String(), "dkim", len(res.DKIM), "dmarc", string(res.DMARC.Status), "duration", time.Since(start))
	return res, nil
}

// Value returns the Authentication-Results field value (RFC 8601), e.g.
//
//	mx.example.org; spf=pass smtp.mailfrom=a@example.com; dkim=pass header.d=example.com header.s=sel header.a=ed25519-sha256 header.b=abcd; dmarc=pass header.from=example.com
//
// Every value taken from the message or the SMTP session is cleaned:
// CR, LF, other control characters, backslashes, double quotes and
// non-ASCII octets become "?", and ";" becomes ",".
func (r *Results) Value() string {
	var rs []authres.Result
	sender := r.SPF.Sender
	spfRes := &authres.SPFResult{Value: authres.ResultValue(r.SPF.Status.String())}
	if r.SPF.Scope == spf.ScopeHELO {
		spfRes.Helo = clean(r.SPF.Domain)
	} else if sender != "" {
		spfRes.From = clean(sender)
	}
	if r.SPF.Err != nil {
		spfRes.Reason = clean(r.SPF.Err.Error())
	}
	rs = append(rs, spfRes)
	switch {
	case r.HeaderErr != nil:
		rs = append(rs, &authres.DKIMResult{Value: authres.ResultPermError, Reason: clean(r.HeaderErr.Error())})
	case len(r.DKIM) == 0:
		rs = append(rs, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range r.DKIM {
		params := map[string]string{
			"header.d": clean(d.Domain),
			"header.i": clean(d.Identifier),
			"header.s": clean(d.Selector),
			"header.a": clean(d.Algorithm),
			"header.b": clean(d.SignatureB),
		}
		if d.Reason != "" {
			params["reason"] = clean(d.Reason)
		}
		rs = append(rs, &authres.GenericResult{Method: "dkim", Value: authres.ResultValue(d.Status), Params: params})
	}
	if r.DMARC != nil {
		dm := &authres.DMARCResult{Value: authres.ResultValue(r.DMARC.Status), From: clean(r.DMARC.AuthorDomain)}
		if r.DMARC.Status != dmarc.StatusPass {
			reason := r.DMARC.Reason
			if r.DMARC.Policy != "" {
				reason += "; policy " + string(r.DMARC.Policy) + ", disposition " + string(r.DMARC.Disposition)
			}
			dm.Reason = clean(reason)
		}
		rs = append(rs, dm)
	}
	// authres leaves a space after a result without parameters
	// ("dkim=none ;"); values hold no ";" (see clean), so trim it.
	out := authres.Format(clean(r.AuthServID), rs)
	return strings.TrimRight(strings.ReplaceAll(out, " ; ", "; "), " ")
}

// Header returns the whole Authentication-Results field, folded before
// each method and ending in CRLF, ready to prepend to the message.
func (r *Results) Header() string {
	return "Authentication-Results: " + strings.ReplaceAll(r.Value(), "; ", ";\r\n ") + "\r\n"
}

// clean makes s safe inside a header field value: control characters
// (CR and LF included), DEL, backslash, double quote and non-ASCII octets
// become "?", and ";" (which naive parsers take as the end of a result,
// even inside quotes) becomes ",".
func clean(s string) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' || c == '"' || c == ';' {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c == ';':
			b[i] = ','
		case c < 0x20 || c >= 0x7f || c == '\\' || c == '"':
			b[i] = '?'
		}
	}
	return string(b)
}
