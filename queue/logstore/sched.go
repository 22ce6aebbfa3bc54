package logstore

import (
	"math"
	"slices"
	"time"

	"github.com/mtakit/mta/queue"
)

// delEnt is the in-memory scheduling state of one delivery: everything Claim
// needs, nothing more (recipients, replies and the envelope stay on disk).
type delEnt struct {
	m      *msgEnt
	domain string // interned
	next   int64  // NextAttempt in clamped Unix nanoseconds
	lease  *leaseEnt
	in     *heapq // the heap holding d (a lane or the lease heap), or nil
	pos    int32  // index in in
	idx    int32
	held   bool
	done   bool
}

// leaseEnt is a delivery's current lease. Leases live in memory only: the
// store is used by one process, so after a restart every lease is dead
// (its holder died with the process) and the delivery is claimable again.
type leaseEnt struct {
	owner   string
	token   string
	expires time.Time
	exp     int64
	// expired is set once a Claim saw the lease expired and moved the
	// delivery back to its lane.
	expired bool
}

// heapq is a binary heap of deliveries: a lane (one domain and priority,
// ordered by NextAttempt, message ID, index) or the lease heap (ordered by
// lease expiry).
type heapq struct {
	items  []*delEnt
	leases bool
	prio   queue.Priority
	domain string
}

func (h *heapq) less(a, b *delEnt) bool {
	if h.leases {
		return a.lease.exp < b.lease.exp
	}
	if a.next != b.next {
		return a.next < b.next
	}
	if a.m.id != b.m.id {
		return a.m.id < b.m.id
	}
	return a.idx < b.idx
}

func (h *heapq) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].pos = int32(i)
	h.items[j].pos = int32(j)
}

func (h *heapq) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(h.items[i], h.items[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *heapq) down(i int) {
	n := len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && h.less(h.items[r], h.items[l]) {
			c = r
		}
		if !h.less(h.items[c], h.items[i]) {
			return
		}
		h.swap(i, c)
		i = c
	}
}

func (h *heapq) push(d *delEnt) {
	d.in = h
	d.pos = int32(len(h.items))
	h.items = append(h.items, d)
	h.up(len(h.items) - 1)
}

func (h *heapq) remove(d *delEnt) {
	i := int(d.pos)
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items[last] = nil
	h.items = h.items[:last]
	if i != last {
		h.down(i)
		h.up(i)
	}
	d.in = nil
	d.pos = -1
}

// sched holds the lanes, indexed by priority then domain, and the lease
// heap. It is guarded by Store.mu.
type sched struct {
	lanes  map[queue.Priority]map[string]*heapq
	prios  []queue.Priority // priorities with lanes, highest first
	leases heapq
	names  map[string]string // interned domain names
}

func newSched() *sched {
	return &sched{
		lanes:  make(map[queue.Priority]map[string]*heapq),
		leases: heapq{leases: true},
		names:  make(map[string]string),
	}
}

func (s *sched) intern(domain string) string {
	if v, ok := s.names[domain]; ok {
		return v
	}
	s.names[domain] = domain
	return domain
}

func (s *sched) lane(p queue.Priority, domain string) *heapq {
	byDomain := s.lanes[p]
	if byDomain == nil {
		byDomain = make(map[string]*heapq)
		s.lanes[p] = byDomain
		i, _ := slices.BinarySearchFunc(s.prios, p, func(a, b queue.Priority) int {
			switch {
			case a > b:
				return -1
			case a < b:
				return 1
			}
			return 0
		})
		s.prios = slices.Insert(s.prios, i, p)
	}
	l := byDomain[domain]
	if l == nil {
		l = &heapq{prio: p, domain: domain}
		byDomain[domain] = l
	}
	return l
}

// unplace takes d out of whatever heap holds it.
func (s *sched) unplace(d *delEnt) {
	if d.in == nil {
		return
	}
	h := d.in
	h.remove(d)
	if !h.leases && len(h.items) == 0 {
		s.dropLane(h)
	}
}

func (s *sched) dropLane(h *heapq) {
	byDomain := s.lanes[h.prio]
	delete(byDomain, h.domain)
	if len(byDomain) == 0 {
		delete(s.lanes, h.prio)
		if i := slices.Index(s.prios, h.prio); i >= 0 {
			s.prios = slices.Delete(s.prios, i, i+1)
		}
	}
}

// place puts d where its state says: nowhere when it is done or held; in
// the lease heap while it has a lease not yet seen expired; else in its
// lane.
func (s *sched) place(d *delEnt) {
	s.unplace(d)
	if d.done || d.held {
		return
	}
	if d.lease != nil && !d.lease.expired {
		s.leases.push(d)
		return
	}
	s.lane(d.m.prio, d.domain).push(d)
}

// pick finds the ready delivery Claim must return at now, or nil. It moves
// deliveries whose lease expired into their lanes first.
func (s *sched) pick(now int64, skip []string, maxPrio *queue.Priority) *delEnt {
	for len(s.leases.items) > 0 && s.leases.items[0].lease.exp <= now {
		d := s.leases.items[0]
		s.leases.remove(d)
		d.lease.expired = true
		s.lane(d.m.prio, d.domain).push(d)
	}
	var empty []*heapq
	defer func() {
		for _, l := range empty {
			if len(l.items) == 0 {
				s.dropLane(l)
			}
		}
	}()
	// The Queue passes skip sorted; then a lane costs a binary search, not
	// a scan of skip (which can list every domain behind a busy smarthost).
	skipped := func(d string) bool { return slices.Contains(skip, d) }
	if len(skip) > 8 && slices.IsSorted(skip) {
		skipped = func(d string) bool { _, ok := slices.BinarySearch(skip, d); return ok }
	}
	for _, p := range s.prios {
		if maxPrio != nil && p > *maxPrio {
			continue
		}
		var best *delEnt
		for domain, l := range s.lanes[p] {
			if skipped(domain) {
				continue
			}
			top := s.top(l, now)
			if len(l.items) == 0 {
				empty = append(empty, l)
			}
			if top == nil {
				continue
			}
			if best == nil || l.less(top, best) {
				best = top
			}
		}
		if best != nil {
			return best
		}
	}
	return nil
}

// top returns the lane's first delivery if it is ready at now. A delivery
// whose lease is live at now (the caller's clock went back) goes back to the
// lease heap.
func (s *sched) top(l *heapq, now int64) *delEnt {
	for len(l.items) > 0 {
		d := l.items[0]
		if d.lease != nil && d.lease.exp > now {
			l.remove(d)
			d.lease.expired = false
			s.leases.push(d)
			continue
		}
		if d.next > now {
			return nil
		}
		return d
	}
	return nil
}

var (
	minNanos = time.Unix(0, math.MinInt64)
	maxNanos = time.Unix(0, math.MaxInt64)
)

// nanos converts t to Unix nanoseconds, clamping times outside int64's
// range (the zero time among them) to its ends.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minNanos):
		return math.MinInt64
	case t.After(maxNanos):
		return math.MaxInt64
	}
	return t.UnixNano()
}
