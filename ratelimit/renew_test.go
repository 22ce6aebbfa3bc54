package ratelimit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
)

// renewStore is a MemStore that reports Renew calls, standing in for a
// store with expiry: the Limiter runs its renewal loop for any store that
// is not a *MemStore.
type renewStore struct {
	*ratelimit.MemStore
	mu      sync.Mutex
	renewed map[string]int
	signal  chan string
}

func (s *renewStore) Renew(ctx context.Context, slots []ratelimit.Slot, lease string, ttl time.Duration) error {
	s.mu.Lock()
	s.renewed[lease]++
	s.mu.Unlock()
	select {
	case s.signal <- lease:
	default:
	}
	return s.MemStore.Renew(ctx, slots, lease, ttl)
}

func TestLeaseRenewal(t *testing.T) {
	ctx := context.Background()
	st := &renewStore{MemStore: ratelimit.NewMemStore(nil), renewed: map[string]int{}, signal: make(chan string, 1)}
	l, err := ratelimit.New(ratelimit.Config{
		Policy:   ratelimit.Policy{Rules: []ratelimit.Rule{{MaxConnections: 2}}},
		Store:    st,
		LeaseTTL: 30 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	le, err := l.Acquire(ctx, ratelimit.Key{Domain: "r.test"})
	if err != nil {
		t.Fatal(err)
	}
	// Held leases are renewed (wait for two renewals, whatever the timing).
	timeout := time.After(time.Minute)
	for n := 0; n < 2; {
		select {
		case <-st.signal:
			n++
		case <-timeout:
			t.Fatal("lease never renewed")
		}
	}
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// After Close the loop has exited: no renewal can happen any more.
	l.Close()
	st.mu.Lock()
	before := len(st.renewed)
	st.mu.Unlock()
	if before != 1 {
		t.Fatalf("renewed %d leases, want 1", before)
	}
	if _, err := l.Reserve(ctx, ratelimit.Key{}, 1); err != ratelimit.ErrClosed {
		t.Fatalf("Reserve after Close: %v", err)
	}
}
