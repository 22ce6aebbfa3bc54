package queue

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
)

// Enqueue and control errors. They are returned wrapped with details
// ("queue: invalid recipient: ..."); test with errors.Is.
var (
	// ErrInvalidSender: the reverse-path is not a valid address.
	ErrInvalidSender = errors.New("queue: invalid sender")
	// ErrInvalidRecipient: a recipient is not a valid address.
	ErrInvalidRecipient = errors.New("queue: invalid recipient")
	// ErrNoRecipients: the message has no recipient.
	ErrNoRecipients = errors.New("queue: no recipients")
	// ErrTooBig: the body is larger than Config.MaxMessageSize.
	ErrTooBig = errors.New("queue: message too big")
	// ErrBody: reading the body failed (the reader's error is wrapped too).
	ErrBody = errors.New("queue: cannot read body")
	// ErrSuppressed: every recipient is on the suppression list; the error
	// is a *SuppressedError.
	ErrSuppressed = errors.New("queue: recipients suppressed")
	// ErrNotRunning: Shutdown was called, or Start was not.
	ErrNotRunning = errors.New("queue: not running")
	// ErrConfig: New was given an unusable Config.
	ErrConfig = errors.New("queue: invalid config")
)

// SuppressedError lists the recipients that the suppression list refused at
// enqueue. It matches ErrSuppressed with errors.Is.
type SuppressedError struct {
	Recipients []string
}

func (e *SuppressedError) Error() string {
	return fmt.Sprintf("%v: %d recipient(s): %v", ErrSuppressed, len(e.Recipients), e.Recipients)
}

// Is makes errors.Is(err, ErrSuppressed) true.
func (e *SuppressedError) Is(target error) bool { return target == ErrSuppressed }

// Config configures a Queue. Zero values are the documented defaults; Store
// is required, and Transport is required by Start.
type Config struct {
	// Store keeps the messages. Required.
	Store Store

	// Transport delivers. Required by Start (Enqueue and inspection work
	// without it).
	Transport deliver.Transport

	// Hostname names this MTA in DSNs (Reporting-MTA, Message-ID). Zero:
	// os.Hostname(), else "localhost".
	Hostname string

	// NodeID identifies this process in lease owners ("node/worker").
	// Zero: Hostname plus a random suffix.
	NodeID string

	// Workers is the number of concurrent delivery attempts. Zero: 16.
	Workers int

	// DestinationConcurrency caps concurrent attempts per recipient domain
	// and per MX site (Route.Site, learned from results). Zero: 4.
	DestinationConcurrency int

	// RetryMin and RetryMax bound the retry back-off: the n-th retry waits
	// RetryMin·2^(n-1) plus up to 25% jitter, at most RetryMax. Zero: 5m
	// and 4h.
	RetryMin time.Duration
	RetryMax time.Duration

	// Lifetime is how long a message may stay queued (Postfix's
	// maximal_queue_lifetime). Zero: 5 days.
	Lifetime time.Duration

	// DelayWarning, when positive, sends one delay DSN (action delayed)
	// for recipients still pending this long after enqueue and whose
	// NOTIFY allows it. Zero: no delay warnings.
	DelayWarning time.Duration

	// AttemptTimeout bounds one delivery attempt (the transport's ctx).
	// Zero: 10m.
	AttemptTimeout time.Duration

	// LeaseDuration is how long a claim is leased. It must exceed
	// AttemptTimeout. Zero: AttemptTimeout + 5m.
	LeaseDuration time.Duration

	// IdempotencyWindow is how long an idempotency key is remembered.
	// Zero: 24h.
	IdempotencyWindow time.Duration

	// MaxMessageSize caps the body size in bytes. Zero: 50 MiB; negative:
	// no limit.
	MaxMessageSize int64

	// PollInterval is how often the scheduler asks the store for ready
	// work when nothing woke it. Zero: 1s.
	PollInterval time.Duration

	// BulkShare guarantees the bulk lane (Priority <= 0) one claim in
	// BulkShare while transactional mail is waiting. Zero: 5.
	BulkShare int

	// MaxDSNOriginal caps how much of the original message a RET=FULL DSN
	// carries. Zero: 1 MiB.
	MaxDSNOriginal int64

	// Suppressions, if set, is consulted for every recipient at enqueue.
	Suppressions Suppressions

	// Limiter, if set, is consulted before every attempt. Nil: unlimited.
	Limiter Limiter

	// Events receives every state change (see the list in event.go's
	// documentation of the types the queue emits). Emit is called
	// synchronously from the scheduler's goroutines, possibly concurrently,
	// and must return quickly: use an [event.Fanout], which buffers per
	// sink. Nil: no events.
	Events event.Sink

	// Classify decides whether a failed reply is permanent. Nil: the rules
	// of bounce.DefaultClassifier, as bounce.Classify applies them (a 552
	// 5.2.2 mailbox-full is transient, for example).
	Classify func(*smtp.SMTPError) bounce.Classification

	// Now is the clock. Nil: time.Now.
	Now func() time.Time

	// Rand is the source of randomness for IDs and jitter (read under a
	// lock, so any io.Reader will do). Nil: crypto/rand.Reader.
	Rand io.Reader

	// Logger receives operational logs. Nil: discard.
	Logger *slog.Logger
}

