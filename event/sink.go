package event

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sink receives events. Emit must be safe for concurrent use and must not
// block the caller for long: it is called from the queue's delivery
// goroutines. Sinks that do slow work (network, disk) do it elsewhere;
// behind a [Fanout] each non-durable sink gets its own goroutine.
type Sink interface {
	Emit(Event)
}

// SinkFunc adapts a function to the Sink interface.
type SinkFunc func(Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e Event) { f(e) }

// Durable is implemented by sinks that store every event themselves and
// return promptly (the [Webhook] sink appends to its outbox). A [Fanout]
// calls a sink whose Durable method returns true directly from Emit,
// without a buffer, so it never drops events for it.
type Durable interface {
	Sink
	Durable() bool
}

var (
	_ Sink    = SinkFunc(nil)
	_ Sink    = (*Fanout)(nil)
	_ Sink    = LogSink{}
	_ Durable = (*Webhook)(nil)
)

// FanoutConfig configures a [Fanout].
type FanoutConfig struct {
	// Sinks receive every event, in this order for durable sinks.
	Sinks []Sink
	// Buffer is the number of events held for each non-durable sink while
	// it is busy. Zero means 4096. When a sink's buffer is full, further
	// events for it are dropped and counted (see [Fanout.Dropped]); other
	// sinks and the caller are not affected.
	Buffer int
	// Now stamps events whose Time is zero. Nil means time.Now.
	Now func() time.Time
}

// Fanout is a Sink that stamps events (ID and Time when empty) and hands
// each to several sinks so that a slow sink never blocks the caller:
//
//   - a durable sink ([Durable]) is called directly: it must itself be
//     quick and never drop (the webhook sink appends to its outbox);
//   - every other sink gets a bounded buffer and a goroutine of its own;
//     when the buffer is full the event is dropped for that sink and
//     counted, because metrics and logs must not slow mail delivery.
//
// Create one with [NewFanout]; it is safe for concurrent use. Close stops
// its goroutines after they have drained their buffers.
type Fanout struct {
	now  func() time.Time
	ids  IDSource
	outs []*output
	wg   sync.WaitGroup

	mu          sync.RWMutex
	closed      bool
	afterClosed atomic.Uint64
}

type output struct {
	sink    Sink
	ch      chan Event // nil for durable sinks
	dropped atomic.Uint64
}

// NewFanout starts a Fanout for cfg.Sinks.
func NewFanout(cfg FanoutConfig) *Fanout {
	f := &Fanout{now: cfg.Now}
	if f.now == nil {
		f.now = time.Now
	}
	n := cfg.Buffer
	if n <= 0 {
		n = 4096
	}
	for _, s := range cfg.Sinks {
		o := &output{sink: s}
		if d, ok := s.(Durable); !ok || !d.Durable() {
			o.ch = make(chan Event, n)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				for e := range o.ch {
					o.sink.Emit(e)
				}
			}()
		}
		f.outs = append(f.outs, o)
	}
	return f
}

// Emit stamps e (a new ID when e.ID is empty, the current time when e.Time
// is zero) and passes it to every sink. It never waits for a non-durable
// sink. After Close, events are dropped and counted.
func (f *Fanout) Emit(e Event) {
	if e.Time.IsZero() {
		e.Time = f.now()
	}
	if e.ID == "" {
		e.ID = f.ids.New(e.Time)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		f.afterClosed.Add(1)
		return
	}
	for _, o := range f.outs {
		if o.ch == nil {
			o.sink.Emit(e)
			continue
		}
		select {
		case o.ch <- e:
		default:
			o.dropped.Add(1)
		}
	}
}

// Dropped returns, for each sink in the order of FanoutConfig.Sinks, the
// number of events dropped because its buffer was full, plus for every sink
// the events emitted after Close.
func (f *Fanout) Dropped() []uint64 {
	late := f.afterClosed.Load()
	d := make([]uint64, len(f.outs))
	for i, o := range f.outs {
		d[i] = o.dropped.Load() + late
	}
	return d
}

// Close stops accepting events and waits until every non-durable sink has
// received what was buffered for it, or until ctx ends (then it returns
// ctx.Err() and the goroutines finish in the background). It does not close
// the sinks themselves. Calling Close again is harmless.
func (f *Fanout) Close(ctx context.Context) error {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		for _, o := range f.outs {
			if o.ch != nil {
				close(o.ch)
			}
		}
	}
	f.mu.Unlock()
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LogSink writes one structured log line per event: message "event" at
// Level, with the event's non-empty fields as attributes named as in the
// JSON encoding. A nil Logger discards. LogSink is safe for concurrent use
// when its handler is (slog's handlers are).
type LogSink struct {
	Logger *slog.Logger
	// Level is the level of every line; zero is slog.LevelInfo.
	Level slog.Level
}

// Emit logs e.
func (s LogSink) Emit(e Event) {
	if s.Logger == nil || !s.Logger.Enabled(context.Background(), s.Level) {
		return
	}
	s.Logger.LogAttrs(context.Background(), s.Level, "event", Attrs(e)...)
}

// Attrs returns e's non-empty fields as slog attributes named as in the
// JSON encoding (times as time values, latency as a duration).
func Attrs(e Event) []slog.Attr {
	a := make([]slog.Attr, 0, 16)
	str := func(k, v string) {
		if v != "" {
			a = append(a, slog.String(k, v))
		}
	}
	str("id", e.ID)
	str("type", string(e.Type))
	if !e.Time.IsZero() {
		a = append(a, slog.Time("time", e.Time))
	}
	str("message_id", e.MessageID)
	str("recipient", e.Recipient)
	str("domain", e.Domain)
	if e.Attempt != 0 {
		a = append(a, slog.Int("attempt", e.Attempt))
	}
	str("tenant", e.Tenant)
	if len(e.Tags) > 0 {
		a = append(a, slog.String("tags", strings.Join(e.Tags, ",")))
	}
	if len(e.Metadata) > 0 {
		m := make([]any, 0, 2*len(e.Metadata))
		for k, v := range e.Metadata {
			m = append(m, slog.String(k, v))
		}
		a = append(a, slog.Group("metadata", m...))
	}
	str("site", e.Site)
	str("mx_host", e.MXHost)
	if e.MXAddr.IsValid() {
		a = append(a, slog.String("mx_addr", e.MXAddr.String()))
	}
	if e.SourceIP.IsValid() {
		a = append(a, slog.String("source_ip", e.SourceIP.String()))
	}
	if e.TLS != nil {
		a = append(a, slog.Group("tls", slog.String("version", e.TLS.Version),
			slog.String("cipher", e.TLS.Cipher), slog.Bool("verified", e.TLS.Verified)))
	}
	str("tls_policy", e.TLSPolicy)
	str("tls_failure", e.TLSFailure)
	if e.Reply != nil {
		a = append(a, slog.Group("reply", slog.Int("code", e.Reply.Code),
			slog.String("enhanced", formatEnhanced(e.Reply.EnhancedCode)), slog.String("text", e.Reply.Message)))
	}
	if e.Permanent {
		a = append(a, slog.Bool("permanent", true))
	}
	str("category", e.Category)
	if e.BadAddress {
		a = append(a, slog.Bool("bad_address", true))
	}
	if !e.NextAttempt.IsZero() {
		a = append(a, slog.Time("next_attempt", e.NextAttempt))
	}
	if e.Latency != 0 {
		a = append(a, slog.Duration("latency", e.Latency))
	}
	str("dsn_id", e.DSN)
	str("feedback_type", e.FeedbackType)
	str("reporter", e.Reporter)
	return a
}
