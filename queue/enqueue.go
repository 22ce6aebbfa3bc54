package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
)

// NewMessage is what Enqueue takes: the envelope and the routing attributes
// of a message to send. Only Recipients is required.
type NewMessage struct {
	// From is the reverse-path without angle brackets; "" is the null
	// sender (no DSN is ever sent for such a message).
	From string
	// Mail holds the MAIL FROM parameters (BODY, SMTPUTF8, RET, ENVID,
	// REQUIRETLS, AUTH). Size is ignored: the queue measures the body.
	Mail smtp.MailOptions
	// Recipients with their NOTIFY and ORCPT parameters. Duplicates (same
	// address, domain compared case-insensitively) are kept once.
	Recipients []deliver.Recipient
	// Tenant and SourcePool go to the transport and the limiter.
	Tenant     string
	SourcePool string
	// Tags and Metadata travel with every event about the message.
	Tags     []string
	Metadata map[string]string
	// Priority: PriorityTransactional, PriorityNormal (zero), PriorityBulk
	// or any other number; higher first.
	Priority Priority
	// NotBefore delays the first attempt (scheduled sending). Zero: now.
	NotBefore time.Time
	// Lifetime overrides Config.Lifetime for this message, counted from
	// enqueue (from NotBefore for scheduled messages). Zero:
	// Config.Lifetime.
	Lifetime time.Duration
	// IdempotencyKey, when set, makes a second Enqueue with the same
	// Tenant and key within Config.IdempotencyWindow return the first
	// message's ID instead of queueing a duplicate.
	IdempotencyKey string
}

// Enqueue validates m, stores it with its body durably and returns its ID.
// It returns only after the store has made the message durable; on any
// error nothing is stored.
//
// Errors (wrapped, test with errors.Is): ErrInvalidSender,
// ErrInvalidRecipient, ErrNoRecipients, ErrTooBig (body over
// Config.MaxMessageSize), ErrBody (the body reader failed; its error is
// wrapped too), ErrSuppressed (every recipient is suppressed: a
// *SuppressedError), ctx.Err(), or the store's error.
//
// Recipients on the suppression list (Config.Suppressions) are stored in
// state RecipientSuppressed with a 550 5.7.1 reply, never tried, and each
// gets an event.Suppressed; the others are queued. Use Get to see each
// recipient's state. A duplicate idempotency key returns the first
// message's ID and a nil error.
func (q *Queue) Enqueue(ctx context.Context, m *NewMessage, body io.Reader) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if m == nil {
		return "", fmt.Errorf("%w: nil message", ErrNoRecipients)
	}
	if m.From != "" {
		if _, err := checkAddress(m.From, m.Mail.UTF8); err != nil {
			return "", fmt.Errorf("%w: %q: %v", ErrInvalidSender, m.From, err)
		}
	}
	if len(m.Recipients) == 0 {
		return "", ErrNoRecipients
	}
	now := q.now()
	msg := &Message{
		From:           m.From,
		Mail:           cloneMailOptions(m.Mail),
		Tenant:         m.Tenant,
		SourcePool:     m.SourcePool,
		Tags:           slices.Clone(m.Tags),
		Metadata:       maps.Clone(m.Metadata),
		Priority:       m.Priority,
		Created:        now,
		NotBefore:      m.NotBefore,
		IdempotencyKey: m.IdempotencyKey,
	}
	msg.Mail.Size = 0
	lifetime := m.Lifetime
	if lifetime <= 0 {
		lifetime = q.cfg.Lifetime
	}
	first := now
	if m.NotBefore.After(now) {
		first = m.NotBefore
	}
	msg.Expires = first.Add(lifetime) // the lifetime starts with the first attempt
	seen := make(map[string]bool, len(m.Recipients))
	byDomain := make(map[string]int)
	for _, r := range m.Recipients {
		domain, err := checkAddress(r.Address, m.Mail.UTF8)
		if err != nil {
			return "", fmt.Errorf("%w: %q: %v", ErrInvalidRecipient, r.Address, err)
		}
		key := r.Address[:strings.LastIndexByte(r.Address, '@')+1] + domain
		if seen[key] {
			continue
		}
		seen[key] = true
		i, ok := byDomain[domain]
		if !ok {
			i = len(msg.Deliveries)
			byDomain[domain] = i
			msg.Deliveries = append(msg.Deliveries, Delivery{Index: i, Domain: domain, NextAttempt: first})
		}
		msg.Deliveries[i].Recipients = append(msg.Deliveries[i].Recipients, Recipient{
			Address: r.Address,
			Options: cloneRcptOptions(r.Options),
		})
	}
	suppressed, err := q.suppress(ctx, msg, now)
	if err != nil {
		return "", err
	}
	if len(suppressed) == msg.Recipients() {
		for _, a := range suppressed {
			e := q.msgEvent(event.Suppressed, msg, now)
			e.Recipient, e.Domain, e.Reply = a, deliver.Domain(a), suppressedReply
			q.emit(e)
		}
		return "", &SuppressedError{Recipients: suppressed}
	}
	var ungate func()
	id, err := q.store1(ctx, msg, body, &ungate)
	if ungate != nil {
		defer ungate()
	}
	if err != nil {
		return "", err
	}
	if id != msg.ID { // an idempotent duplicate
		return id, nil
	}
	q.emit(q.msgEvent(event.Queued, msg, now))
	for _, a := range suppressed {
		e := q.msgEvent(event.Suppressed, msg, now)
		e.Recipient, e.Domain, e.Reply = a, deliver.Domain(a), suppressedReply
		q.emit(e)
	}
	q.poke()
	return id, nil
}

