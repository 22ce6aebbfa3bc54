package ratelimit_test

import (
	"container/heap"
	"context"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/ratelimit/limittest"
)

// event is a destination's next action in the scheduler below.
type event struct {
	at     time.Time
	dest   int
	booked bool // the reservation for the next message is already made
}

type events []event

func (e events) Len() int { return len(e) }
func (e events) Less(i, j int) bool {
	if !e[i].at.Equal(e[j].at) {
		return e[i].at.Before(e[j].at)
	}
	return e[i].dest < e[j].dest
}
func (e events) Swap(i, j int) { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)   { *e = append(*e, x.(event)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

// schedule is a small scheduler on a controlled clock: each destination
// reserves its next message and, when told to wait, sleeps exactly the
// reported delay (an event at that time) while the other destinations go
// on. It returns the delivery times per destination.
//
// reply, if not nil, gives the receiver's answer to each message, which is
// reported to the limiter with Feedback.
func schedule(t *testing.T, l *ratelimit.Limiter, clk *limittest.Clock, keys []ratelimit.Key, perDest int,
	reply func(dest, i int) ratelimit.Outcome) [][]time.Time {
	t.Helper()
	ctx := context.Background()
	sent := make([][]time.Time, len(keys))
	h := &events{}
	for i := range keys {
		heap.Push(h, event{at: clk.Now(), dest: i})
	}
	for h.Len() > 0 {
		ev := heap.Pop(h).(event)
		if ev.at.Before(clk.Now()) {
			t.Fatalf("event in the past")
		}
		clk.Set(ev.at) // sleeping until the event
		if !ev.booked {
			r, err := l.Reserve(ctx, keys[ev.dest], 1)
			if err != nil {
				t.Fatal(err)
			}
			if !r.OK {
				heap.Push(h, event{at: clk.Now().Add(r.Delay), dest: ev.dest})
				continue
			}
			if r.Delay > 0 {
				heap.Push(h, event{at: r.At, dest: ev.dest, booked: true})
				continue
			}
		}
		sent[ev.dest] = append(sent[ev.dest], clk.Now()) // deliver
		if reply != nil {
			if _, err := l.Feedback(ctx, keys[ev.dest], reply(ev.dest, len(sent[ev.dest])-1)); err != nil {
				t.Fatal(err)
			}
		}
		if len(sent[ev.dest]) < perDest {
			heap.Push(h, event{at: clk.Now(), dest: ev.dest})
		}
	}
	return sent
}

func TestEndToEndThrottledAndFree(t *testing.T) {
	clk := limittest.NewClock(t0)
	l := newLimiter(t, `
limit site=slow.test per=source rate=5/s
backoff off
`, clk, nil)
	keys := []ratelimit.Key{
		{Domain: "slow.test", Source: "192.0.2.1"},
		{Domain: "fast.test", Source: "192.0.2.1"},
	}
	sent := schedule(t, l, clk, keys, 1000, nil)
	slow, fast := sent[0], sent[1]
	if len(slow) != 1000 || len(fast) != 1000 {
		t.Fatalf("delivered %d and %d", len(slow), len(fast))
	}
	// The throttled destination is paced at exactly 5/s: message i at
	// i×200ms.
	for i, at := range slow {
		if want := t0.Add(time.Duration(i) * 200 * time.Millisecond); !at.Equal(want) {
			t.Fatalf("slow message %d at %v, want %v", i, at.Sub(t0), want.Sub(t0))
		}
	}
	// The free one goes at full speed, all at the start, not held up by
	// the throttled one.
	for i, at := range fast {
		if !at.Equal(t0) {
			t.Fatalf("fast message %d delayed to %v", i, at.Sub(t0))
		}
	}
	// Over any one-second window the throttled destination never exceeds
	// 5 + burst.
	for i := range slow {
		j := i
		for j < len(slow) && slow[j].Sub(slow[i]) < time.Second {
			j++
		}
		if j-i > 6 {
			t.Fatalf("%d messages within one second from %v", j-i, slow[i].Sub(t0))
		}
	}
}

func TestEndToEndBackoff(t *testing.T) {
	// The throttled site defers message 100 with Gmail's rate-limit reply
	// (default back-off: suspend 2m, rate ×0.5, recover ×1.25 per 20
	// successes); the other destination is unaffected.
	clk := limittest.NewClock(t0)
	l := newLimiter(t, "limit site=slow.test per=source rate=5/s", clk, nil)
	keys := []ratelimit.Key{
		{Domain: "slow.test", Source: "192.0.2.1"},
		{Domain: "fast.test", Source: "192.0.2.1"},
	}
	deferral := ratelimit.Outcome{Code: 421, Enhanced: [3]int{4, 7, 28},
		Text: "Our system has detected an unusual rate of unsolicited mail originating from your IP address."}
	sent := schedule(t, l, clk, keys, 300, func(dest, i int) ratelimit.Outcome {
		if dest == 0 && i == 100 {
			return deferral
		}
		return ratelimit.Outcome{Code: 250}
	})
	slow, fast := sent[0], sent[1]
	gap := func(i int) time.Duration { return slow[i].Sub(slow[i-1]) }
	for i := 1; i <= 100; i++ {
		if gap(i) != 200*time.Millisecond {
			t.Fatalf("before back-off: gap %d is %v", i, gap(i))
		}
	}
	// Suspended for two minutes after the deferral of message 100.
	if g := gap(101); g != 2*time.Minute {
		t.Fatalf("gap after the deferral %v, want the 2m suspension", g)
	}
	// Then half the rate, stepping back up by 1.25 every 20 successes
	// until the configured rate is reached again.
	if g := gap(103); g != 400*time.Millisecond {
		t.Fatalf("gap after the suspension %v, want 400ms (rate ×0.5)", g)
	}
	prev := gap(103)
	for i := 104; i < len(slow); i++ {
		g := gap(i)
		if g > prev {
			t.Fatalf("gap %d grew from %v to %v while recovering", i, prev, g)
		}
		prev = g
	}
	if g := gap(len(slow) - 1); g != 200*time.Millisecond {
		t.Fatalf("final gap %v, want the configured 200ms", g)
	}
	if st := l.Status(keys[0]); st.Active() {
		t.Fatalf("still backed off at the end: %+v", st)
	}
	for i, at := range fast {
		if !at.Equal(t0) {
			t.Fatalf("fast message %d delayed to %v", i, at.Sub(t0))
		}
	}
}
