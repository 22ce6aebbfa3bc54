package event

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The outbox is an append-only log of encoded events in segment files
// named "<first sequence number, 20 digits>.seg" plus one cursor file per
// endpoint ("<name>.cursor", the sequence number of the next event to
// send). A record is
//
//	length uint32 | crc32c(seq|payload) uint32 | seq uint64 | payload
//
// big-endian. Appends are group-committed: concurrent appenders share one
// write and one fsync, and none returns before its records are on stable
// storage. On open, a torn or corrupt tail of a segment is truncated.
// Segments that every endpoint has passed are removed; the newest segment
// is never removed, so sequence numbers survive restarts.

const (
	recHeader = 16
	maxRecord = 16 << 20
	segSuffix = ".seg"
	curSuffix = ".cursor"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errOutboxClosed is returned by append after close.
var errOutboxClosed = errors.New("event: outbox closed")

type segment struct {
	first uint64 // sequence number of the first record it may hold
	end   uint64 // one past the last record's sequence number; == first when empty
	size  int64  // committed bytes
	path  string
}

type outbox struct {
	dir      string
	segBytes int64
	maxBytes int64
	log      *slog.Logger
	notify   func()

	mu        sync.Mutex
	cond      *sync.Cond // broadcast when a group commit finishes
	segs      []segment  // oldest first; the last is the active one
	active    *os.File
	nextSeq   uint64
	committed uint64 // every record with seq < committed is durable (or lost to a write error)
	pending   []byte
	pendingN  int
	syncing   bool
	closed    bool
	cursors   map[string]uint64
	progress  chan struct{} // closed and replaced whenever a cursor advances
	total     int64

	appended uint64 // events stored
	failed   uint64 // events lost to write errors or appended after close
	dropped  uint64 // events removed unsent because of maxBytes
}

func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// openOutbox opens or creates the outbox in dir for the named endpoints.
func openOutbox(dir string, names []string, segBytes, maxBytes int64, log *slog.Logger) (*outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("event: outbox: %w", err)
	}
	o := &outbox{dir: dir, segBytes: segBytes, maxBytes: maxBytes, log: log,
		cursors: make(map[string]uint64), progress: make(chan struct{}), notify: func() {}}
	o.cond = sync.NewCond(&o.mu)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("event: outbox: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, segSuffix) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(n, segSuffix), 10, 64)
		if err != nil {
			continue
		}
		o.segs = append(o.segs, segment{first: first, end: first, path: filepath.Join(dir, n)})
	}
	slices.SortFunc(o.segs, func(a, b segment) int {
		if a.first < b.first {
			return -1
		}
		return 1
	})
	o.nextSeq = 1
	for i := range o.segs {
		if err := o.recover(&o.segs[i]); err != nil {
			return nil, err
		}
		o.total += o.segs[i].size
		o.nextSeq = max(o.nextSeq, o.segs[i].end)
	}
	if len(o.segs) == 0 {
		if err := o.newSegment(o.nextSeq); err != nil {
			return nil, err
		}
	} else {
		last := &o.segs[len(o.segs)-1]
		f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("event: outbox: %w", err)
		}
		o.active = f
	}
	o.committed = o.nextSeq
	for _, n := range names {
		c, err := o.readCursor(n)
		if err != nil {
			o.active.Close()
			return nil, err
		}
		o.cursors[n] = min(max(c, o.segs[0].first), o.nextSeq)
	}
	o.collect()
	return o, nil
}

// recover scans s, truncating a torn or corrupt tail, and sets its end and
// size.
func (o *outbox) recover(s *segment) error {
	f, err := os.OpenFile(s.path, os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("event: outbox: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("event: outbox: %w", err)
	}
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, st.Size()), 64<<10)
	var off int64
	for {
		seq, p, err := readRecord(br)
		if err == io.EOF {
			break
		}
		if err != nil || seq < s.first || (s.end > s.first && seq < s.end) {
			o.log.Warn("event: outbox: truncating damaged segment tail",
				slog.String("segment", s.path), slog.Int64("offset", off), slog.Int64("size", st.Size()))
			if err := f.Truncate(off); err != nil {
				return fmt.Errorf("event: outbox: %w", err)
			}
			if err := f.Sync(); err != nil {
				return fmt.Errorf("event: outbox: %w", err)
			}
			break
		}
		off += recHeader + int64(len(p))
		s.end = seq + 1
	}
	s.size = off
	return nil
}

var errBadRecord = errors.New("event: outbox: bad record")

