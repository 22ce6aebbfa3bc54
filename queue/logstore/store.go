package logstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mtakit/mta/queue"
)

// Errors of the store. They are returned wrapped; test with errors.Is.
var (
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("logstore: store is closed")
	// ErrLocked: another process (or another Store in this process) has
	// the directory open.
	ErrLocked = errors.New("logstore: directory is locked by another store")
	// ErrCorrupt: the log holds a damaged record where no crash can have
	// left one (not at the end of the last segment), or a record refers to
	// data that is missing. Open refuses such a directory rather than
	// silently dropping messages.
	ErrCorrupt = errors.New("logstore: corrupt log")
)

// Config tunes a Store. The zero value is ready to use.
type Config struct {
	// SegmentSize is the size at which the log moves to a new segment
	// file. Zero means 64 MiB.
	SegmentSize int64

	// LargeBody is the body size from which a body goes to a file of its
	// own instead of into the log. Zero means 256 KiB.
	LargeBody int64

	// IdempotencyRetention is how long idempotency records are kept after
	// the message's Created time, measured against the newest Created time
	// the store has seen (the store reads no clock). Records older than
	// that may be forgotten when their segment is compacted. Zero means 7
	// days.
	IdempotencyRetention time.Duration

	// FS, when not nil, replaces the operating system's files in the
	// store's directory (the dir argument of Open is then ignored). Tests
	// use it to simulate power loss and full disks.
	FS FS

	// Logger receives recovery and compaction reports. Nil discards them.
	Logger *slog.Logger
}

// Store is the embedded durable queue store: an append-only segment log with
// group commit and an in-memory index. It implements [queue.Store],
// [queue.IdempotentStore] and [queue.Notifier]. All methods are safe for
// concurrent use. A Store must be closed to release its directory lock.
type Store struct {
	cfg Config
	fs  FS
	log *slog.Logger
	dl  io.Closer // the directory lock

	reqs       chan writeReq
	compactCh  chan struct{}
	ready      chan struct{}
	done       chan struct{}
	writerExit chan struct{}
	wg         sync.WaitGroup // the compactor
	closeOnce  sync.Once

	mu       sync.Mutex
	closed   bool
	failed   error // sticky: the log can no longer be written
	msgs     map[string]*msgEnt
	sched    *sched
	idem     map[idemKey]*idemRec
	newest   int64 // newest Created seen, Unix nanoseconds
	segs     map[uint32]*segment
	order    []uint32 // live segment numbers, oldest first
	active   *segment // written only by the writer goroutine
	tokens   uint64
	prefix   string // random token prefix of this Store
	nextFile uint64
}

// msgEnt is the in-memory index entry of one message.
type msgEnt struct {
	id   string
	prio queue.Priority
	// rec locates the message's latest put record (frame included); meta
	// is how many of its bytes are not the inline body.
	recSeg uint32
	recOff int64
	recLen int32
	meta   int32
	body   bodyPlace
	dels   []delEnt
	// busy is non-nil while a mutation of the message is being logged;
	// it is closed when that ends. pending marks an Enqueue in flight (the
	// message is not visible yet).
	busy    chan struct{}
	pending bool
}

type idemKey struct{ tenant, key string }

// idemRec is an idempotency record. seg is the segment of the record that
// carries it (a put or an idem record); pending is set while the enqueue
// that made it is in flight.
type idemRec struct {
	id      string
	created int64
	seg     uint32
	pending *msgEnt
}

// segment is one log file. refs counts the store's own reference plus open
// readers; the file is closed when it drops to zero.
type segment struct {
	num   uint32
	f     File
	size  int64
	live  int64 // bytes of records and bodies still needed
	idems int   // idempotency records carried by this segment
	// unapplied counts records written to the segment whose writers have
	// not yet applied them to the index: the segment must stay.
	unapplied int
	refs      int
	removed   bool
}

const lockName = "LOCK"

