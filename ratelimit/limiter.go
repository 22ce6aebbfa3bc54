package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Policy is the data part of a limiter's configuration: what a config file
// holds. Build it in Go, parse it with [ParsePolicy] (text) or decode it
// from JSON.
type Policy struct {
	// Rules are the rate and concurrency limits; see [Rule] for matching
	// and precedence. No rules: nothing is limited.
	Rules []Rule `json:"rules,omitempty"`
	// Backoff rules, in order (first match applies). Nil means
	// DefaultBackoff(); an empty non-nil slice disables back-off.
	Backoff []BackoffRule `json:"backoff"`
	// BackoffPer lists the dimensions back-off state is kept for. Empty
	// means [Site, Source]: one state per MX site and source IP.
	BackoffPer []Dimension `json:"backoff_per,omitempty"`
	// MinFactor is the lowest rate factor back-off reduces to, from 0.01
	// to 1. Zero means 0.05 (one twentieth of the configured rate).
	MinFactor float64 `json:"min_factor,omitempty"`
	// Warmup, when set, caps new sources' daily volume per site.
	Warmup *WarmupPlan `json:"warmup,omitempty"`
}

// Config configures a [Limiter]. The zero Config is valid: an in-process
// limiter with no limits but the default back-off rules.
type Config struct {
	// Policy holds the rules.
	Policy Policy
	// Store keeps rate and slot state. Nil: NewMemStore(Now), state local
	// to this process.
	Store Store
	// WarmupStore keeps warm-up counters. Nil: an in-memory store (warm-up
	// then restarts with the process; use OpenFileWarmupStore or
	// redislimit.WarmupStore in production). Unused without Policy.Warmup.
	WarmupStore WarmupStore
	// Now is the clock for back-off and warm-up (and the default
	// MemStore). Nil: time.Now.
	Now func() time.Time
	// Logger receives back-off changes. Nil: discard.
	Logger *slog.Logger
	// MaxDelay bounds how far ahead Reserve books: a reservation that
	// would have to wait longer is not made (Reservation.OK false, Delay
	// telling when to ask again). Zero: no bound.
	MaxDelay time.Duration
	// LeaseTTL is how long a connection slot survives in a store with
	// expiry (Redis) if its holder stops renewing it (the limiter renews
	// held leases every LeaseTTL/3). Zero: 2 minutes.
	LeaseTTL time.Duration
	// PollInterval is the longest Acquire waits between attempts when no
	// local release wakes it (slots released by other nodes, lease
	// expiry, back-off recovery). Zero: 1 second.
	PollInterval time.Duration
}

// Limiter applies a [Policy]. It is safe for concurrent use; Close it to stop
// its lease-renewal goroutine.
type Limiter struct {
	layers    [][]*compiledRule // per layer, in order of first appearance
	backoff   []*compiledBackoff
	boPer     []Dimension
	minFactor float64
	warm      *WarmupPlan
	warmSrc   map[string]bool
	store     Store
	wstore    WarmupStore
	now       func() time.Time
	log       *slog.Logger
	maxDelay  time.Duration
	ttl       time.Duration
	poll      time.Duration
	idPrefix  string
	seq       atomic.Uint64
	nstates   atomic.Int64 // len(states), readable without mu
	nwaiters  atomic.Int64 // Acquire calls waiting, readable without mu
	renew     bool         // the store has lease expiry: keep leases renewed

	mu      sync.Mutex
	states  map[string]*backoffState
	created int // states created since the last sweep
	starts  map[string]time.Time
	leases  map[*Lease]struct{}
	waiters map[string]map[chan struct{}]struct{}
	closed  bool

	done chan struct{}
	wg   sync.WaitGroup
}

