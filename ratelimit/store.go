package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Store keeps the limiter state: GCRA "theoretical arrival times" of rate
// budgets and the leases held on connection slots. [MemStore] keeps it in
// the process; the redislimit package keeps it in Redis so that several
// nodes share one budget per key.
//
// # Contract for implementers
//
// Every method is safe for concurrent use and atomic with respect to the
// others: a Reserve over several buckets either updates all of them or
// none, and two concurrent Acquires never both take the last slot. A store
// reads time from its own clock and reports it in the result, so that all
// users of one shared store agree on time. Stores report errors and do not
// retry; context errors are returned unwrapped.
//
// The GCRA arithmetic every store must implement is described at
// [ReserveRequest]. The limittest package checks these properties for any
// Store.
type Store interface {
	// Reserve books N units in every bucket at the earliest time all of
	// them allow.
	Reserve(ctx context.Context, req ReserveRequest) (ReserveResult, error)
	// Cancel returns the units of a reservation to the buckets that have
	// not been reserved from since.
	Cancel(ctx context.Context, req CancelRequest) error
	// Acquire takes one slot in every listed slot set for the lease, or
	// none.
	Acquire(ctx context.Context, req AcquireRequest) (AcquireResult, error)
	// Release gives the lease's slots back. Releasing an unknown lease is
	// not an error.
	Release(ctx context.Context, slots []Slot, lease string) error
	// Renew extends the expiry of the lease's slots to now+TTL. Stores
	// without expiry may do nothing.
	Renew(ctx context.Context, slots []Slot, lease string, ttl time.Duration) error
}

// Bucket is one rate budget in a reservation.
type Bucket struct {
	// ID names the budget; equal IDs share state.
	ID string
	// Interval is the GCRA emission interval: the time one unit uses up
	// (Rate.Per/Rate.N, stretched by back-off).
	Interval time.Duration
	// Burst is how many units may be taken back to back (at least 1).
	Burst int
}

// ReserveRequest asks a Store to reserve N units in every bucket.
//
// The arithmetic (GCRA, the generic cell rate algorithm of ATM networks, in
// its "virtual scheduling" form): each bucket keeps TAT, the theoretical
// arrival time, initially in the past. With T = Interval and τ = Burst·T,
// a request for N units at time t may go at
//
//	at_b = max(TAT_b, t) + N·T_b − τ_b   (or t if that is earlier)
//
// The reservation's time is the latest at_b over all buckets; if it is more
// than MaxDelay after t (and MaxDelay ≥ 0) nothing changes and the result
// says not OK. Otherwise each bucket's TAT becomes max(TAT_b, at) + N·T_b.
// Over any window of length W the units granted in one bucket then never
// exceed Burst + W/T.
type ReserveRequest struct {
	// Buckets are the budgets to book in, all or none.
	Buckets []Bucket
	// N is the number of units, 1 ≤ N ≤ every bucket's Burst.
	N int
	// MaxDelay bounds how far in the future a reservation may be booked;
	// negative means no bound, zero means "only now" (Allow).
	MaxDelay time.Duration
}

// ReserveResult is a Store's answer to Reserve.
type ReserveResult struct {
	// OK reports whether the units were booked. When false, Delay is how
	// long until they could be.
	OK bool
	// Delay is how long after Now the caller may act.
	Delay time.Duration
	// Now is the store's clock at the time of the decision.
	Now time.Time
	// TATs holds each bucket's new TAT (Unix nanoseconds), needed by Cancel.
	TATs []int64
}

// CancelRequest returns a reservation. Buckets and N are the reservation's;
// TATs are the values ReserveResult reported. A bucket whose TAT still
// equals the reported one (nothing reserved from it since) gets its N·T back;
// the others are left alone, since giving units back there could let later
// reservations bunch up beyond the burst.
type CancelRequest struct {
	Buckets []Bucket // as reserved
	N       int      // as reserved
	TATs    []int64  // ReserveResult.TATs
}

// Slot is one connection-slot set: at most Max leases hold it at a time.
type Slot struct {
	ID  string // names the set; equal IDs share it
	Max int    // at most this many leases, ≥ 1
}

// AcquireRequest asks for one place in every slot set for Lease, a unique
// lease name. Stores with expiry drop leases not renewed within TTL.
type AcquireRequest struct {
	Slots []Slot        // sets to join, all or none
	Lease string        // unique name of the lease (the Limiter makes one per Acquire)
	TTL   time.Duration // expiry for stores that have it
}

// AcquireResult is a Store's answer to Acquire.
type AcquireResult struct {
	// OK reports whether the slots were taken.
	OK bool
	// Retry, when not OK and positive, is when the earliest held lease
	// expires: a hint for how long to wait before asking again if no
	// release is seen. Zero means no hint.
	Retry time.Duration
}

