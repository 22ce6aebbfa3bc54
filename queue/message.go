package queue

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Priority orders deliveries: a higher number is served first. The scheduler
// keeps two lanes, transactional (Priority > 0) and bulk (Priority <= 0), and
// serves the transactional lane first without starving bulk (see
// Config.BulkShare). Inside a lane, higher numbers still go first.
type Priority int

// The named priorities. Any int is valid; these are the usual lanes.
const (
	// PriorityBulk is for newsletters and other mail that can wait.
	PriorityBulk Priority = -10
	// PriorityNormal is the zero value: served in the bulk lane, ahead of
	// PriorityBulk.
	PriorityNormal Priority = 0
	// PriorityTransactional is for password resets, receipts and DSNs:
	// served in the transactional lane.
	PriorityTransactional Priority = 10
)

// Transactional reports whether p belongs to the transactional lane.
func (p Priority) Transactional() bool { return p > 0 }

// RecipientState is where one recipient stands. A recipient leaves
// RecipientPending once and never changes again (it is "done").
type RecipientState int

// The recipient states. Only RecipientPending is not final.
const (
	// RecipientPending: not yet delivered; will be (re)tried.
	RecipientPending RecipientState = iota
	// RecipientDelivered: a server accepted it (2xx).
	RecipientDelivered
	// RecipientFailed: permanently failed or expired; a DSN was sent
	// when NOTIFY asked for one.
	RecipientFailed
	// RecipientSuppressed: never tried, because the suppression list
	// matched the address at enqueue.
	RecipientSuppressed
)

var recipientStateNames = [...]string{"pending", "delivered", "failed", "suppressed"}

// String returns "pending", "delivered", "failed" or "suppressed".
func (s RecipientState) String() string {
	if s >= 0 && int(s) < len(recipientStateNames) {
		return recipientStateNames[s]
	}
	return "invalid"
}

// Final reports whether s is a final (done) state.
func (s RecipientState) Final() bool {
	return s == RecipientDelivered || s == RecipientFailed || s == RecipientSuppressed
}

// Valid reports whether s is one of the defined states.
func (s RecipientState) Valid() bool { return s >= RecipientPending && s <= RecipientSuppressed }

// DeliveryState is the state of a delivery as inspection sees it, derived
// from its fields by [Delivery.State].
type DeliveryState int

// The delivery states. The zero value, StateAny, is only meaningful in a
// [Filter], where it matches every state.
const (
	StateAny DeliveryState = iota
	// StateQueued: never attempted, waiting for its time (NextAttempt).
	StateQueued
	// StateDeferred: attempted at least once, waiting for its retry.
	StateDeferred
	// StateActive: leased by a worker right now.
	StateActive
	// StateHeld: held by an operator; never claimed until released.
	StateHeld
	// StateDone: every recipient is final. Done deliveries stay inside
	// their message until the whole message is done and removed.
	StateDone
)

var deliveryStateNames = [...]string{"any", "queued", "deferred", "active", "held", "done"}

// String returns the state's lower-case name.
func (s DeliveryState) String() string {
	if s >= 0 && int(s) < len(deliveryStateNames) {
		return deliveryStateNames[s]
	}
	return "invalid"
}

// Message is a queued message as the Store keeps it: the envelope, the
// routing attributes and one [Delivery] per recipient domain. The body is
// stored separately (see Store.OpenBody).
//
// Values handed to or returned by a Store are copies: neither side keeps or
// mutates the other's Message (Clone makes a deep copy).
type Message struct {
	// ID is the queue ID, unique in the store, made by the Queue (see
	// NewID). IDs made by one Queue sort by creation time.
	ID string

	// From is the reverse-path (MAIL FROM) without angle brackets; "" is
	// the null sender <> (DSNs).
	From string

	// Mail holds the MAIL FROM parameters (BODY, SMTPUTF8, RET, ENVID,
	// REQUIRETLS, AUTH).
	Mail smtp.MailOptions

	// Tenant and SourcePool are passed to the transport and the limiter.
	Tenant     string
	SourcePool string

	// Tags and Metadata are free labels that travel with every event.
	Tags     []string
	Metadata map[string]string

	// Priority orders deliveries (higher first).
	Priority Priority

	// Created is when the message was enqueued; NotBefore when its first
	// attempt may happen (scheduled sending; zero = at once); Expires when
	// its lifetime ends: past it, recipients still pending fail with a DSN.
	Created   time.Time
	NotBefore time.Time
	Expires   time.Time

	// Size is the body size in bytes. Store.Enqueue sets it in its own copy
	// from the bytes it read; the caller's value is ignored.
	Size int64

	// IdempotencyKey is the caller's key for idempotent enqueue, or "".
	IdempotencyKey string

	// IsDSN is true for a delivery status notification made by the queue.
	// The queue never sends a DSN about a message with IsDSN set (nor about
	// any message with the null sender).
	IsDSN bool

	// Deliveries are the scheduling units, one per recipient domain,
	// indexed by Delivery.Index (Deliveries[i].Index == i).
	Deliveries []Delivery
}

