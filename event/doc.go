// Package event is the one typed stream of the MTA's state changes
// (queued, attempt, delivered, deferred, bounced, expired, suppressed,
// held, released, deleted, throttled, complaint, async_bounce) and the sinks
// that consume it: structured logs ([LogSink]), signed webhooks with a
// durable outbox ([Webhook]) and, in the subpackage event/prom, Prometheus
// metrics. A [Fanout] composes sinks so that a slow one never delays mail
// delivery.
//
// The package imports nothing else of the module: the queue converts its
// routes and bounce classifications into the plain fields of [Event].
//
// # JSON encoding
//
// The wire format is stable: fields are only ever added. Names are
// snake_case; empty fields are omitted except id, type and time. Times are
// RFC 3339 in UTC with milliseconds ("2026-11-23T16:38:14.123Z"), the
// duration is integer milliseconds.
//
//	id             string   event ID, 26 chars, sortable (ULID layout; see IDSource)
//	type           string   one of the Type constants, e.g. "delivered"
//	time           string   when it happened
//	message_id     string   the queue's message ID
//	recipient      string   envelope recipient; absent for message-level events
//	domain         string   recipient domain of the delivery
//	attempt        number   attempt number, 1 for the first
//	tenant         string   tenant of the message
//	tags           [string] tags of the message
//	metadata       object   string-to-string metadata of the message
//	site           string   destination site (recipient domains sharing MX hosts)
//	mx_host        string   remote host name used (MX or smarthost)
//	mx_addr        string   remote address and port, "192.0.2.1:25" or "[2001:db8::1]:25"
//	source_ip      string   local address the connection came from
//	tls            object   {"version": "TLS 1.3", "cipher": "...", "verified": true}; absent without TLS
//	tls_policy     string   TLS policy that applied: opportunistic, none, tls, mta-sts, mta-sts-testing, dane
//	tls_failure    string   why the policy was not met (RFC 8460 result type)
//	reply          object   {"code": 550, "enhanced": "5.1.1", "text": "..."}; enhanced absent when the server gave none
//	permanent      bool     the failure is permanent
//	category       string   bounce category, e.g. "bad_mailbox", "mailbox_full"
//	bad_address    bool     the address itself is bad (suppress it)
//	next_attempt   string   when a deferred or throttled delivery is tried again
//	latency_ms     number   attempt duration, or time since queued for delivered
//	dsn_id         string   ID of the DSN message made for this outcome
//	feedback_type  string   ARF feedback type of a complaint (RFC 5965 section 7.3)
//	reporter       string   who sent the complaint
//
// # Webhooks
//
// Each request is a POST of a JSON array of events with the headers
//
//	Content-Type:        application/json
//	Mta-Signature:       t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
//	Mta-Event-Batch-Id:  <32 hex digits, the same on every retry of the batch>
//
// A receiver checks the signature with [Verify] over the raw body before
// parsing it, answers 2xx once the events are stored, and ignores event IDs
// it has already processed: delivery is at least once, in order per
// endpoint. See [Webhook] for retries and the outbox.
package event