// MemStore is the in-process [Store]: a map of TATs and lease sets behind one
// mutex. Leases in a MemStore never expire (a process that dies takes its
// state with it). The zero value is not usable; call [NewMemStore]. A
// MemStore is safe for concurrent use.
type MemStore struct {
	now   func() time.Time
	mu    sync.Mutex
	tat   map[string]int64
	slots map[string]map[string]struct{}
	ops   int
}

// NewMemStore returns an empty MemStore reading time from now (nil:
// time.Now).
func NewMemStore(now func() time.Time) *MemStore {
	if now == nil {
		now = time.Now
	}
	return &MemStore{now: now, tat: map[string]int64{}, slots: map[string]map[string]struct{}{}}
}

var _ Store = (*MemStore)(nil)

// gcraDelay is the delay in nanoseconds before n units may go in a bucket
// with the given TAT at time t (see ReserveRequest).
func gcraDelay(tat, t int64, b Bucket, n int) int64 {
	iv := int64(b.Interval)
	if tat < t {
		tat = t
	}
	d := tat + int64(n)*iv - int64(b.Burst)*iv - t
	if d < 0 {
		return 0
	}
	return d
}

func checkRequest(buckets []Bucket, n int) error {
	if n <= 0 {
		return fmt.Errorf("%w: reserve %d units", ErrInvalid, n)
	}
	for _, b := range buckets {
		if b.Interval <= 0 || b.Burst <= 0 {
			return fmt.Errorf("%w: bucket %s: interval %v burst %d", ErrInvalid, b.ID, b.Interval, b.Burst)
		}
		if n > b.Burst {
			return fmt.Errorf("%w: %d units, burst %d in %s", ErrExceedsBurst, n, b.Burst, b.ID)
		}
	}
	return nil
}

// Reserve implements [Store].
func (s *MemStore) Reserve(ctx context.Context, req ReserveRequest) (ReserveResult, error) {
	if err := ctx.Err(); err != nil {
		return ReserveResult{}, err
	}
	if err := checkRequest(req.Buckets, req.N); err != nil {
		return ReserveResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	t := now.UnixNano()
	var delay int64
	for _, b := range req.Buckets {
		if d := gcraDelay(s.tat[b.ID], t, b, req.N); d > delay {
			delay = d
		}
	}
	if req.MaxDelay >= 0 && delay > int64(req.MaxDelay) {
		return ReserveResult{Delay: time.Duration(delay), Now: now}, nil
	}
	at := t + delay
	tats := make([]int64, len(req.Buckets))
	for i, b := range req.Buckets {
		tat := max(s.tat[b.ID], at) + int64(req.N)*int64(b.Interval)
		s.tat[b.ID] = tat
		tats[i] = tat
	}
	s.sweep(t)
	return ReserveResult{OK: true, Delay: time.Duration(delay), Now: now, TATs: tats}, nil
}

// sweep drops buckets whose TAT has passed (they behave exactly like absent
// ones), amortised over calls. Called with s.mu held.
func (s *MemStore) sweep(t int64) {
	s.ops++
	if s.ops < 1024 || s.ops < len(s.tat) {
		return
	}
	s.ops = 0
	for id, tat := range s.tat {
		if tat <= t {
			delete(s.tat, id)
		}
	}
}

// Cancel implements [Store].
func (s *MemStore) Cancel(ctx context.Context, req CancelRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(req.TATs) != len(req.Buckets) {
		return fmt.Errorf("%w: cancel: %d TATs for %d buckets", ErrInvalid, len(req.TATs), len(req.Buckets))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range req.Buckets {
		if cur, ok := s.tat[b.ID]; ok && cur == req.TATs[i] {
			s.tat[b.ID] = cur - int64(req.N)*int64(b.Interval)
		}
	}
	return nil
}

// Acquire implements [Store].
func (s *MemStore) Acquire(ctx context.Context, req AcquireRequest) (AcquireResult, error) {
	if err := ctx.Err(); err != nil {
		return AcquireResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range req.Slots {
		set := s.slots[sl.ID]
		if _, held := set[req.Lease]; !held && len(set) >= sl.Max {
			return AcquireResult{}, nil
		}
	}
	for _, sl := range req.Slots {
		set := s.slots[sl.ID]
		if set == nil {
			set = map[string]struct{}{}
			s.slots[sl.ID] = set
		}
		set[req.Lease] = struct{}{}
	}
	return AcquireResult{OK: true}, nil
}

// Release implements [Store].
func (s *MemStore) Release(ctx context.Context, slots []Slot, lease string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range slots {
		if set := s.slots[sl.ID]; set != nil {
			delete(set, lease)
			if len(set) == 0 {
				delete(s.slots, sl.ID)
			}
		}
	}
	return nil
}

// Renew implements [Store]; MemStore leases do not expire, so it does
// nothing.
func (s *MemStore) Renew(ctx context.Context, slots []Slot, lease string, ttl time.Duration) error {
	return ctx.Err()
}