var suppressedReply = deliver.Reply(550, 5, 7, 1, "recipient address is on the suppression list")

// store1 assigns an ID and stores msg, deduplicating by idempotency key.
// It returns the stored ID, or an earlier message's ID for a duplicate.
// Before storing it sets *ungate (see gate): the caller calls it once the
// queued event is out.
func (q *Queue) store1(ctx context.Context, msg *Message, body io.Reader, ungate *func()) (string, error) {
	id, err := q.NewID()
	if err != nil {
		return "", err
	}
	msg.ID = id
	*ungate = q.gate(id)
	br := &bodyReader{r: body, limit: q.cfg.MaxMessageSize}
	wrap := func(err error) error {
		switch {
		case br.tooBig:
			return fmt.Errorf("%w: more than %d bytes", ErrTooBig, q.cfg.MaxMessageSize)
		case br.err != nil:
			return fmt.Errorf("%w: %w", ErrBody, br.err)
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return err
	}
	if msg.IdempotencyKey == "" {
		if err := q.store.Enqueue(ctx, msg, br); err != nil {
			return "", wrap(err)
		}
		return id, nil
	}
	since := msg.Created.Add(-q.cfg.IdempotencyWindow)
	if is, ok := q.store.(IdempotentStore); ok {
		got, err := is.EnqueueIdempotent(ctx, msg, br, since)
		if errors.Is(err, ErrDuplicate) {
			return got, nil
		}
		if err != nil {
			return "", wrap(err)
		}
		return id, nil
	}
	// Fallback: deduplicate in this process's memory.
	q.idemMu.Lock()
	defer q.idemMu.Unlock()
	k := idemKey{msg.Tenant, msg.IdempotencyKey}
	if rec, ok := q.idem[k]; ok && !rec.created.Before(since) {
		return rec.id, nil
	}
	if err := q.store.Enqueue(ctx, msg, br); err != nil {
		return "", wrap(err)
	}
	q.idem[k] = idemRecord{id: id, created: msg.Created}
	if len(q.idem) > 4096 {
		for k, r := range q.idem {
			if r.created.Before(since) {
				delete(q.idem, k)
			}
		}
	}
	return id, nil
}

// bodyReader enforces the size limit and remembers the reader's own error,
// so that Enqueue can tell a bad body from a store failure.
type bodyReader struct {
	r      io.Reader
	limit  int64 // < 0: none
	n      int64
	err    error
	tooBig bool
}

var errTooBig = errors.New("body exceeds the size limit")

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.tooBig {
		return 0, errTooBig
	}
	if b.r == nil {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.limit >= 0 && b.n > b.limit {
		b.tooBig = true
		return 0, errTooBig
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// checkAddress validates a mailbox (RFC 5321 §4.1.2, §4.5.3.1) and returns
// its domain in lower case. Non-ASCII is allowed only with SMTPUTF8
// (RFC 6531 §3.3).
func checkAddress(addr string, smtputf8 bool) (string, error) {
	if len(addr) > 254 {
		return "", errors.New("longer than 254 octets")
	}
	if !utf8.ValidString(addr) {
		return "", errors.New("not valid UTF-8")
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", errors.New("not local@domain")
	}
	local, domain := addr[:at], addr[at+1:]
	if len(local) > 64 {
		return "", errors.New("local part longer than 64 octets")
	}
	for _, c := range addr {
		switch {
		case c < 0x20 || c == 0x7f:
			return "", errors.New("control character")
		case c >= 0x80 && !smtputf8:
			return "", errors.New("non-ASCII without SMTPUTF8")
		}
	}
	if strings.HasPrefix(local, `"`) {
		if len(local) < 2 || !strings.HasSuffix(local, `"`) {
			return "", errors.New("unterminated quoted local part")
		}
	} else if strings.ContainsAny(local, " <>()[]\\,;:\"") || strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
		return "", errors.New("invalid local part")
	}
	if strings.HasPrefix(domain, "[") {
		if !strings.HasSuffix(domain, "]") {
			return "", errors.New("unterminated address literal")
		}
		lit := domain[1 : len(domain)-1]
		if v6, ok := strings.CutPrefix(lit, "IPv6:"); ok {
			if a, err := netip.ParseAddr(v6); err != nil || !a.Is6() {
				return "", errors.New("invalid IPv6 address literal")
			}
		} else if a, err := netip.ParseAddr(lit); err != nil || !a.Is4() {
			return "", errors.New("invalid address literal")
		}
		return domain, nil
	}
	if len(domain) > 253 {
		return "", errors.New("domain longer than 253 octets")
	}
	for label := range strings.SplitSeq(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("invalid domain label %q", label)
		}
		for _, c := range label {
			if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80) {
				return "", fmt.Errorf("invalid character %q in domain", c)
			}
		}
	}
	return strings.ToLower(domain), nil
}