// New checks cfg and returns a Limiter. Errors wrap [ErrInvalid].
func New(cfg Config) (*Limiter, error) {
	l := &Limiter{
		store: cfg.Store, wstore: cfg.WarmupStore, now: cfg.Now, log: cfg.Logger,
		maxDelay: cfg.MaxDelay, ttl: cfg.LeaseTTL, poll: cfg.PollInterval,
		minFactor: cfg.Policy.MinFactor, boPer: cfg.Policy.BackoffPer,
		states: map[string]*backoffState{}, starts: map[string]time.Time{},
		leases: map[*Lease]struct{}{}, waiters: map[string]map[chan struct{}]struct{}{},
		done: make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.store == nil {
		l.store = NewMemStore(l.now)
	}
	if l.maxDelay < 0 || l.ttl < 0 || l.poll < 0 {
		return nil, fmt.Errorf("%w: negative duration in Config", ErrInvalid)
	}
	if l.ttl == 0 {
		l.ttl = 2 * time.Minute
	}
	if l.poll == 0 {
		l.poll = time.Second
	}
	if l.minFactor == 0 {
		l.minFactor = 0.05
	}
	if !(l.minFactor >= 0.01 && l.minFactor <= 1) {
		return nil, fmt.Errorf("%w: MinFactor %v not in [0.01,1]", ErrInvalid, l.minFactor)
	}
	if len(l.boPer) == 0 {
		l.boPer = []Dimension{Site, Source}
	}
	for _, d := range l.boPer {
		if d < Domain || d > Tenant {
			return nil, fmt.Errorf("%w: BackoffPer: invalid dimension %d", ErrInvalid, uint8(d))
		}
	}
	layerIdx := map[string]int{}
	for _, r := range cfg.Policy.Rules {
		c, err := r.compile()
		if err != nil {
			return nil, err
		}
		i, ok := layerIdx[c.Layer]
		if !ok {
			i = len(l.layers)
			layerIdx[c.Layer] = i
			l.layers = append(l.layers, nil)
		}
		l.layers[i] = append(l.layers[i], newCompiledRule(c))
	}
	bo := cfg.Policy.Backoff
	if bo == nil {
		bo = DefaultBackoff()
	}
	for _, r := range bo {
		c, err := r.compile()
		if err != nil {
			return nil, err
		}
		l.backoff = append(l.backoff, c)
	}
	if w := cfg.Policy.Warmup; w != nil {
		wp := &WarmupPlan{Schedule: w.Schedule, Sources: w.Sources}
		if wp.Schedule == nil {
			wp.Schedule = DefaultWarmupSchedule()
		}
		for _, v := range wp.Schedule {
			if v < 0 {
				return nil, fmt.Errorf("%w: warm-up schedule entry %d", ErrInvalid, v)
			}
		}
		if len(wp.Sources) > 0 {
			l.warmSrc = map[string]bool{}
			for _, s := range wp.Sources {
				l.warmSrc[s] = true
			}
		}
		l.warm = wp
		if l.wstore == nil {
			l.wstore = &MemWarmupStore{}
		}
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("%w: lease id: %v", ErrInvalid, err)
	}
	l.idPrefix = hex.EncodeToString(b[:]) + "-"
	if _, local := l.store.(*MemStore); !local {
		l.renew = true
		l.wg.Add(1)
		go l.renewLoop()
	}
	return l, nil
}

// Close stops lease renewal and makes later calls fail with [ErrClosed].
// Leases still held are not released (in a store with expiry they lapse
// after LeaseTTL). Close does not close the stores.
func (l *Limiter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

func (l *Limiter) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Rules returns the rules that apply to key, one per layer (the winners of
// the precedence described at [Rule]), with defaults filled in. It is meant
// for inspection and debugging.
func (l *Limiter) Rules(key Key) []Rule {
	k := key.normalize()
	var out []Rule
	for _, layer := range l.layers {
		if r := winner(layer, k); r != nil {
			rule := r.Rule
			rule.Per = append([]Dimension(nil), r.Per...)
			out = append(out, rule)
		}
	}
	return out
}

// winner returns the most specific matching rule of one layer, the first
// listed among equals.
func winner(layer []*compiledRule, k Key) *compiledRule {
	var best *compiledRule
	bestSpec := -1
	for _, r := range layer {
		if r.spec > bestSpec && r.matches(k) {
			best, bestSpec = r, r.spec
		}
	}
	return best
}

// compiledRule is a validated rule with its store-key prefixes.
type compiledRule struct {
	Rule
	spec           int
	rateID, connID string
}

func newCompiledRule(r Rule) *compiledRule {
	c := &compiledRule{Rule: r, spec: r.specificity()}
	var b strings.Builder
	escapeID(&b, r.id())
	c.rateID = "r|" + b.String()
	c.connID = "c|" + b.String()
	return c
}

// budgetID returns prefix followed by k's values for dims.
func budgetID(prefix string, k Key, dims []Dimension) string {
	if len(dims) == 0 {
		return prefix
	}
	var b strings.Builder
	n := len(prefix)
	for _, d := range dims {
		n += 10 + len(k.get(d))
	}
	b.Grow(n)
	b.WriteString(prefix)
	k.project(&b, dims)
	return b.String()
}

// plan is what a key is subject to at one moment.
type plan struct {
	buckets []Bucket
	slots   []Slot
	maxMsgs int
}

func (l *Limiter) plan(k Key, st Status, wantSlots bool) plan {
	var p plan
	for _, layer := range l.layers {
		r := winner(layer, k)
		if r == nil {
			continue
		}
		if iv := r.Rate.Interval(); iv > 0 {
			if st.Factor < 1 {
				iv = time.Duration(float64(iv) / st.Factor)
			}
			p.buckets = append(p.buckets, Bucket{ID: budgetID(r.rateID, k, r.Per), Interval: iv, Burst: r.Burst})
		}
		if wantSlots && r.MaxConnections > 0 {
			p.slots = append(p.slots, Slot{ID: budgetID(r.connID, k, r.Per), Max: r.MaxConnections})
		}
		if m := r.MaxMessagesPerConnection; m > 0 && (p.maxMsgs == 0 || m < p.maxMsgs) {
			p.maxMsgs = m
		}
	}
	if wantSlots && len(l.backoff) > 0 {
		// Every lease also joins its back-off destination's set, so a
		// back-off connection cap counts connections opened before it.
		m := st.MaxConnections
		if m == 0 {
			m = 1 << 30
		}
		p.slots = append(p.slots, Slot{ID: budgetID("b", k, l.boPer), Max: m})
	}
	return p
}

func (l *Limiter) backoffID(k Key) string {
	return budgetID("", k, l.boPer)
}

// dropState forgets a recovered destination. Called with l.mu held.
func (l *Limiter) dropState(id string) {
	delete(l.states, id)
	l.nstates.Add(-1)
}

// sweepStates drops recovered destinations nobody asked about since,
// amortised over state creations. Called with l.mu held.
func (l *Limiter) sweepStates(now time.Time) {
	l.created++
	if l.created < 1024 || l.created < len(l.states) {
		return
	}
	l.created = 0
	for id, s := range l.states {
		if s.advance(now) {
			l.dropState(id)
		}
	}
}

// Status returns key's back-off state now.
func (l *Limiter) Status(key Key) Status {
	return l.status(key.normalize(), l.now())
}

func (l *Limiter) status(k Key, now time.Time) Status {
	if len(l.backoff) == 0 || l.nstates.Load() == 0 {
		return Status{Factor: 1}
	}
	id := l.backoffID(k)
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.states[id]
	if s == nil {
		return Status{Factor: 1}
	}
	if s.advance(now) {
		l.dropState(id)
		l.log.Info("ratelimit: back-off recovered", "destination", id, "rule", s.rule.Name)
		return Status{Factor: 1}
	}
	return s.status()
}

// Feedback tells the limiter how an attempt to key's destination went. A
// 2xx outcome counts towards recovery; any other outcome is matched
// against the back-off rules and, on a match, slows the destination down
// (see [BackoffRule]). It returns the destination's state afterwards.
// Outcomes that match no rule leave the state unchanged.
func (l *Limiter) Feedback(ctx context.Context, key Key, o Outcome) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	if l.isClosed() {
		return Status{}, ErrClosed
	}
	if len(l.backoff) == 0 {
		return Status{Factor: 1}, nil
	}
	if o.Success() && l.nstates.Load() == 0 {
		return Status{Factor: 1}, nil
	}
	k := key.normalize()
	now := l.now()
	id := l.backoffID(k)
	if o.Success() {
		l.mu.Lock()
		defer l.mu.Unlock()
		s := l.states[id]
		if s == nil {
			return Status{Factor: 1}, nil
		}
		if !s.advance(now) && s.suspended.IsZero() {
			s.successes++
			if s.successes >= s.rule.RecoverAfter {
				s.successes = 0
				s.step(1)
				s.since = now
			}
		}
		if s.factor >= 1 && s.conns == 0 && s.suspended.IsZero() {
			l.dropState(id)
			l.log.Info("ratelimit: back-off recovered", "destination", id, "rule", s.rule.Name)
			return Status{Factor: 1}, nil
		}
		return s.status(), nil
	}
	hay := o.haystack()
	var rule *compiledBackoff
	for _, r := range l.backoff {
		if r.matches(o, hay) {
			rule = r
			break
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.states[id]
	if rule == nil {
		if s == nil {
			return Status{Factor: 1}, nil
		}
		return s.status(), nil
	}
	if s == nil {
		l.sweepStates(now)
		s = &backoffState{factor: 1}
		l.states[id] = s
		l.nstates.Add(1)
	} else {
		s.advance(now)
	}
	s.rule = rule
	s.successes = 0
	if rule.Factor > 0 && (s.reduced.IsZero() || now.Sub(s.reduced) >= time.Duration(rule.Holddown)) {
		s.factor = max(l.minFactor, s.factor*rule.Factor)
		s.reduced = now
	}
	if rule.MaxConnections > 0 && (s.conns == 0 || rule.MaxConnections < s.conns) {
		s.conns = rule.MaxConnections
	}
	s.since = now
	if rule.Suspend > 0 {
		if until := now.Add(time.Duration(rule.Suspend)); until.After(s.suspended) {
			s.suspended = until
		}
		s.since = s.suspended
	}
	st := s.status()
	l.log.Info("ratelimit: back-off", "destination", id, "rule", rule.Name,
		"factor", st.Factor, "max_connections", st.MaxConnections, "suspended_until", st.SuspendedUntil,
		"code", o.Code, "category", o.Category)
	return st, nil
}

// Reason says why a reservation was not granted.
type Reason string

// Reasons for Reservation.OK being false.
const (
	ReasonNone      Reason = ""          // granted
	ReasonRate      Reason = "rate"      // would wait longer than Config.MaxDelay (or Allow: any wait)
	ReasonSuspended Reason = "suspended" // back-off suspension
	ReasonWarmup    Reason = "warmup"    // the source's warm-up cap for today is used up
)

// Reservation is the answer to [Limiter.Reserve].
//
// When OK, N units are booked for time At, Delay after the decision: the
// caller sleeps Delay and then acts, or calls Cancel if it will not act.
// When not OK, nothing is booked, Reason says why and Delay is how long
// until asking again is worthwhile (end of suspension, next warm-up day,
// when the rate would allow it).
type Reservation struct {
	OK     bool          // units booked
	Delay  time.Duration // wait before acting (OK) or before asking again (not OK)
	At     time.Time     // the store's time of the decision plus Delay
	Reason Reason        // why not OK; ReasonNone when OK

	l         *Limiter
	n         int
	buckets   []Bucket
	tats      []int64
	warm      *Counter
	cancelled atomic.Bool
}

// Cancel gives an unused reservation back: its warm-up count is returned,
// and its rate units are returned to every budget nobody has reserved from
// since (see [CancelRequest]). Cancelling twice, or a reservation that is
// not OK, does nothing.
func (r *Reservation) Cancel(ctx context.Context) error {
	if r == nil || !r.OK || r.l == nil || !r.cancelled.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if len(r.buckets) > 0 {
		err = r.l.store.Cancel(ctx, CancelRequest{Buckets: r.buckets, N: r.n, TATs: r.tats})
	}
	if r.warm != nil {
		if _, werr := r.l.wstore.TryAdd(ctx, *r.warm, -int64(r.n), 0); werr != nil && err == nil {
			err = werr
		}
	}
	return storeErr(err)
}

// storeErr wraps a store failure in ErrStore, leaving context errors and
// this package's own errors as they are.
func storeErr(err error) error {
	if err == nil || err == context.Canceled || err == context.DeadlineExceeded || isOwn(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStore, err)
}

func isOwn(err error) bool {
	for _, e := range []error{ErrSyntax, ErrInvalid, ErrExceedsBurst, ErrBusy, ErrSuspended, ErrClosed, ErrStore} {
		if errorsIs(err, e) {
			return true
		}
	}
	return false
}

// Reserve books n units (messages) for key: against the rate of every rule
// that applies, the destination's back-off and the source's warm-up cap.
// It never waits: the caller sleeps Reservation.Delay itself, so a slow
// destination never holds up another. n larger than a rule's burst fails
// with [ErrExceedsBurst]; store failures wrap [ErrStore].
func (l *Limiter) Reserve(ctx context.Context, key Key, n int) (*Reservation, error) {
	md := time.Duration(-1) // no bound
	if l.maxDelay > 0 {
		md = l.maxDelay
	}
	return l.reserve(ctx, key, n, md)
}

// reserve is Reserve with a store MaxDelay (negative: no bound).
func (l *Limiter) reserve(ctx context.Context, key Key, n int, maxDelay time.Duration) (*Reservation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, fmt.Errorf("%w: reserve %d units", ErrInvalid, n)
	}
	if l.isClosed() {
		return nil, ErrClosed
	}
	k := key.normalize()
	now := l.now()
	st := l.status(k, now)
	if !st.SuspendedUntil.IsZero() {
		d := st.SuspendedUntil.Sub(now)
		return &Reservation{Delay: d, At: st.SuspendedUntil, Reason: ReasonSuspended}, nil
	}
	p := l.plan(k, st, false)
	for _, b := range p.buckets {
		if n > b.Burst {
			return nil, fmt.Errorf("%w: %d units, burst %d in %s", ErrExceedsBurst, n, b.Burst, b.ID)
		}
	}
	r := &Reservation{l: l, n: n, buckets: p.buckets}
	if c, limit, next, ok, err := l.warmCounter(ctx, k, now); err != nil {
		return nil, storeErr(err)
	} else if ok {
		added, err := l.wstore.TryAdd(ctx, c, int64(n), limit)
		if err != nil {
			return nil, storeErr(err)
		}
		if !added {
			return &Reservation{Delay: next.Sub(now), At: next, Reason: ReasonWarmup}, nil
		}
		r.warm = &c
	}
	if len(p.buckets) == 0 {
		r.OK, r.At = true, now
		return r, nil
	}
	res, err := l.store.Reserve(ctx, ReserveRequest{Buckets: p.buckets, N: n, MaxDelay: maxDelay})
	if err != nil {
		l.refundWarm(r)
		return nil, storeErr(err)
	}
	if !res.OK {
		l.refundWarm(r)
		return &Reservation{Delay: res.Delay, At: res.Now.Add(res.Delay), Reason: ReasonRate}, nil
	}
	r.OK, r.Delay, r.At, r.tats = true, res.Delay, res.Now.Add(res.Delay), res.TATs
	return r, nil
}

func (l *Limiter) refundWarm(r *Reservation) {
	if r.warm != nil {
		// Best effort with a fresh context: the reservation failed, and a
		// refund that fails leaves the count too high, never too low.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = l.wstore.TryAdd(ctx, *r.warm, -int64(r.n), 0)
	}
}

// warmCounter returns the warm-up counter and today's cap for k, when the
// source is under warm-up, and the time the next warm-up day starts.
func (l *Limiter) warmCounter(ctx context.Context, k Key, now time.Time) (c Counter, limit int64, next time.Time, ok bool, err error) {
	if l.warm == nil || (l.warmSrc != nil && !l.warmSrc[k.Source]) {
		return c, 0, next, false, nil
	}
	l.mu.Lock()
	start, cached := l.starts[k.Source]
	l.mu.Unlock()
	if !cached {
		start, err = l.wstore.Start(ctx, k.Source, now)
		if err != nil {
			return c, 0, next, false, err
		}
		l.mu.Lock()
		l.starts[k.Source] = start
		l.mu.Unlock()
	}
	el := now.Sub(start)
	if el < 0 {
		el = 0
	}
	day := int(el / (24 * time.Hour))
	if day >= len(l.warm.Schedule) {
		return c, 0, next, false, nil
	}
	next = start.Add(time.Duration(day+1) * 24 * time.Hour)
	return Counter{Source: k.Source, Site: k.Site, Day: day}, int64(l.warm.Schedule[day]), next, true, nil
}

// Allow reports whether n units may go now, booking them if so. It is
// Reserve without waiting: a false result books nothing.
func (l *Limiter) Allow(ctx context.Context, key Key, n int) (bool, error) {
	r, err := l.reserve(ctx, key, n, 0)
	if err != nil {
		return false, err
	}
	return r.OK, nil
}

// Wait blocks until n units may go for key, built on Reserve: it sleeps
// exactly the delays the limiter reports. When ctx ends first it cancels
// the reservation and returns ctx.Err().
func (l *Limiter) Wait(ctx context.Context, key Key, n int) error {
	for {
		r, err := l.Reserve(ctx, key, n)
		if err != nil {
			return err
		}
		if err := sleep(ctx, r.Delay); err != nil {
			if r.OK {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				_ = r.Cancel(cctx)
				cancel()
			}
			return err
		}
		if r.OK {
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Lease is a held connection slot, from [Limiter.Acquire]. It is safe for
// concurrent use.
type Lease struct {
	// MaxMessages is the smallest MaxMessagesPerConnection of the rules
	// that apply, 0 for no cap. Message enforces it.
	MaxMessages int

	l        *Limiter
	slots    []Slot
	id       string
	sent     atomic.Int64
	released atomic.Bool
}

// Message counts one message on the connection and reports whether it may
// be sent: false once MaxMessages messages were counted, when the caller
// should close the connection, Release the lease and acquire a new one.
func (le *Lease) Message() bool {
	n := le.sent.Add(1)
	return le.MaxMessages == 0 || n <= int64(le.MaxMessages)
}

// Release gives the slot back. Calling it more than once does nothing.
func (le *Lease) Release(ctx context.Context) error {
	if le == nil || !le.released.CompareAndSwap(false, true) {
		return nil
	}
	l := le.l
	if len(le.slots) == 0 {
		return nil
	}
	if l.renew {
		l.mu.Lock()
		delete(l.leases, le)
		l.mu.Unlock()
	}
	err := l.store.Release(ctx, le.slots, le.id)
	l.wake(le.slots)
	return storeErr(err)
}

// TryAcquire takes a connection slot for key if one is free now, and
// returns an error wrapping [ErrBusy] otherwise, or [ErrSuspended] while
// back-off suspends the destination.
func (l *Limiter) TryAcquire(ctx context.Context, key Key) (*Lease, error) {
	le, _, err := l.tryAcquire(ctx, key.normalize(), nil)
	return le, err
}

// Acquire takes a connection slot for key, waiting until one is free (woken
// by releases in this process, polling every PollInterval for anything
// else) or ctx ends. While back-off suspends the destination it waits for
// the end of the suspension.
func (l *Limiter) Acquire(ctx context.Context, key Key) (*Lease, error) {
	k := key.normalize()
	wake := make(chan struct{}, 1)
	var registered []Slot
	defer func() { l.unwait(registered, wake) }()
	for {
		le, wait, err := l.tryAcquire(ctx, k, func(slots []Slot) {
			if registered == nil {
				registered = slots
				l.addWaiter(slots, wake)
			}
		})
		if err == nil {
			return le, nil
		}
		if !errorsIs(err, ErrBusy) && !errorsIs(err, ErrSuspended) {
			return nil, err
		}
		if wait <= 0 || wait > l.poll {
			wait = l.poll
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-l.done:
			t.Stop()
			return nil, ErrClosed
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// tryAcquire makes one attempt. register, if not nil, is called with the
// slots before the store is asked, so that a release between the attempt
// and the wait is not missed. wait hints how long to wait before retrying.
func (l *Limiter) tryAcquire(ctx context.Context, k Key, register func([]Slot)) (*Lease, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if l.isClosed() {
		return nil, 0, ErrClosed
	}
	now := l.now()
	st := l.status(k, now)
	if !st.SuspendedUntil.IsZero() {
		d := st.SuspendedUntil.Sub(now)
		return nil, d, fmt.Errorf("%w: for %v (rule %s)", ErrSuspended, d, st.Rule)
	}
	p := l.plan(k, st, true)
	le := &Lease{MaxMessages: p.maxMsgs, l: l, slots: p.slots}
	if len(p.slots) == 0 {
		return le, 0, nil
	}
	le.id = l.idPrefix + strconv.FormatUint(l.seq.Add(1), 36)
	if register != nil {
		register(p.slots)
	}
	res, err := l.store.Acquire(ctx, AcquireRequest{Slots: p.slots, Lease: le.id, TTL: l.ttl})
	if err != nil {
		return nil, 0, storeErr(err)
	}
	if !res.OK {
		return nil, res.Retry, fmt.Errorf("%w: %s", ErrBusy, k)
	}
	if l.renew {
		l.mu.Lock()
		l.leases[le] = struct{}{}
		l.mu.Unlock()
	}
	return le, 0, nil
}

func (l *Limiter) addWaiter(slots []Slot, ch chan struct{}) {
	l.nwaiters.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range slots {
		m := l.waiters[s.ID]
		if m == nil {
			m = map[chan struct{}]struct{}{}
			l.waiters[s.ID] = m
		}
		m[ch] = struct{}{}
	}
}

func (l *Limiter) unwait(slots []Slot, ch chan struct{}) {
	if slots == nil {
		return
	}
	l.nwaiters.Add(-1)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range slots {
		if m := l.waiters[s.ID]; m != nil {
			delete(m, ch)
			if len(m) == 0 {
				delete(l.waiters, s.ID)
			}
		}
	}
}

// wake signals the waiters of the released slots.
func (l *Limiter) wake(slots []Slot) {
	if l.nwaiters.Load() == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range slots {
		for ch := range l.waiters[s.ID] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// renewLoop keeps held leases alive in stores with expiry.
func (l *Limiter) renewLoop() {
	defer l.wg.Done()
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		l.mu.Lock()
		held := make([]*Lease, 0, len(l.leases))
		for le := range l.leases {
			held = append(held, le)
		}
		l.mu.Unlock()
		for _, le := range held {
			ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
			if err := l.store.Renew(ctx, le.slots, le.id, l.ttl); err != nil {
				l.log.Warn("ratelimit: lease renewal failed", "lease", le.id, "err", err)
			}
			cancel()
		}
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
