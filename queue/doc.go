// Package queue is the mail queue: messages, the [Store] interface that
// keeps them, and the [Queue] that validates, enqueues, schedules, delivers
// through a [deliver.Transport], retries with back-off, expires, bounces with
// RFC 3464 DSNs and lets operators inspect and control what is queued.
//
// # Messages and deliveries
//
// Enqueue splits a message's recipients by domain into deliveries, one per
// recipient domain, that share one stored body. A [Delivery] is the unit
// that is claimed, leased, attempted and rescheduled; each recipient inside
// it has its own state (pending, delivered, failed, suppressed) and is done
// once. A message is done, and removed from the store, when every recipient
// is. Because a delivery has a single destination, the scheduler can cap
// concurrency per destination and skip busy or throttled ones when it
// claims, so a slow or dead domain never occupies the workers; and one
// attempt is one SMTP transaction per domain per message.
//
// # Scheduling
//
// Workers claim ready deliveries by priority (two lanes, transactional
// Priority > 0 before bulk, with a guaranteed share for bulk, see
// Config.BulkShare), then due time. Before each attempt the [Limiter] is
// asked; a refused destination is put back for the wait it named and
// skipped meanwhile. An attempt runs under Config.AttemptTimeout; a
// transport that panics, hangs past it or breaks the [deliver.Check]
// contract counts as a transient failure of that attempt.
//
// # Retries, expiry and DSNs
//
// Transient failures are retried after RetryMin·2^(n-1) plus up to 25%
// jitter, capped at RetryMax (5 minutes and 4 hours by default). Whether a
// failure is permanent is decided by bounce.Classify, so that, for example, a
// 552 5.2.2 mailbox-full reply is retried although it is a 5xx. A message
// still failing when its lifetime ends (5 days by default, as Postfix's
// maximal_queue_lifetime) fails with status 4.4.7; the last retry is
// scheduled at the end of the lifetime.
//
// Failures, and successes or delays when NOTIFY asks (RFC 3461 §4.1), are
// reported to the envelope sender in one RFC 3464 DSN per delivery attempt
// (so per recipient domain, not per recipient), enqueued as a new message
// with the null sender. No DSN is sent for a message with the null sender,
// so never a DSN about a DSN. RET=FULL returns the message with failure
// reports, headers otherwise. An optional delay warning (action delayed)
// goes out once per delivery after Config.DelayWarning.
//
// # Stores
//
// The [Store] documents its guarantees method by method: durable before
// return, leases with expiry judged by the caller's clock, no delivery
// claimed by two live workers, per-recipient updates atomic with the
// reschedule. Stores in this module: queue/memstore (memory), the embedded
// durable default, and PostgreSQL. queue/queuetest is the conformance suite
// every store runs.
//
// Delivery is at least once: after a crash, a delivery whose outcome was not
// recorded is tried again when its lease expires.
package queue
