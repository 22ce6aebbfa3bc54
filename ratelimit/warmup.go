package ratelimit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// WarmupPlan is a volume schedule for new source IPs (or pools): on day d
// after a source is first used (day 0 is its first 24 hours), at most
// Schedule[d] messages go from it to each MX site. From day len(Schedule)
// on, the source is warm and the plan no longer limits it.
//
// Days count from the first use recorded in the [WarmupStore], not from
// calendar midnight, so every source gets full days.
type WarmupPlan struct {
	// Schedule holds the per-site daily caps. Nil means
	// DefaultWarmupSchedule().
	Schedule []int `json:"schedule,omitempty"`
	// Sources lists the sources under warm-up (Key.Source values). Empty
	// means every source.
	Sources []string `json:"sources,omitempty"`
}

// DefaultWarmupSchedule returns the default daily per-site caps: 50, 100,
// 500, 1,000, 5,000, 10,000, 20,000, 40,000, 70,000, 100,000, 150,000,
// 250,000, then warm after 12 days.
//
// Mailbox providers judge a new IP by the volume it sends and the
// engagement that volume gets, and they distrust an address that starts
// with a large volume. The common practice of sending platforms is
// therefore to start with a few dozen messages per day per large provider
// and to grow by roughly two to five times a day while bounces, deferrals
// and complaints stay low, over about two weeks. This schedule is such a
// ramp; pair it with the back-off rules, which slow down further when a
// provider defers.
func DefaultWarmupSchedule() []int {
	return []int{50, 100, 500, 1000, 5000, 10000, 20000, 40000, 70000, 100000, 150000, 250000}
}

// Counter names one warm-up counter: messages from Source to Site on day Day
// of the source's warm-up.
type Counter struct {
	Source string // Key.Source
	Site   string // Key.Site (or Key.Domain when Site is empty)
	Day    int    // days since the source's first use, from 0
}

// WarmupStore keeps warm-up state that must survive restarts: when each
// source was first used, and the per-day, per-site message counters.
// Implementations are safe for concurrent use, and TryAdd is atomic (two
// concurrent calls never both pass the limit). [MemWarmupStore] forgets
// everything on restart; [FileWarmupStore] is the durable default;
// redislimit.WarmupStore shares state among nodes.
type WarmupStore interface {
	// Start returns the first-use time of source, recording now when it
	// has none yet.
	Start(ctx context.Context, source string, now time.Time) (time.Time, error)
	// TryAdd adds n to the counter when n ≤ 0 (never going below zero) or
	// when the result stays at most limit, and reports whether it did.
	TryAdd(ctx context.Context, c Counter, n, limit int64) (bool, error)
	// Count returns the counter's value.
	Count(ctx context.Context, c Counter) (int64, error)
}

// MemWarmupStore is an in-memory [WarmupStore], for tests and for users
// who accept that warm-up restarts with the process. The zero value is
// ready to use and safe for concurrent use.
type MemWarmupStore struct {
	mu     sync.Mutex
	starts map[string]time.Time
	counts map[Counter]int64
}

var _ WarmupStore = (*MemWarmupStore)(nil)

// Start implements [WarmupStore].
func (s *MemWarmupStore) Start(ctx context.Context, source string, now time.Time) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.starts[source]; ok {
		return t, nil
	}
	if s.starts == nil {
		s.starts = map[string]time.Time{}
	}
	s.starts[source] = now
	return now, nil
}

// TryAdd implements [WarmupStore].
func (s *MemWarmupStore) TryAdd(ctx context.Context, c Counter, n, limit int64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.counts[c]
	if n > 0 && cur+n > limit {
		return false, nil
	}
	if s.counts == nil {
		s.counts = map[Counter]int64{}
	}
	s.counts[c] = max(0, cur+n)
	return true, nil
}

// Count implements [WarmupStore].
func (s *MemWarmupStore) Count(ctx context.Context, c Counter) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[c], nil
}

// FileWarmupStore is a durable [WarmupStore] in one append-only file.
//
// Each change appends one line holding a counter's value and a CRC-32C of
// the line, fsynced before TryAdd or Start returns, so an acknowledged count
// is never lost. To avoid an fsync per message, a counter is written ahead
// of its true value by up to 1/64 of the day's limit: after a crash the
// count resumes from the written value, which may be that much too high but
// is never too low, so caps hold across crashes; Close writes the exact
// values. Refunds (negative TryAdd) only lower the in-memory count. After a crash a torn last line (no newline or bad
// checksum) is discarded on Open; damage anywhere else is reported as an
// error wrapping [ErrStore] rather than silently lowering counts. The file
// is rewritten (to a temporary file, fsynced, renamed over the old one,
// directory fsynced) when it holds many superseded lines; counters of days a
// source has left behind are dropped then. Safe for concurrent use within
// one process; do not open the same file from two processes.
type FileWarmupStore struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	starts  map[string]time.Time
	counts  map[Counter]int64 // exact values
	durable map[Counter]int64 // values on disk, ≥ counts
	lastDay map[string]int    // highest day seen per source
	lines   int               // lines in the file
	closed  bool
}

