package redislimit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/ratelimit/limittest"
	"github.com/mtakit/mta/ratelimit/redislimit"
	"github.com/redis/go-redis/v9"
)

// redisURL returns MTA_TEST_REDIS or skips the test.
func redisURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("MTA_TEST_REDIS")
	if u == "" {
		tb.Skip("MTA_TEST_REDIS is not set (e.g. redis://127.0.0.1:6379/0); skipping Redis tests")
	}
	return u
}

// newClient opens a separate client (its own connection pool) on the test
// server and closes it at the end of the test.
func newClient(tb testing.TB) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(redisURL(tb))
	if err != nil {
		tb.Fatalf("MTA_TEST_REDIS: %v", err)
	}
	c := redis.NewClient(opt)
	tb.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("Redis at MTA_TEST_REDIS: %v", err)
	}
	return c
}

// uniquePrefix returns a fresh key prefix and deletes its keys after the
// test.
func uniquePrefix(tb testing.TB) string {
	tb.Helper()
	var b [8]byte
	rand.Read(b[:])
	prefix := "mtatest:rl:" + hex.EncodeToString(b[:]) + ":"
	c := newClient(tb)
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	return prefix
}

func TestStoreConformance(t *testing.T) {
	redisURL(t)
	for _, clock := range []string{"injected", "server"} {
		t.Run(clock, func(t *testing.T) {
			if clock == "server" {
				// With Redis TIME only the tests that do not move the
				// clock apply; run the concurrency and cancel checks.
				testServerClock(t)
				return
			}
			limittest.Run(t, func(t *testing.T, now func() time.Time) func() ratelimit.Store {
				prefix := uniquePrefix(t)
				return func() ratelimit.Store {
					s, err := redislimit.New(redislimit.Config{Client: newClient(t), Prefix: prefix, Now: now})
					if err != nil {
						t.Fatal(err)
					}
					return s
				}
			}, limittest.Options{Expiring: true})
		})
	}
}

