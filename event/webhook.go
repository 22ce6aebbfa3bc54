package event

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Endpoint is one webhook receiver.
type Endpoint struct {
	// Name identifies the endpoint in the outbox (its cursor file) and in
	// logs: letters, digits, '.', '_' and '-', unique within a Webhook.
	// Keep it stable across restarts; a new name starts at the end of the
	// outbox.
	Name string
	// URL receives the POST requests.
	URL string
	// Secret keys the HMAC-SHA256 signature. Required.
	Secret []byte
	// Tenants, when not empty, limits the endpoint to events of these
	// tenants; empty means every event.
	Tenants []string
}

// WebhookConfig configures a [Webhook]. Dir and Endpoints are required;
// every other field has a default.
type WebhookConfig struct {
	// Dir holds the outbox: segment files and one cursor per endpoint.
	// Only one Webhook may use a directory at a time.
	Dir string
	// Endpoints receive the events.
	Endpoints []Endpoint
	// BatchSize is the largest number of events in one POST. Zero means 100.
	BatchSize int
	// SegmentBytes is the size at which the outbox starts a new segment
	// file. Zero means 8 MiB.
	SegmentBytes int64
	// MaxBytes bounds the outbox. When it is exceeded, the oldest segments
	// are removed even if some endpoint has not received their events;
	// those events are counted in WebhookStats.Dropped and logged. The
	// newest segment is never removed. Zero means 1 GiB; negative means
	// unbounded.
	MaxBytes int64
	// MinBackoff and MaxBackoff bound the wait between retries of a failed
	// POST: it doubles from MinBackoff up to MaxBackoff (each wait is
	// jittered to between half and all of that). A Retry-After header
	// (seconds or an HTTP date) lengthens the wait up to MaxBackoff. Zero
	// means 1s and 5m.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Client sends the requests. Nil means a client with a 30 s timeout.
	Client *http.Client
	// Logger receives failures and drops. Nil discards.
	Logger *slog.Logger
	// Now is the clock for signatures and for stamping events without a
	// Time. Nil means time.Now.
	Now func() time.Time
}

// WebhookStats are the counters of a [Webhook].
type WebhookStats struct {
	// Appended counts events stored in the outbox since it was opened.
	Appended uint64
	// Failed counts events lost before they were stored: write errors, or
	// Emit after Close.
	Failed uint64
	// Dropped counts stored events removed before every endpoint had them
	// because the outbox reached MaxBytes.
	Dropped uint64
	// Bytes and Segments describe the outbox on disk.
	Bytes    int64
	Segments int
	// Pending is, per endpoint name, the number of stored events it has not
	// acknowledged yet (including events filtered out by Tenants).
	Pending map[string]uint64
}

