package ratelimit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/ratelimit/limittest"
)

// sendAll reserves one message at a time until the limiter refuses, and
// returns how many were granted and the last refusal.
func sendAll(t *testing.T, l *ratelimit.Limiter, k ratelimit.Key, max int) (int, *ratelimit.Reservation) {
	t.Helper()
	for i := 0; i < max; i++ {
		r, err := l.Reserve(context.Background(), k, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK {
			return i, r
		}
	}
	return max, nil
}

func TestWarmupAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "warmup.log")
	clk := limittest.NewClock(t0)
	const policy = "warmup schedule=5,10,20 sources=192.0.2.7\nbackoff off"
	open := func() (*ratelimit.Limiter, *ratelimit.FileWarmupStore) {
		ws, err := ratelimit.OpenFileWarmupStore(path)
		if err != nil {
			t.Fatal(err)
		}
		return newLimiter(t, policy, clk, func(c *ratelimit.Config) { c.WarmupStore = ws }), ws
	}
	l, ws := open()
	gmail := ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.7"}
	yahoo := ratelimit.Key{Domain: "yahoo.com", Source: "192.0.2.7"}
	if n, _ := sendAll(t, l, gmail, 3); n != 3 {
		t.Fatalf("day 0: %d sent before restart", n)
	}
	// Cancelled reservations give their count back.
	r, _ := l.Reserve(context.Background(), gmail, 1)
	if err := r.Cancel(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Restart: close and reopen the store, a new limiter.
	l.Close()
	ws.Close()
	clk.Advance(3 * time.Hour)
	l, ws = open()
	n, refusal := sendAll(t, l, gmail, 100)
	if n != 2 {
		t.Fatalf("day 0 after restart: %d more sent, want 2 (cap 5, 3 before)", n)
	}
	if refusal.Reason != ratelimit.ReasonWarmup || refusal.Delay != 21*time.Hour {
		t.Fatalf("refusal %q, retry in %v; want warmup, 21h (next day)", refusal.Reason, refusal.Delay)
	}
	// Each site has its own cap; warm sources are not limited.
	if n, _ := sendAll(t, l, yahoo, 100); n != 5 {
		t.Fatalf("day 0 yahoo: %d", n)
	}
	if n, _ := sendAll(t, l, ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.200"}, 100); n != 100 {
		t.Fatalf("source not under warm-up limited: %d", n)
	}
	// Day 1 and day 2 caps, then warm.
	clk.Advance(21 * time.Hour)
	if n, _ := sendAll(t, l, gmail, 100); n != 10 {
		t.Fatalf("day 1: %d", n)
	}
	l.Close()
	ws.Close()
	clk.Advance(24 * time.Hour)
	l, ws = open()
	defer ws.Close()
	if n, _ := sendAll(t, l, gmail, 100); n != 20 {
		t.Fatalf("day 2 after restart: %d", n)
	}
	clk.Advance(24 * time.Hour)
	if n, _ := sendAll(t, l, gmail, 1000); n != 1000 {
		t.Fatalf("day 3 (warm): %d", n)
	}
}