func segName(num uint32) string  { return fmt.Sprintf("%08x.seg", num) }
func bodyName(num uint64) string { return fmt.Sprintf("%016x.body", num) }
func parseNum(name, suffix string, bits int) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, suffix)
	if !ok || len(hex) != bits/4 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, bits)
	return n, err == nil
}

var (
	_ queue.Store           = (*Store)(nil)
	_ queue.IdempotentStore = (*Store)(nil)
	_ queue.Notifier        = (*Store)(nil)
)

// Open opens (creating if needed) the store in directory dir, recovering
// its state from the log: see the package documentation for the algorithm.
// cfg may be nil for the defaults. Open fails with an error wrapping
// ErrLocked when the directory is in use, and ErrCorrupt when the log is
// damaged beyond what a crash can do.
func Open(dir string, cfg *Config) (*Store, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.SegmentSize <= 0 {
		c.SegmentSize = 64 << 20
	}
	if c.SegmentSize < 4096 {
		c.SegmentSize = 4096
	}
	if c.LargeBody <= 0 {
		c.LargeBody = 256 << 10
	}
	if c.IdempotencyRetention <= 0 {
		c.IdempotencyRetention = 7 * 24 * time.Hour
	}
	fs := c.FS
	if fs == nil {
		fs = DirFS(dir)
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		cfg:        c,
		fs:         fs,
		log:        log,
		reqs:       make(chan writeReq, 256),
		compactCh:  make(chan struct{}, 1),
		ready:      make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerExit: make(chan struct{}),
		msgs:       make(map[string]*msgEnt),
		sched:      newSched(),
		idem:       make(map[idemKey]*idemRec),
		segs:       make(map[uint32]*segment),
	}
	lk, err := fs.Lock()
	if err != nil {
		return nil, err
	}
	s.dl = lk
	if err := s.recover(); err != nil {
		for _, seg := range s.segs {
			seg.f.Close()
		}
		lk.Close()
		return nil, err
	}
	go s.writer()
	s.wg.Add(1)
	go s.compactor()
	return s, nil
}

// recover rebuilds the index from the log.
func (s *Store) recover() error {
	start := time.Now()
	names, err := s.fs.List()
	if err != nil {
		return fmt.Errorf("logstore: listing the directory: %w", err)
	}
	var segNums []uint32
	bodies := map[uint64]bool{}
	for _, name := range names {
		if n, ok := parseNum(name, ".seg", 32); ok {
			segNums = append(segNums, uint32(n))
		} else if n, ok := parseNum(name, ".body", 64); ok {
			bodies[n] = true
			s.nextFile = max(s.nextFile, n+1)
		}
	}
	slices.Sort(segNums)
	records := 0
	for i, num := range segNums {
		last := i == len(segNums)-1
		n, err := s.replaySegment(num, last)
		if err != nil {
			return err
		}
		records += n
	}
	if len(s.order) == 0 {
		seg, err := s.createSegment(1)
		if err != nil {
			return err
		}
		s.segs[1] = seg
		s.order = append(s.order, 1)
	}
	s.active = s.segs[s.order[len(s.order)-1]]
	// Check every body and remove body files nobody references: left by
	// an Enqueue that failed or crashed, or by a removal that crashed.
	used := map[uint64]bool{}
	for _, m := range s.msgs {
		switch m.body.kind {
		case bodyFile:
			if !bodies[uint64(m.body.off)] {
				return fmt.Errorf("%w: body file %s of message %s is missing", ErrCorrupt, bodyName(uint64(m.body.off)), m.id)
			}
			used[uint64(m.body.off)] = true
		default:
			if s.segs[m.body.seg] == nil {
				return fmt.Errorf("%w: the body of message %s is in segment %d, which is missing", ErrCorrupt, m.id, m.body.seg)
			}
		}
	}
	removed := 0
	for n := range bodies {
		if !used[n] {
			if err := s.fs.Remove(bodyName(n)); err != nil {
				return fmt.Errorf("logstore: removing unused body file: %w", err)
			}
			removed++
		}
	}
	if removed > 0 {
		if err := s.fs.SyncDir(); err != nil {
			return fmt.Errorf("logstore: %w", err)
		}
	}
	for _, m := range s.msgs {
		for i := range m.dels {
			s.sched.place(&m.dels[i])
		}
	}
	s.log.Info("logstore: recovered", "messages", len(s.msgs), "segments", len(s.order),
		"records", records, "orphan_bodies_removed", removed, "duration", time.Since(start))
	return nil
}

