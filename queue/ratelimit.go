package queue

import (
	"context"
	"errors"
	"time"

	"github.com/mtakit/mta/ratelimit"
)

// RateLimits adapts a [ratelimit.Limiter] to the queue's [Limiter] hook,
// with [LimiterFeedback], so that Config.Limiter applies its policy:
//
//   - before each attempt it takes a connection slot (the policy's
//     concurrency limits) and books one message against every rate,
//     back-off factor and warm-up cap that applies to the key;
//   - a booking due within MaxSleep is waited for in place (pacing a
//     destination at, say, 5 messages/s costs no store round trip; the
//     worker waits, so at most Config.DestinationConcurrency workers wait
//     on one destination); a later one is given back and the delivery is
//     put back until then, so that the worker serves other destinations
//     meanwhile;
//   - a busy destination (no free slot) is tried again after BusyRetry;
//     a suspended one (back-off after a throttling reply) when the
//     suspension ends;
//   - every recipient's reply is reported to the limiter's back-off.
type RateLimits struct {
	Limiter *ratelimit.Limiter
	// MaxSleep is the longest wait for a booking done inside Reserve.
	// Zero means 1 second.
	MaxSleep time.Duration
	// BusyRetry is when a destination without a free connection slot is
	// tried again. Zero means 250 ms.
	BusyRetry time.Duration
	// Now is the limiter's clock (ratelimit.Config.Now). Nil: time.Now.
	Now func() time.Time
}

var (
	_ Limiter         = (*RateLimits)(nil)
	_ LimiterFeedback = (*RateLimits)(nil)
)

// Reserve implements [Limiter].
func (r *RateLimits) Reserve(ctx context.Context, key ratelimit.Key) (time.Duration, func(), error) {
	maxSleep, busy := r.MaxSleep, r.BusyRetry
	if maxSleep <= 0 {
		maxSleep = time.Second
	}
	if busy <= 0 {
		busy = 250 * time.Millisecond
	}
	if r.Limiter == nil {
		return 0, nil, errors.New("queue: RateLimits without a Limiter")
	}
	lease, err := r.Limiter.TryAcquire(ctx, key)
	switch {
	case errors.Is(err, ratelimit.ErrBusy):
		return busy, nil, nil
	case errors.Is(err, ratelimit.ErrSuspended):
		if until := r.Limiter.Status(key).SuspendedUntil; !until.IsZero() {
			now := time.Now
			if r.Now != nil {
				now = r.Now
			}
			return max(until.Sub(now()), busy), nil, nil
		}
		return busy, nil, nil
	case err != nil:
		return 0, nil, err
	}
	release := func() { _ = lease.Release(context.WithoutCancel(ctx)) }
	res, err := r.Limiter.Reserve(ctx, key, 1)
	if err != nil {
		release()
		return 0, nil, err
	}
	if !res.OK {
		release()
		return max(res.Delay, time.Millisecond), nil, nil
	}
	if res.Delay > 0 {
		if res.Delay > maxSleep {
			_ = res.Cancel(ctx)
			release()
			return res.Delay, nil, nil
		}
		t := time.NewTimer(res.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			_ = res.Cancel(context.WithoutCancel(ctx))
			release()
			return 0, nil, ctx.Err()
		}
	}
	return 0, release, nil
}

// Feedback implements [LimiterFeedback].
func (r *RateLimits) Feedback(key ratelimit.Key, o ratelimit.Outcome) {
	if r.Limiter != nil {
		_, _ = r.Limiter.Feedback(context.Background(), key, o)
	}
}
