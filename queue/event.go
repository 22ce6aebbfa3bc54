package queue

import (
	"time"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
)

// The queue reports every state change as an [event.Event] to
// Config.Events. The types it emits, and the fields each carries beyond
// MessageID, Time, Tenant, Tags and Metadata:
//
//   - event.Queued: a message was accepted (Recipient empty; DSN set when
//     the message is a DSN the queue made, to its own ID).
//   - event.Attempt: a delivery attempt to a domain starts (Domain, Attempt).
//   - event.Delivered: a recipient was accepted (Recipient, Domain, Attempt,
//     Reply, route fields, Latency since the message was queued).
//   - event.Deferred: a recipient failed transiently (as Delivered, plus
//     the classification and NextAttempt; Latency is the attempt's).
//   - event.Bounced: a recipient failed permanently (classification; DSN
//     names the DSN made for it, if any).
//   - event.Expired: a recipient was still failing when the message's
//     lifetime ended.
//   - event.Suppressed: a recipient was on the suppression list at enqueue
//     (Recipient, Domain, Reply is the local 550 5.7.1 refusal).
//   - event.Held, event.Released, event.Deleted: operator actions
//     (Recipient empty).
//   - event.Throttled: the Limiter refused an attempt (Domain, Attempt,
//     NextAttempt).
//
// Events has the ID left empty: an [event.Fanout] stamps it.

func (q *Queue) emit(e event.Event) {
	if q.cfg.Events != nil {
		q.cfg.Events.Emit(e)
	}
}

func (q *Queue) msgEvent(t event.Type, m *Message, now time.Time) event.Event {
	return event.Event{Type: t, Time: now, MessageID: m.ID, Tenant: m.Tenant, Tags: m.Tags, Metadata: m.Metadata}
}

// setRoute copies where an attempt went into e.
func setRoute(e *event.Event, r deliver.Route) {
	e.Site, e.MXHost, e.MXAddr, e.SourceIP = r.Site, r.Host, r.Addr, r.Source
	e.TLSPolicy, e.TLSFailure = r.TLSPolicy, r.TLSFailure
	if r.TLS != nil {
		e.TLS = &event.TLS{Version: r.TLS.Version, Cipher: r.TLS.CipherSuite, Verified: r.TLS.Verified}
	}
}

// setClass copies a failure's bounce classification into e.
func setClass(e *event.Event, c bounce.Classification) {
	e.Permanent, e.Category, e.BadAddress = c.Permanent, string(c.Category), c.BadAddress
}

// gate marks id as being enqueued until the returned function is called
// (after its queued event was emitted).
func (q *Queue) gate(id string) func() {
	ch := make(chan struct{})
	q.enqueuing.Store(id, ch)
	return func() {
		q.enqueuing.Delete(id)
		close(ch)
	}
}

// waitGate waits until the Enqueue of id, if one is in flight in this
// process, has emitted its queued event.
func (q *Queue) waitGate(id string) {
	if ch, ok := q.enqueuing.Load(id); ok {
		<-ch.(chan struct{})
	}
}