// Delivery is the part of a message that goes to one recipient domain. It is
// what workers claim, lease, attempt and reschedule: each delivery of a
// message moves on its own, so that a slow or dead domain never holds up the
// message's other domains, and the scheduler can keep per-destination limits.
type Delivery struct {
	// Index is the delivery's position in Message.Deliveries; with the
	// message ID it identifies the delivery.
	Index int

	// Domain is the recipients' domain, in lower case (an address literal
	// such as "[192.0.2.1]" is kept as written).
	Domain string

	// Recipients are this domain's recipients, in enqueue order.
	Recipients []Recipient

	// NextAttempt is the earliest time the delivery may be claimed.
	NextAttempt time.Time

	// Attempts counts completed attempts (Store.Complete calls);
	// LastAttempt is the time of the latest.
	Attempts    int
	LastAttempt time.Time

	// Held is set by an operator (Store.SetHeld): a held delivery is never
	// claimed.
	Held bool

	// Warned is set once a delay-warning DSN went out for this delivery.
	Warned bool

	// LeaseOwner and LeaseExpires describe the current lease, for
	// inspection; LeaseOwner is "" when the delivery was never leased or
	// the lease was completed or released. A lease whose LeaseExpires is not
	// after now is dead, whatever LeaseOwner says.
	LeaseOwner   string
	LeaseExpires time.Time
}

// Recipient is one recipient with its DSN parameters and its own state.
type Recipient struct {
	// Address is the forward-path without angle brackets.
	Address string

	// Options holds the RCPT TO parameters (NOTIFY, ORCPT).
	Options smtp.RcptOptions

	// State is pending until the recipient is done.
	State RecipientState

	// Attempts counts the attempts that reported on this recipient;
	// LastAttempt and LastReply describe the latest.
	Attempts    int
	LastAttempt time.Time
	LastReply   *smtp.SMTPError
}

// Done reports whether every recipient of d is final.
func (d *Delivery) Done() bool {
	for i := range d.Recipients {
		if !d.Recipients[i].State.Final() {
			return false
		}
	}
	return true
}

// State derives the delivery's state at time now: done, held, active (a live
// lease), deferred (attempted before) or queued, checked in that order.
// Stores use it to evaluate Filter.State.
func (d *Delivery) State(now time.Time) DeliveryState {
	switch {
	case d.Done():
		return StateDone
	case d.Held:
		return StateHeld
	case d.LeaseOwner != "" && d.LeaseExpires.After(now):
		return StateActive
	case d.Attempts > 0:
		return StateDeferred
	default:
		return StateQueued
	}
}

// Done reports whether every recipient of every delivery is final.
func (m *Message) Done() bool {
	for i := range m.Deliveries {
		if !m.Deliveries[i].Done() {
			return false
		}
	}
	return true
}

// Recipients returns the number of recipients over all deliveries.
func (m *Message) Recipients() int {
	n := 0
	for i := range m.Deliveries {
		n += len(m.Deliveries[i].Recipients)
	}
	return n
}

// Clone returns a deep copy of m: no slice, map or pointer is shared with m.
// Stores use it to keep and hand out private copies. Clone of nil is nil.
func (m *Message) Clone() *Message {
	if m == nil {
		return nil
	}
	c := *m
	c.Mail = cloneMailOptions(m.Mail)
	c.Tags = slices.Clone(m.Tags)
	c.Metadata = maps.Clone(m.Metadata)
	if m.Deliveries != nil {
		c.Deliveries = make([]Delivery, len(m.Deliveries))
		for i := range m.Deliveries {
			c.Deliveries[i] = *m.Deliveries[i].Clone()
		}
	}
	return &c
}

// Header returns a deep copy of m without its deliveries, as Store.Claim
// hands it out.
func (m *Message) Header() *Message {
	h := *m
	h.Deliveries = nil
	return h.Clone()
}

// Clone returns a deep copy of d. Clone of nil is nil.
func (d *Delivery) Clone() *Delivery {
	if d == nil {
		return nil
	}
	c := *d
	if d.Recipients != nil {
		c.Recipients = make([]Recipient, len(d.Recipients))
		for i := range d.Recipients {
			c.Recipients[i] = d.Recipients[i].clone()
		}
	}
	return &c
}

func (r Recipient) clone() Recipient {
	r.Options = cloneRcptOptions(r.Options)
	r.LastReply = CloneReply(r.LastReply)
	return r
}

// CloneReply returns a copy of an SMTP reply, or nil for nil.
func CloneReply(r *smtp.SMTPError) *smtp.SMTPError {
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

func cloneMailOptions(o smtp.MailOptions) smtp.MailOptions {
	if o.Auth != nil {
		a := *o.Auth
		o.Auth = &a
	}
	return o
}

func cloneRcptOptions(o smtp.RcptOptions) smtp.RcptOptions {
	o.Notify = slices.Clone(o.Notify)
	if o.DeliverBy != nil {
		d := *o.DeliverBy
		o.DeliverBy = &d
	}
	if o.MTPriority != nil {
		p := *o.MTPriority
		o.MTPriority = &p
	}
	return o
}

// Matches reports whether m matches f at time f.Now, with the rules given in
// the Filter documentation. Stores may use it to implement Store.List.
func (f *Filter) Matches(m *Message) bool {
	if f.Tenant != "" && m.Tenant != f.Tenant {
		return false
	}
	if !f.CreatedBefore.IsZero() && !m.Created.Before(f.CreatedBefore) {
		return false
	}
	if !f.CreatedAfter.IsZero() && !m.Created.After(f.CreatedAfter) {
		return false
	}
	if f.After != "" && m.ID <= f.After {
		return false
	}
	if f.Domain == "" && f.State == StateAny {
		return true
	}
	domain := strings.ToLower(f.Domain)
	for i := range m.Deliveries {
		d := &m.Deliveries[i]
		if domain != "" && d.Domain != domain {
			continue
		}
		if f.State != StateAny && d.State(f.Now) != f.State {
			continue
		}
		return true
	}
	return false
}
