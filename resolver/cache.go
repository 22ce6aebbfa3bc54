package resolver

import (
	"context"
	"sync"
	"time"
)

// key identifies a cached answer: the normalised query name and type.
type key struct {
	name  string
	qtype uint16
}

// entry is one cached answer, positive or negative. Apart from prev and
// next, which belong to the cache's lock, an entry is never modified once
// it has been handed to the cache, so readers may use it without locking.
type entry struct {
	key       key
	records   any    // []T of the lookup's result type; nil for negative entries
	name      string // canonical name after CNAMEs
	authentic bool
	ttl       time.Duration // TTL at the time of the answer
	expires   time.Time
	err       error  // for negative entries: ErrNotFound or ErrNoData
	rcode     int    // the response code of a negative answer
	server    string // the server that answered
	prev      *entry
	next      *entry
}

// cache is a size-bounded LRU cache of answers, safe for concurrent use.
// Expired entries are dropped when they are found or evicted.
type cache struct {
	mu   sync.Mutex
	max  int
	m    map[key]*entry
	root entry // root.next is the most recently used entry, root.prev the least
}

func newCache(max int) *cache {
	c := &cache{max: max, m: make(map[key]*entry)}
	c.root.next = &c.root
	c.root.prev = &c.root
	return c
}

// get returns the live entry for k, or nil.
func (c *cache) get(k key, now time.Time) *entry {
	c.mu.Lock()
	e := c.m[k]
	if e == nil {
		c.mu.Unlock()
		return nil
	}
	if !now.Before(e.expires) {
		c.unlink(e)
		delete(c.m, k)
		c.mu.Unlock()
		return nil
	}
	if c.root.next != e {
		c.unlink(e)
		c.pushFront(e)
	}
	c.mu.Unlock()
	return e
}

// put stores e, replacing any entry with the same key and evicting the
// least recently used entries beyond the size limit.
func (c *cache) put(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[e.key]; old != nil {
		c.unlink(old)
	}
	c.m[e.key] = e
	c.pushFront(e)
	for len(c.m) > c.max {
		last := c.root.prev
		c.unlink(last)
		delete(c.m, last.key)
	}
}

// len returns the number of entries, live or expired.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func (c *cache) unlink(e *entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

func (c *cache) pushFront(e *entry) {
	e.prev = &c.root
	e.next = c.root.next
	c.root.next.prev = e
	c.root.next = e
}

// call is one upstream resolution in progress, shared by every caller
// asking the same question meanwhile.
type call struct {
	waiters int // callers waiting, for tests; guarded by flight.mu
	done    chan struct{}
	e       *entry // set before done is closed
	err     error  // set before done is closed
}

// flight collapses concurrent identical lookups into one upstream query
// (the "singleflight" pattern).
type flight struct {
	mu sync.Mutex
	m  map[key]*call
}

// do returns the result of fn for k, starting fn in a new goroutine unless
// a call for k is already running, in which case it waits for that one.
// recheck is consulted under the flight lock before starting a new call,
// so an answer cached by a call that just finished is not fetched again.
//
// fn runs detached from ctx: a caller whose context ends stops waiting and
// gets ctx.Err(), while the shared query runs on for the other callers. Its
// running time is bounded by the resolver's timeouts, so the goroutine
// always exits.
func (f *flight) do(ctx context.Context, k key, recheck func() *entry, fn func() (*entry, error)) (*entry, error) {
	f.mu.Lock()
	c := f.m[k]
	if c == nil {
		if recheck != nil {
			if e := recheck(); e != nil {
				f.mu.Unlock()
				return e, nil
			}
		}
		c = &call{done: make(chan struct{})}
		f.m[k] = c
		go func() {
			defer close(c.done)
			c.e, c.err = fn()
			f.mu.Lock()
			delete(f.m, k)
			f.mu.Unlock()
		}()
	}
	c.waiters++
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.e, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
