package event

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Type names what happened. The string values are part of the wire format.
type Type string

// The event types. Message-level events (Queued, Held, Released, Deleted)
// have an empty Recipient; Attempt has Domain and Attempt set but no
// Recipient.
const (
	// Queued: a message was accepted and stored. DSN is set when the
	// message is a delivery status notification made by the queue.
	Queued Type = "queued"
	// Attempt: a delivery attempt to a domain starts.
	Attempt Type = "attempt"
	// Delivered: the receiving server accepted a recipient. Latency is the
	// time since the message was queued.
	Delivered Type = "delivered"
	// Deferred: a recipient failed transiently; NextAttempt says when it is
	// tried again.
	Deferred Type = "deferred"
	// Bounced: a recipient failed permanently (Reply, Category set).
	Bounced Type = "bounced"
	// Expired: a recipient was still failing when the message's lifetime
	// ended; it is given up.
	Expired Type = "expired"
	// Suppressed: a recipient is on the suppression list and is not tried.
	Suppressed Type = "suppressed"
	// Held: an operator held a message; it is not tried until released.
	Held Type = "held"
	// Released: an operator released a held message.
	Released Type = "released"
	// Deleted: an operator deleted a message.
	Deleted Type = "deleted"
	// Throttled: a rate limit refused an attempt; NextAttempt says when the
	// delivery becomes ready again.
	Throttled Type = "throttled"
	// Complaint: a feedback report (ARF, RFC 5965) about a message we sent
	// was received; FeedbackType says which kind.
	Complaint Type = "complaint"
	// AsyncBounce: a DSN (RFC 3464) arrived after the message had been
	// accepted and was matched back to it through the signed return path.
	AsyncBounce Type = "async_bounce"
)

// Types lists every event type, in the order of the constants above.
func Types() []Type {
	return []Type{Queued, Attempt, Delivered, Deferred, Bounced, Expired, Suppressed,
		Held, Released, Deleted, Throttled, Complaint, AsyncBounce}
}

// Event is one state change. Its zero value is not a valid event: Type is
// required, and ID and Time are filled in by [Fanout] or [Webhook] when
// empty.
//
// An Event is a value: sinks receive copies. Tags and Metadata are shared
// between the copies given to every sink; sinks must not modify them.
//
// # JSON
//
// Event marshals to a stable JSON object with snake_case names; the table
// in the package documentation lists every field. Times are RFC 3339 in UTC
// with millisecond precision, durations are integer milliseconds, so a
// round trip truncates Time, NextAttempt and Latency to milliseconds.
type Event struct {
	// ID identifies the event: 26 characters of Crockford base32 that sort
	// by time to the millisecond, and in stamping order among the events
	// of one stream (see [IDSource]).
	ID   string
	Type Type
	// Time is when the state change happened.
	Time time.Time

	// MessageID is the queue's ID of the message.
	MessageID string
	// Recipient is the envelope recipient concerned, or "" for
	// message-level events.
	Recipient string
	// Domain is the recipient domain of the delivery concerned.
	Domain string
	// Attempt is the attempt number, 1 for the first; 0 when not known.
	Attempt int
	// Tenant, Tags and Metadata are copied from the message.
	Tenant   string
	Tags     []string
	Metadata map[string]string

	// Site identifies the destination for rate limits (recipients whose
	// domains share MX hosts share a site).
	Site string
	// MXHost is the remote host name used (the MX or the smarthost) and
	// MXAddr its address and port.
	MXHost string
	MXAddr netip.AddrPort
	// SourceIP is the local address the connection was made from.
	SourceIP netip.Addr
	// TLS describes the encrypted session; nil when not encrypted.
	TLS *TLS
	// TLSPolicy names the TLS policy that applied ("opportunistic",
	// "none", "tls", "mta-sts", "mta-sts-testing", "dane"), and TLSFailure
	// why it was not satisfied (RFC 8460 result types), if it was not.
	TLSPolicy  string
	TLSFailure string

	// Reply is the SMTP reply that decided the outcome, nil when there was
	// none.
	Reply *smtp.SMTPError
	// Permanent, Category and BadAddress are the bounce classification of
	// Reply (failures only). Category is one of the bounce package's
	// category names, e.g. "bad_mailbox".
	Permanent  bool
	Category   string
	BadAddress bool

	// NextAttempt is when a deferred or throttled delivery is tried again.
	NextAttempt time.Time
	// Latency is the attempt's duration for attempt outcomes, or the time
	// since the message was queued for Delivered.
	Latency time.Duration
	// DSN is the ID of the delivery status notification the queue made for
	// this outcome, if any.
	DSN string

	// FeedbackType is the ARF feedback type of a Complaint ("abuse",
	// "fraud", ...; RFC 5965 section 7.3), and Reporter who sent it.
	FeedbackType string
	Reporter     string
}

// TLS describes an encrypted session.
type TLS struct {
	// Version is e.g. "TLS 1.3"; Cipher the cipher suite name.
	Version string
	Cipher  string
	// Verified is true when the server's certificate was checked (by the
	// TLS policy).
	Verified bool
}

