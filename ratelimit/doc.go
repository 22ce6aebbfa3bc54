// Package ratelimit paces outgoing mail: rate limits and connection limits
// keyed by recipient domain, MX site, source IP and tenant, warm-up
// schedules for new source IPs, and back-off when receivers defer for rate
// or reputation. State lives in the process by default ([MemStore]) or in
// Redis (package redislimit) so that several nodes share one budget.
//
// The package imports nothing else of this module: callers describe a
// destination as a [Key] of plain strings and a reply as an [Outcome].
//
// # Keys, rules and precedence
//
// A [Key] names recipient domain, MX site (domains served by the same MX
// hosts share limits), source (IP or pool) and tenant. A [Rule] matches keys
// by any combination of these, keeps a separate budget per the dimensions
// it lists in Per, and limits the rate (GCRA with a burst), the number of
// concurrent connections and the messages per connection.
//
// Rules are grouped in layers. In each layer the most specific matching
// rule wins (most non-empty match fields, then the first listed); the
// winners of all layers apply together. So "limit site=gmail.com ..."
// replaces the default "limit per=site,source ..." for gmail.com's site,
// while "limit layer=tenant per=tenant ..." caps each tenant on top.
// Policies are Go values, JSON, or text ([ParsePolicy]).
//
// # Reservations
//
// [Limiter.Reserve] never waits: it books the units at the earliest time
// every applicable budget allows and tells the caller how long to sleep, so
// a scheduler can sleep exactly that long for one destination while the
// others go on. An unused reservation is given back with
// [Reservation.Cancel]. [Limiter.Allow] books only when no wait is needed;
// [Limiter.Wait] blocks. [Limiter.Acquire] and [Limiter.TryAcquire] take
// connection slots, returned by [Lease.Release]; [Lease.Message] counts
// messages per connection.
//
// The rate algorithm is GCRA (the generic cell rate algorithm from ATM
// traffic management, ITU-T I.371), described at [ReserveRequest]: over any
// window of length W a budget grants at most Burst + W·Rate units.
//
// # Back-off
//
// [Limiter.Feedback] receives each attempt's [Outcome]. Replies that match a
// [BackoffRule] (by bounce category, reply code, enhanced status code
// (RFC 3463 §3.8: x.7.x is security or policy), text or regular expression)
// slow the destination (by default one state per site and source): the rate
// is multiplied by a factor, connections are capped, or the destination is
// suspended. It recovers step by step after successes or clean periods.
// [DefaultBackoff] knows the throttling replies of Gmail, Microsoft and
// Yahoo. Back-off state is kept per Limiter (per node).
//
// # Warm-up
//
// A [WarmupPlan] caps what a new source sends per site per day, growing day
// by day ([DefaultWarmupSchedule]). Counters live in a [WarmupStore]:
// [FileWarmupStore] (fsynced append-only file, crash-safe, compacted) or
// Redis, so caps hold across restarts.
//
// # Time
//
// Config.Now is the clock for back-off, warm-up and the default MemStore;
// tests pass a controlled clock. Stores keep their own clock and report it
// with each decision (the Redis store uses the server's TIME so that nodes
// agree), and delays are relative to it.
package ratelimit
