// Package memstore is an in-memory [queue.Store], for tests and for queues
// that need not survive the process.
//
// It follows the whole Store contract (leases with expiry judged by the
// caller's clock, atomic completions, no aliasing, idempotency records,
// wake-up notifications) except durability across restarts: everything
// lives in the process and is gone when it exits. Bodies are held in memory.
//
// # Concurrency
//
// A Store is safe for concurrent use. One mutex guards everything; no lock is
// held when a method returns. Unfinished deliveries are kept in claim order,
// so Claim looks only at deliveries that are due but not claimable (held,
// leased, skipped); updates move one entry in a sorted slice.
package memstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/mtakit/mta/queue"
)

// ErrClosed is returned by every method after Close.
var ErrClosed = errors.New("memstore: store is closed")

// Store is an in-memory queue.Store. The zero value is not usable; call New.
type Store struct {
	mu     sync.Mutex
	msgs   map[string]*entry
	index  []dref // unfinished deliveries in claim order
	idem   map[idemKey]idemRecord
	seq    uint64
	closed bool
	ready  chan struct{}
}

type entry struct {
	msg    *queue.Message
	body   []byte
	tokens []string // current lease token per delivery, "" when none
}

// dref names one delivery in the index.
type dref struct {
	e *entry
	i int
}

func (r dref) delivery() *queue.Delivery { return &r.e.msg.Deliveries[r.i] }

// before reports whether a goes before b in claim order: priority
// descending, then NextAttempt, message ID and index ascending.
func before(a, b dref) bool {
	am, bm := a.e.msg, b.e.msg
	if am.Priority != bm.Priority {
		return am.Priority > bm.Priority
	}
	an, bn := a.delivery().NextAttempt, b.delivery().NextAttempt
	if !an.Equal(bn) {
		return an.Before(bn)
	}
	if am.ID != bm.ID {
		return am.ID < bm.ID
	}
	return a.i < b.i
}

// insert adds r to the index (the delivery must not be done).
func (s *Store) insert(r dref) {
	k := sort.Search(len(s.index), func(j int) bool { return !before(s.index[j], r) })
	s.index = slices.Insert(s.index, k, r)
}

// remove takes r out of the index, if there; call it before changing the
// delivery's NextAttempt.
func (s *Store) remove(r dref) {
	k := sort.Search(len(s.index), func(j int) bool { return !before(s.index[j], r) })
	if k < len(s.index) && s.index[k] == r {
		s.index = slices.Delete(s.index, k, k+1)
	}
}

type idemKey struct{ tenant, key string }

type idemRecord struct {
	id      string
	created time.Time
}

var (
	_ queue.Store           = (*Store)(nil)
	_ queue.IdempotentStore = (*Store)(nil)
	_ queue.Notifier        = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{
		msgs:  make(map[string]*entry),
		idem:  make(map[idemKey]idemRecord),
		ready: make(chan struct{}, 1),
	}
}

func (s *Store) notify() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready implements queue.Notifier.
func (s *Store) Ready() <-chan struct{} { return s.ready }

func (s *Store) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// readBody reads body fully, honouring ctx between reads.
func readBody(ctx context.Context, body io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(ctxReader{ctx, body}); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("memstore: reading body: %w", err)
	}
	return buf.Bytes(), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Enqueue implements queue.Store.
func (s *Store) Enqueue(ctx context.Context, msg *queue.Message, body io.Reader) error {
	_, err := s.enqueue(ctx, msg, body, nil)
	return err
}

// EnqueueIdempotent implements queue.IdempotentStore.
func (s *Store) EnqueueIdempotent(ctx context.Context, msg *queue.Message, body io.Reader, since time.Time) (string, error) {
	return s.enqueue(ctx, msg, body, &since)
}