// wire is the JSON form of Event. Field names are the wire format: change
// them and TestWireFieldNames fails.
type wire struct {
	ID           string            `json:"id"`
	Type         Type              `json:"type"`
	Time         string            `json:"time"`
	MessageID    string            `json:"message_id,omitempty"`
	Recipient    string            `json:"recipient,omitempty"`
	Domain       string            `json:"domain,omitempty"`
	Attempt      int               `json:"attempt,omitempty"`
	Tenant       string            `json:"tenant,omitempty"`
	Tags         []string          `json:"tags,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	Site         string            `json:"site,omitempty"`
	MXHost       string            `json:"mx_host,omitempty"`
	MXAddr       string            `json:"mx_addr,omitempty"`
	SourceIP     string            `json:"source_ip,omitempty"`
	TLS          *wireTLS          `json:"tls,omitempty"`
	TLSPolicy    string            `json:"tls_policy,omitempty"`
	TLSFailure   string            `json:"tls_failure,omitempty"`
	Reply        *wireReply        `json:"reply,omitempty"`
	Permanent    bool              `json:"permanent,omitempty"`
	Category     string            `json:"category,omitempty"`
	BadAddress   bool              `json:"bad_address,omitempty"`
	NextAttempt  string            `json:"next_attempt,omitempty"`
	LatencyMS    int64             `json:"latency_ms,omitempty"`
	DSN          string            `json:"dsn_id,omitempty"`
	FeedbackType string            `json:"feedback_type,omitempty"`
	Reporter     string            `json:"reporter,omitempty"`
}

type wireTLS struct {
	Version  string `json:"version,omitempty"`
	Cipher   string `json:"cipher,omitempty"`
	Verified bool   `json:"verified"`
}

type wireReply struct {
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced,omitempty"`
	Text     string `json:"text,omitempty"`
}

// TimeFormat is the layout of times on the wire: RFC 3339 in UTC with
// exactly three fractional digits.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(TimeFormat)
}

func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("event: bad %s: %w", field, err)
	}
	return t.UTC(), nil
}

// MarshalJSON encodes e in the documented wire format.
func (e Event) MarshalJSON() ([]byte, error) {
	w := wire{
		ID: e.ID, Type: e.Type, Time: formatTime(e.Time),
		MessageID: e.MessageID, Recipient: e.Recipient, Domain: e.Domain, Attempt: e.Attempt,
		Tenant: e.Tenant, Tags: e.Tags, Metadata: e.Metadata,
		Site: e.Site, MXHost: e.MXHost,
		TLSPolicy: e.TLSPolicy, TLSFailure: e.TLSFailure,
		Permanent: e.Permanent, Category: e.Category, BadAddress: e.BadAddress,
		NextAttempt: formatTime(e.NextAttempt), LatencyMS: e.Latency.Milliseconds(),
		DSN: e.DSN, FeedbackType: e.FeedbackType, Reporter: e.Reporter,
	}
	if e.MXAddr.IsValid() {
		w.MXAddr = e.MXAddr.String()
	}
	if e.SourceIP.IsValid() {
		w.SourceIP = e.SourceIP.String()
	}
	if e.TLS != nil {
		w.TLS = &wireTLS{Version: e.TLS.Version, Cipher: e.TLS.Cipher, Verified: e.TLS.Verified}
	}
	if e.Reply != nil {
		w.Reply = &wireReply{Code: e.Reply.Code, Enhanced: formatEnhanced(e.Reply.EnhancedCode), Text: e.Reply.Message}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the wire format. Unknown fields are ignored so that
// receivers keep working when fields are added.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	ev := Event{
		ID: w.ID, Type: w.Type,
		MessageID: w.MessageID, Recipient: w.Recipient, Domain: w.Domain, Attempt: w.Attempt,
		Tenant: w.Tenant, Tags: w.Tags, Metadata: w.Metadata,
		Site: w.Site, MXHost: w.MXHost,
		TLSPolicy: w.TLSPolicy, TLSFailure: w.TLSFailure,
		Permanent: w.Permanent, Category: w.Category, BadAddress: w.BadAddress,
		Latency: time.Duration(w.LatencyMS) * time.Millisecond,
		DSN:     w.DSN, FeedbackType: w.FeedbackType, Reporter: w.Reporter,
	}
	var err error
	if ev.Time, err = parseTime("time", w.Time); err != nil {
		return err
	}
	if ev.NextAttempt, err = parseTime("next_attempt", w.NextAttempt); err != nil {
		return err
	}
	if w.MXAddr != "" {
		if ev.MXAddr, err = netip.ParseAddrPort(w.MXAddr); err != nil {
			return fmt.Errorf("event: bad mx_addr: %w", err)
		}
	}
	if w.SourceIP != "" {
		if ev.SourceIP, err = netip.ParseAddr(w.SourceIP); err != nil {
			return fmt.Errorf("event: bad source_ip: %w", err)
		}
	}
	if w.TLS != nil {
		ev.TLS = &TLS{Version: w.TLS.Version, Cipher: w.TLS.Cipher, Verified: w.TLS.Verified}
	}
	if w.Reply != nil {
		r := &smtp.SMTPError{Code: w.Reply.Code, Message: w.Reply.Text}
		if w.Reply.Enhanced != "" {
			if r.EnhancedCode, err = parseEnhanced(w.Reply.Enhanced); err != nil {
				return err
			}
		}
		ev.Reply = r
	}
	*e = ev
	return nil
}

// formatEnhanced returns "5.1.1", or "" for go-smtp's EnhancedCodeNotSet
// and NoEnhancedCode.
func formatEnhanced(c smtp.EnhancedCode) string {
	if c[0] <= 0 {
		return ""
	}
	return strconv.Itoa(c[0]) + "." + strconv.Itoa(c[1]) + "." + strconv.Itoa(c[2])
}

// parseEnhanced parses an RFC 3463 status code "class.subject.detail".
func parseEnhanced(s string) (smtp.EnhancedCode, error) {
	var c smtp.EnhancedCode
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("event: bad enhanced status %q", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return c, fmt.Errorf("event: bad enhanced status %q", s)
		}
		c[i] = n
	}
	return c, nil
}