// Queue is the user-facing queue: validation, enqueue, the delivery
// scheduler and inspection over a Store. Its methods are safe for
// concurrent use.
type Queue struct {
	cfg   Config
	store Store
	log   *slog.Logger

	idMu   sync.Mutex
	lastID [idBytes]byte
	rngMu  sync.Mutex
	rng    *mrand.Rand

	idemMu sync.Mutex
	idem   map[idemKey]idemRecord

	// enqueuing holds a channel per message whose Enqueue has stored it
	// but not yet emitted its queued event; the scheduler waits on it
	// before emitting the message's first attempt, so that every stream
	// sees queued before attempt.
	enqueuing sync.Map // message ID -> chan struct{}

	wake chan struct{}

	// Scheduler state.
	mu        sync.Mutex
	state     runState
	inflight  map[string]int                 // domain -> attempts in progress
	siteBusy  map[string]int                 // site -> attempts in progress
	siteOf    map[string]string              // domain -> MX site, from results
	siteDoms  map[string]map[string]struct{} // MX site -> its domains (siteOf inverted)
	throttled map[string]time.Time           // domain -> until
	claims    uint64
	stop      chan struct{}   // closed by Shutdown: stop claiming
	attempts  context.Context // cancelled to abort attempts
	abort     context.CancelFunc
	wg        sync.WaitGroup
	dispDone  chan struct{}
}

type runState int

const (
	stateNew runState = iota
	stateRunning
	stateStopped
)

type idemKey struct{ tenant, key string }

type idemRecord struct {
	id      string
	created time.Time
}

// New checks cfg, fills in defaults and returns a Queue. Call Start to begin
// delivering.
func New(cfg Config) (*Queue, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrConfig)
	}
	if cfg.Hostname == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			cfg.Hostname = h
		} else {
			cfg.Hostname = "localhost"
		}
	}
	setDefault(&cfg.Workers, 16)
	setDefault(&cfg.DestinationConcurrency, 4)
	setDefault(&cfg.RetryMin, 5*time.Minute)
	setDefault(&cfg.RetryMax, 4*time.Hour)
	setDefault(&cfg.Lifetime, 5*24*time.Hour)
	setDefault(&cfg.AttemptTimeout, 10*time.Minute)
	setDefault(&cfg.LeaseDuration, cfg.AttemptTimeout+5*time.Minute)
	setDefault(&cfg.IdempotencyWindow, 24*time.Hour)
	setDefault(&cfg.MaxMessageSize, 50<<20)
	setDefault(&cfg.PollInterval, time.Second)
	setDefault(&cfg.BulkShare, 5)
	setDefault(&cfg.MaxDSNOriginal, 1<<20)
	switch {
	case cfg.Workers < 0 || cfg.DestinationConcurrency < 0 || cfg.BulkShare < 0:
		return nil, fmt.Errorf("%w: negative Workers, DestinationConcurrency or BulkShare", ErrConfig)
	case cfg.RetryMin < 0 || cfg.RetryMax < cfg.RetryMin:
		return nil, fmt.Errorf("%w: RetryMin %v, RetryMax %v", ErrConfig, cfg.RetryMin, cfg.RetryMax)
	case cfg.LeaseDuration <= cfg.AttemptTimeout:
		return nil, fmt.Errorf("%w: LeaseDuration %v must exceed AttemptTimeout %v", ErrConfig, cfg.LeaseDuration, cfg.AttemptTimeout)
	}
	if cfg.Classify == nil {
		// Build the default rules once: bounce.Classify compiles them on
		// every call.
		cfg.Classify = bounce.DefaultClassifier().Classify
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var seed [16]byte
	if _, err := io.ReadFull(cfg.Rand, seed[:]); err != nil {
		return nil, fmt.Errorf("%w: reading Rand: %v", ErrConfig, err)
	}
	if cfg.NodeID == "" {
		cfg.NodeID = fmt.Sprintf("%s-%x", cfg.Hostname, seed[:3])
	}
	q := &Queue{
		cfg:       cfg,
		store:     cfg.Store,
		log:       log,
		rng:       mrand.New(mrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))),
		idem:      make(map[idemKey]idemRecord),
		wake:      make(chan struct{}, 1),
		inflight:  make(map[string]int),
		siteBusy:  make(map[string]int),
		siteOf:    make(map[string]string),
		siteDoms:  make(map[string]map[string]struct{}),
		throttled: make(map[string]time.Time),
	}
	return q, nil
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Store returns the queue's store.
func (q *Queue) Store() Store { return q.store }

