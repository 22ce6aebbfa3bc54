package ratelimit_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/ratelimit/limittest"
)

func TestDefaultBackoffMatches(t *testing.T) {
	cases := []struct {
		o    ratelimit.Outcome
		rule string // empty: no back-off
	}{
		{ratelimit.Outcome{Code: 421, Enhanced: [3]int{4, 7, 28}, Text: "[192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited."}, "gmail-unusual-rate"},
		{ratelimit.Outcome{Code: 451, Enhanced: [3]int{4, 7, 650}, Text: "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation. (S775)"}, "microsoft-rate-limited"},
		{ratelimit.Outcome{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints"}, "yahoo-tss04"},
		{ratelimit.Outcome{Code: 421, Text: "Too many connections from your host"}, "too-many-connections"},
		{ratelimit.Outcome{Code: 550, Enhanced: [3]int{5, 7, 1}, Category: "reputation", Text: "Client host blocked using a DNS blocklist"}, "reputation"},
		{ratelimit.Outcome{Code: 450, Category: "rate_limited", Text: "slow down"}, "rate-limited"},
		{ratelimit.Outcome{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Try again later, closing connection."}, "throttled-4.7"},
		{ratelimit.Outcome{Code: 452, Enhanced: [3]int{4, 2, 2}, Category: "mailbox_full", Text: "Mailbox full"}, ""},
		{ratelimit.Outcome{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "No such user"}, ""},
		{ratelimit.Outcome{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "Temporary local problem, rate of errors high"}, ""},
	}
	for _, c := range cases {
		t.Run(c.o.Text, func(t *testing.T) {
			clk := limittest.NewClock(t0)
			l := newLimiter(t, "", clk, nil)
			st, err := l.Feedback(context.Background(), ratelimit.Key{Site: "provider.test", Source: "192.0.2.1"}, c.o)
			if err != nil {
				t.Fatal(err)
			}
			if st.Rule != c.rule || st.Active() != (c.rule != "") {
				t.Fatalf("rule %q (active %v), want %q", st.Rule, st.Active(), c.rule)
			}
		})
	}
}

func TestBackoffEngagesAndRecovers(t *testing.T) {
	ctx := context.Background()
	clk := limittest.NewClock(t0)
	l := newLimiter(t, `
limit per=site,source rate=10/s connections=10
backoff name=slow text="slow down" factor=0.5 connections=2 recover-after=3 recover-period=1m recover-step=2
backoff name=stop category=rate_limited text=TSS04 suspend=10m
options min-factor=0.1
`, clk, nil)
	k := ratelimit.Key{Site: "yahoo.test", Source: "192.0.2.1"}
	other := ratelimit.Key{Site: "yahoo.test", Source: "192.0.2.2"}
	throttled := ratelimit.Outcome{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Please slow down"}
	ok := ratelimit.Outcome{Code: 250, Text: "queued"}

	// spacing reserves two units and returns the second one's delay.
	spacing := func(k ratelimit.Key) time.Duration {
		t.Helper()
		clk.Advance(time.Hour) // let the bucket drain
		r1, err := l.Reserve(ctx, k, 1)
		if err != nil || !r1.OK {
			t.Fatalf("reserve: %v %v", r1, err)
		}
		r2, err := l.Reserve(ctx, k, 1)
		if err != nil || !r2.OK {
			t.Fatalf("reserve: %v %v", r2, err)
		}
		return r2.Delay - r1.Delay
	}
	if d := spacing(k); d != 100*time.Millisecond {
		t.Fatalf("spacing before back-off %v", d)
	}
	// Unrelated failures change nothing.
	if st, _ := l.Feedback(ctx, k, ratelimit.Outcome{Code: 550, Text: "no such user"}); st.Active() {
		t.Fatalf("unmatched failure engaged back-off: %+v", st)
	}
	st, err := l.Feedback(ctx, k, throttled)
	if err != nil || st.Factor != 0.5 || st.MaxConnections != 2 || st.Rule != "slow" {
		t.Fatalf("after throttling reply: %+v %v", st, err)
	}
	// Second reply within the hold-down: no further reduction.
	if st, _ := l.Feedback(ctx, k, throttled); st.Factor != 0.5 {
		t.Fatalf("reduced again within hold-down: %+v", st)
	}
	// The rate is halved for this source only; connections capped at 2.
	// (spacing advances the clock an hour: that is a clean hour, so test
	// connections first.)
	var leases []*ratelimit.Lease
	for i := 0; i < 2; i++ {
		le, err := l.TryAcquire(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, le)
	}
	if _, err := l.TryAcquire(ctx, k); !errors.Is(err, ratelimit.ErrBusy) {
		t.Fatalf("third connection while capped: %v", err)
	}
	for _, le := range leases {
		le.Release(ctx)
	}
	r1, _ := l.Reserve(ctx, k, 1)
	r2, _ := l.Reserve(ctx, k, 1)
	if d := r2.Delay - r1.Delay; d != 200*time.Millisecond {
		t.Fatalf("spacing while backed off %v, want 200ms", d)
	}
	if d := spacing(other); d != 100*time.Millisecond {
		t.Fatalf("other source slowed down: %v", d)
	}
	// Recovery by successes: 3 successes step ×2, back to normal.
	for i := 0; i < 3; i++ {
		st, _ = l.Feedback(ctx, k, ok)
	}
	if st.Active() || l.Status(k).Active() {
		t.Fatalf("not recovered after 3 successes: %+v", st)
	}

	// Recovery by time: reduce twice (beyond the hold-down), to 0.25.
	l.Feedback(ctx, k, throttled)
	clk.Advance(31 * time.Second)
	if st, _ = l.Feedback(ctx, k, throttled); st.Factor != 0.25 {
		t.Fatalf("second reduction: %+v", st)
	}
	clk.Advance(59 * time.Second)
	if st = l.Status(k); st.Factor != 0.25 {
		t.Fatalf("stepped up before a clean period: %+v", st)
	}
	clk.Advance(time.Second)
	if st = l.Status(k); st.Factor != 0.5 || st.MaxConnections != 2 {
		t.Fatalf("after one clean period: %+v", st)
	}
	clk.Advance(time.Minute)
	if st = l.Status(k); st.Active() {
		t.Fatalf("after two clean periods: %+v", st)
	}
	// The floor: many reductions never go below min-factor.
	for i := 0; i < 10; i++ {
		st, _ = l.Feedback(ctx, k, throttled)
		clk.Advance(31 * time.Second)
	}
	if st.Factor != 0.1 {
		t.Fatalf("factor %v, want the 0.1 floor", st.Factor)
	}

	// Suspension.
	if st, _ = l.Feedback(ctx, other, ratelimit.Outcome{Code: 421, Category: "rate_limited", Text: "[TSS04] deferred"}); st.SuspendedUntil != clk.Now().Add(10*time.Minute) {
		t.Fatalf("suspension: %+v", st)
	}
	r, err := l.Reserve(ctx, other, 1)
	if err != nil || r.OK || r.Reason != ratelimit.ReasonSuspended || r.Delay != 10*time.Minute {
		t.Fatalf("reserve while suspended: %+v %v", r, err)
	}
	if _, err := l.TryAcquire(ctx, other); !errors.Is(err, ratelimit.ErrSuspended) {
		t.Fatalf("acquire while suspended: %v", err)
	}
	clk.Advance(10 * time.Minute)
	if r, _ := l.Reserve(ctx, other, 1); !r.OK {
		t.Fatalf("reserve after suspension: %+v", r)
	}
	// A suspension-only rule recovers after the suspension plus one
	// period (nothing else to step up).
	clk.Advance(5 * time.Minute)
	if st := l.Status(other); st.Active() {
		t.Fatalf("suspension state not cleared: %+v", st)
	}
}

func TestBackoffStatesAreSwept(t *testing.T) {
	ctx := context.Background()
	clk := limittest.NewClock(t0)
	l := newLimiter(t, "backoff name=s text=slow factor=0.5 recover-period=1m recover-step=2", clk, nil)
	slow := ratelimit.Outcome{Code: 421, Text: "slow"}
	// Many destinations back off once and are never seen again.
	for i := 0; i < 3000; i++ {
		if i%1000 == 0 {
			clk.Advance(time.Hour) // everything earlier has recovered
		}
		l.Feedback(ctx, ratelimit.Key{Site: "s" + strconv.Itoa(i) + ".test"}, slow)
	}
	if n := ratelimit.BackoffStates(l); n > 2100 {
		t.Fatalf("%d back-off states kept; recovered ones are not swept", n)
	}
}
