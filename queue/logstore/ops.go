package logstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/mtakit/mta/queue"
)

// Enqueue implements [queue.Store]. Bodies up to Config.LargeBody go into
// the log record; larger ones are streamed to a file of their own, which is
// synced (and its name made durable) before the record is logged. Enqueue
// returns once the record is fsynced, sharing the fsync with every other
// record pending at that moment (group commit).
func (s *Store) Enqueue(ctx context.Context, msg *queue.Message, body io.Reader) error {
	_, err := s.enqueue(ctx, msg, body, nil)
	return err
}

// EnqueueIdempotent implements [queue.IdempotentStore]. Idempotency records
// are logged with the message and survive it; compaction keeps them for
// Config.IdempotencyRetention. A message without an IdempotencyKey is
// enqueued like Enqueue does.
func (s *Store) EnqueueIdempotent(ctx context.Context, msg *queue.Message, body io.Reader, since time.Time) (string, error) {
	return s.enqueue(ctx, msg, body, &since)
}

func notFound(id string) error { return fmt.Errorf("%w: %s", queue.ErrNotFound, id) }

// wait waits for ch to close or ctx to end.
func wait(ctx context.Context, ch chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) enqueue(ctx context.Context, msg *queue.Message, body io.Reader, since *time.Time) (string, error) {
	if err := queue.CheckMessage(msg); err != nil {
		return "", err
	}
	key := idemKey{msg.Tenant, msg.IdempotencyKey}
	useKey := since != nil && msg.IdempotencyKey != ""
	if err := s.lock(ctx); err != nil {
		return "", err
	}
	if useKey {
		if r := s.idem[key]; r != nil && r.pending == nil && r.created >= nanos(*since) {
			s.mu.Unlock()
			return r.id, queue.ErrDuplicate
		}
	}
	if e := s.msgs[msg.ID]; e != nil && !e.pending {
		s.mu.Unlock()
		return "", fmt.Errorf("%w: %s", queue.ErrExists, msg.ID)
	}
	s.mu.Unlock()

	m := msg.Clone()
	for i := range m.Deliveries {
		m.Deliveries[i].LeaseOwner = ""
		m.Deliveries[i].LeaseExpires = time.Time{}
	}
	rec, place, err := s.spool(ctx, m, body)
	if err != nil {
		return "", err
	}
	cleanup := func() {
		if place.kind == bodyFile {
			s.fs.Remove(bodyName(uint64(place.off)))
		}
	}
	for {
		if err := s.lock(ctx); err != nil {
			cleanup()
			return "", err
		}
		if s.failed != nil {
			err := s.failed
			s.mu.Unlock()
			cleanup()
			return "", err
		}
		if useKey {
			if r := s.idem[key]; r != nil && r.created >= nanos(*since) {
				if r.pending != nil {
					ch := r.pending.busy
					s.mu.Unlock()
					if err := wait(ctx, ch); err != nil {
						cleanup()
						return "", err
					}
					continue
				}
				s.mu.Unlock()
				cleanup()
				return r.id, queue.ErrDuplicate
			}
		}
		if e := s.msgs[m.ID]; e != nil {
			if e.pending {
				ch := e.busy
				s.mu.Unlock()
				if err := wait(ctx, ch); err != nil {
					cleanup()
					return "", err
				}
				continue
			}
			s.mu.Unlock()
			cleanup()
			return "", fmt.Errorf("%w: %s", queue.ErrExists, m.ID)
		}
		break
	}
	ent := &msgEnt{id: m.ID, pending: true, busy: make(chan struct{})}
	s.msgs[m.ID] = ent
	var prev *idemRec
	hasPrev := false
	if useKey {
		prev, hasPrev = s.idem[key]
		s.idem[key] = &idemRec{id: m.ID, created: nanos(m.Created), pending: ent}
	}
	s.mu.Unlock()

	res := s.submit(rec)

	s.mu.Lock()
	defer s.mu.Unlock()
	if res.err != nil {
		delete(s.msgs, m.ID)
		if useKey {
			if hasPrev {
				s.idem[key] = prev
			} else {
				delete(s.idem, key)
			}
		}
		close(ent.busy)
		ent.busy = nil
		cleanup()
		return "", res.err
	}
	s.applied(res.seg)
	if place.kind == bodyInline {
		place.seg = res.seg
		place.off += res.off
	}
	ent.pending = false
	s.setState(ent, m, res.seg, res.off, len(rec), place)
	s.account(ent, +1)
	if m.IdempotencyKey != "" {
		if useKey {
			// Replace the pending record without counting it.
			if hasPrev {
				s.idem[key] = prev
			} else {
				delete(s.idem, key)
			}
		}
		s.setIdem(key, idemRec{id: m.ID, created: nanos(m.Created), seg: res.seg})
	}
	s.unbusy(ent)
	s.notify()
	return m.ID, nil
}