// replaySegment applies one segment's records. A bad record at the end of
// the last segment is a write torn by a crash: the segment is cut there.
// Anywhere else it is corruption.
func (s *Store) replaySegment(num uint32, last bool) (int, error) {
	name := segName(num)
	f, err := s.fs.Open(name)
	if err != nil {
		return 0, fmt.Errorf("logstore: opening segment: %w", err)
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return 0, fmt.Errorf("logstore: segment %s: %w", name, err)
	}
	seg := &segment{num: num, f: f, refs: 1}
	magic := make([]byte, len(segMagic))
	if _, err := f.ReadAt(magic, 0); err != nil || string(magic) != segMagic {
		if !last {
			f.Close()
			return 0, fmt.Errorf("%w: segment %s has no header", ErrCorrupt, name)
		}
		// A segment created just before a crash, header not durable.
		rerr := f.Truncate(0)
		if rerr == nil {
			_, rerr = f.WriteAt([]byte(segMagic), 0)
		}
		if rerr == nil {
			rerr = f.Sync()
		}
		if rerr != nil {
			f.Close()
			return 0, fmt.Errorf("logstore: repairing segment %s: %w", name, rerr)
		}
		seg.size = int64(len(segMagic))
		s.segs[num] = seg
		s.order = append(s.order, num)
		return 0, nil
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	r.Discard(len(segMagic))
	off := int64(len(segMagic))
	hdr := make([]byte, frameHeader)
	var payload []byte
	records := 0
	for off < size {
		bad := func() bool {
			if _, err := io.ReadFull(r, hdr); err != nil {
				return true
			}
			n := frameLen(hdr)
			if n < 0 || int64(n) > size-off-frameHeader {
				return true
			}
			if cap(payload) < n {
				payload = make([]byte, n)
			}
			payload = payload[:n]
			if _, err := io.ReadFull(r, payload); err != nil {
				return true
			}
			return !checkFrame(hdr, payload)
		}()
		var rec decoded
		if !bad {
			rec, err = decodePayload(payload)
			bad = err != nil
		}
		if bad {
			if !last {
				f.Close()
				return 0, fmt.Errorf("%w: bad record in segment %s at offset %d", ErrCorrupt, name, off)
			}
			s.log.Warn("logstore: cutting a torn write off the log", "segment", name, "offset", off, "bytes", size-off)
			if err := f.Truncate(off); err != nil {
				f.Close()
				return 0, fmt.Errorf("logstore: truncating segment %s: %w", name, err)
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return 0, fmt.Errorf("logstore: truncating segment %s: %w", name, err)
			}
			break
		}
		s.segs[num] = seg // visible to apply's accounting
		s.apply(rec, num, off, frameHeader+len(payload))
		off += int64(frameHeader + len(payload))
		records++
	}
	seg.size = off
	s.segs[num] = seg
	s.order = append(s.order, num)
	return records, nil
}

// apply applies one logged record to the index (during recovery, and for
// records written at run time through the same helpers).
func (s *Store) apply(rec decoded, seg uint32, off int64, n int) {
	switch rec.kind {
	case kindPut:
		body := rec.put.body
		if body.kind == bodyInline {
			body.seg = seg
			body.off += off + frameHeader
		}
		m := s.msgs[rec.put.msg.ID]
		if m == nil {
			m = &msgEnt{id: rec.put.msg.ID}
			s.msgs[m.id] = m
		} else {
			s.account(m, -1)
		}
		s.setState(m, rec.put.msg, seg, off, n, body)
		s.account(m, +1)
		if k := rec.put.msg.IdempotencyKey; k != "" {
			s.setIdem(idemKey{rec.put.msg.Tenant, k}, idemRec{id: m.id, created: nanos(rec.put.msg.Created), seg: seg})
		}
	case kindDel:
		if m := s.msgs[rec.id]; m != nil {
			s.account(m, -1)
			delete(s.msgs, rec.id)
		}
	case kindIdem:
		rec.idr.seg = seg
		s.setIdem(rec.idk, rec.idr)
	}
}

// setIdem records an idempotency record, replacing an older one.
func (s *Store) setIdem(k idemKey, r idemRec) {
	if old := s.idem[k]; old != nil && old.pending == nil {
		if sg := s.segs[old.seg]; sg != nil {
			sg.idems--
		}
	}
	if sg := s.segs[r.seg]; sg != nil {
		sg.idems++
	}
	s.idem[k] = &r
	s.newest = max(s.newest, r.created)
}

// setState sets m's index entry from its full state msg, logged at
// (seg, off) in a record of n bytes, with its body at body. Leases are kept.
func (s *Store) setState(m *msgEnt, msg *queue.Message, seg uint32, off int64, n int, body bodyPlace) {
	m.prio = msg.Priority
	m.recSeg, m.recOff, m.recLen = seg, off, int32(n)
	m.meta = int32(n)
	if body.kind == bodyInline && body.seg == seg && body.off >= off && body.off < off+int64(n) {
		m.meta -= int32(body.size)
	}
	m.body = body
	if len(m.dels) != len(msg.Deliveries) {
		old := m.dels
		m.dels = make([]delEnt, len(msg.Deliveries))
		for i := range m.dels {
			m.dels[i].pos = -1
			if i < len(old) {
				m.dels[i].lease = old[i].lease
			}
		}
	}
	for i := range msg.Deliveries {
		d, src := &m.dels[i], &msg.Deliveries[i]
		d.m = m
		d.idx = int32(i)
		d.domain = s.sched.intern(src.Domain)
		d.next = nanos(src.NextAttempt)
		d.held = src.Held
		d.done = src.Done()
	}
}

// account adds (sign +1) or removes (-1) m's live bytes from its segments.
func (s *Store) account(m *msgEnt, sign int64) {
	if sg := s.segs[m.recSeg]; sg != nil {
		sg.live += sign * int64(m.meta)
	}
	if m.body.kind != bodyFile {
		// An empty body still pins its segment: count one byte.
		if sg := s.segs[m.body.seg]; sg != nil {
			sg.live += sign * (m.body.size + 1)
		}
	}
}

func (s *Store) setFailed(err error) {
	s.mu.Lock()
	if s.failed == nil {
		s.failed = err
		s.log.Error("logstore: the log can no longer be written; reopen the store", "err", err)
	}
	s.mu.Unlock()
}

// writeErr returns the sticky write failure, if any.
func (s *Store) writeErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *Store) notify() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready implements [queue.Notifier]: it receives after an Enqueue, Release,
// Reschedule or SetHeld (release).
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Close stops the writer and the compactor and closes the files. Leases
// are not kept (they live in memory only). Close is idempotent; calls after
// Close fail with ErrClosed.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
		<-s.writerExit
		s.wg.Wait()
		s.mu.Lock()
		for _, seg := range s.segs {
			seg.removed = true
			if seg.refs--; seg.refs == 0 {
				err = errors.Join(err, seg.f.Close())
			}
		}
		s.mu.Unlock()
		err = errors.Join(err, s.dl.Close())
	})
	return err
}

// lock checks ctx, takes s.mu and checks that the store is open.
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