func (q *Queue) now() time.Time { return q.cfg.Now() }

// poke wakes the scheduler (non-blocking).
func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Wake makes the scheduler look for ready work now instead of at its next
// poll, e.g. after moving a test clock forward.
func (q *Queue) Wake() { q.poke() }

// ID generation: 6 bytes of milliseconds since the Unix epoch and 6 random
// bytes, 12 bytes written as 20 characters of base32hex (RFC 4648 §7, lower
// case, no padding), which sorts like the bytes. Within one millisecond a
// Queue increments the previous ID so that its IDs stay strictly ordered.

const idBytes = 12

const base32hex = "0123456789abcdefghijklmnopqrstuv"

// NewID returns a new message ID: 20 characters, time-ordered, unique.
func (q *Queue) NewID() (string, error) {
	var b [idBytes]byte
	ms := q.now().UnixMilli()
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	q.idMu.Lock() // also serializes reads of Config.Rand, which need not be safe for concurrent use
	if _, err := io.ReadFull(q.cfg.Rand, b[6:]); err != nil {
		q.idMu.Unlock()
		return "", fmt.Errorf("queue: reading randomness: %w", err)
	}
	if string(b[:]) <= string(q.lastID[:]) {
		b = q.lastID
		for i := idBytes - 1; i >= 0; i-- { // increment
			b[i]++
			if b[i] != 0 {
				break
			}
		}
	}
	q.lastID = b
	q.idMu.Unlock()
	return encodeID(b), nil
}

func encodeID(b [idBytes]byte) string {
	// 96 bits -> 20 characters of 5 bits (the last one padded with 4 zero bits).
	var out [20]byte
	var acc uint64
	bits := 0
	n := 0
	for _, c := range b {
		acc = acc<<8 | uint64(c)
		bits += 8
		for bits >= 5 {
			out[n] = base32hex[(acc>>(bits-5))&31]
			n++
			bits -= 5
		}
	}
	if bits > 0 {
		out[n] = base32hex[(acc<<(5-bits))&31]
	}
	return string(out[:])
}

// jitter returns a random duration in [0, d).
func (q *Queue) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	q.rngMu.Lock()
	defer q.rngMu.Unlock()
	return time.Duration(q.rng.Int64N(int64(d)))
}

// Backoff returns the wait before the next attempt after the given number of
// failed attempts (1 for the first failure): RetryMin·2^(attempts-1) plus up
// to 25% jitter, capped at RetryMax.
func (q *Queue) Backoff(attempts int) time.Duration {
	base := q.cfg.RetryMin
	for i := 1; i < attempts && base < q.cfg.RetryMax; i++ {
		base *= 2
	}
	base = min(base, q.cfg.RetryMax)
	return min(base+q.jitter(base/4), q.cfg.RetryMax)
}