func (s *Store) enqueue(ctx context.Context, msg *queue.Message, body io.Reader, since *time.Time) (string, error) {
	if err := queue.CheckMessage(msg); err != nil {
		return "", err
	}
	key := idemKey{msg.Tenant, msg.IdempotencyKey}
	useKey := since != nil && msg.IdempotencyKey != ""
	// Check for a duplicate before reading the body, and again under the
	// lock after reading it (another call may have won meanwhile).
	if useKey {
		if err := s.lock(ctx); err != nil {
			return "", err
		}
		rec, ok := s.idem[key]
		s.mu.Unlock()
		if ok && !rec.created.Before(*since) {
			return rec.id, queue.ErrDuplicate
		}
	}
	data, err := readBody(ctx, body)
	if err != nil {
		return "", err
	}
	if err := s.lock(ctx); err != nil {
		return "", err
	}
	defer s.mu.Unlock()
	if useKey {
		if rec, ok := s.idem[key]; ok && !rec.created.Before(*since) {
			return rec.id, queue.ErrDuplicate
		}
	}
	if _, ok := s.msgs[msg.ID]; ok {
		return "", fmt.Errorf("%w: %s", queue.ErrExists, msg.ID)
	}
	m := msg.Clone()
	m.Size = int64(len(data))
	e := &entry{msg: m, body: slices.Clip(data), tokens: make([]string, len(m.Deliveries))}
	for i := range m.Deliveries {
		m.Deliveries[i].LeaseOwner = ""
		m.Deliveries[i].LeaseExpires = time.Time{}
	}
	s.msgs[m.ID] = e
	for i := range m.Deliveries {
		if !m.Deliveries[i].Done() {
			s.insert(dref{e, i})
		}
	}
	if useKey {
		s.idem[key] = idemRecord{id: m.ID, created: m.Created}
		s.forgetIdem(*since)
	}
	s.notify()
	return m.ID, nil
}

// forgetIdem drops idempotency records older than since once the map grows.
func (s *Store) forgetIdem(since time.Time) {
	if len(s.idem) < 1024 || len(s.idem)%256 != 0 {
		return
	}
	for k, r := range s.idem {
		if r.created.Before(since) {
			delete(s.idem, k)
		}
	}
}

// Claim implements queue.Store.
func (s *Store) Claim(ctx context.Context, req queue.ClaimRequest) (*queue.Claim, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var (
		best    *entry
		bestIdx int
	)
	for k := 0; k < len(s.index); {
		r := s.index[k]
		m, d := r.e.msg, r.delivery()
		if req.MaxPriority != nil && m.Priority > *req.MaxPriority {
			maxp := *req.MaxPriority
			k += sort.Search(len(s.index)-k, func(j int) bool { return s.index[k+j].e.msg.Priority <= maxp })
			continue
		}
		if d.NextAttempt.After(req.Now) {
			// Nothing later in this priority is due: go to the next one.
			p := m.Priority
			k += sort.Search(len(s.index)-k, func(j int) bool { return s.index[k+j].e.msg.Priority < p })
			continue
		}
		if d.Held || slices.Contains(req.Skip, d.Domain) || (r.e.tokens[r.i] != "" && d.LeaseExpires.After(req.Now)) {
			k++
			continue
		}
		best, bestIdx = r.e, r.i
		break
	}
	if best == nil {
		return nil, queue.ErrNoneReady
	}
	s.seq++
	token := strconv.FormatUint(s.seq, 36)
	d := &best.msg.Deliveries[bestIdx]
	d.LeaseOwner = req.Owner
	d.LeaseExpires = req.Until
	best.tokens[bestIdx] = token
	return &queue.Claim{
		Message:  best.msg.Header(),
		Delivery: d.Clone(),
		Lease: queue.Lease{
			MessageID: best.msg.ID,
			Delivery:  bestIdx,
			Owner:     req.Owner,
			Token:     token,
			Expires:   req.Until,
		},
	}, nil
}

