package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mtakit/mta/queue"
)

// JSONStore is a small queue.Store kept in a directory: one JSON file per
// message (with its lease tokens) and one file per body. Every message is
// also held in memory, so claims and listings never read the disk; writes go
// to a temporary file that is fsynced and renamed over the old one, and the
// directory is fsynced, so a successful call survives a crash.
//
// It is meant to show how little a store needs; it passes queuetest,
// including the durability rule.
type JSONStore struct {
	dir  string
	mu   sync.Mutex
	msgs map[string]*record
}

// record is what one message file holds.
type record struct {
	Message *queue.Message `json:"message"`
	Tokens  []string       `json:"tokens"` // current lease token per delivery
}

var _ queue.Store = (*JSONStore)(nil)

// OpenJSONStore opens (creating if needed) a store in dir.
func OpenJSONStore(dir string) (*JSONStore, error) {
	for _, sub := range []string{"msg", "body"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	s := &JSONStore{dir: dir, msgs: make(map[string]*record)}
	entries, err := os.ReadDir(filepath.Join(dir, "msg"))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			os.Remove(filepath.Join(dir, "msg", name)) // a temporary file left by a crash
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "msg", name))
		if err != nil {
			return nil, err
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("customstore: %s: %w", name, err)
		}
		s.msgs[r.Message.ID] = &r
	}
	// Remove bodies without a message: a crash during Enqueue.
	bodies, err := os.ReadDir(filepath.Join(dir, "body"))
	if err != nil {
		return nil, err
	}
	for _, e := range bodies {
		if _, ok := s.msgs[e.Name()]; !ok {
			os.Remove(filepath.Join(dir, "body", e.Name()))
		}
	}
	return s, nil
}

func (s *JSONStore) msgPath(id string) string  { return filepath.Join(s.dir, "msg", id+".json") }
func (s *JSONStore) bodyPath(id string) string { return filepath.Join(s.dir, "body", id) }

// safeID rejects IDs that could escape the directory.
func safeID(id string) error {
	if id == "" || strings.ContainsAny(id, `/\.`) {
		return fmt.Errorf("%w: unusable ID %q", queue.ErrBadUpdate, id)
	}
	return nil
}

// writeFile writes data durably: temporary file, fsync, rename, fsync dir.
func writeFile(path string, r io.Reader) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// save writes r's file; the caller holds s.mu.
func (s *JSONStore) save(r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return writeFile(s.msgPath(r.Message.ID), strings.NewReader(string(b)))
}