// spool reads the body and returns the framed put record for m (Size set).
// A small body ends the record (place.off is then its offset in the
// record); a large one is written to its own file, synced, with its
// directory entry made durable. On error nothing is left behind.
func (s *Store) spool(ctx context.Context, m *queue.Message, body io.Reader) ([]byte, bodyPlace, error) {
	data := make([]byte, 0, 16<<10)
	var f File
	var fileNum uint64
	var size int64
	fail := func(err error) ([]byte, bodyPlace, error) {
		if f != nil {
			f.Close()
			s.fs.Remove(bodyName(fileNum))
		}
		return nil, bodyPlace{}, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if len(data) == cap(data) {
			if f == nil && int64(len(data)) < s.cfg.LargeBody {
				data = slices.Grow(data, min(int(s.cfg.LargeBody)-len(data), len(data)))
			} else {
				// Large body: move to its own file.
				if f == nil {
					s.mu.Lock()
					fileNum = s.nextFile
					s.nextFile++
					s.mu.Unlock()
					var err error
					if f, err = s.fs.Create(bodyName(fileNum)); err != nil {
						f = nil
						return fail(fmt.Errorf("logstore: creating body file: %w", err))
					}
				}
				if _, err := f.WriteAt(data, size); err != nil {
					return fail(fmt.Errorf("logstore: writing body file: %w", err))
				}
				size += int64(len(data))
				data = data[:0]
				if cap(data) < 256<<10 {
					data = make([]byte, 0, 256<<10)
				}
			}
		}
		n, err := body.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("logstore: reading body: %w", err))
		}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if f == nil {
		m.Size = int64(len(data))
		rec := encodePut(nil, m, bodyPlace{kind: bodyInline, size: m.Size})
		place := bodyPlace{kind: bodyInline, off: int64(len(rec)), size: m.Size}
		rec = frame(append(rec, data...))
		if len(rec)-frameHeader > maxRecord {
			return fail(errTooLarge)
		}
		return rec, place, nil
	}
	if _, err := f.WriteAt(data, size); err != nil {
		return fail(fmt.Errorf("logstore: writing body file: %w", err))
	}
	size += int64(len(data))
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("logstore: syncing body file: %w", err))
	}
	if err := s.fs.SyncDir(); err != nil {
		return fail(fmt.Errorf("logstore: syncing directory: %w", err))
	}
	if err := f.Close(); err != nil {
		f = nil
		s.fs.Remove(bodyName(fileNum))
		return nil, bodyPlace{}, fmt.Errorf("logstore: closing body file: %w", err)
	}
	m.Size = size
	place := bodyPlace{kind: bodyFile, off: int64(fileNum), size: size}
	rec := frame(encodePut(nil, m, place))
	if len(rec)-frameHeader > maxRecord {
		s.fs.Remove(bodyName(fileNum))
		return nil, bodyPlace{}, errTooLarge
	}
	return rec, place, nil
}

// acquire waits until no other mutation of message id is in flight and
// marks it busy. Its deliveries stay claimable (a claim changes nothing
// logged), except one whose lease the mutation consumes (see leased).
func (s *Store) acquire(ctx context.Context, id string) (*msgEnt, error) {
	for {
		if err := s.lock(ctx); err != nil {
			return nil, err
		}
		m := s.msgs[id]
		if m == nil || m.pending {
			s.mu.Unlock()
			return nil, notFound(id)
		}
		if m.busy == nil {
			m.busy = make(chan struct{})
			s.mu.Unlock()
			return m, nil
		}
		ch := m.busy
		s.mu.Unlock()
		if err := wait(ctx, ch); err != nil {
			return nil, err
		}
	}
}

// unbusy ends m's mutation and puts its deliveries back. s.mu is held.
func (s *Store) unbusy(m *msgEnt) {
	close(m.busy)
	m.busy = nil
	if s.msgs[m.id] != m {
		return
	}
	for i := range m.dels {
		s.sched.place(&m.dels[i])
	}
}