// leased returns the entry and delivery of a current lease.
func (s *Store) leased(l queue.Lease) (*entry, *queue.Delivery, error) {
	e, ok := s.msgs[l.MessageID]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", queue.ErrNotFound, l.MessageID)
	}
	if l.Delivery < 0 || l.Delivery >= len(e.tokens) || l.Token == "" || e.tokens[l.Delivery] != l.Token {
		return nil, nil, fmt.Errorf("%w: %s delivery %d", queue.ErrLeaseLost, l.MessageID, l.Delivery)
	}
	return e, &e.msg.Deliveries[l.Delivery], nil
}

// Complete implements queue.Store.
func (s *Store) Complete(ctx context.Context, c *queue.Completion) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, d, err := s.leased(c.Lease)
	if err != nil {
		return err
	}
	if err := queue.ApplyResults(d.Recipients, c.Results); err != nil {
		return err
	}
	s.remove(dref{e, c.Lease.Delivery}) // the index orders by NextAttempt, which changes
	d.Attempts++
	d.LastAttempt = c.Now
	if c.Warned {
		d.Warned = true
	}
	if !d.Done() {
		d.NextAttempt = c.NextAttempt
		s.insert(dref{e, c.Lease.Delivery})
	}
	d.LeaseOwner = ""
	d.LeaseExpires = time.Time{}
	e.tokens[c.Lease.Delivery] = ""
	if e.msg.Done() {
		delete(s.msgs, e.msg.ID)
	}
	return nil
}

// Release implements queue.Store.
func (s *Store) Release(ctx context.Context, lease queue.Lease, next time.Time) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, d, err := s.leased(lease)
	if err != nil {
		return err
	}
	s.remove(dref{e, lease.Delivery})
	d.NextAttempt = next
	s.insert(dref{e, lease.Delivery})
	d.LeaseOwner = ""
	d.LeaseExpires = time.Time{}
	e.tokens[lease.Delivery] = ""
	s.notify()
	return nil
}

// Get implements queue.Store.
func (s *Store) Get(ctx context.Context, id string) (*queue.Message, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	e, ok := s.msgs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	return e.msg.Clone(), nil
}

// List implements queue.Store.
func (s *Store) List(ctx context.Context, f queue.Filter) ([]*queue.Message, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var out []*queue.Message
	for _, e := range s.msgs {
		if f.Matches(e.msg) {
			out = append(out, e.msg)
		}
	}
	slices.SortFunc(out, func(a, b *queue.Message) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	for i, m := range out {
		out[i] = m.Clone()
	}
	return out, nil
}

// OpenBody implements queue.Store. The body stays readable after the message
// is removed (it is an immutable byte slice).
func (s *Store) OpenBody(ctx context.Context, id string) (queue.Body, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	e, ok := s.msgs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	return &body{bytes.NewReader(e.body)}, nil
}

type body struct{ *bytes.Reader }

func (b *body) Close() error { return nil }

// SetHeld implements queue.Store.
func (s *Store) SetHeld(ctx context.Context, id string, held bool) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, ok := s.msgs[id]
	if !ok {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	for i := range e.msg.Deliveries {
		if d := &e.msg.Deliveries[i]; !d.Done() {
			d.Held = held
		}
	}
	if !held {
		s.notify()
	}
	return nil
}

// Reschedule implements queue.Store.
func (s *Store) Reschedule(ctx context.Context, id string, at time.Time) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, ok := s.msgs[id]
	if !ok {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	for i := range e.msg.Deliveries {
		if d := &e.msg.Deliveries[i]; !d.Done() {
			s.remove(dref{e, i})
			d.NextAttempt = at
			s.insert(dref{e, i})
		}
	}
	s.notify()
	return nil
}

// Delete implements queue.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, ok := s.msgs[id]
	if !ok {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	for i := range e.msg.Deliveries {
		s.remove(dref{e, i})
	}
	delete(s.msgs, id)
	return nil
}

// Close implements queue.Store: it drops every message. Later calls return
// ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.msgs = nil
	s.index = nil
	s.idem = nil
	return nil
}
