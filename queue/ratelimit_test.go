package queue_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/ratelimit"
)

func newRateLimits(t *testing.T, policy string) *ratelimit.Limiter {
	t.Helper()
	p, err := ratelimit.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ratelimit.New(ratelimit.Config{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestRateLimitsEndToEnd runs the queue with a real ratelimit.Limiter on the
// real clock: 1,000 messages to a destination limited to 100 messages/s and
// 1,000 to an unlimited one. The limited one is paced (never more than rate
// plus burst in any one-second window) and the other is not held up by it.
func TestRateLimitsEndToEnd(t *testing.T) {
	const n, rate = 1000, 100
	l := newRateLimits(t, "limit domain=slow.test rate=100/s burst=1\nbackoff off")
	var mu sync.Mutex
	times := map[string][]time.Time{}
	tr := &sink{fn: func(ctx context.Context, env *deliver.Envelope, body []byte) []deliver.Result {
		mu.Lock()
		times[deliver.Domain(env.Recipients[0].Address)] = append(times[deliver.Domain(env.Recipients[0].Address)], time.Now())
		mu.Unlock()
		return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
	}}
	h := newHarness(t, queue.Config{Transport: tr, Now: time.Now, Workers: 8,
		Limiter: &queue.RateLimits{Limiter: l}})
	for range n {
		h.enqueue("s@sender.test", "r@slow.test")
		h.enqueue("s@sender.test", "r@fast.test")
	}
	h.waitFor("delivered", 2*n, isType(event.Delivered, ""))
	mu.Lock()
	defer mu.Unlock()
	slow, fast := times["slow.test"], times["fast.test"]
	if len(slow) != n || len(fast) != n {
		t.Fatalf("delivered %d to slow.test and %d to fast.test, want %d each", len(slow), len(fast), n)
	}
	// The limiter books message k at k/rate exactly; the transport sees it
	// a little later, by however long the worker took to be scheduled, so
	// a window may hold a few more than rate+burst deliveries when an early
	// one was late. Over the whole run the pace is exact.
	const jitter = 5
	for i := range slow {
		j := i
		for j < len(slow) && slow[j].Sub(slow[i]) < time.Second {
			j++
		}
		if j-i > rate+1+jitter {
			t.Fatalf("%d messages to slow.test within one second from message %d; the limit is %d/s with burst 1", j-i, i, rate)
		}
	}
	if span, want := slow[n-1].Sub(slow[0]), time.Duration(n-2)*time.Second/rate; span < want {
		t.Errorf("slow.test received %d messages in %v, faster than %d/s allows (%v)", n, span, rate, want)
	}
	// slow.test needs about n/rate = 10 s; fast.test must be done while
	// slow.test is far from done.
	lastFast := fast[len(fast)-1]
	before := 0
	for _, at := range slow {
		if at.Before(lastFast) {
			before++
		}
	}
	if before > n/2 {
		t.Errorf("fast.test finished only after %d of %d slow.test deliveries: the limited destination held it up", before, n)
	}
	t.Logf("slow.test: %d in %v; fast.test: %d in %v (while slow.test had %d)",
		n, slow[n-1].Sub(slow[0]).Round(time.Millisecond), n, fast[n-1].Sub(fast[0]).Round(time.Millisecond), before)
}

// TestRateLimitsBackoff: a throttling reply (421 4.7.28, Gmail's rate
// limit) makes the limiter suspend the destination, and the queue throttles
// the next attempt instead of trying it at once.
func TestRateLimitsBackoff(t *testing.T) {
	l := newRateLimits(t, "limit domain=slow.test rate=1000/s")
	var mu sync.Mutex
	replied := 0
	tr := &sink{fn: func(ctx context.Context, env *deliver.Envelope, body []byte) []deliver.Result {
		mu.Lock()
		defer mu.Unlock()
		replied++
		if replied == 1 {
			return replyAll(env, 421, smtp.EnhancedCode{4, 7, 28}, "Our system has detected an unusual rate of unsolicited mail originating from your IP address.")
		}
		return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
	}}
	h := newHarness(t, queue.Config{Transport: tr, Now: time.Now, Workers: 1,
		Limiter: &queue.RateLimits{Limiter: l}, RetryMin: time.Millisecond, RetryMax: time.Millisecond})
	id := h.enqueue("s@sender.test", "r@slow.test")
	h.waitFor("deferred", 1, isType(event.Deferred, id))
	st := l.Status(ratelimit.Key{Domain: "slow.test"})
	if st.SuspendedUntil.IsZero() {
		t.Fatalf("the limiter did not suspend slow.test after a 421 4.7.28: %+v", st)
	}
	th := h.waitFor("throttled", 1, isType(event.Throttled, id))[0]
	if th.NextAttempt.Before(st.SuspendedUntil.Add(-time.Second)) {
		t.Errorf("throttled until %v, before the suspension ends at %v", th.NextAttempt, st.SuspendedUntil)
	}
}

// TestRateLimitsWithoutLimiter: a RateLimits without its Limiter is a
// configuration error reported by Reserve, not a panic.
func TestRateLimitsWithoutLimiter(t *testing.T) {
	wait, release, err := (&queue.RateLimits{}).Reserve(context.Background(), ratelimit.Key{Domain: "a.test"})
	if err == nil || release != nil || wait != 0 {
		t.Fatalf("Reserve = %v, %v, %v; want an error", wait, release != nil, err)
	}
	(&queue.RateLimits{}).Feedback(ratelimit.Key{Domain: "a.test"}, ratelimit.Outcome{Code: 250})
}
