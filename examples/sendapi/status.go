package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/event"
)

// maxEvents is how many recent events the status of a message keeps.
const maxEvents = 50

// statusStore remembers what happened to every message: the queue removes
// a message once each recipient is done, so its outcome lives only in the
// delivery events. The store is an event.Sink that appends each event, as
// one JSON line in the event wire format, to a file, and keeps an index by
// queue ID in memory; the API adds a "submitted" line of its own per
// accepted message (its Message-ID and recipients). On start-up the file
// is read back, so the status of a message survives a restart.
//
// The file is written through a buffer that a goroutine flushes soon after
// each write, without fsync: the queue itself is durable, the status is a
// record of it, and a crash of the machine (not of the process) may lose
// its last lines.
//
// Messages whose latest line is older than the retention are forgotten:
// from memory every hour, and from the file when it is next opened (it is
// then rewritten without them). Methods are safe for concurrent use.
type statusStore struct {
	path      string
	retention time.Duration
	now       func() time.Time
	log       *slog.Logger

	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	werr   error // the first write error; later writes are skipped
	msgs   map[string]*msgStatus
	closed bool

	wake chan struct{} // capacity 1: a flush is wanted
	done chan struct{}
	wg   sync.WaitGroup
}

// submission is the API's record of an accepted message.
type submission struct {
	ID         string    `json:"id"`
	MessageID  string    `json:"message_id"`
	Recipients []string  `json:"recipients"`
	Time       time.Time `json:"time"`
}

// submittedLine is how a submission is written: {"submitted": {...}}.
// Event lines never have that key.
type submittedLine struct {
	Submitted *submission `json:"submitted,omitempty"`
}

type msgStatus struct {
	messageID string
	first     time.Time // earliest line
	last      time.Time // latest line, for retention
	tags      []string
	metadata  map[string]string
	rcpts     []*rcptStatus // in order of first mention
	deleted   bool
	events    []event.Event // the latest maxEvents
}

type rcptStatus struct {
	Address  string
	State    string // queued, deferred, delivered, bounced, expired, suppressed
	Final    bool
	Reply    *smtp.SMTPError
	Attempts int
	Updated  time.Time
	Next     time.Time // next attempt after a deferral
}

// openStatus reads the status file at path (creating it when missing),
// drops what is older than retention and starts the flusher. Lines that
// cannot be read (a line cut short by a crash) are skipped and dropped
// from the file.
func openStatus(path string, retention time.Duration, now func() time.Time, log *slog.Logger) (*statusStore, error) {
	s := &statusStore{
		path: path, retention: retention, now: now, log: log,
		msgs: map[string]*msgStatus{},
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	bad, err := s.load()
	if err != nil {
		return nil, err
	}
	pruned := s.pruneLocked()
	if bad > 0 || pruned > 0 {
		if err := s.rewrite(); err != nil {
			return nil, err
		}
		log.Info("status file compacted", "path", path, "dropped_messages", pruned, "bad_lines", bad)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	s.f, s.w = f, bufio.NewWriterSize(f, 64<<10)
	s.wg.Add(1)
	go s.run()
	return s, nil
}

// readLines calls fn with each complete line of the file and returns the
// number of lines fn refused, counting an unterminated last line as one.
func readLines(path string, fn func([]byte) bool) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	bad := 0
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			if len(line) > 0 {
				bad++ // the tail of a write cut short
			}
			return bad, nil
		}
		if err != nil {
			return bad, fmt.Errorf("status file: %w", err)
		}
		if !fn(bytes.TrimSuffix(line, []byte("\n"))) {
			bad++
		}
	}
}

// parseLine decodes one line into a submission or an event.
func parseLine(line []byte) (*submission, *event.Event, bool) {
	var sl submittedLine
	if err := json.Unmarshal(line, &sl); err != nil {
		return nil, nil, false
	}
	if sl.Submitted != nil {
		return sl.Submitted, nil, sl.Submitted.ID != ""
	}
	var e event.Event
	if err := json.Unmarshal(line, &e); err != nil || e.MessageID == "" || e.Type == "" {
		return nil, nil, false
	}
	return nil, &e, true
}

func (s *statusStore) load() (int, error) {
	return readLines(s.path, func(line []byte) bool {
		sub, e, ok := parseLine(line)
		switch {
		case sub != nil:
			s.applySubmission(sub)
		case e != nil:
			s.applyEvent(*e)
		}
		return ok
	})
}

// rewrite replaces the file with its readable lines about the messages
// still in the index: a new file, fsynced, renamed over the old one.
func (s *statusStore) rewrite() error {
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".status-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	w := bufio.NewWriter(tmp)
	_, err = readLines(s.path, func(line []byte) bool {
		sub, e, ok := parseLine(line)
		id := ""
		switch {
		case sub != nil:
			id = sub.ID
		case e != nil:
			id = e.MessageID
		}
		if ok && s.msgs[id] != nil {
			w.Write(line)
			w.WriteByte('\n')
		}
		return ok
	})
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		return fmt.Errorf("status file: rewrite: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// run flushes the buffer when asked and forgets old messages every hour,
// until Close.
func (s *statusStore) run() {
	defer s.wg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-s.wake:
			s.mu.Lock()
			s.flushLocked()
			s.mu.Unlock()
		case <-t.C:
			s.mu.Lock()
			s.pruneLocked()
			s.mu.Unlock()
		case <-s.done:
			return
		}
	}
}