// Webhook is a durable Sink that POSTs events as signed JSON batches to
// endpoints. Emit appends the event to a file-backed outbox and returns
// once it is fsynced (concurrent Emits share one fsync); one goroutine per
// endpoint reads the outbox in order and sends batches, retrying with
// back-off until the endpoint answers 2xx, so events survive endpoint
// outages and restarts of the process.
//
// # Delivery guarantee
//
// At least once, in outbox order, per endpoint. A batch is resent, with
// the same events and the same BatchIDHeader, until it is acknowledged; a
// crash between the receiver's 2xx and the cursor update resends it once
// more. Receivers get exactly-once processing by remembering the event IDs
// (or batch IDs) they have processed and ignoring repeats.
//
// # Requests
//
// POST to Endpoint.URL, body a JSON array of events (see [Event]),
// Content-Type application/json, SignatureHeader and BatchIDHeader set.
// Any 2xx acknowledges the batch; anything else, including 4xx, is retried,
// because dropping events silently is worse than a stuck endpoint (which
// shows in WebhookStats.Pending and the log).
//
// A Webhook is safe for concurrent use. Close it to stop the senders.
type Webhook struct {
	cfg    WebhookConfig
	now    func() time.Time
	client *http.Client
	log    *slog.Logger
	ids    IDSource
	o      *outbox
	eps    []*endpointState

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type endpointState struct {
	Endpoint
	wake    chan struct{}
	tenants map[string]bool
}

var endpointName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// ErrConfig reports an invalid WebhookConfig.
var ErrConfig = errors.New("event: invalid configuration")

// NewWebhook opens (or creates) the outbox in cfg.Dir and starts one
// sender per endpoint. Events stored by a previous run and not yet
// acknowledged are sent first.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: Dir is required", ErrConfig)
	}
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no endpoints", ErrConfig)
	}
	w := &Webhook{cfg: cfg, now: cfg.Now, client: cfg.Client, log: cfg.Logger}
	if w.now == nil {
		w.now = time.Now
	}
	if w.client == nil {
		w.client = &http.Client{Timeout: 30 * time.Second}
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.cfg.BatchSize <= 0 {
		w.cfg.BatchSize = 100
	}
	if w.cfg.SegmentBytes <= 0 {
		w.cfg.SegmentBytes = 8 << 20
	}
	if w.cfg.MaxBytes == 0 {
		w.cfg.MaxBytes = 1 << 30
	}
	if w.cfg.MinBackoff <= 0 {
		w.cfg.MinBackoff = time.Second
	}
	if w.cfg.MaxBackoff <= 0 {
		w.cfg.MaxBackoff = 5 * time.Minute
	}
	w.cfg.MaxBackoff = max(w.cfg.MaxBackoff, w.cfg.MinBackoff)
	var names []string
	for _, ep := range cfg.Endpoints {
		if !endpointName.MatchString(ep.Name) {
			return nil, fmt.Errorf("%w: endpoint name %q", ErrConfig, ep.Name)
		}
		if slices.Contains(names, ep.Name) {
			return nil, fmt.Errorf("%w: duplicate endpoint name %q", ErrConfig, ep.Name)
		}
		if ep.URL == "" || len(ep.Secret) == 0 {
			return nil, fmt.Errorf("%w: endpoint %q needs URL and Secret", ErrConfig, ep.Name)
		}
		names = append(names, ep.Name)
		st := &endpointState{Endpoint: ep, wake: make(chan struct{}, 1)}
		if len(ep.Tenants) > 0 {
			st.tenants = make(map[string]bool)
			for _, t := range ep.Tenants {
				st.tenants[t] = true
			}
		}
		w.eps = append(w.eps, st)
	}
	maxBytes := w.cfg.MaxBytes
	if maxBytes < 0 {
		maxBytes = 0
	}
	o, err := openOutbox(cfg.Dir, names, w.cfg.SegmentBytes, maxBytes, w.log)
	if err != nil {
		return nil, err
	}
	o.notify = func() {
		for _, ep := range w.eps {
			select {
			case ep.wake <- struct{}{}:
			default:
			}
		}
	}
	w.o = o
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for _, ep := range w.eps {
		o.mu.Lock()
		r := &reader{o: o, next: o.cursors[ep.Name]}
		o.mu.Unlock()
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer r.closeFile()
			w.run(ctx, ep, r)
		}()
	}
	return w, nil
}

// Durable reports true: Emit stores the event before returning, so a
// [Fanout] calls it directly.
func (w *Webhook) Durable() bool { return true }

// Emit stamps e (ID and Time when empty), appends it to the outbox and
// returns once it is on stable storage. It does not wait for any endpoint.
// A storage failure is logged and counted in WebhookStats.Failed.
func (w *Webhook) Emit(e Event) {
	_ = w.EmitErr(e)
}

// EmitErr is Emit returning the storage error, if any.
func (w *Webhook) EmitErr(e Event) error {
	if e.Time.IsZero() {
		e.Time = w.now()
	}
	if e.ID == "" {
		e.ID = w.ids.New(e.Time)
	}
	b, err := json.Marshal(e)
	if err != nil {
		// Event has no field that can fail to marshal; keep the guard.
		return fmt.Errorf("event: encoding: %w", err)
	}
	return w.o.append(b)
}

