package ratelimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/ratelimit/limittest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newLimiter(t *testing.T, policy string, clk *limittest.Clock, mod func(*ratelimit.Config)) *ratelimit.Limiter {
	t.Helper()
	p, err := ratelimit.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ratelimit.Config{Policy: p, Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	l, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestPrecedence(t *testing.T) {
	clk := limittest.NewClock(t0)
	l := newLimiter(t, `
limit name=default per=site,source rate=600/min burst=20 connections=10
limit name=gmail site=gmail.com per=source rate=3000/min burst=100 connections=20
limit name=gmail-ip site=gmail.com source=192.0.2.9 rate=10/min connections=1
limit name=gmail-first site=gmail.com tenant=acme rate=1/min
limit name=gmail-second site=gmail.com tenant=acme rate=2/min
limit name=internal domain=internal.test
limit name=tenant layer=tenant per=tenant rate=100000/h burst=1000
`, clk, nil)
	cases := []struct {
		name string
		key  ratelimit.Key
		want []string
	}{
		{"default", ratelimit.Key{Domain: "example.test", Source: "192.0.2.1"}, []string{"default", "tenant"}},
		{"site override", ratelimit.Key{Domain: "googlemail.com", Site: "GMAIL.com.", Source: "192.0.2.1"}, []string{"gmail", "tenant"}},
		{"more specific", ratelimit.Key{Domain: "gmail.com", Site: "gmail.com", Source: "192.0.2.9"}, []string{"gmail-ip", "tenant"}},
		{"tie: first listed", ratelimit.Key{Site: "gmail.com", Tenant: "acme"}, []string{"gmail-first", "tenant"}},
		{"site defaults to domain", ratelimit.Key{Domain: "gmail.com"}, []string{"gmail", "tenant"}},
		{"exemption", ratelimit.Key{Domain: "internal.test"}, []string{"internal", "tenant"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, r := range l.Rules(c.key) {
				got = append(got, r.Name)
			}
			if len(got) != len(c.want) {
				t.Fatalf("rules %v, want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("rules %v, want %v", got, c.want)
				}
			}
		})
	}
	// The override really replaces the default: 100 messages at once to
	// gmail.com's site (burst 100), where the default allows 20.
	ctx := context.Background()
	gk := ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.1"}
	for i := 0; i < 100; i++ {
		if ok, err := l.Allow(ctx, gk, 1); err != nil || !ok {
			t.Fatalf("gmail message %d: %v %v", i, ok, err)
		}
	}
	if ok, _ := l.Allow(ctx, gk, 1); ok {
		t.Fatal("gmail message 101 allowed at once with burst 100")
	}
	// Per source: another IP has its own budget.
	if ok, _ := l.Allow(ctx, ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.2"}, 1); !ok {
		t.Fatal("second source shares the first one's budget")
	}
	// The exempt domain is not limited by the default layer (the tenant
	// layer, 1,000 at once, still counts it).
	for i := 0; i < 800; i++ {
		if ok, _ := l.Allow(ctx, ratelimit.Key{Domain: "internal.test"}, 1); !ok {
			t.Fatalf("exempt domain limited at message %d", i)
		}
	}
}

func TestReserveDelaysAndCancel(t *testing.T) {
	ctx := context.Background()
	clk := limittest.NewClock(t0)
	l := newLimiter(t, "limit per=site rate=5/s burst=2\nbackoff off", clk, nil)
	k := ratelimit.Key{Domain: "slow.test"}
	var rs []*ratelimit.Reservation
	for i, want := range []time.Duration{0, 0, 200 * time.Millisecond, 400 * time.Millisecond} {
		r, err := l.Reserve(ctx, k, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK || r.Delay != want || !r.At.Equal(t0.Add(want)) {
			t.Fatalf("reservation %d: OK %v delay %v at %v, want %v", i, r.OK, r.Delay, r.At, want)
		}
		rs = append(rs, r)
	}
	if err := rs[3].Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rs[3].Cancel(ctx); err != nil { // twice: no effect
		t.Fatal(err)
	}
	r, _ := l.Reserve(ctx, k, 1)
	if r.Delay != 400*time.Millisecond {
		t.Fatalf("after cancel: delay %v, want 400ms", r.Delay)
	}
	if _, err := l.Reserve(ctx, k, 3); !errors.Is(err, ratelimit.ErrExceedsBurst) {
		t.Fatalf("3 units with burst 2: %v", err)
	}
	if _, err := l.Reserve(ctx, k, 0); !errors.Is(err, ratelimit.ErrInvalid) {
		t.Fatalf("0 units: %v", err)
	}
	// MaxDelay: a reservation beyond the horizon is not made.
	l2 := newLimiter(t, "limit rate=1/s\nbackoff off", clk, func(c *ratelimit.Config) { c.MaxDelay = 1500 * time.Millisecond })
	for i, ok := range []bool{true, true, false} {
		r, err := l2.Reserve(ctx, k, 1)
		if err != nil || r.OK != ok {
			t.Fatalf("horizon reservation %d: OK %v, want %v (%v)", i, r.OK, ok, err)
		}
		if !ok && (r.Reason != ratelimit.ReasonRate || r.Delay != 2*time.Second) {
			t.Fatalf("refusal: reason %q delay %v", r.Reason, r.Delay)
		}
	}
}

func TestWaitRealClock(t *testing.T) {
	// A real, short rate: Wait must return for every call and never let
	// more through than the limiter grants; no timing is asserted.
	l, err := ratelimit.New(ratelimit.Config{Policy: ratelimit.Policy{Rules: []ratelimit.Rule{
		{Rate: ratelimit.Rate{N: 1000, Per: time.Second}, Burst: 2},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := l.Wait(ctx, ratelimit.Key{Domain: "w.test"}, 1); err != nil {
			t.Fatal(err)
		}
	}
	// A cancelled context stops a long wait and gives the slot back.
	slow, err := ratelimit.New(ratelimit.Config{Policy: ratelimit.Policy{Rules: []ratelimit.Rule{
		{Rate: ratelimit.Rate{N: 1, Per: time.Hour}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	k := ratelimit.Key{Domain: "w.test"}
	if err := slow.Wait(ctx, k, 1); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := slow.Wait(cctx, k, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with cancelled ctx: %v", err)
	}
	r, _ := slow.Reserve(ctx, k, 1)
	if r.Delay < 59*time.Minute {
		t.Fatalf("delay after a cancelled Wait %v, want about 1h (slot given back)", r.Delay)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	ctx := context.Background()
	clk := limittest.NewClock(t0)
	l := newLimiter(t, "limit per=site,source connections=3 messages-per-connection=2", clk, nil)
	k := ratelimit.Key{Domain: "c.test", Source: "192.0.2.1"}
	var in, peak atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				le, err := l.Acquire(ctx, k)
				if err != nil {
					t.Error(err)
					return
				}
				v := in.Add(1)
				if v > 3 {
					t.Errorf("%d connections held, max 3", v)
				}
				for {
					p := peak.Load()
					if v <= p || peak.CompareAndSwap(p, v) {
						break
					}
				}
				in.Add(-1)
				if err := le.Release(ctx); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if peak.Load() < 1 {
		t.Fatal("nothing acquired")
	}
	// Messages per connection.
	le, err := l.TryAcquire(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if le.MaxMessages != 2 || !le.Message() || !le.Message() || le.Message() {
		t.Fatalf("messages per connection: max %d", le.MaxMessages)
	}
	var held []*ratelimit.Lease
	for i := 0; i < 2; i++ {
		h, err := l.TryAcquire(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
	}
	if _, err := l.TryAcquire(ctx, k); !errors.Is(err, ratelimit.ErrBusy) {
		t.Fatalf("fourth connection: %v, want ErrBusy", err)
	}
	// Another site is not affected.
	if h, err := l.TryAcquire(ctx, ratelimit.Key{Domain: "other.test", Source: "192.0.2.1"}); err != nil {
		t.Fatalf("other site: %v", err)
	} else {
		h.Release(ctx)
	}
	// A blocked Acquire is woken by a release (no timer involved: the
	// poll interval is an hour).
	lp := newLimiter(t, "limit connections=1", clk, func(c *ratelimit.Config) { c.PollInterval = time.Hour })
	first, err := lp.Acquire(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		le, err := lp.Acquire(ctx, k)
		if err == nil {
			err = le.Release(ctx)
		}
		got <- err
	}()
	first.Release(ctx)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	le.Release(ctx)
	for _, h := range held {
		h.Release(ctx)
	}
}