var _ WarmupStore = (*FileWarmupStore)(nil)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// OpenFileWarmupStore opens (creating if needed) the store at path.
func OpenFileWarmupStore(path string) (*FileWarmupStore, error) {
	s := &FileWarmupStore{path: path, starts: map[string]time.Time{}, counts: map[Counter]int64{},
		durable: map[Counter]int64{}, lastDay: map[string]int{}}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	good, err := s.load(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	s.f = f
	return s, nil
}

// load replays the file and returns the length of its valid prefix.
func (s *FileWarmupStore) load(f *os.File) (int64, error) {
	r := bufio.NewReader(f)
	var off int64
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return off, nil // a line without newline is a torn write
		}
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrStore, err)
		}
		if perr := s.apply(line); perr != nil {
			// Only the last line may be torn.
			if _, err := r.Peek(1); err == io.EOF {
				return off, nil
			}
			return 0, fmt.Errorf("%w: %s: corrupt line at offset %d: %v", ErrStore, s.path, off, perr)
		}
		off += int64(len(line))
		s.lines++
	}
}

// apply parses and applies one line ("crc payload\n").
func (s *FileWarmupStore) apply(line []byte) error {
	line = bytes.TrimSuffix(line, []byte("\n"))
	sum, payload, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(sum) != 8 {
		return errors.New("no checksum")
	}
	want, err := strconv.ParseUint(string(sum), 16, 32)
	if err != nil || uint32(want) != crc32.Checksum(payload, crcTable) {
		return errors.New("checksum mismatch")
	}
	f := strings.Split(string(payload), "\t")
	switch {
	case len(f) == 3 && f[0] == "S":
		src, err1 := strconv.Unquote(f[1])
		ns, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return errors.New("bad start record")
		}
		s.starts[src] = time.Unix(0, ns)
	case len(f) == 5 && f[0] == "C":
		src, err1 := strconv.Unquote(f[1])
		site, err2 := strconv.Unquote(f[2])
		day, err3 := strconv.Atoi(f[3])
		n, err4 := strconv.ParseInt(f[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || day < 0 || n < 0 {
			return errors.New("bad counter record")
		}
		s.setCount(Counter{Source: src, Site: site, Day: day}, n)
	default:
		return errors.New("unknown record")
	}
	return nil
}

func (s *FileWarmupStore) setCount(c Counter, n int64) {
	s.counts[c] = n
	s.durable[c] = n
	if d, ok := s.lastDay[c.Source]; !ok || c.Day > d {
		s.lastDay[c.Source] = c.Day
	}
}

func startRecord(src string, t time.Time) string {
	return "S\t" + strconv.Quote(src) + "\t" + strconv.FormatInt(t.UnixNano(), 10)
}

func counterRecord(c Counter, n int64) string {
	return "C\t" + strconv.Quote(c.Source) + "\t" + strconv.Quote(c.Site) + "\t" + strconv.Itoa(c.Day) + "\t" + strconv.FormatInt(n, 10)
}

func frame(payload string) string {
	return fmt.Sprintf("%08x %s\n", crc32.Checksum([]byte(payload), crcTable), payload)
}

// write appends and fsyncs one record. Called with s.mu held.
func (s *FileWarmupStore) write(payload string) error {
	if s.closed {
		return ErrClosed
	}
	if _, err := s.f.WriteString(frame(payload)); err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	s.lines++
	return nil
}

// Start implements [WarmupStore].
func (s *FileWarmupStore) Start(ctx context.Context, source string, now time.Time) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.starts[source]; ok {
		return t, nil
	}
	if err := s.write(startRecord(source, now)); err != nil {
		return time.Time{}, err
	}
	s.starts[source] = time.Unix(0, now.UnixNano())
	return s.starts[source], nil
}

// TryAdd implements [WarmupStore].
func (s *FileWarmupStore) TryAdd(ctx context.Context, c Counter, n, limit int64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if c.Day < 0 {
		return false, fmt.Errorf("%w: day %d", ErrInvalid, c.Day)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	cur := s.counts[c]
	if n > 0 && cur+n > limit {
		return false, nil
	}
	v := max(0, cur+n)
	if v > s.durable[c] {
		w := max(v, min(limit, v+limit/64))
		if err := s.write(counterRecord(c, w)); err != nil {
			return false, err
		}
		s.setCount(c, w)
	}
	s.counts[c] = v
	if s.lines > 256 && s.lines > 4*(len(s.durable)+len(s.starts)) {
		if err := s.compact(); err != nil {
			return true, err
		}
	}
	return true, nil
}

// Count implements [WarmupStore].
func (s *FileWarmupStore) Count(ctx context.Context, c Counter) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[c], nil
}

// compact rewrites the file with only live records. Called with s.mu held.
func (s *FileWarmupStore) compact() error {
	for c := range s.durable {
		if c.Day < s.lastDay[c.Source] {
			delete(s.counts, c)
			delete(s.durable, c)
		}
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	w := bufio.NewWriter(f)
	lines := 0
	for src, t := range s.starts {
		w.WriteString(frame(startRecord(src, t)))
		lines++
	}
	for c, n := range s.durable {
		w.WriteString(frame(counterRecord(c, n)))
		lines++
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(s.path))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("%w: compact: %w", ErrStore, err)
	}
	s.f.Close()
	s.f = f // positioned at the end, ready to append
	s.lines = lines
	return nil
}

// Close writes the exact counter values, fsyncs and closes the file. Later
// calls return [ErrClosed].
func (s *FileWarmupStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	var b strings.Builder
	for c, n := range s.counts {
		if n != s.durable[c] {
			b.WriteString(frame(counterRecord(c, n)))
		}
	}
	var err error
	if b.Len() > 0 {
		if _, err = s.f.WriteString(b.String()); err == nil {
			err = s.f.Sync()
		}
	}
	s.closed = true
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	return nil
}