// Flush waits until every endpoint has acknowledged every event stored
// before the call, or ctx ends.
func (w *Webhook) Flush(ctx context.Context) error {
	w.o.mu.Lock()
	target := w.o.committed
	w.o.mu.Unlock()
	for {
		w.o.mu.Lock()
		done := true
		for _, c := range w.o.cursors {
			if c < target {
				done = false
			}
		}
		ch := w.o.progress
		w.o.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats returns the current counters.
func (w *Webhook) Stats() WebhookStats {
	o := w.o
	o.mu.Lock()
	defer o.mu.Unlock()
	s := WebhookStats{Appended: o.appended, Failed: o.failed, Dropped: o.dropped,
		Bytes: o.total, Segments: len(o.segs), Pending: make(map[string]uint64)}
	for n, c := range o.cursors {
		s.Pending[n] = o.committed - min(c, o.committed)
	}
	return s
}

// Close stops the senders (aborting requests in flight; their batches are
// sent again by the next Webhook on the same Dir) and closes the outbox.
// Events not yet acknowledged stay stored. Emit after Close fails. Close
// returns ctx.Err() if the senders do not stop before ctx ends.
func (w *Webhook) Close(ctx context.Context) error {
	var err error
	w.once.Do(func() {
		w.cancel()
		done := make(chan struct{})
		go func() {
			w.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if cerr := w.o.close(); err == nil && cerr != nil {
			err = fmt.Errorf("event: outbox: %w", cerr)
		}
	})
	return err
}

// run is the sender of one endpoint.
func (w *Webhook) run(ctx context.Context, ep *endpointState, r *reader) {
	var (
		batch    []record
		end      uint64 // the cursor once batch is acknowledged
		failures int
	)
	for ctx.Err() == nil {
		if batch == nil {
			recs, err := r.read(w.cfg.BatchSize)
			if err != nil {
				w.log.Error("event: webhook: reading outbox", slog.String("endpoint", ep.Name), slog.Any("err", err))
			}
			if len(recs) == 0 {
				select {
				case <-ep.wake:
				case <-ctx.Done():
				}
				continue
			}
			batch, end = ep.filter(recs), r.next
			if len(batch) == 0 {
				batch = nil
				if err := w.o.advance(ep.Name, end); err != nil {
					w.log.Error("event: webhook: saving cursor", slog.String("endpoint", ep.Name), slog.Any("err", err))
				}
				continue
			}
		}
		retryAfter, err := w.post(ctx, ep, batch)
		if err == nil {
			failures = 0
			batch = nil
			if err := w.o.advance(ep.Name, end); err != nil {
				w.log.Error("event: webhook: saving cursor", slog.String("endpoint", ep.Name), slog.Any("err", err))
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		d := retryDelay(failures, retryAfter, w.cfg.MinBackoff, w.cfg.MaxBackoff, rand.Float64())
		w.log.Warn("event: webhook: delivery failed; retrying", slog.String("endpoint", ep.Name),
			slog.Int("events", len(batch)), slog.Int("failures", failures), slog.Duration("retry_in", d), slog.Any("err", err))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// filter keeps the records for the endpoint's tenants.
func (ep *endpointState) filter(recs []record) []record {
	if ep.tenants == nil {
		return recs
	}
	var out []record
	for _, r := range recs {
		var t struct {
			Tenant string `json:"tenant"`
		}
		if json.Unmarshal(r.data, &t) == nil && ep.tenants[t.Tenant] {
			out = append(out, r)
		}
	}
	return out
}

// BatchID returns the batch ID for a batch of encoded events: the first
// 16 bytes, in hex, of SHA-256 over the events separated by newlines. The
// same events give the same ID, on every retry and after a restart.
func BatchID(events [][]byte) string {
	h := sha256.New()
	for _, e := range events {
		h.Write(e)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// errStatus is a non-2xx answer.
type errStatus struct{ code int }

func (e errStatus) Error() string { return "event: webhook: HTTP status " + strconv.Itoa(e.code) }

// post sends one batch. It returns the Retry-After delay the endpoint asked
// for, if any.
func (w *Webhook) post(ctx context.Context, ep *endpointState, batch []record) (time.Duration, error) {
	datas := make([][]byte, len(batch))
	var body bytes.Buffer
	body.WriteByte('[')
	for i, r := range batch {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(r.data)
		datas[i] = r.data
	}
	body.WriteByte(']')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body.Bytes()))
	if err != nil {
		return 0, err
	}
	now := w.now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mta-webhook/1")
	req.Header.Set(SignatureHeader, Sign(ep.Secret, body.Bytes(), now))
	req.Header.Set(BatchIDHeader, BatchID(datas))
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return 0, nil
	}
	return parseRetryAfter(resp.Header.Get("Retry-After"), now), errStatus{resp.StatusCode}
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110 section 10.2.3). Unparsable or past values give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// retryDelay is the wait after the n-th consecutive failure (n >= 1):
// minB doubled n-1 times, capped at maxB, jittered by j in [0,1) to between
// half and all of it, then lengthened to retryAfter (capped at maxB).
func retryDelay(n int, retryAfter, minB, maxB time.Duration, j float64) time.Duration {
	d := minB
	for i := 1; i < n && d < maxB; i++ {
		d *= 2
	}
	d = min(d, maxB)
	d = d/2 + time.Duration(float64(d/2)*j)
	if ra := min(retryAfter, maxB); ra > d {
		d = ra
	}
	return d
}