// snap is a consistent view of where a message's state is, taken under
// s.mu, with a reference on the segment so that it stays readable.
type snap struct {
	seg    *segment
	off    int64
	n      int32
	leases []*leaseEnt
}

func (s *Store) snapshot(m *msgEnt) snap {
	sg := s.segs[m.recSeg]
	sg.refs++
	sn := snap{seg: sg, off: m.recOff, n: m.recLen, leases: make([]*leaseEnt, len(m.dels))}
	for i := range m.dels {
		sn.leases[i] = m.dels[i].lease
	}
	return sn
}

func (s *Store) unref(sg *segment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unrefLocked(sg)
}

func (s *Store) unrefLocked(sg *segment) {
	if sg.refs--; sg.refs == 0 {
		if err := sg.f.Close(); err != nil {
			s.log.Warn("logstore: closing segment", "segment", sg.num, "err", err)
		}
	}
}

// read reads and decodes the state a snapshot points at, with its leases,
// and drops the snapshot's reference.
func (s *Store) read(sn snap) (*queue.Message, error) {
	defer s.unref(sn.seg)
	msg, _, err := readPut(sn.seg, sn.off, sn.n)
	if err != nil {
		return nil, err
	}
	for i, l := range sn.leases {
		if l != nil && i < len(msg.Deliveries) {
			msg.Deliveries[i].LeaseOwner = l.owner
			msg.Deliveries[i].LeaseExpires = l.expires
		}
	}
	return msg, nil
}

// readPut reads a put record and returns the message and the record's raw
// payload (for copying an inline body).
func readPut(sg *segment, off int64, n int32) (*queue.Message, []byte, error) {
	buf := make([]byte, n)
	if _, err := sg.f.ReadAt(buf, off); err != nil {
		return nil, nil, fmt.Errorf("logstore: reading segment %d: %w", sg.num, err)
	}
	if n < frameHeader || frameLen(buf) != int(n)-frameHeader || !checkFrame(buf, buf[frameHeader:]) {
		return nil, nil, fmt.Errorf("%w: record at segment %d offset %d fails its checksum", ErrCorrupt, sg.num, off)
	}
	rec, err := decodePayload(buf[frameHeader:])
	if err != nil || rec.kind != kindPut {
		return nil, nil, fmt.Errorf("%w: record at segment %d offset %d does not decode", ErrCorrupt, sg.num, off)
	}
	return rec.put.msg, buf, nil
}

// putRecord encodes the framed put record of msg, with m's body where it
// already is.
func putFor(m *msgEnt, msg *queue.Message) []byte {
	b := m.body
	if b.kind == bodyInline {
		b.kind = bodyRef
	}
	return frame(encodePut(nil, msg, b))
}

// Claim implements [queue.Store]. Leases are kept in memory only: they do
// not survive Close or a crash, after which every delivery is claimable
// again (its worker is gone with the process).
func (s *Store) Claim(ctx context.Context, req queue.ClaimRequest) (*queue.Claim, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	d := s.sched.pick(nanos(req.Now), req.Skip, req.MaxPriority)
	if d == nil {
		s.mu.Unlock()
		return nil, queue.ErrNoneReady
	}
	s.tokens++
	token := s.tokenPrefix() + strconv.FormatUint(s.tokens, 36)
	prev := d.lease
	d.lease = &leaseEnt{owner: req.Owner, token: token, expires: req.Until, exp: nanos(req.Until)}
	s.sched.place(d)
	m, idx := d.m, int(d.idx)
	sn := s.snapshot(m)
	s.mu.Unlock()
	msg, err := s.read(sn)
	if err != nil {
		s.mu.Lock()
		if d.lease != nil && d.lease.token == token {
			d.lease = prev
			s.sched.place(d)
		}
		s.mu.Unlock()
		return nil, err
	}
	del := msg.Deliveries[idx]
	msg.Deliveries = nil
	return &queue.Claim{
		Message:  msg,
		Delivery: &del,
		Lease: queue.Lease{
			MessageID: m.id,
			Delivery:  idx,
			Owner:     req.Owner,
			Token:     token,
			Expires:   req.Until,
		},
	}, nil
}

// tokenPrefix returns a random prefix, made once per Store, so that tokens
// of a reopened store never repeat those of an earlier one.
func (s *Store) tokenPrefix() string {
	if s.prefix == "" {
		var b [6]byte
		rand.Read(b[:])
		s.prefix = hex.EncodeToString(b[:]) + "-"
	}
	return s.prefix
}

