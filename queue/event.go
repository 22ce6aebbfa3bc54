package queue

import (
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/deliver"
)

// EventType names what happened.
type EventType string

// The event types.
const (
	// EventQueued: a message was accepted (Recipient empty; DSN set for a
	// DSN made by the queue).
	EventQueued EventType = "queued"
	// EventAttempt: a delivery attempt to a domain starts (Recipient
	// empty, Domain and Attempt set).
	EventAttempt EventType = "attempt"
	// EventDelivered: a recipient was accepted.
	EventDelivered EventType = "delivered"
	// EventDeferred: a recipient failed transiently; NextAttempt says when
	// it is retried.
	EventDeferred EventType = "deferred"
	// EventBounced: a recipient failed permanently.
	EventBounced EventType = "bounced"
	// EventExpired: a recipient was still failing when the message's
	// lifetime ended; it failed.
	EventExpired EventType = "expired"
	// EventSuppressed: a recipient was on the suppression list at enqueue
	// and will not be tried.
	EventSuppressed EventType = "suppressed"
	// EventHeld, EventReleased, EventDeleted: operator actions on a
	// message (Recipient empty).
	EventHeld     EventType = "held"
	EventReleased EventType = "released"
	EventDeleted  EventType = "deleted"
	// EventThrottled: the Limiter refused an attempt; NextAttempt says
	// when the delivery becomes ready again.
	EventThrottled EventType = "throttled"
)

// Event is one state change. Tags and Metadata are shared between the
// events of one operation: observers must not modify them.
type Event struct {
	Type      EventType
	Time      time.Time
	MessageID string
	// Recipient is the address concerned, or "" for message-level events.
	Recipient string
	// Domain is the recipient domain of the delivery concerned.
	Domain string
	// Attempt is the attempt number (1 for the first).
	Attempt  int
	Tenant   string
	Tags     []string
	Metadata map[string]string
	// Reply is the reply that decided the outcome.
	Reply *smtp.SMTPError
	// Route says where the attempt went.
	Route deliver.Route
	// Classification is the bounce verdict on Reply (failures only).
	Classification bounce.Classification
	// NextAttempt is when a deferred or throttled delivery is retried.
	NextAttempt time.Time
	// Latency is the attempt's duration for attempt outcomes, or the time
	// since enqueue for delivered.
	Latency time.Duration
	// DSN is the ID of the DSN message the queue enqueued for this
	// outcome, if any.
	DSN string
}

// Observer receives events. Observe is called synchronously from the
// queue's goroutines, possibly concurrently: it must be safe for concurrent
// use and fast (hand the event to a buffered channel or a sink that does
// its own I/O elsewhere); a slow observer slows delivery.
type Observer interface {
	Observe(Event)
}

// ObserverFunc adapts a function to the Observer interface.
type ObserverFunc func(Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }

var _ Observer = ObserverFunc(nil)

func (q *Queue) emit(e Event) {
	if q.cfg.Observer != nil {
		q.cfg.Observer.Observe(e)
	}
}

func (q *Queue) msgEvent(t EventType, m *Message, now time.Time) Event {
	return Event{Type: t, Time: now, MessageID: m.ID, Tenant: m.Tenant, Tags: m.Tags, Metadata: m.Metadata}
}
