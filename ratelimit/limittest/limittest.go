// Package limittest checks that a ratelimit.Store keeps the limiter's
// promises: the GCRA window bound over random request patterns, atomic
// multi-bucket reservations, cancellation, concurrency caps under
// concurrent clients, and (for stores with expiry) that a crashed holder's
// slots come back. Every Store implementation runs [Run] in its tests, the
// in-process MemStore and the Redis store alike.
//
// It also provides [Clock], a controllable clock for tests.
package limittest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
)

// Clock is a controllable clock. The zero value starts at the Unix epoch;
// use NewClock for another start. It is safe for concurrent use.
type Clock struct {
	ns atomic.Int64
}

// NewClock returns a Clock showing t.
func NewClock(t time.Time) *Clock {
	c := &Clock{}
	c.ns.Store(t.UnixNano())
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Opener prepares a fresh, empty store state for one test and returns a
// function that opens a client on it. Every client opened by one open
// function shares that state (MemStore: the same instance; Redis: separate
// connections with the same key prefix) and reads time from now. The opener
// registers its own cleanup with t.Cleanup.
type Opener func(t *testing.T, now func() time.Time) (open func() ratelimit.Store)

// Options describe what the store under test supports.
type Options struct {
	// Expiring says that the store drops leases not renewed within their
	// TTL (by the clock passed to the Opener).
	Expiring bool
	// Clients is how many clients the concurrent tests open. Zero: 4.
	Clients int
	// Requests scales the random tests (requests per client). Zero: 300.
	Requests int
}

// Run runs every check as a subtest of t.
func Run(t *testing.T, open Opener, o Options) {
	if o.Clients == 0 {
		o.Clients = 4
	}
	if o.Requests == 0 {
		o.Requests = 300
	}
	t.Run("WindowBound", func(t *testing.T) { testWindowBound(t, open, o) })
	t.Run("WindowBoundConcurrentClients", func(t *testing.T) { testWindowConcurrent(t, open, o) })
	t.Run("AllOrNothing", func(t *testing.T) { testAllOrNothing(t, open) })
	t.Run("Cancel", func(t *testing.T) { testCancel(t, open) })
	t.Run("ExceedsBurst", func(t *testing.T) { testExceedsBurst(t, open) })
	t.Run("ConcurrencyCap", func(t *testing.T) { testConcurrencyCap(t, open, o) })
	t.Run("LimiterSharedBudget", func(t *testing.T) { testLimiterShared(t, open, o) })
	t.Run("LimiterLayeredRules", func(t *testing.T) { testLimiterLayered(t, open, o) })
	if o.Expiring {
		t.Run("LeaseExpiry", func(t *testing.T) { testLeaseExpiry(t, open) })
	}
}

// grant is one granted reservation in one bucket.
type grant struct {
	at int64 // Unix ns
	n  int
}

// checkWindow verifies the GCRA bound for one bucket: in every window
// [a, b] spanned by two grants, the units granted are at most
// Burst + (b−a)/Interval.
func checkWindow(t *testing.T, b ratelimit.Bucket, gs []grant) {
	t.Helper()
	sort.Slice(gs, func(i, j int) bool { return gs[i].at < gs[j].at })
	iv := int64(b.Interval)
	for i := range gs {
		units := 0
		for j := i; j < len(gs); j++ {
			units += gs[j].n
			w := gs[j].at - gs[i].at
			if allowed := int64(b.Burst) + w/iv; int64(units) > allowed {
				t.Fatalf("bucket %s (interval %v, burst %d): %d units in window of %v from %v, at most %d allowed",
					b.ID, b.Interval, b.Burst, units, time.Duration(w), time.Unix(0, gs[i].at).UTC(), allowed)
			}
		}
	}
}

// randomBuckets returns a few buckets with varied rates and bursts.
func randomBuckets(r *rand.Rand, prefix string) []ratelimit.Bucket {
	bs := []ratelimit.Bucket{
		{ID: prefix + "a", Interval: 10 * time.Millisecond, Burst: 1},
		{ID: prefix + "b", Interval: 3 * time.Millisecond, Burst: 5},
		{ID: prefix + "c", Interval: 50 * time.Millisecond, Burst: 20},
		{ID: prefix + "d", Interval: time.Millisecond, Burst: 3},
	}
	for i := range bs {
		bs[i].Interval += time.Duration(r.IntN(1000)) * time.Microsecond
	}
	return bs
}

// pick returns a random non-empty subset of bs.
func pick(r *rand.Rand, bs []ratelimit.Bucket) []ratelimit.Bucket {
	for {
		var out []ratelimit.Bucket
		for _, b := range bs {
			if r.IntN(2) == 0 {
				out = append(out, b)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
}

func minBurst(bs []ratelimit.Bucket) int {
	m := bs[0].Burst
	for _, b := range bs {
		m = min(m, b.Burst)
	}
	return m
}

func testWindowBound(t *testing.T, open Opener, o Options) {
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, clk.Now)()
	bs := randomBuckets(r, "w|")
	got := map[string][]grant{}
	for i := 0; i < o.Requests*2; i++ {
		// Random pattern: bursts, pauses and steady streams.
		switch r.IntN(4) {
		case 0:
			clk.Advance(time.Duration(r.IntN(200)) * time.Millisecond)
		case 1:
			clk.Advance(time.Duration(r.IntN(2000)) * time.Microsecond)
		}
		sub := pick(r, bs)
		n := 1 + r.IntN(minBurst(sub))
		md := time.Duration(-1)
		if r.IntN(3) == 0 {
			md = time.Duration(r.IntN(50)) * time.Millisecond
		}
		res, err := s.Reserve(ctx, ratelimit.ReserveRequest{Buckets: sub, N: n, MaxDelay: md})
		if err != nil {
			t.Fatal(err)
		}
		if md >= 0 && res.OK && res.Delay > md {
			t.Fatalf("granted with delay %v beyond MaxDelay %v", res.Delay, md)
		}
		if md >= 0 && !res.OK && res.Delay <= md {
			t.Fatalf("refused with delay %v within MaxDelay %v", res.Delay, md)
		}
		if md < 0 && !res.OK {
			t.Fatalf("refused without MaxDelay")
		}
		if !res.OK {
			continue
		}
		at := res.Now.Add(res.Delay).UnixNano()
		for _, b := range sub {
			got[b.ID] = append(got[b.ID], grant{at, n})
		}
		// Occasionally cancel the latest reservation.
		if r.IntN(10) == 0 {
			if err := s.Cancel(ctx, ratelimit.CancelRequest{Buckets: sub, N: n, TATs: res.TATs}); err != nil {
				t.Fatal(err)
			}
			for _, b := range sub {
				got[b.ID] = got[b.ID][:len(got[b.ID])-1]
			}
		}
	}
	for _, b := range bs {
		if len(got[b.ID]) < 10 {
			t.Fatalf("bucket %s: only %d grants; the test exercised too little", b.ID, len(got[b.ID]))
		}
		checkWindow(t, b, got[b.ID])
	}
}

func testWindowConcurrent(t *testing.T, open Opener, o Options) {
	ctx := context.Background()
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opener := open(t, clk.Now)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	bs := randomBuckets(rand.New(rand.NewPCG(seed, 2)), "cw|")
	var mu sync.Mutex
	got := map[string][]grant{}
	var wg sync.WaitGroup
	errs := make(chan error, o.Clients)
	for c := 0; c < o.Clients; c++ {
		s := opener()
		r := rand.New(rand.NewPCG(seed, uint64(c)+10))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < o.Requests; i++ {
				if r.IntN(3) == 0 {
					clk.Advance(time.Duration(r.IntN(5000)) * time.Microsecond)
				}
				sub := pick(r, bs)
				n := 1 + r.IntN(minBurst(sub))
				res, err := s.Reserve(ctx, ratelimit.ReserveRequest{Buckets: sub, N: n, MaxDelay: -1})
				if err != nil {
					errs <- err
					return
				}
				at := res.Now.Add(res.Delay).UnixNano()
				mu.Lock()
				for _, b := range sub {
					got[b.ID] = append(got[b.ID], grant{at, n})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, b := range bs {
		checkWindow(t, b, got[b.ID])
	}
}

func testAllOrNothing(t *testing.T, open Opener) {
	ctx := context.Background()
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, clk.Now)()
	slow := ratelimit.Bucket{ID: "aon|slow", Interval: time.Second, Burst: 1}
	fast := ratelimit.Bucket{ID: "aon|fast", Interval: time.Millisecond, Burst: 1}
	mustOK(t, s, []ratelimit.Bucket{slow}, 1, -1, 0)
	// slow is used up for a second: a joint request that may not wait must
	// leave fast untouched.
	res, err := s.Reserve(ctx, ratelimit.ReserveRequest{Buckets: []ratelimit.Bucket{fast, slow}, N: 1, MaxDelay: 0})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || res.Delay != time.Second {
		t.Fatalf("joint reserve: OK %v delay %v, want refused with 1s", res.OK, res.Delay)
	}
	mustOK(t, s, []ratelimit.Bucket{fast}, 1, 0, 0)
	// A joint request that may wait is booked at the slow bucket's time in
	// both: fast's next unit then waits until after it.
	mustOK(t, s, []ratelimit.Bucket{fast, slow}, 1, -1, time.Second)
	mustOK(t, s, []ratelimit.Bucket{fast}, 1, -1, time.Second+time.Millisecond)
}

func mustOK(t *testing.T, s ratelimit.Store, bs []ratelimit.Bucket, n int, md, wantDelay time.Duration) ratelimit.ReserveResult {
	t.Helper()
	res, err := s.Reserve(context.Background(), ratelimit.ReserveRequest{Buckets: bs, N: n, MaxDelay: md})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Delay != wantDelay {
		t.Fatalf("reserve %v: OK %v delay %v, want OK with %v", bs, res.OK, res.Delay, wantDelay)
	}
	return res
}

func testCancel(t *testing.T, open Opener) {
	ctx := context.Background()
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, clk.Now)()
	b := []ratelimit.Bucket{{ID: "cancel|a", Interval: time.Second, Burst: 1}}
	mustOK(t, s, b, 1, -1, 0)
	r2 := mustOK(t, s, b, 1, -1, time.Second)
	// Cancelling the latest reservation gives its time back.
	if err := s.Cancel(ctx, ratelimit.CancelRequest{Buckets: b, N: 1, TATs: r2.TATs}); err != nil {
		t.Fatal(err)
	}
	r3 := mustOK(t, s, b, 1, -1, time.Second)
	mustOK(t, s, b, 1, -1, 2*time.Second)
	// r3 is no longer the latest: cancelling it must not give time back,
	// or the next grant would share r4's slot.
	if err := s.Cancel(ctx, ratelimit.CancelRequest{Buckets: b, N: 1, TATs: r3.TATs}); err != nil {
		t.Fatal(err)
	}
	mustOK(t, s, b, 1, -1, 3*time.Second)
}

func testExceedsBurst(t *testing.T, open Opener) {
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, clk.Now)()
	_, err := s.Reserve(context.Background(), ratelimit.ReserveRequest{
		Buckets: []ratelimit.Bucket{{ID: "eb|a", Interval: time.Second, Burst: 2}}, N: 3, MaxDelay: -1})
	if err == nil {
		t.Fatal("reserving 3 units with burst 2 succeeded")
	}
}

func testConcurrencyCap(t *testing.T, open Opener, o Options) {
	ctx := context.Background()
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opener := open(t, clk.Now)
	const maxA, maxB = 3, 5
	slotsA := []ratelimit.Slot{{ID: "cc|a", Max: maxA}, {ID: "cc|all", Max: maxB}}
	slotsB := []ratelimit.Slot{{ID: "cc|b", Max: maxA}, {ID: "cc|all", Max: maxB}}
	var inA, inB, inAll, peakAll atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4*o.Clients)
	for c := 0; c < 2*o.Clients; c++ {
		s := opener()
		slots, in := slotsA, &inA
		if c%2 == 1 {
			slots, in = slotsB, &inB
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < o.Requests/6+5; i++ {
				lease := fmt.Sprintf("lease-%d-%d", c, i)
				res, err := s.Acquire(ctx, ratelimit.AcquireRequest{Slots: slots, Lease: lease, TTL: time.Hour})
				if err != nil {
					errs <- err
					return
				}
				if !res.OK {
					continue
				}
				if v := in.Add(1); v > maxA {
					errs <- fmt.Errorf("%d holders of a slot with max %d", v, maxA)
				}
				all := inAll.Add(1)
				if all > maxB {
					errs <- fmt.Errorf("%d holders of the shared slot with max %d", all, maxB)
				}
				for {
					p := peakAll.Load()
					if all <= p || peakAll.CompareAndSwap(p, all) {
						break
					}
				}
				inAll.Add(-1)
				in.Add(-1)
				if err := s.Release(ctx, slots, lease); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if peakAll.Load() == 0 {
		t.Fatal("no slot was ever acquired")
	}
	// Everything was released: the full capacity is free again.
	s := opener()
	for i := 0; i < maxA; i++ {
		res, err := s.Acquire(ctx, ratelimit.AcquireRequest{Slots: slotsA, Lease: fmt.Sprint("final", i), TTL: time.Hour})
		if err != nil || !res.OK {
			t.Fatalf("acquire %d after all releases: OK %v, %v", i, res.OK, err)
		}
	}
	res, err := s.Acquire(ctx, ratelimit.AcquireRequest{Slots: slotsA, Lease: "final-extra", TTL: time.Hour})
	if err != nil || res.OK {
		t.Fatalf("acquire beyond max: OK %v, %v", res.OK, err)
	}
}

func testLeaseExpiry(t *testing.T, open Opener) {
	ctx := context.Background()
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opener := open(t, clk.Now)
	crashed, alive := opener(), opener()
	slots := []ratelimit.Slot{{ID: "exp|a", Max: 2}}
	for i := 0; i < 2; i++ {
		res, err := crashed.Acquire(ctx, ratelimit.AcquireRequest{Slots: slots, Lease: fmt.Sprint("dead", i), TTL: time.Minute})
		if err != nil || !res.OK {
			t.Fatalf("acquire: %v %v", res.OK, err)
		}
	}
	res, err := alive.Acquire(ctx, ratelimit.AcquireRequest{Slots: slots, Lease: "live", TTL: time.Minute})
	if err != nil || res.OK {
		t.Fatalf("acquire on a full set: OK %v, %v", res.OK, err)
	}
	if res.Retry <= 0 || res.Retry > time.Minute {
		t.Fatalf("retry hint %v, want within the TTL", res.Retry)
	}
	// One lease is renewed, the other's holder has crashed.
	clk.Advance(40 * time.Second)
	if err := crashed.Renew(ctx, slots, "dead0", time.Minute); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30 * time.Second)
	res, err = alive.Acquire(ctx, ratelimit.AcquireRequest{Slots: slots, Lease: "live", TTL: time.Minute})
	if err != nil || !res.OK {
		t.Fatalf("acquire after expiry: OK %v, %v", res.OK, err)
	}
	res, err = alive.Acquire(ctx, ratelimit.AcquireRequest{Slots: slots, Lease: "live2", TTL: time.Minute})
	if err != nil || res.OK {
		t.Fatalf("renewed lease was dropped: OK %v, %v", res.OK, err)
	}
}

// testLimiterShared runs several Limiters (nodes), each on its own store
// client, against one shared budget from concurrent goroutines, and checks
// the window bound on the grants they report together.
func testLimiterShared(t *testing.T, open Opener, o Options) {
	ctx := context.Background()
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opener := open(t, clk.Now)
	pol, err := ratelimit.ParsePolicy(`
limit per=site,source rate=100/s burst=5 connections=4
limit site=example.test per=source rate=50/s burst=2 connections=2
backoff off
`)
	if err != nil {
		t.Fatal(err)
	}
	keys := []ratelimit.Key{
		{Domain: "a.example.test", Site: "example.test", Source: "192.0.2.1"},
		{Domain: "b.example.test", Site: "example.test", Source: "192.0.2.1"},
		{Domain: "other.test", Source: "192.0.2.1"},
	}
	buckets := []ratelimit.Bucket{
		{ID: "example", Interval: 20 * time.Millisecond, Burst: 2},
		{ID: "example", Interval: 20 * time.Millisecond, Burst: 2},
		{ID: "other", Interval: 10 * time.Millisecond, Burst: 5},
	}
	var mu sync.Mutex
	got := map[string][]grant{}
	var holders [2]atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.Clients)
	for c := 0; c < o.Clients; c++ {
		l, err := ratelimit.New(ratelimit.Config{Policy: pol, Store: opener(), Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		r := rand.New(rand.NewPCG(uint64(c), 99))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < o.Requests/2; i++ {
				if r.IntN(2) == 0 {
					clk.Advance(time.Duration(r.IntN(8000)) * time.Microsecond)
				}
				ki := r.IntN(len(keys))
				res, err := l.Reserve(ctx, keys[ki], 1)
				if err != nil {
					errs <- err
					return
				}
				if !res.OK {
					errs <- fmt.Errorf("reservation refused: %s", res.Reason)
					return
				}
				mu.Lock()
				got[buckets[ki].ID] = append(got[buckets[ki].ID], grant{res.At.UnixNano(), 1})
				mu.Unlock()
				if ki < 2 {
					le, err := l.TryAcquire(ctx, keys[ki])
					if err == nil {
						if v := holders[0].Add(1); v > 2 {
							errs <- fmt.Errorf("%d connections to example.test, max 2", v)
						}
						holders[0].Add(-1)
						if err := le.Release(ctx); err != nil {
							errs <- err
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkWindow(t, buckets[0], got["example"])
	checkWindow(t, buckets[2], got["other"])
	if len(got["example"]) == 0 || len(got["other"]) == 0 {
		t.Fatal("no grants recorded")
	}
}

// testLimiterLayered drives several Limiters (nodes) with random keys
// through a policy with an override and a second layer, and checks the
// window bound for every budget of every rule that applied to each grant.
func testLimiterLayered(t *testing.T, open Opener, o Options) {
	ctx := context.Background()
	clk := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opener := open(t, clk.Now)
	pol, err := ratelimit.ParsePolicy(`
limit name=default per=site,source rate=20/s burst=3
limit name=b-site site=b.test per=source rate=7/s burst=2
limit name=c-exempt domain=c.test source=192.0.2.2
limit name=tenant layer=tenant per=tenant rate=30/s burst=5
backoff off
`)
	if err != nil {
		t.Fatal(err)
	}
	var keys []ratelimit.Key
	for _, d := range []string{"a.test", "b.test", "c.test"} {
		for _, src := range []string{"192.0.2.1", "192.0.2.2"} {
			for _, ten := range []string{"x", "y"} {
				keys = append(keys, ratelimit.Key{Domain: d, Source: src, Tenant: ten})
			}
		}
	}
	type budget struct {
		b ratelimit.Bucket
		g []grant
	}
	var mu sync.Mutex
	budgets := map[string]*budget{}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var wg sync.WaitGroup
	errs := make(chan error, o.Clients)
	for c := 0; c < o.Clients; c++ {
		l, err := ratelimit.New(ratelimit.Config{Policy: pol, Store: opener(), Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		r := rand.New(rand.NewPCG(seed, uint64(c)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < o.Requests; i++ {
				switch r.IntN(3) {
				case 0:
					clk.Advance(time.Duration(r.IntN(30)) * time.Millisecond)
				case 1:
					clk.Advance(time.Duration(r.IntN(500)) * time.Microsecond)
				}
				k := keys[r.IntN(len(keys))]
				n := 1 + r.IntN(2)
				res, err := l.Reserve(ctx, k, n)
				if err != nil {
					errs <- err
					return
				}
				if !res.OK || res.Delay < 0 {
					errs <- fmt.Errorf("reservation %+v", res)
					return
				}
				mu.Lock()
				for _, rule := range l.Rules(k) {
					if rule.Rate.IsZero() {
						continue
					}
					id := rule.Name
					for _, d := range rule.Per {
						switch d {
						case ratelimit.Site:
							id += "|" + k.Domain // Site defaults to Domain
						case ratelimit.Source:
							id += "|" + k.Source
						case ratelimit.Tenant:
							id += "|" + k.Tenant
						}
					}
					bg := budgets[id]
					if bg == nil {
						bg = &budget{b: ratelimit.Bucket{ID: id, Interval: rule.Rate.Interval(), Burst: rule.Burst}}
						budgets[id] = bg
					}
					bg.g = append(bg.g, grant{res.At.UnixNano(), n})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// default: a.test × 2 sources + c.test × 1 (the other is exempt);
	// b-site: 2 sources; tenant: 2 tenants.
	if len(budgets) != 7 {
		t.Fatalf("%d budgets exercised, want 7", len(budgets))
	}
	for _, bg := range budgets {
		checkWindow(t, bg.b, bg.g)
	}
}
