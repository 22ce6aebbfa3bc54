package deliver

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// PoolConfig bounds connection reuse and concurrency. The zero value is
// usable: see each field.
type PoolConfig struct {
	// MaxConnsPerHost bounds the deliveries running at once to one
	// destination address. Deliveries beyond it wait (honouring
	// ctx). Default 20. Coarser limits (per site, per tenant) belong to the
	// ratelimit package and the queue.
	MaxConnsPerHost int
	// MaxIdlePerHost is the number of idle sessions kept per pool key
	// (destination address, source address, TLS policy, EHLO name).
	// Default MaxConnsPerHost; negative disables reuse.
	MaxIdlePerHost int
	// IdleTimeout is how long an idle session is kept. Default 30 s.
	// Idle sessions past it are closed (without QUIT) the next time the
	// pool is used after another IdleTimeout/2, or by Close; no goroutine
	// runs in the background.
	IdleTimeout time.Duration
	// MaxMessages is the number of messages sent over one session before
	// it is closed. Default 100.
	MaxMessages int
}

func (c PoolConfig) withDefaults() PoolConfig {
	if c.MaxConnsPerHost <= 0 {
		c.MaxConnsPerHost = 20
	}
	if c.MaxIdlePerHost == 0 {
		c.MaxIdlePerHost = c.MaxConnsPerHost
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.MaxMessages <= 0 {
		c.MaxMessages = 100
	}
	return c
}

// poolKey identifies sessions that are interchangeable.
type poolKey struct {
	addr   netip.AddrPort
	src    netip.Addr
	host   string
	ehlo   string
	policy string
	// failure keeps a session opened while an MTA-STS policy could not
	// be fetched apart from others, so its results report it.
	failure string
	mode    tlsMode
	authID  string
	lmtp    bool
}

type slot struct {
	n    int
	wait []chan struct{}
}

// pool keeps idle sessions and bounds sessions per destination address.
// It is safe for concurrent use.
type pool struct {
	cfg PoolConfig
	now func() time.Time
	to  Timeouts

	mu        sync.Mutex
	idle      map[poolKey][]*sconn
	slots     map[netip.AddrPort]*slot
	closed    bool
	lastSweep time.Time
}

func newPool(cfg PoolConfig, to Timeouts, now func() time.Time) *pool {
	return &pool{
		cfg:   cfg.withDefaults(),
		now:   now,
		to:    to,
		idle:  make(map[poolKey][]*sconn),
		slots: make(map[netip.AddrPort]*slot),
	}
}

// acquire waits for a session slot to addr.
func (p *pool) acquire(ctx context.Context, addr netip.AddrPort) error {
	p.mu.Lock()
	s := p.slots[addr]
	if s == nil {
		s = &slot{}
		p.slots[addr] = s
	}
	if s.n < p.cfg.MaxConnsPerHost {
		s.n++
		p.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.wait = append(s.wait, ch)
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		for i, c := range s.wait {
			if c == ch {
				s.wait = append(s.wait[:i], s.wait[i+1:]...)
				p.mu.Unlock()
				return ctx.Err()
			}
		}
		p.mu.Unlock()
		// The slot was handed over meanwhile: pass it on.
		p.release(addr)
		return ctx.Err()
	}
}

func (p *pool) release(addr netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.slots[addr]
	if s == nil {
		return
	}
	if len(s.wait) > 0 {
		ch := s.wait[0]
		s.wait = s.wait[1:]
		close(ch)
		return
	}
	s.n--
	if s.n <= 0 {
		delete(p.slots, addr)
	}
}

// get returns an idle session for key, or nil. The caller holds a slot.
func (p *pool) get(key poolKey) *sconn {
	now := p.now()
	var stale []*sconn
	p.mu.Lock()
	list := p.idle[key]
	var sc *sconn
	for len(list) > 0 {
		c := list[len(list)-1]
		list = list[:len(list)-1]
		if now.Sub(c.idleSince) > p.cfg.IdleTimeout {
			stale = append(stale, c)
			continue
		}
		sc = c
		break
	}
	if len(list) == 0 {
		delete(p.idle, key)
	} else {
		p.idle[key] = list
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
	if sc != nil {
		sc.reused = true
	}
	return sc
}

// put returns a session after a transaction; it is kept when reusable.
func (p *pool) put(sc *sconn, reusable bool) {
	if !reusable || p.cfg.MaxIdlePerHost < 0 || sc.msgs >= p.cfg.MaxMessages {
		if reusable {
			sc.quit(p.to)
		} else {
			sc.close()
		}
		return
	}
	now := p.now()
	sc.idleSince = now
	p.mu.Lock()
	if p.closed || len(p.idle[sc.key]) >= p.cfg.MaxIdlePerHost {
		p.mu.Unlock()
		sc.quit(p.to)
		return
	}
	p.idle[sc.key] = append(p.idle[sc.key], sc)
	var expired []*sconn
	if now.Sub(p.lastSweep) > p.cfg.IdleTimeout/2 {
		p.lastSweep = now
		expired = p.sweepLocked(now)
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// sweepLocked removes the idle sessions past IdleTimeout and returns them.
func (p *pool) sweepLocked(now time.Time) []*sconn {
	var out []*sconn
	for k, l := range p.idle {
		keep := l[:0]
		for _, c := range l {
			if now.Sub(c.idleSince) > p.cfg.IdleTimeout {
				out = append(out, c)
			} else {
				keep = append(keep, c)
			}
		}
		if len(keep) == 0 {
			delete(p.idle, k)
		} else {
			p.idle[k] = keep
		}
	}
	return out
}

// close closes every idle session (with QUIT) and stops keeping new ones.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var all []*sconn
	for k, l := range p.idle {
		all = append(all, l...)
		delete(p.idle, k)
	}
	p.mu.Unlock()
	for _, sc := range all {
		sc.quit(p.to)
	}
}

// idleCount returns the number of idle sessions (for tests).
func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.idle {
		n += len(l)
	}
	return n
}