// readRecord reads one record. It returns io.EOF at a clean end and
// errBadRecord for a short or corrupt record.
func readRecord(r *bufio.Reader) (uint64, []byte, error) {
	var h [recHeader]byte
	n, err := io.ReadFull(r, h[:])
	if n == 0 && err == io.EOF {
		return 0, nil, io.EOF
	}
	if err != nil {
		return 0, nil, errBadRecord
	}
	l := binary.BigEndian.Uint32(h[0:4])
	if l > maxRecord {
		return 0, nil, errBadRecord
	}
	p := make([]byte, l)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, errBadRecord
	}
	c := crc32.Update(crc32.Checksum(h[8:16], crcTable), crcTable, p)
	if c != binary.BigEndian.Uint32(h[4:8]) {
		return 0, nil, errBadRecord
	}
	return binary.BigEndian.Uint64(h[8:16]), p, nil
}

func appendRecord(b []byte, seq uint64, p []byte) []byte {
	var h [recHeader]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(len(p)))
	binary.BigEndian.PutUint64(h[8:16], seq)
	binary.BigEndian.PutUint32(h[4:8], crc32.Update(crc32.Checksum(h[8:16], crcTable), crcTable, p))
	b = append(b, h[:]...)
	return append(b, p...)
}

// newSegment creates an empty segment starting at first, makes it the
// active one and fsyncs the directory. Called during open or by the commit
// leader (without o.mu; it takes it to publish the segment).
func (o *outbox) newSegment(first uint64) error {
	path := filepath.Join(o.dir, segName(first))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("event: outbox: %w", err)
	}
	if err := syncDir(o.dir); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	o.mu.Lock()
	old := o.active
	o.active = f
	o.segs = append(o.segs, segment{first: first, end: first, path: path})
	o.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("event: outbox: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("event: outbox: sync dir: %w", err)
	}
	return nil
}

// append stores the payloads durably, in order, and returns once they are
// fsynced. Concurrent calls share writes and fsyncs (group commit).
func (o *outbox) append(payloads ...[]byte) error {
	o.mu.Lock()
	if o.closed {
		o.failed += uint64(len(payloads))
		o.mu.Unlock()
		return errOutboxClosed
	}
	for _, p := range payloads {
		o.pending = appendRecord(o.pending, o.nextSeq, p)
		o.nextSeq++
		o.pendingN++
	}
	mine := o.nextSeq
	var err error
	for o.committed < mine {
		if o.syncing {
			o.cond.Wait()
			continue
		}
		err = o.commitLocked()
	}
	o.mu.Unlock()
	o.notify()
	return err
}

// commitLocked writes and fsyncs everything pending. It is called with
// o.mu held and releases it during I/O; o.syncing keeps other appenders
// waiting meanwhile.
func (o *outbox) commitLocked() error {
	buf, n, first, end := o.pending, o.pendingN, o.committed, o.nextSeq
	o.pending, o.pendingN = nil, 0
	o.syncing = true
	roll := o.segs[len(o.segs)-1].size > 0 && o.segs[len(o.segs)-1].size+int64(len(buf)) > o.segBytes
	o.mu.Unlock()

	var err error
	if roll {
		err = o.newSegment(first)
	}
	var f *os.File
	var size int64
	if err == nil {
		o.mu.Lock()
		f, size = o.active, o.segs[len(o.segs)-1].size
		o.mu.Unlock()
		if _, err = f.Write(buf); err == nil {
			err = f.Sync()
		}
		if err != nil {
			err = fmt.Errorf("event: outbox: %w", err)
			// Cut off whatever part was written so the segment stays a
			// sequence of whole records.
			_ = f.Truncate(size)
		}
	}

	o.mu.Lock()
	o.syncing = false
	o.committed = end
	if err == nil {
		s := &o.segs[len(o.segs)-1]
		s.size += int64(len(buf))
		s.end = end
		o.total += int64(len(buf))
		o.appended += uint64(n)
		o.enforceMaxLocked()
	} else {
		o.failed += uint64(n)
		o.log.Error("event: outbox write failed; events lost", slog.Int("events", n), slog.Any("err", err))
	}
	o.cond.Broadcast()
	return err
}

// enforceMaxLocked removes the oldest segments while the outbox is larger
// than maxBytes, counting the events some endpoint had not yet been sent.
func (o *outbox) enforceMaxLocked() {
	for o.maxBytes > 0 && o.total > o.maxBytes && len(o.segs) > 1 {
		s := o.segs[0]
		end := o.segs[1].first
		var lost uint64
		for n, c := range o.cursors {
			if c < end {
				lost = max(lost, end-max(c, s.first))
				o.cursors[n] = end
			}
		}
		o.removeFirstLocked()
		if lost > 0 {
			o.dropped += lost
			o.log.Warn("event: outbox full; dropped oldest unsent events",
				slog.Uint64("dropped", lost), slog.Uint64("dropped_total", o.dropped), slog.Int64("max_bytes", o.maxBytes))
		}
	}
}