func TestFileWarmupStoreCrashSafety(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "w.log")
	s, err := ratelimit.OpenFileWarmupStore(path)
	if err != nil {
		t.Fatal(err)
	}
	c := ratelimit.Counter{Source: "192.0.2.1", Site: "gmail.com", Day: 0}
	start, _ := s.Start(ctx, "192.0.2.1", t0)
	if again, _ := s.Start(ctx, "192.0.2.1", t0.Add(time.Hour)); !again.Equal(start) {
		t.Fatalf("start changed to %v", again)
	}
	for i := 0; i < 7; i++ {
		if ok, err := s.TryAdd(ctx, c, 1, 7); !ok || err != nil {
			t.Fatalf("add %d: %v %v", i, ok, err)
		}
	}
	if ok, _ := s.TryAdd(ctx, c, 1, 7); ok {
		t.Fatal("added beyond the limit")
	}
	s.Close()
	if _, err := s.TryAdd(ctx, c, 1, 100); !errors.Is(err, ratelimit.ErrClosed) {
		t.Fatalf("add after close: %v", err)
	}

	// A torn last write (a partial line) is dropped on open.
	data, _ := os.ReadFile(path)
	torn := append(append([]byte{}, data...), []byte("1234abcd C\t\"192.0.2.1\"\t\"gm")...)
	os.WriteFile(path, torn, 0o600)
	s, err = ratelimit.OpenFileWarmupStore(path)
	if err != nil {
		t.Fatalf("open with torn tail: %v", err)
	}
	if n, _ := s.Count(ctx, c); n != 7 {
		t.Fatalf("count after torn tail %d, want 7", n)
	}
	if st, _ := s.Start(ctx, "192.0.2.1", t0.Add(time.Hour)); !st.Equal(start) {
		t.Fatalf("start after reopen %v, want %v", st, start)
	}
	s.TryAdd(ctx, c, -2, 0)
	s.Close()
	if fi, _ := os.Stat(path); fi.Size() <= int64(len(data)) {
		t.Fatal("torn tail not truncated before appending")
	}
	// A complete last line with a bad checksum is also a torn write.
	data, _ = os.ReadFile(path)
	bad := append(append([]byte{}, data...), []byte("00000000 C\t\"x\"\t\"y\"\t0\t9\n")...)
	os.WriteFile(path, bad, 0o600)
	s, err = ratelimit.OpenFileWarmupStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Count(ctx, c); n != 5 {
		t.Fatalf("count %d, want 5", n)
	}
	s.Close()
	// Damage before the end is an error, not silently lower counts.
	lines := strings.SplitAfter(string(data), "\n")
	lines[1] = strings.Replace(lines[1], "C", "X", 1)
	os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600)
	if _, err := ratelimit.OpenFileWarmupStore(path); !errors.Is(err, ratelimit.ErrStore) {
		t.Fatalf("open with damage in the middle: %v", err)
	}
}

func TestFileWarmupStoreCompaction(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "w.log")
	s, err := ratelimit.OpenFileWarmupStore(path)
	if err != nil {
		t.Fatal(err)
	}
	// 3 days × 2 sites × 60 messages, each written (the limit is too
	// small for write-ahead): far more lines than live counters.
	for day := 0; day < 3; day++ {
		for i := 0; i < 60; i++ {
			for _, site := range []string{"a.test", "b.test"} {
				if ok, err := s.TryAdd(ctx, ratelimit.Counter{Source: "pool-1", Site: site, Day: day}, 1, 60); !ok || err != nil {
					t.Fatalf("add: %v %v", ok, err)
				}
			}
		}
	}
	s.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n >= 300 {
		t.Fatalf("file has %d lines after 360 updates; not compacted", n)
	}
	s, err = ratelimit.OpenFileWarmupStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, site := range []string{"a.test", "b.test"} {
		if n, _ := s.Count(ctx, ratelimit.Counter{Source: "pool-1", Site: site, Day: 2}); n != 60 {
			t.Fatalf("%s day 2 after compaction: %d", site, n)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}

func TestFileWarmupStoreCrashWithoutClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "w.log")
	s, err := ratelimit.OpenFileWarmupStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := ratelimit.Counter{Source: "192.0.2.1", Site: "gmail.com", Day: 0}
	const limit = 6400 // written ahead by up to 6400/64 = 100
	for i := 0; i < 150; i++ {
		if ok, err := s.TryAdd(ctx, c, 1, limit); !ok || err != nil {
			t.Fatalf("add %d: %v %v", i, ok, err)
		}
	}
	// The process dies without Close: what is on disk must cover every
	// acknowledged message, and be at most the write-ahead above it.
	after, err := ratelimit.OpenFileWarmupStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	n, _ := after.Count(ctx, c)
	if n < 150 || n > 150+limit/64 {
		t.Fatalf("count after crash %d, want 150..%d", n, 150+limit/64)
	}
	// The cap still holds from there.
	added := int64(0)
	for {
		ok, err := after.TryAdd(ctx, c, 1, limit)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		added++
	}
	if 150+added > limit {
		t.Fatalf("%d sent in total after the crash, cap %d", 150+added, limit)
	}
}