// leased acquires the message of lease l and checks that l is the current
// lease of its delivery.
func (s *Store) leased(ctx context.Context, l queue.Lease) (*msgEnt, snap, error) {
	m, err := s.acquire(ctx, l.MessageID)
	if err != nil {
		return nil, snap{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.Delivery < 0 || l.Delivery >= len(m.dels) || l.Token == "" ||
		m.dels[l.Delivery].lease == nil || m.dels[l.Delivery].lease.token != l.Token {
		s.unbusy(m)
		return nil, snap{}, fmt.Errorf("%w: %s delivery %d", queue.ErrLeaseLost, l.MessageID, l.Delivery)
	}
	// Nobody may claim the delivery while its lease is being consumed:
	// unbusy puts it back.
	s.sched.unplace(&m.dels[l.Delivery])
	return m, s.snapshot(m), nil
}

// commit logs rec for the busy message m, whose new state is msg (nil when
// the message is removed), applies it and ends the mutation. endLease, when
// >= 0, names the delivery whose lease the mutation consumes.
func (s *Store) commit(m *msgEnt, msg *queue.Message, rec []byte, endLease int) error {
	res := s.submit(rec)
	s.mu.Lock()
	if res.err != nil {
		s.unbusy(m)
		s.mu.Unlock()
		return res.err
	}
	s.applied(res.seg)
	if endLease >= 0 {
		m.dels[endLease].lease = nil
	}
	if msg == nil {
		s.account(m, -1)
		delete(s.msgs, m.id)
		for i := range m.dels {
			s.sched.unplace(&m.dels[i])
		}
		s.unbusy(m)
		s.mu.Unlock()
		if m.body.kind == bodyFile {
			// Best effort: recovery removes a body file left behind.
			if err := s.fs.Remove(bodyName(uint64(m.body.off))); err != nil {
				s.log.Warn("logstore: removing body file", "id", m.id, "err", err)
			}
		}
		return nil
	}
	s.account(m, -1)
	s.setState(m, msg, res.seg, res.off, len(rec), m.body)
	s.account(m, +1)
	s.unbusy(m)
	s.mu.Unlock()
	return nil
}

// abort ends m's mutation without change.
func (s *Store) abort(m *msgEnt) {
	s.mu.Lock()
	s.unbusy(m)
	s.mu.Unlock()
}

// Complete implements [queue.Store].
func (s *Store) Complete(ctx context.Context, c *queue.Completion) error {
	m, sn, err := s.leased(ctx, c.Lease)
	if err != nil {
		return err
	}
	msg, err := s.read(sn)
	if err != nil {
		s.abort(m)
		return err
	}
	d := &msg.Deliveries[c.Lease.Delivery]
	if err := queue.ApplyResults(d.Recipients, c.Results); err != nil {
		s.abort(m)
		return err
	}
	d.Attempts++
	d.LastAttempt = c.Now
	if c.Warned {
		d.Warned = true
	}
	if !d.Done() {
		d.NextAttempt = c.NextAttempt
	}
	d.LeaseOwner, d.LeaseExpires = "", time.Time{}
	if err := ctx.Err(); err != nil {
		s.abort(m)
		return err
	}
	if msg.Done() {
		return s.commit(m, nil, encodeDel(nil, m.id), c.Lease.Delivery)
	}
	return s.commit(m, msg, putFor(m, msg), c.Lease.Delivery)
}

// Release implements [queue.Store].
func (s *Store) Release(ctx context.Context, lease queue.Lease, next time.Time) error {
	m, sn, err := s.leased(ctx, lease)
	if err != nil {
		return err
	}
	msg, err := s.read(sn)
	if err != nil {
		s.abort(m)
		return err
	}
	msg.Deliveries[lease.Delivery].NextAttempt = next
	if err := ctx.Err(); err != nil {
		s.abort(m)
		return err
	}
	if err := s.commit(m, msg, putFor(m, msg), lease.Delivery); err != nil {
		return err
	}
	s.notify()
	return nil
}

// update applies change to message id's state and logs it, unless change
// reports that nothing changed.
func (s *Store) update(ctx context.Context, id string, change func(msg *queue.Message) bool) error {
	m, err := s.acquire(ctx, id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	sn := s.snapshot(m)
	s.mu.Unlock()
	msg, err := s.read(sn)
	if err != nil {
		s.abort(m)
		return err
	}
	if !change(msg) {
		s.abort(m)
		return nil
	}
	if err := ctx.Err(); err != nil {
		s.abort(m)
		return err
	}
	return s.commit(m, msg, putFor(m, msg), -1)
}

// SetHeld implements [queue.Store].
func (s *Store) SetHeld(ctx context.Context, id string, held bool) error {
	err := s.update(ctx, id, func(msg *queue.Message) bool {
		changed := false
		for i := range msg.Deliveries {
			if d := &msg.Deliveries[i]; !d.Done() && d.Held != held {
				d.Held = held
				changed = true
			}
		}
		return changed
	})
	if err == nil && !held {
		s.notify()
	}
	return err
}

// Reschedule implements [queue.Store].
func (s *Store) Reschedule(ctx context.Context, id string, at time.Time) error {
	err := s.update(ctx, id, func(msg *queue.Message) bool {
		for i := range msg.Deliveries {
			if d := &msg.Deliveries[i]; !d.Done() {
				d.NextAttempt = at
			}
		}
		return true
	})
	if err == nil {
		s.notify()
	}
	return err
}

// Delete implements [queue.Store].
func (s *Store) Delete(ctx context.Context, id string) error {
	m, err := s.acquire(ctx, id)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		s.abort(m)
		return err
	}
	return s.commit(m, nil, encodeDel(nil, id), -1)
}

// Get implements [queue.Store]. The state is read from the log (the index
// keeps only what scheduling needs).
func (s *Store) Get(ctx context.Context, id string) (*queue.Message, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	m := s.msgs[id]
	if m == nil || m.pending {
		s.mu.Unlock()
		return nil, notFound(id)
	}
	sn := s.snapshot(m)
	s.mu.Unlock()
	return s.read(sn)
}

// List implements [queue.Store]. It reads every candidate's state from the
// log in ID order, so it costs a read per message: an inspection tool, not
// a scheduling one.
func (s *Store) List(ctx context.Context, f queue.Filter) ([]*queue.Message, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(s.msgs))
	for id, m := range s.msgs {
		if !m.pending && id > f.After {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	slices.Sort(ids)
	out := []*queue.Message{}
	const chunk = 256
	for start := 0; start < len(ids); start += chunk {
		if err := s.lock(ctx); err != nil {
			return nil, err
		}
		var snaps []snap
		for _, id := range ids[start:min(start+chunk, len(ids))] {
			if m := s.msgs[id]; m != nil && !m.pending {
				snaps = append(snaps, s.snapshot(m))
			}
		}
		s.mu.Unlock()
		for i, sn := range snaps {
			msg, err := s.read(sn)
			if err != nil {
				for _, rest := range snaps[i+1:] {
					s.unref(rest.seg)
				}
				return nil, err
			}
			if !f.Matches(msg) {
				continue
			}
			out = append(out, msg)
			if f.Limit > 0 && len(out) == f.Limit {
				for _, rest := range snaps[i+1:] {
					s.unref(rest.seg)
				}
				return out, nil
			}
		}
	}
	return out, nil
}

// OpenBody implements [queue.Store]. The Body keeps the data readable
// until it is closed, even if the message is removed or its segment is
// compacted meanwhile.
func (s *Store) OpenBody(ctx context.Context, id string) (queue.Body, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.pending {
		return nil, notFound(id)
	}
	if m.body.kind == bodyFile {
		f, err := s.fs.Open(bodyName(uint64(m.body.off)))
		if err != nil {
			return nil, fmt.Errorf("logstore: opening body of %s: %w", id, err)
		}
		return &bodyReader{f: f, size: m.body.size, close: f.Close}, nil
	}
	sg := s.segs[m.body.seg]
	sg.refs++
	return &bodyReader{f: sg.f, base: m.body.off, size: m.body.size, close: func() error {
		s.unref(sg)
		return nil
	}}, nil
}

// bodyReader is a stored body: a window of a segment or a body file.
type bodyReader struct {
	f     File
	base  int64
	size  int64
	once  bool
	close func() error
}

func (b *bodyReader) Size() int64 { return b.size }

func (b *bodyReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("logstore: negative offset")
	}
	if off >= b.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := b.size - off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := b.f.ReadAt(p, b.base+off)
	if err == nil && n < want {
		err = io.EOF
	}
	if err == io.EOF && n == want {
		err = nil
	}
	return n, err
}

func (b *bodyReader) Close() error {
	if b.once {
		return nil
	}
	b.once = true
	return b.close()
}
