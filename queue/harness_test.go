package queue_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/memstore"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.t) {
		c.t = t
	}
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// seededRand is a deterministic io.Reader for Config.Rand.
type seededRand struct{ r *rand.ChaCha8 }

func newRand() io.Reader { return &seededRand{rand.NewChaCha8([32]byte{7})} }

func (s *seededRand) Read(p []byte) (int, error) { return s.r.Read(p) }

// recorder collects events and lets tests wait for them.
type recorder struct {
	mu     sync.Mutex
	events []event.Event
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) Emit(e event.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event.Event(nil), r.events...)
}

func (r *recorder) count(match func(event.Event) bool) int {
	n := 0
	for _, e := range r.all() {
		if match(e) {
			n++
		}
	}
	return n
}

// harness is a Queue on a memstore with a fake clock and an event recorder.
type harness struct {
	t     *testing.T
	clock *fakeClock
	store *memstore.Store
	q     *queue.Queue
	rec   *recorder
}

// newHarness builds a queue; cfg's Store, Now, Rand, Observer and
// PollInterval are filled in when zero. The queue is started if cfg has a
// Transport, and shut down at the end of the test.
func newHarness(t *testing.T, cfg queue.Config) *harness {
	t.Helper()
	h := &harness{t: t, clock: newClock(), rec: newRecorder()}
	if cfg.Store == nil {
		h.store = memstore.New()
		cfg.Store = h.store
		t.Cleanup(func() { h.store.Close() })
	}
	if cfg.Now == nil {
		cfg.Now = h.clock.Now
	}
	cfg.Rand = newRand()
	if cfg.Events == nil {
		cfg.Events = h.rec
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 10 * time.Millisecond
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.sender.test"
	}
	q, err := queue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.q = q
	if cfg.Transport != nil {
		h.start()
	}
	return h
}

func (h *harness) start() {
	h.t.Helper()
	if err := h.q.Start(h.t.Context()); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.q.Shutdown(ctx)
	})
}

// waitFor waits until at least n events match, failing after a generous
// timeout. It never sleeps to synchronise: it wakes on every event.
func (h *harness) waitFor(what string, n int, match func(event.Event) bool) []event.Event {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		var got []event.Event
		for _, e := range h.rec.all() {
			if match(e) {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-h.rec.signal:
		case <-deadline:
			h.t.Fatalf("timed out waiting for %d %s events; have %d; all events: %s", n, what, len(got), fmtEvents(h.rec.all()))
		}
	}
}

func fmtEvents(es []event.Event) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString("\n  ")
		b.WriteString(string(e.Type) + " " + e.MessageID + " " + e.Recipient + " " + e.Domain)
		if e.Reply != nil {
			b.WriteString(" " + e.Reply.Error())
		}
	}
	return b.String()
}

func isType(t event.Type, id string) func(event.Event) bool {
	return func(e event.Event) bool { return e.Type == t && (id == "" || e.MessageID == id) }
}

func (h *harness) enqueue(from string, rcpts ...string) string {
	h.t.Helper()
	return h.enqueueMsg(&queue.NewMessage{From: from, Recipients: recipients(rcpts...)}, "Subject: test\r\n\r\nhello\r\n")
}

func (h *harness) enqueueMsg(m *queue.NewMessage, body string) string {
	h.t.Helper()
	id, err := h.q.Enqueue(h.t.Context(), m, strings.NewReader(body))
	if err != nil {
		h.t.Fatalf("Enqueue: %v", err)
	}
	return id
}

func recipients(addrs ...string) []deliver.Recipient {
	var out []deliver.Recipient
	for _, a := range addrs {
		out = append(out, deliver.Recipient{Address: a})
	}
	return out
}

// reply builds results for every recipient with one reply.
func replyAll(env *deliver.Envelope, code int, enh smtp.EnhancedCode, text string) []deliver.Result {
	res := make([]deliver.Result, len(env.Recipients))
	for i, r := range env.Recipients {
		res[i] = deliver.Result{
			Recipient: r.Address,
			Reply:     &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text},
			Route:     deliver.Route{Host: "mx." + deliver.Domain(r.Address)},
		}
	}
	return res
}

// sink is a transport that records what it was given and answers with fn.
type sink struct {
	mu    sync.Mutex
	calls []sinkCall
	fn    func(ctx context.Context, env *deliver.Envelope, body []byte) []deliver.Result
}

type sinkCall struct {
	env  deliver.Envelope
	body []byte
}

func (s *sink) Deliver(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
	b, err := io.ReadAll(deliver.Reader(body))
	if err != nil {
		return deliver.Fail(env, deliver.Reply(451, 4, 3, 0, "read body"), err, time.Now(), time.Now())
	}
	s.mu.Lock()
	s.calls = append(s.calls, sinkCall{env: *env, body: bytes.Clone(b)})
	s.mu.Unlock()
	if s.fn == nil {
		return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
	}
	return s.fn(ctx, env, b)
}

func (s *sink) snapshot() []sinkCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkCall(nil), s.calls...)
}