func (s *statusStore) flushLocked() {
	if s.werr == nil {
		if err := s.w.Flush(); err != nil {
			s.writeFailed(err)
		}
	}
}

func (s *statusStore) writeFailed(err error) {
	s.werr = err
	s.log.Error("status file: write failed; status is kept in memory only until restart", "path", s.path, "err", err)
}

func (s *statusStore) writeLocked(line []byte) {
	if s.werr != nil {
		return
	}
	s.w.Write(line)
	if err := s.w.WriteByte('\n'); err != nil {
		s.writeFailed(err)
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *statusStore) pruneLocked() int {
	cutoff := s.now().Add(-s.retention)
	n := 0
	for id, m := range s.msgs {
		if m.last.Before(cutoff) {
			delete(s.msgs, id)
			n++
		}
	}
	return n
}

// Emit records e. It is called from the queue's delivery goroutines and
// does no I/O of its own (the buffer is flushed by run; only a full buffer
// makes Emit write).
func (s *statusStore) Emit(e event.Event) {
	line, err := e.MarshalJSON()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.applyEvent(e)
	if err == nil {
		s.writeLocked(line)
	}
}

// Durable makes an event.Fanout call Emit directly instead of through a
// buffer that drops events when full: a status must not miss an outcome,
// and Emit returns quickly.
func (s *statusStore) Durable() bool { return true }

var _ event.Durable = (*statusStore)(nil)

// submit records an accepted message, unless a submission for sub.ID is
// already known: then it returns that one. (A request repeated with an
// idempotency key gets the queue ID of the first, and must answer with
// the first one's Message-ID.)
func (s *statusStore) submit(sub *submission) *submission {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.msgs[sub.ID]; m != nil && m.messageID != "" {
		prev := &submission{ID: sub.ID, MessageID: m.messageID}
		for _, r := range m.rcpts {
			prev.Recipients = append(prev.Recipients, r.Address)
		}
		return prev
	}
	if s.closed {
		return nil
	}
	s.applySubmission(sub)
	line, err := json.Marshal(submittedLine{Submitted: sub})
	if err == nil {
		s.writeLocked(line)
	}
	return nil
}

func (s *statusStore) msg(id string, t time.Time) *msgStatus {
	m := s.msgs[id]
	if m == nil {
		m = &msgStatus{first: t, last: t}
		s.msgs[id] = m
	}
	if t.Before(m.first) {
		m.first = t
	}
	if t.After(m.last) {
		m.last = t
	}
	return m
}

func (m *msgStatus) rcpt(addr string) *rcptStatus {
	for _, r := range m.rcpts {
		if r.Address == addr {
			return r
		}
	}
	r := &rcptStatus{Address: addr, State: "queued"}
	m.rcpts = append(m.rcpts, r)
	return r
}

func (s *statusStore) applySubmission(sub *submission) {
	m := s.msg(sub.ID, sub.Time)
	m.messageID = sub.MessageID
	for _, a := range sub.Recipients {
		m.rcpt(a)
	}
}

func (s *statusStore) applyEvent(e event.Event) {
	m := s.msg(e.MessageID, e.Time)
	if len(e.Tags) > 0 {
		m.tags = e.Tags
	}
	if len(e.Metadata) > 0 {
		m.metadata = e.Metadata
	}
	if e.Type == event.Deleted {
		m.deleted = true
	}
	if e.Recipient != "" {
		r := m.rcpt(e.Recipient)
		switch e.Type {
		case event.Delivered, event.Bounced, event.Expired, event.Suppressed:
			r.State, r.Final, r.Next = string(e.Type), true, time.Time{}
		case event.Deferred:
			if !r.Final {
				r.State, r.Next = "deferred", e.NextAttempt
			}
		}
		if e.Reply != nil {
			r.Reply = e.Reply
		}
		r.Attempts = max(r.Attempts, e.Attempt)
		if e.Time.After(r.Updated) {
			r.Updated = e.Time
		}
	}
	if len(m.events) == maxEvents {
		m.events = append(m.events[:0], m.events[1:]...)
	}
	m.events = append(m.events, e)
}

// msgView is a copy of what the store knows about one message.
type msgView struct {
	MessageID string
	Created   time.Time
	Tags      []string
	Metadata  map[string]string
	Rcpts     []rcptStatus
	Deleted   bool
	Events    []event.Event
}

// view returns what is known about message id.
func (s *statusStore) view(id string) (msgView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil {
		return msgView{}, false
	}
	v := msgView{
		MessageID: m.messageID, Created: m.first, Tags: m.tags, Metadata: m.metadata,
		Deleted: m.deleted, Events: slices.Clone(m.events),
	}
	for _, r := range m.rcpts {
		v.Rcpts = append(v.Rcpts, *r)
	}
	return v, true
}

// Close flushes and closes the file, and returns the first write error.
// Events emitted later are ignored.
func (s *statusStore) Close() error {
	close(s.done)
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.flushLocked()
	err := s.werr
	if err == nil {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}