// remove deletes a message's files; the caller holds s.mu.
func (s *JSONStore) remove(id string) error {
	if err := os.Remove(s.msgPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	os.Remove(s.bodyPath(id))
	return syncDir(filepath.Join(s.dir, "msg"))
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

// Enqueue implements queue.Store. The body is streamed to its file before
// the message file is written, so a crash in between leaves no message.
func (s *JSONStore) Enqueue(ctx context.Context, msg *queue.Message, body io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := queue.CheckMessage(msg); err != nil {
		return err
	}
	if err := safeID(msg.ID); err != nil {
		return err
	}
	s.mu.Lock()
	_, exists := s.msgs[msg.ID]
	s.mu.Unlock()
	if exists {
		return fmt.Errorf("%w: %s", queue.ErrExists, msg.ID)
	}
	// Stream the body to a file of its own, then move it into place under
	// the lock once the ID is known to be free.
	var rnd [8]byte
	rand.Read(rnd[:])
	staged := s.bodyPath(msg.ID) + "." + hex.EncodeToString(rnd[:]) + ".new"
	cr := &countReader{r: ctxReader{ctx, body}}
	if err := writeFile(staged, cr); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("customstore: writing body: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := s.msgs[msg.ID]; exists {
		os.Remove(staged)
		return fmt.Errorf("%w: %s", queue.ErrExists, msg.ID)
	}
	if err := ctx.Err(); err != nil {
		os.Remove(staged)
		return err
	}
	if err := os.Rename(staged, s.bodyPath(msg.ID)); err != nil {
		os.Remove(staged)
		return err
	}
	m := msg.Clone()
	m.Size = cr.n
	for i := range m.Deliveries {
		m.Deliveries[i].LeaseOwner, m.Deliveries[i].LeaseExpires = "", time.Time{}
	}
	r := &record{Message: m, Tokens: make([]string, len(m.Deliveries))}
	if err := s.save(r); err != nil {
		os.Remove(s.bodyPath(msg.ID))
		return err
	}
	s.msgs[m.ID] = r
	return nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Claim implements queue.Store.
func (s *JSONStore) Claim(ctx context.Context, req queue.ClaimRequest) (*queue.Claim, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *record
	bestIdx := 0
	for _, r := range s.msgs {
		m := r.Message
		if req.MaxPriority != nil && m.Priority > *req.MaxPriority {
			continue
		}
		for i := range m.Deliveries {
			d := &m.Deliveries[i]
			if d.Done() || d.Held || d.NextAttempt.After(req.Now) || slices.Contains(req.Skip, d.Domain) ||
				(r.Tokens[i] != "" && d.LeaseExpires.After(req.Now)) {
				continue
			}
			if best == nil || before(m, d, best.Message, &best.Message.Deliveries[bestIdx]) {
				best, bestIdx = r, i
			}
		}
	}
	if best == nil {
		return nil, queue.ErrNoneReady
	}
	var tok [12]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	old := *best
	best.Tokens = slices.Clone(best.Tokens)
	best.Message = best.Message.Clone()
	d := &best.Message.Deliveries[bestIdx]
	d.LeaseOwner, d.LeaseExpires = req.Owner, req.Until
	best.Tokens[bestIdx] = token
	if err := s.save(best); err != nil {
		*best = old
		return nil, err
	}
	return &queue.Claim{
		Message:  best.Message.Header(),
		Delivery: d.Clone(),
		Lease:    queue.Lease{MessageID: best.Message.ID, Delivery: bestIdx, Owner: req.Owner, Token: token, Expires: req.Until},
	}, nil
}

func before(m *queue.Message, d *queue.Delivery, bm *queue.Message, bd *queue.Delivery) bool {
	switch {
	case m.Priority != bm.Priority:
		return m.Priority > bm.Priority
	case !d.NextAttempt.Equal(bd.NextAttempt):
		return d.NextAttempt.Before(bd.NextAttempt)
	case m.ID != bm.ID:
		return m.ID < bm.ID
	}
	return d.Index < bd.Index
}

// update applies fn to a copy of a leased record and commits it; the
// caller holds s.mu.
func (s *JSONStore) update(l queue.Lease, fn func(r *record, d *queue.Delivery) error) error {
	r, ok := s.msgs[l.MessageID]
	if !ok {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, l.MessageID)
	}
	if l.Delivery < 0 || l.Delivery >= len(r.Tokens) || l.Token == "" || r.Tokens[l.Delivery] != l.Token {
		return queue.ErrLeaseLost
	}
	c := &record{Message: r.Message.Clone(), Tokens: slices.Clone(r.Tokens)}
	if err := fn(c, &c.Message.Deliveries[l.Delivery]); err != nil {
		return err
	}
	d := &c.Message.Deliveries[l.Delivery]
	d.LeaseOwner, d.LeaseExpires = "", time.Time{}
	c.Tokens[l.Delivery] = ""
	if c.Message.Done() {
		if err := s.remove(c.Message.ID); err != nil {
			return err
		}
		delete(s.msgs, c.Message.ID)
		return nil
	}
	if err := s.save(c); err != nil {
		return err
	}
	s.msgs[c.Message.ID] = c
	return nil
}

// Complete implements queue.Store.
func (s *JSONStore) Complete(ctx context.Context, c *queue.Completion) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.update(c.Lease, func(r *record, d *queue.Delivery) error {
		// The queue package checks and applies the per-recipient results
		// exactly as its own stores do.
		if err := queue.ApplyResults(d.Recipients, c.Results); err != nil {
			return err
		}
		d.Attempts++
		d.LastAttempt = c.Now
		d.Warned = d.Warned || c.Warned
		if !d.Done() {
			d.NextAttempt = c.NextAttempt
		}
		return nil
	})
}

// Release implements queue.Store.
func (s *JSONStore) Release(ctx context.Context, lease queue.Lease, next time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.update(lease, func(r *record, d *queue.Delivery) error {
		d.NextAttempt = next
		return nil
	})
}

// Get implements queue.Store.
func (s *JSONStore) Get(ctx context.Context, id string) (*queue.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.msgs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	return r.Message.Clone(), nil
}

// List implements queue.Store.
func (s *JSONStore) List(ctx context.Context, f queue.Filter) ([]*queue.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*queue.Message
	for _, r := range s.msgs {
		if f.Matches(r.Message) {
			out = append(out, r.Message.Clone())
		}
	}
	slices.SortFunc(out, func(a, b *queue.Message) int { return strings.Compare(a.ID, b.ID) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// OpenBody implements queue.Store.
func (s *JSONStore) OpenBody(ctx context.Context, id string) (queue.Body, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	_, ok := s.msgs[id]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	f, err := os.Open(s.bodyPath(id))
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileBody{f, st.Size()}, nil
}

type fileBody struct {
	*os.File
	size int64
}

func (b fileBody) Size() int64 { return b.size }

// modify applies fn to every unfinished delivery of a message.
func (s *JSONStore) modify(ctx context.Context, id string, fn func(d *queue.Delivery)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.msgs[id]
	if !ok {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	c := &record{Message: r.Message.Clone(), Tokens: r.Tokens}
	for i := range c.Message.Deliveries {
		if d := &c.Message.Deliveries[i]; !d.Done() {
			fn(d)
		}
	}
	if err := s.save(c); err != nil {
		return err
	}
	s.msgs[id] = c
	return nil
}

// SetHeld implements queue.Store.
func (s *JSONStore) SetHeld(ctx context.Context, id string, held bool) error {
	return s.modify(ctx, id, func(d *queue.Delivery) { d.Held = held })
}

// Reschedule implements queue.Store.
func (s *JSONStore) Reschedule(ctx context.Context, id string, at time.Time) error {
	return s.modify(ctx, id, func(d *queue.Delivery) { d.NextAttempt = at })
}

// Delete implements queue.Store.
func (s *JSONStore) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.msgs[id]; !ok {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	if err := s.remove(id); err != nil {
		return err
	}
	delete(s.msgs, id)
	return nil
}

// Close implements queue.Store. Everything is already on disk.
func (s *JSONStore) Close() error { return nil }