func (o *outbox) removeFirstLocked() {
	s := o.segs[0]
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		o.log.Warn("event: outbox: removing segment", slog.String("segment", s.path), slog.Any("err", err))
	}
	o.total -= s.size
	o.segs = slices.Delete(o.segs, 0, 1)
}

// collect removes segments every endpoint has passed. Called with o.mu held
// or before the outbox is shared.
func (o *outbox) collect() {
	low := o.nextSeq
	for _, c := range o.cursors {
		low = min(low, c)
	}
	for len(o.segs) > 1 && o.segs[1].first <= low {
		o.removeFirstLocked()
	}
}

func (o *outbox) cursorPath(name string) string { return filepath.Join(o.dir, name+curSuffix) }

// readCursor returns the endpoint's cursor. A missing file means a new
// endpoint: it starts at the end of the outbox, and the cursor is written
// so that a crash before its first delivery loses nothing. An unreadable
// file means start from the oldest stored event (duplicates rather than
// losses).
func (o *outbox) readCursor(name string) (uint64, error) {
	b, err := os.ReadFile(o.cursorPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		if err := o.writeCursor(name, o.nextSeq); err != nil {
			return 0, err
		}
		return o.nextSeq, nil
	}
	if err != nil {
		return 0, fmt.Errorf("event: outbox: %w", err)
	}
	c, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		o.log.Warn("event: outbox: unreadable cursor; resending from the oldest event", slog.String("endpoint", name))
		return 0, nil
	}
	return c, nil
}

func (o *outbox) writeCursor(name string, seq uint64) error {
	path := o.cursorPath(name)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("event: outbox: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(seq, 10) + "\n")
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
		return fmt.Errorf("event: outbox: cursor: %w", err)
	}
	return nil
}

// advance records that endpoint name has received every event before seq.
// Only the endpoint's sender calls it. If the cursor file cannot be
// written, the in-memory cursor still advances (the events are not sent
// again by this process) and the error is returned: after a restart those
// events are sent once more, which receivers deduplicate.
func (o *outbox) advance(name string, seq uint64) error {
	err := o.writeCursor(name, seq)
	o.mu.Lock()
	defer o.mu.Unlock()
	if seq > o.cursors[name] {
		o.cursors[name] = seq
	}
	o.collect()
	close(o.progress)
	o.progress = make(chan struct{})
	return err
}

// close commits what is pending, fails later appends and closes the
// active segment.
func (o *outbox) close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	for o.syncing || o.pendingN > 0 {
		if o.syncing {
			o.cond.Wait()
			continue
		}
		_ = o.commitLocked() // logged and counted there
	}
	o.closed = true
	return o.active.Close()
}

// record is one stored event.
type record struct {
	seq  uint64
	data []byte
}

// reader reads committed records in order for one endpoint. Not safe for
// concurrent use.
type reader struct {
	o        *outbox
	f        *os.File
	segFirst uint64
	off      int64
	next     uint64
}

func (r *reader) closeFile() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// read returns up to max committed records with seq >= r.next, advancing
// r.next past them (and past any gap).
func (r *reader) read(max int) ([]record, error) {
	r.o.mu.Lock()
	segs := slices.Clone(r.o.segs)
	r.o.mu.Unlock()
	if r.next < segs[0].first {
		r.next = segs[0].first
		r.closeFile()
	}
	var out []record
	for len(out) < max {
		i := len(segs) - 1
		for i > 0 && segs[i].first > r.next {
			i--
		}
		s := segs[i]
		if r.f == nil || r.segFirst != s.first {
			r.closeFile()
			f, err := os.Open(s.path)
			if errors.Is(err, fs.ErrNotExist) {
				return out, nil // removed meanwhile (MaxBytes); the next read moves on
			}
			if err != nil {
				return out, fmt.Errorf("event: outbox: %w", err)
			}
			r.f, r.segFirst, r.off = f, s.first, 0
		}
		if r.off < s.size {
			br := bufio.NewReaderSize(io.NewSectionReader(r.f, r.off, s.size-r.off), 64<<10)
			for len(out) < max && r.off < s.size {
				seq, p, err := readRecord(br)
				if err != nil {
					r.o.log.Error("event: outbox: corrupt record; skipping the rest of the segment",
						slog.String("segment", s.path), slog.Int64("offset", r.off))
					r.off = s.size
					break
				}
				r.off += recHeader + int64(len(p))
				if seq >= r.next {
					out = append(out, record{seq: seq, data: p})
					r.next = seq + 1
				}
			}
		}
		if r.off < s.size {
			continue // batch full
		}
		if i == len(segs)-1 {
			break
		}
		r.next = maxU(r.next, segs[i+1].first)
	}
	return out, nil
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}
