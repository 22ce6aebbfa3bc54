package queue

import (
	"context"
	"time"

	"github.com/mtakit/mta/ratelimit"
)

// Limiter is the rate-limit hook the scheduler consults before every
// delivery attempt, with the destination's key (recipient domain, MX site
// once known, the message's SourcePool as Source, and its Tenant). The
// ratelimit package implements it.
//
// Reserve returns wait == 0 when the attempt may go ahead now; the queue
// then calls release exactly once when the attempt has ended (release may
// be nil when there is nothing to release). A wait > 0 refuses the attempt:
// nothing was taken, release is ignored, and the queue puts the delivery
// back to be tried no earlier than wait from now, skipping that domain in
// the meantime, while other destinations proceed. An error is treated like
// a refusal of 30 seconds and logged.
//
// Reserve must not block for long: the scheduler's worker waits on it.
type Limiter interface {
	Reserve(ctx context.Context, key ratelimit.Key) (wait time.Duration, release func(), err error)
}

// LimiterFunc adapts a function to the Limiter interface.
type LimiterFunc func(ctx context.Context, key ratelimit.Key) (time.Duration, func(), error)

// Reserve calls f(ctx, key).
func (f LimiterFunc) Reserve(ctx context.Context, key ratelimit.Key) (time.Duration, func(), error) {
	return f(ctx, key)
}

var _ Limiter = LimiterFunc(nil)

// LimiterFeedback is an optional extension of a Limiter: after every
// attempt the queue reports each recipient's reply (with the bounce
// category) so that the limiter can slow down on throttling replies.
// Feedback must return quickly.
type LimiterFeedback interface {
	Feedback(key ratelimit.Key, o ratelimit.Outcome)
}
