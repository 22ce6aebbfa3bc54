package ratelimit_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
)

const benchPolicy = `
limit per=site,source rate=1000000/s burst=1000000 connections=100000
limit site=gmail.com per=source rate=1000000/s burst=1000000 connections=100000
limit layer=tenant per=tenant rate=1000000/s burst=1000000
`

func benchLimiter(b *testing.B) *ratelimit.Limiter {
	p, err := ratelimit.ParsePolicy(benchPolicy)
	if err != nil {
		b.Fatal(err)
	}
	l, err := ratelimit.New(ratelimit.Config{Policy: p})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

// BenchmarkReserveParallel: all goroutines on one key (worst contention).
func BenchmarkReserveParallel(b *testing.B) {
	l := benchLimiter(b)
	ctx := context.Background()
	k := ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.1", Tenant: "t"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Reserve(ctx, k, 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAllowParallelKeys: goroutines spread over 1,000 destinations.
func BenchmarkAllowParallelKeys(b *testing.B) {
	l := benchLimiter(b)
	ctx := context.Background()
	keys := make([]ratelimit.Key, 1000)
	for i := range keys {
		keys[i] = ratelimit.Key{Domain: "d" + strconv.Itoa(i) + ".test", Source: "192.0.2.1", Tenant: "t"}
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(7919)
		for pb.Next() {
			i++
			if _, err := l.Allow(ctx, keys[i%uint64(len(keys))], 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAcquireReleaseParallel: connection slots on one key.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	l := benchLimiter(b)
	ctx := context.Background()
	k := ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.1"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			le, err := l.TryAcquire(ctx, k)
			if err != nil {
				b.Error(err)
				return
			}
			le.Release(ctx)
		}
	})
}

// BenchmarkFeedbackSuccess: the per-reply cost when nothing is backed off.
func BenchmarkFeedbackSuccess(b *testing.B) {
	l := benchLimiter(b)
	ctx := context.Background()
	k := ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.1"}
	o := ratelimit.Outcome{Code: 250, Text: "ok"}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Feedback(ctx, k, o)
		}
	})
}

// BenchmarkFileWarmupTryAdd: counter updates; with a cap of 50 every
// update is fsynced, with 250,000 the store writes ahead (1/64 of the cap).
func BenchmarkFileWarmupTryAdd(b *testing.B) {
	for _, limit := range []int64{50, 250_000} {
		b.Run("cap="+strconv.FormatInt(limit, 10), func(b *testing.B) {
			s, err := ratelimit.OpenFileWarmupStore(b.TempDir() + "/w.log")
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				c := ratelimit.Counter{Source: "192.0.2.1", Site: "gmail.com", Day: i / int(limit)}
				if ok, err := s.TryAdd(ctx, c, 1, limit); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "updates/s")
		})
	}
}
