package bounce

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// ErrClosed is returned by a closed [FileSuppressions].
var ErrClosed = errors.New("bounce: suppression list closed")

// FileSuppressions is the durable default [SuppressionList]: an
// append-only log of JSON lines, fsynced before Add and Remove return,
// replayed into memory on open and rewritten (compacted) when superseded
// records pile up. A torn last line, left by a crash during a write, is
// ignored and cut off on open. Only one process may open a file at a time.
// It is safe for concurrent use.
type FileSuppressions struct {
	path  string
	cfg   SuppressionConfig
	mu    sync.Mutex
	f     *os.File
	mem   map[string]Entry
	stale int // records superseded since the last compaction
}

var _ SuppressionList = (*FileSuppressions)(nil)

type logRecord struct {
	Op    string `json:"op"` // "add" or "del"
	Entry *Entry `json:"entry,omitempty"`
	Key   string `json:"key,omitempty"`
}

// OpenFileSuppressions opens (creating if needed) the log at path. cfg may
// be nil. Errors come from the file system, or say which line of the log
// is corrupt (a bad line other than the last).
func OpenFileSuppressions(path string, cfg *SuppressionConfig) (*FileSuppressions, error) {
	s := &FileSuppressions{path: path, mem: map[string]Entry{}}
	if cfg != nil {
		s.cfg = *cfg
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bounce: opening suppressions: %w", err)
	}
	good, err := s.replay(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	// Cut a torn tail so new records start on a line of their own.
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("bounce: truncating torn suppressions log: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	s.f = f
	return s, nil
}

// replay reads the log and returns the offset after the last complete,
// valid record.
func (s *FileSuppressions) replay(f *os.File) (int64, error) {
	r := bufio.NewReaderSize(f, 64<<10)
	var off int64
	line := 0
	for {
		b, err := r.ReadBytes('\n')
		if err == io.EOF {
			// No newline: a torn write. Ignore it.
			return off, nil
		}
		if err != nil {
			return 0, fmt.Errorf("bounce: reading suppressions: %w", err)
		}
		line++
		var rec logRecord
		if jerr := json.Unmarshal(bytes.TrimSpace(b), &rec); jerr != nil || !s.apply(rec) {
			// A bad line is fatal unless it is the last one.
			if _, perr := r.Peek(1); perr == io.EOF {
				return off, nil
			}
			return 0, fmt.Errorf("bounce: suppressions log %s: corrupt line %d", s.path, line)
		}
		off += int64(len(b))
	}
}

func (s *FileSuppressions) apply(rec logRecord) bool {
	switch rec.Op {
	case "add":
		if rec.Entry == nil {
			return false
		}
		e, key, err := prepareEntry(*rec.Entry, rec.Entry.Created)
		if err != nil {
			return false
		}
		if _, ok := s.mem[key]; ok {
			s.stale++
		}
		s.mem[key] = e
	case "del":
		if _, ok := s.mem[rec.Key]; ok {
			s.stale++
		}
		s.stale++
		delete(s.mem, rec.Key)
	default:
		return false
	}
	return true
}

// write appends a record and fsyncs it.
func (s *FileSuppressions) write(rec logRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := s.f.Write(b); err != nil {
		return fmt.Errorf("bounce: writing suppressions: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("bounce: syncing suppressions: %w", err)
	}
	return nil
}

// Add implements [SuppressionList]; it returns after the record is fsynced.
func (s *FileSuppressions) Add(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e, key, err := prepareEntry(e, s.cfg.now())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	if err := s.write(logRecord{Op: "add", Entry: &e}); err != nil {
		return err
	}
	if _, ok := s.mem[key]; ok {
		s.stale++
	}
	s.mem[key] = e
	return s.maybeCompact()
}

// Lookup implements [SuppressionList].
func (s *FileSuppressions) Lookup(ctx context.Context, address string) (Entry, bool, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, false, err
	}
	_, key, err := NormalizeAddress(address)
	if err != nil {
		return Entry{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return Entry{}, false, ErrClosed
	}
	e, ok := s.mem[key]
	if !ok || e.Expired(s.cfg.now()) {
		return Entry{}, false, nil
	}
	return e, true, nil
}

// Remove implements [SuppressionList]; it returns after the record is
// fsynced.
func (s *FileSuppressions) Remove(ctx context.Context, address string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, key, err := NormalizeAddress(address)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	if _, ok := s.mem[key]; !ok {
		return nil
	}
	if err := s.write(logRecord{Op: "del", Key: key}); err != nil {
		return err
	}
	delete(s.mem, key)
	s.stale += 2
	return s.maybeCompact()
}

// List implements [SuppressionList].
func (s *FileSuppressions) List(ctx context.Context, opts ListOptions) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil, ErrClosed
	}
	return listEntries(s.mem, opts, s.cfg.now()), nil
}

func (s *FileSuppressions) maybeCompact() error {
	limit := s.cfg.CompactAfter
	if limit <= 0 {
		limit = 1000
	}
	if s.stale < limit {
		return nil
	}
	return s.compact()
}

// Compact rewrites the log with only live entries (expired ones are
// dropped): written to a temporary file, fsynced, renamed over the log,
// and the directory fsynced, so a crash leaves either the old or the new
// log.
func (s *FileSuppressions) Compact() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	return s.compact()
}

func (s *FileSuppressions) compact() error {
	now := s.cfg.now()
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("bounce: compacting suppressions: %w", err)
	}
	w := bufio.NewWriter(f)
	for k, e := range s.mem {
		if e.Expired(now) {
			delete(s.mem, k)
			continue
		}
		b, err := json.Marshal(logRecord{Op: "add", Entry: &e})
		if err != nil {
			f.Close()
			return err
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("bounce: compacting suppressions: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("bounce: compacting suppressions: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		f.Close()
		return fmt.Errorf("bounce: compacting suppressions: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		d.Sync()
		d.Close()
	}
	s.f.Close()
	s.f = f // positioned at the end of the new log
	s.stale = 0
	return nil
}

// Close closes the log. Later calls return [ErrClosed].
func (s *FileSuppressions) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	err := s.f.Close()
	s.f = nil
	return err
}