// testServerClock checks the default mode, Redis TIME: delays are relative
// to the server's clock and grants are spaced by the interval.
func testServerClock(t *testing.T) {
	ctx := context.Background()
	s, err := redislimit.New(redislimit.Config{Client: newClient(t), Prefix: uniquePrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := []ratelimit.Bucket{{ID: "srv", Interval: time.Hour, Burst: 2}}
	var last ratelimit.ReserveResult
	for i, want := range []time.Duration{0, 0, time.Hour, 2 * time.Hour} {
		res, err := s.Reserve(ctx, ratelimit.ReserveRequest{Buckets: b, N: 1, MaxDelay: -1})
		if err != nil {
			t.Fatal(err)
		}
		// The server clock moves between calls: allow for it.
		if !res.OK || res.Delay > want || res.Delay < want-time.Minute {
			t.Fatalf("reservation %d: OK %v delay %v, want about %v", i, res.OK, res.Delay, want)
		}
		if d := time.Since(res.Now); d > time.Minute || d < -time.Minute {
			t.Fatalf("server time %v is far from local time", res.Now)
		}
		last = res
	}
	if err := s.Cancel(ctx, ratelimit.CancelRequest{Buckets: b, N: 1, TATs: last.TATs}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Reserve(ctx, ratelimit.ReserveRequest{Buckets: b, N: 1, MaxDelay: 0})
	if err != nil || res.OK || res.Delay > 2*time.Hour || res.Delay < 2*time.Hour-time.Minute {
		t.Fatalf("after cancel: OK %v delay %v err %v", res.OK, res.Delay, err)
	}
}

func TestWarmupStoreSharedAndDurable(t *testing.T) {
	ctx := context.Background()
	prefix := uniquePrefix(t)
	clk := limittest.NewClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	pol, err := ratelimit.ParsePolicy("warmup schedule=40,80\nbackoff off")
	if err != nil {
		t.Fatal(err)
	}
	node := func() *ratelimit.Limiter {
		ws, err := redislimit.NewWarmupStore(redislimit.Config{Client: newClient(t), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		l, err := ratelimit.New(ratelimit.Config{Policy: pol, WarmupStore: ws, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	key := ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.1"}
	// Four nodes send concurrently: together they get exactly the cap.
	var granted atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		l := node()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 30 {
				r, err := l.Reserve(ctx, key, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if r.OK {
					granted.Add(1)
				} else if r.Reason != ratelimit.ReasonWarmup {
					t.Errorf("refused for %q", r.Reason)
				}
			}
		}()
	}
	wg.Wait()
	if g := granted.Load(); g != 40 {
		t.Fatalf("%d granted on day 0 across nodes, cap 40", g)
	}
	// A restarted node (new client, new limiter) sees the same counts
	// and the same start day.
	clk.Advance(23 * time.Hour)
	l := node()
	if r, _ := l.Reserve(ctx, key, 1); r.OK || r.Reason != ratelimit.ReasonWarmup || r.Delay != time.Hour {
		t.Fatalf("after restart: %+v", r)
	}
	clk.Advance(time.Hour)
	n := 0
	for range 100 {
		if r, _ := l.Reserve(ctx, key, 1); r.OK {
			n++
		}
	}
	if n != 80 {
		t.Fatalf("day 1: %d granted, want 80", n)
	}
}

func TestEndToEndSharedRate(t *testing.T) {
	// Two nodes pace one throttled destination together through Redis at
	// 5/s: their combined sends follow the rate exactly.
	ctx := context.Background()
	prefix := uniquePrefix(t)
	clk := limittest.NewClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	pol, err := ratelimit.ParsePolicy("limit site=slow.test per=source rate=5/s\nbackoff off")
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*ratelimit.Limiter
	for range 2 {
		s, err := redislimit.New(redislimit.Config{Client: newClient(t), Prefix: prefix, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		l, err := ratelimit.New(ratelimit.Config{Policy: pol, Store: s, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		nodes = append(nodes, l)
	}
	key := ratelimit.Key{Domain: "slow.test", Source: "192.0.2.1"}
	var ats []time.Time
	for i := 0; i < 200; i++ {
		r, err := nodes[i%2].Reserve(ctx, key, 1)
		if err != nil || !r.OK {
			t.Fatalf("reserve %d: %+v %v", i, r, err)
		}
		ats = append(ats, r.At)
		if i%7 == 0 {
			clk.Advance(r.Delay) // the scheduler slept until then
		}
	}
	t0 := ats[0]
	for i, at := range ats {
		if want := t0.Add(time.Duration(i) * 200 * time.Millisecond); !at.Equal(want) {
			t.Fatalf("message %d at %v, want %v", i, at.Sub(t0), want.Sub(t0))
		}
	}
}

func BenchmarkRedisReserve(b *testing.B) {
	benchRedis(b, func(ctx context.Context, s *redislimit.Store, i int) error {
		_, err := s.Reserve(ctx, ratelimit.ReserveRequest{N: 1, MaxDelay: -1, Buckets: []ratelimit.Bucket{
			{ID: "site|" + strconv.Itoa(i%100), Interval: time.Microsecond, Burst: 1000},
			{ID: "tenant", Interval: time.Microsecond, Burst: 1000},
		}})
		return err
	})
}

func BenchmarkRedisAcquireRelease(b *testing.B) {
	benchRedis(b, func(ctx context.Context, s *redislimit.Store, i int) error {
		slots := []ratelimit.Slot{{ID: "c|" + strconv.Itoa(i%100), Max: 1 << 20}}
		lease := "l" + strconv.Itoa(i)
		if _, err := s.Acquire(ctx, ratelimit.AcquireRequest{Slots: slots, Lease: lease, TTL: time.Minute}); err != nil {
			return err
		}
		return s.Release(ctx, slots, lease)
	})
}

// benchRedis runs op from 8 goroutines per CPU, over 4 clients, and
// reports operations per second.
func benchRedis(b *testing.B, op func(context.Context, *redislimit.Store, int) error) {
	prefix := uniquePrefix(b)
	var stores []*redislimit.Store
	for range 4 {
		s, err := redislimit.New(redislimit.Config{Client: newClient(b), Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		stores = append(stores, s)
	}
	var next atomic.Int64
	b.SetParallelism(8)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := int(next.Add(1))
		s := stores[i%len(stores)]
		for pb.Next() {
			i += 13
			if err := op(ctx, s, i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}
