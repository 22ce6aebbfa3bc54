package resolver

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mtakit/mta/resolver/dnstest"
)

// fakeClock is a manually advanced clock, safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestCacheTTL(t *testing.T) {
	srv := dnstest.New(t, zone)
	clock := newFakeClock()
	r := newResolver(t, Config{Now: clock.Now}, srv)
	ctx := context.Background()
	lookup := func(wantTTL time.Duration, wantHost string, wantQueries int) {
		t.Helper()
		res, err := r.LookupMX(ctx, "EXAMPLE.com")
		if err != nil {
			t.Fatal(err)
		}
		if res.TTL != wantTTL || res.Records[0].Host != wantHost {
			t.Errorf("TTL %v host %q, want %v %q", res.TTL, res.Records[0].Host, wantTTL, wantHost)
		}
		if n := srv.Queries("example.com", dns.TypeMX); n != wantQueries {
			t.Errorf("queries = %d, want %d", n, wantQueries)
		}
	}
	lookup(300*time.Second, "mx1.example.com", 1)
	if err := srv.SetRecords("example.com", dns.TypeMX, "example.com. 100 IN MX 1 new.example.com."); err != nil {
		t.Fatal(err)
	}
	clock.Advance(100 * time.Second)
	lookup(200*time.Second, "mx1.example.com", 1) // cached, remaining TTL
	clock.Advance(199 * time.Second)
	lookup(time.Second, "mx1.example.com", 1)
	clock.Advance(time.Second) // expired
	lookup(100*time.Second, "new.example.com", 2)

	// The caller owns Records.
	res, _ := r.LookupMX(ctx, "example.com")
	res.Records[0].Host = "changed"
	lookup(100*time.Second, "new.example.com", 2)
}

func TestCacheMaxTTLAndZeroTTL(t *testing.T) {
	srv := dnstest.New(t, `
long.test. 86400 IN A 192.0.2.1
zero.test. 0 IN A 192.0.2.2
`)
	clock := newFakeClock()
	r := newResolver(t, Config{Now: clock.Now, MaxTTL: time.Minute}, srv)
	ctx := context.Background()
	res, err := r.LookupIP(ctx, "ip4", "long.test")
	if err != nil || res.TTL != time.Minute {
		t.Fatalf("long: %+v %v", res, err)
	}
	clock.Advance(time.Minute)
	if _, err := r.LookupIP(ctx, "ip4", "long.test"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Queries("long.test", dns.TypeA); n != 2 {
		t.Errorf("long.test queries = %d, want 2 (MaxTTL)", n)
	}
	for range 2 {
		if res, err := r.LookupIP(ctx, "ip4", "zero.test"); err != nil || res.TTL != 0 {
			t.Fatalf("zero: %+v %v", res, err)
		}
	}
	if n := srv.Queries("zero.test", dns.TypeA); n != 2 {
		t.Errorf("zero.test queries = %d, want 2 (TTL 0 not cached)", n)
	}
}

func TestNegativeCache(t *testing.T) {
	srv := dnstest.New(t, zone) // SOA TTL 300, MINIMUM 60
	clock := newFakeClock()
	r := newResolver(t, Config{Now: clock.Now}, srv)
	ctx := context.Background()
	check := func(name string, qtype uint16, want error, wantQueries int) {
		t.Helper()
		var err error
		if qtype == dns.TypeMX {
			_, err = r.LookupMX(ctx, name)
		} else {
			_, err = r.LookupTXT(ctx, name)
		}
		if want == nil {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		} else {
			checkClass(t, err, want)
		}
		if n := srv.Queries(name, qtype); n != wantQueries {
			t.Errorf("%s queries = %d, want %d", name, n, wantQueries)
		}
	}
	// NXDOMAIN and NODATA are cached for min(SOA TTL, MINIMUM) = 60s.
	check("new.example.com", dns.TypeMX, ErrNotFound, 1)
	check("mx1.example.com", dns.TypeTXT, ErrNoData, 1)
	if err := srv.AddRecords(`new.example.com. 300 IN MX 1 mx1.example.com.
mx1.example.com. 300 IN TXT "hello"`); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Second)
	check("new.example.com", dns.TypeMX, ErrNotFound, 1)
	check("mx1.example.com", dns.TypeTXT, ErrNoData, 1)
	clock.Advance(time.Second)
	check("new.example.com", dns.TypeMX, nil, 2)
	check("mx1.example.com", dns.TypeTXT, nil, 2)

	// NegativeTTL caps the SOA's values; the synthesised SOA says 300s.
	srv2 := dnstest.New(t, "")
	r2 := newResolver(t, Config{Now: clock.Now, NegativeTTL: 10 * time.Second}, srv2)
	for range 2 {
		if _, err := r2.LookupMX(ctx, "gone.test"); !IsNXDomain(err) {
			t.Fatal(err)
		}
	}
	clock.Advance(10 * time.Second)
	if _, err := r2.LookupMX(ctx, "gone.test"); !IsNXDomain(err) {
		t.Fatal(err)
	}
	if n := srv2.Queries("gone.test", dns.TypeMX); n != 2 {
		t.Errorf("gone.test queries = %d, want 2", n)
	}

	// Temporary failures are not cached.
	srv.SetFault("flaky.example.com", 0, dnstest.ServFail)
	check("flaky.example.com", dns.TypeMX, ErrTemporary, 1)
	srv.ClearFault("flaky.example.com", 0)
	check("flaky.example.com", dns.TypeMX, ErrNotFound, 2)
}

