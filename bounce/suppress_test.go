package bounce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testSuppressionList runs the behaviour every SuppressionList must have.
func testSuppressionList(t *testing.T, newList func(t *testing.T, cfg *SuppressionConfig) SuppressionList) {
	ctx := context.Background()
	t.Run("add lookup remove", func(t *testing.T) {
		clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		l := newList(t, &SuppressionConfig{Now: clock.Now})
		if err := l.Add(ctx, Entry{Address: " <Bob.Smith@Example.ORG> ", Reason: "550 5.1.1\r\nuser unknown", Category: CategoryBadMailbox, Source: SourceBounce}); err != nil {
			t.Fatal(err)
		}
		e, ok, err := l.Lookup(ctx, "bob.smith@example.org")
		if err != nil || !ok {
			t.Fatalf("lookup: %v %v", ok, err)
		}
		if e.Address != "Bob.Smith@example.org" || e.Reason != "550 5.1.1 user unknown" || !e.Created.Equal(clock.Now()) {
			t.Errorf("entry %+v", e)
		}
		if _, ok, _ := l.Lookup(ctx, "BOB.SMITH@EXAMPLE.ORG"); !ok {
			t.Error("case-insensitive lookup failed")
		}
		if _, ok, _ := l.Lookup(ctx, "other@example.org"); ok {
			t.Error("found an address never added")
		}
		if err := l.Remove(ctx, "BOB.smith@example.org"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := l.Lookup(ctx, "bob.smith@example.org"); ok {
			t.Error("still there after Remove")
		}
		if err := l.Remove(ctx, "never@example.org"); err != nil {
			t.Errorf("removing an absent address: %v", err)
		}
	})
	t.Run("expiry", func(t *testing.T) {
		clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		l := newList(t, &SuppressionConfig{Now: clock.Now})
		if err := l.Add(ctx, Entry{Address: "full@example.org", Expires: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := l.Lookup(ctx, "full@example.org"); !ok {
			t.Fatal("missing before expiry")
		}
		clock.Add(time.Hour)
		if _, ok, _ := l.Lookup(ctx, "full@example.org"); ok {
			t.Fatal("returned after expiry")
		}
		all, _ := l.List(ctx, ListOptions{IncludeExpired: true})
		live, _ := l.List(ctx, ListOptions{})
		if len(all) != 1 || len(live) != 0 {
			t.Errorf("list: all %d live %d", len(all), len(live))
		}
	})
	t.Run("list paging", func(t *testing.T) {
		l := newList(t, nil)
		for i := 0; i < 25; i++ {
			src := SourceBounce
			if i%5 == 0 {
				src = SourceComplaint
			}
			if err := l.Add(ctx, Entry{Address: fmt.Sprintf("u%02d@example.org", i), Source: src}); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		after := ""
		for {
			page, err := l.List(ctx, ListOptions{After: after, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, e := range page {
				got = append(got, e.Address)
			}
			after = page[len(page)-1].Address
		}
		if len(got) != 25 || got[0] != "u00@example.org" || got[24] != "u24@example.org" {
			t.Errorf("paged list: %v", got)
		}
		c, _ := l.List(ctx, ListOptions{Source: SourceComplaint})
		if len(c) != 5 {
			t.Errorf("%d complaint entries", len(c))
		}
	})
	t.Run("bad input", func(t *testing.T) {
		l := newList(t, nil)
		for _, a := range []string{"", "nobody", "@example.org", "x@", "a b@example.org"} {
			if err := l.Add(ctx, Entry{Address: a}); !errors.Is(err, ErrBadAddress) {
				t.Errorf("Add(%q): %v", a, err)
			}
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := l.Add(cctx, Entry{Address: "a@example.org"}); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Add: %v", err)
		}
		if _, _, err := l.Lookup(cctx, "a@example.org"); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Lookup: %v", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		l := newList(t, nil)
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					a := fmt.Sprintf("g%d-%d@example.org", g, i)
					if err := l.Add(ctx, Entry{Address: a}); err != nil {
						t.Error(err)
						return
					}
					if _, ok, err := l.Lookup(ctx, a); !ok || err != nil {
						t.Errorf("lookup %s: %v %v", a, ok, err)
					}
				}
			}()
		}
		wg.Wait()
		all, _ := l.List(ctx, ListOptions{})
		if len(all) != 80 {
			t.Errorf("%d entries, want 80", len(all))
		}
	})
}

func TestMemorySuppressions(t *testing.T) {
	testSuppressionList(t, func(t *testing.T, cfg *SuppressionConfig) SuppressionList {
		return NewMemorySuppressions(cfg)
	})
}

func TestFileSuppressions(t *testing.T) {
	testSuppressionList(t, func(t *testing.T, cfg *SuppressionConfig) SuppressionList {
		s, err := OpenFileSuppressions(filepath.Join(t.TempDir(), "supp.log"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestFileSuppressionsDurable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "supp.log")
	s, err := OpenFileSuppressions(path, &SuppressionConfig{CompactAfter: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		if err := s.Add(ctx, Entry{Address: fmt.Sprintf("u%d@example.org", i%8), Reason: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(ctx, "u0@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, Entry{Address: "x@example.org"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
	b, _ := os.ReadFile(path)
	if n := strings.Count(string(b), "\n"); n > 20 {
		t.Errorf("log has %d lines; compaction did not run", n)
	}
	// Simulate a crash in the middle of a write: a torn last line.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"op":"add","entry":{"address":"torn@exa`)
	f.Close()

	s2, err := OpenFileSuppressions(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := s2.List(ctx, ListOptions{})
	if len(all) != 7 {
		t.Fatalf("%d entries after reopen, want 7: %v", len(all), all)
	}
	if e, ok, _ := s2.Lookup(ctx, "u7@example.org"); !ok || e.Reason != "23" {
		t.Errorf("u7: %+v %v", e, ok)
	}
	if _, ok, _ := s2.Lookup(ctx, "u0@example.org"); ok {
		t.Error("removed entry came back")
	}
	// The torn tail was cut, so new records are readable.
	if err := s2.Add(ctx, Entry{Address: "after@example.org"}); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3, err := OpenFileSuppressions(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if _, ok, _ := s3.Lookup(ctx, "after@example.org"); !ok {
		t.Error("entry added after a torn tail was lost")
	}
}

func TestFileSuppressionsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "supp.log")
	os.WriteFile(path, []byte("garbage\n{\"op\":\"add\",\"entry\":{\"address\":\"a@example.org\"}}\n"), 0o600)
	if _, err := OpenFileSuppressions(path, nil); err == nil || !strings.Contains(err.Error(), "corrupt line 1") {
		t.Fatalf("err = %v", err)
	}
}

func TestSuppressionPolicy(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := DefaultSuppressionPolicy()
	c := DefaultClassifier()
	hard := c.classify(550, [3]int{5, 1, 1}, "User unknown")
	e, ok := p.Decide("Bob@Example.org", hard, "550 5.1.1 User unknown", now)
	if !ok || e.Address != "Bob@example.org" || !e.Expires.IsZero() || e.Source != SourceBounce || e.Category != CategoryBadMailbox {
		t.Errorf("hard bounce: %+v %v", e, ok)
	}
	dom := c.classify(550, [3]int{5, 1, 2}, "Host or domain name not found")
	if e, ok := p.Decide("a@gone.example", dom, "", now); !ok || !e.Expires.Equal(now.Add(30*24*time.Hour)) {
		t.Errorf("bad domain: %+v %v", e, ok)
	}
	for _, soft := range []Classification{
		c.classify(552, [3]int{5, 2, 2}, "Mailbox full"),
		c.classify(550, [3]int{5, 7, 1}, "Client host [192.0.2.1] blocked using zen.spamhaus.org"),
		c.classify(421, [3]int{4, 7, 0}, "Too many messages, try again later"),
	} {
		if _, ok := p.Decide("a@example.org", soft, "", now); ok {
			t.Errorf("%+v suppressed", soft)
		}
	}
	p.Soft = []Category{CategoryMailboxFull}
	p.Durations[CategoryMailboxFull] = 7 * 24 * time.Hour
	if e, ok := p.Decide("a@example.org", c.classify(552, [3]int{5, 2, 2}, "Mailbox full"), "", now); !ok || !e.Expires.Equal(now.Add(7*24*time.Hour)) {
		t.Errorf("soft policy: %+v %v", e, ok)
	}
	es := p.DecideComplaint(&Complaint{FeedbackType: "abuse", OriginalRcptTo: []string{"x@Example.org", "bad"}}, now)
	if len(es) != 1 || es[0].Address != "x@example.org" || es[0].Source != SourceComplaint {
		t.Errorf("complaint: %+v", es)
	}
	if es := p.DecideComplaint(&Complaint{FeedbackType: "not-spam", OriginalRcptTo: []string{"x@example.org"}}, now); len(es) != 0 {
		t.Errorf("not-spam yielded %v", es)
	}
}