func TestCacheBounded(t *testing.T) {
	srv := dnstest.New(t, zone)
	clock := newFakeClock()
	r := newResolver(t, Config{Now: clock.Now, CacheSize: 3}, srv)
	ctx := context.Background()
	names := []string{"mx1", "mx2", "v4only", "example.com.", "a.b.c"}
	for i, n := range names {
		if !stringsHasSuffixDot(n) {
			names[i] = n + ".example.com"
		}
	}
	for _, n := range names {
		if _, err := r.LookupIP(ctx, "ip4", n); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.cache.len(); n != 3 {
		t.Errorf("cache holds %d entries, want 3", n)
	}
	// Touch names[2] so that it is the most recently used, then add one
	// more: names[3] is evicted, names[2] kept.
	if _, err := r.LookupIP(ctx, "ip4", names[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupIP(ctx, "ip4", "mx1.example.com"); err != nil { // evicted earlier: upstream again
		t.Fatal(err)
	}
	if _, err := r.LookupIP(ctx, "ip4", names[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupIP(ctx, "ip4", names[3]); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"mx1.example.com": 2, "mx2.example.com": 1, "v4only.example.com": 1, names[3]: 2, "a.b.c.example.com": 1}
	for n, w := range want {
		if got := srv.Queries(n, dns.TypeA); got != w {
			t.Errorf("%s: %d queries, want %d", n, got, w)
		}
	}
	if n := r.cache.len(); n != 3 {
		t.Errorf("cache holds %d entries, want 3", n)
	}

	// Without cache every lookup goes upstream.
	r0 := newResolver(t, Config{CacheSize: -1}, srv)
	for range 3 {
		if _, err := r0.LookupMX(ctx, "null.example.com"); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Queries("null.example.com", dns.TypeMX); n != 3 {
		t.Errorf("queries without cache = %d, want 3", n)
	}
}

func stringsHasSuffixDot(s string) bool { return len(s) > 0 && s[len(s)-1] == '.' }

// waiters returns how many callers wait for the running query of k.
func (f *flight) waitersFor(k key) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.m[k]; c != nil {
		return c.waiters
	}
	return 0
}

func TestCollapse(t *testing.T) {
	for _, cacheSize := range []int{0, -1} {
		t.Run("cache "+strconv.Itoa(cacheSize), func(t *testing.T) {
			srv := dnstest.New(t, zone)
			r := newResolver(t, Config{CacheSize: cacheSize, Timeout: 30 * time.Second}, srv)
			release := srv.Hold("example.com", dns.TypeMX)
			defer release()
			const n = 50
			var wg sync.WaitGroup
			results := make([]Result[MX], n)
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					results[i], errs[i] = r.LookupMX(context.Background(), "example.com")
				})
			}
			// Wait until every goroutine waits for the one query, then let
			// the server answer.
			k := key{"example.com", dns.TypeMX}
			deadline := time.Now().Add(30 * time.Second)
			for r.flight.waitersFor(k) < n && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if w := r.flight.waitersFor(k); w != n {
				t.Fatalf("%d waiters, want %d", w, n)
			}
			release()
			wg.Wait()
			for i := range n {
				if errs[i] != nil || len(results[i].Records) != 3 {
					t.Fatalf("lookup %d: %+v, %v", i, results[i], errs[i])
				}
			}
			// Results do not share memory.
			results[0].Records[0].Host = "changed"
			if results[1].Records[0].Host != "mx1.example.com" {
				t.Error("results share Records")
			}
			if q := srv.Queries("example.com", dns.TypeMX); q != 1 {
				t.Errorf("%d upstream queries, want 1", q)
			}
		})
	}
}

// TestCollapseCancel checks that a caller leaving does not cancel the
// shared query for the others.
func TestCollapseCancel(t *testing.T) {
	srv := dnstest.New(t, zone)
	r := newResolver(t, Config{Timeout: 30 * time.Second}, srv)
	release := srv.Hold("example.com", dns.TypeMX)
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := r.LookupMX(ctx, "example.com")
		first <- err
	}()
	second := make(chan error, 1)
	go func() {
		_, err := r.LookupMX(context.Background(), "example.com")
		second <- err
	}()
	k := key{"example.com", dns.TypeMX}
	deadline := time.Now().Add(30 * time.Second)
	for r.flight.waitersFor(k) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	release()
	if err := <-second; err != nil {
		t.Errorf("other caller: %v", err)
	}
	if q := srv.Queries("example.com", dns.TypeMX); q != 1 {
		t.Errorf("%d upstream queries, want 1", q)
	}
	res, err := r.LookupMX(context.Background(), "example.com")
	if err != nil || !slices.Equal(res.Records, []MX{{"mx1.example.com", 10}, {"mx2.example.com", 20}, {"mx3.example.com", 20}}) {
		t.Errorf("cached: %+v %v", res, err)
	}
}

// TestConcurrentLookups mixes lookups of many names and types, with cache
// eviction and expiry, from many goroutines, for the race detector.
func TestConcurrentLookups(t *testing.T) {
	srv := dnstest.New(t, zone)
	clock := newFakeClock()
	r := newResolver(t, Config{Now: clock.Now, CacheSize: 4}, srv)
	names := []string{"mx1", "mx2", "v4only", "a.b.c", "alias", "alias2"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				name := names[(g+i)%len(names)] + ".example.com"
				res, err := r.LookupIP(context.Background(), "ip4", name)
				if err != nil || len(res.Records) != 1 {
					t.Errorf("%s: %+v %v", name, res, err)
					return
				}
				if _, err := r.LookupMX(context.Background(), name); !IsNoData(err) {
					t.Errorf("%s MX: %v", name, err)
					return
				}
				if i%10 == 0 {
					clock.Advance(time.Minute)
				}
			}
		})
	}
	wg.Wait()
	if n := r.cache.len(); n > 4 {
		t.Errorf("cache holds %d entries", n)
	}
}
