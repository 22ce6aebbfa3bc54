package event

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// receiver is a webhook endpoint on loopback that verifies signatures,
// deduplicates by event ID and records the order of first arrival.
type receiver struct {
	t      *testing.T
	secret []byte

	mu       sync.Mutex
	down     bool // answer 503 without reading
	loseAck  int  // store the batch, then answer 500 this many times
	requests int
	failed   int
	dups     int
	seen     map[string]bool
	got      []Event
	batchIDs map[string]int
	onFail   chan struct{}
}

func newReceiver(t *testing.T, secret string) (*receiver, *httptest.Server) {
	r := &receiver{t: t, secret: []byte(secret), seen: map[string]bool{}, batchIDs: map[string]int{},
		onFail: make(chan struct{}, 1)}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if r.down {
		r.failed++
		select {
		case r.onFail <- struct{}{}:
		default:
		}
		w.Header().Set("Retry-After", "0")
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if err := Verify(r.secret, req.Header.Get(SignatureHeader), body, time.Now(), 0); err != nil {
		r.t.Errorf("receiver: %v", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var evs []Event
	if err := json.Unmarshal(body, &evs); err != nil {
		r.t.Errorf("receiver: %v", err)
		http.Error(w, err.Error(), 400)
		return
	}
	if req.Header.Get("Content-Type") != "application/json" || len(req.Header.Get(BatchIDHeader)) != 32 {
		r.t.Errorf("receiver: headers %v", req.Header)
	}
	r.batchIDs[req.Header.Get(BatchIDHeader)]++
	for _, e := range evs {
		if r.seen[e.ID] {
			r.dups++
			continue
		}
		r.seen[e.ID] = true
		r.got = append(r.got, e)
	}
	if r.loseAck > 0 {
		r.loseAck--
		http.Error(w, "ack lost", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) set(f func(r *receiver)) {
	r.mu.Lock()
	f(r)
	r.mu.Unlock()
}

// sequence checks that the received events carry metadata seq 0..n-1 in
// order, with no gap, no duplicate.
func (r *receiver) sequence(n int) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != n {
		r.t.Fatalf("received %d distinct events, want %d", len(r.got), n)
	}
	for i, e := range r.got {
		if e.Metadata["seq"] != strconv.Itoa(i) {
			r.t.Fatalf("event %d has seq %q (order or gap)", i, e.Metadata["seq"])
		}
	}
}

func seqEvent(i int) Event {
	return Event{Type: Delivered, MessageID: fmt.Sprintf("m%d", i), Recipient: "rcpt@example.test",
		Metadata: map[string]string{"seq": strconv.Itoa(i)}}
}

func testConfig(dir, url string) WebhookConfig {
	return WebhookConfig{
		Dir:        dir,
		Endpoints:  []Endpoint{{Name: "main", URL: url, Secret: []byte("k")}},
		BatchSize:  7,
		MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
	}
}

func flush(t *testing.T, w *Webhook) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (stats %+v)", err, w.Stats())
	}
}

func closeW(t *testing.T, w *Webhook) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWebhookOutageAndRestart: the endpoint is down while events are
// emitted, the sender is closed and reopened on the same outbox, acks get
// lost; once the endpoint is back it has every event once, in order.
func TestWebhookOutageAndRestart(t *testing.T) {
	rcv, srv := newReceiver(t, "k")
	rcv.set(func(r *receiver) { r.down = true })
	dir := t.TempDir()
	w, err := NewWebhook(testConfig(dir, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		w.Emit(seqEvent(i))
	}
	<-rcv.onFail // the endpoint was tried and refused
	closeW(t, w)
	if err := w.EmitErr(seqEvent(-1)); err == nil {
		t.Error("Emit after Close succeeded")
	}

	// Restart: a new Webhook on the same directory.
	w, err = NewWebhook(testConfig(dir, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	defer closeW(t, w)
	if p := w.Stats().Pending["main"]; p != 40 {
		t.Errorf("pending after restart = %d, want 40", p)
	}
	for i := 40; i < 70; i++ {
		w.Emit(seqEvent(i))
	}
	<-rcv.onFail
	// Back up, but the first two acknowledgements get lost: the batches
	// are sent again and the receiver deduplicates.
	rcv.set(func(r *receiver) { r.down, r.loseAck = false, 2 })
	for i := 70; i < 100; i++ {
		w.Emit(seqEvent(i))
	}
	flush(t, w)
	rcv.sequence(100)
	rcv.mu.Lock()
	if rcv.dups == 0 {
		t.Error("no duplicates although acks were lost")
	}
	resent := 0
	for _, n := range rcv.batchIDs {
		if n > 1 {
			resent++
		}
	}
	if resent == 0 {
		t.Error("a resent batch did not keep its batch ID")
	}
	rcv.mu.Unlock()
	st := w.Stats()
	if st.Pending["main"] != 0 || st.Dropped != 0 || st.Failed != 0 || st.Segments != 1 {
		t.Errorf("stats after flush: %+v", st)
	}
}

// TestWebhookSlowEndpoint: while the endpoint blocks, Emit keeps returning.
func TestWebhookSlowEndpoint(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var mu sync.Mutex
	var n int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		var evs []Event
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &evs); err != nil {
			t.Error(err)
		}
		mu.Lock()
		n += len(evs)
		mu.Unlock()
	}))
	defer srv.Close()
	w, err := NewWebhook(testConfig(t.TempDir(), srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	defer closeW(t, w)
	w.Emit(seqEvent(0))
	<-entered // the endpoint now holds a request and does not answer
	for i := 1; i < 200; i++ {
		w.Emit(seqEvent(i)) // returns although the endpoint is stuck
	}
	if p := w.Stats().Pending["main"]; p != 200 {
		t.Errorf("pending = %d while the endpoint blocks, want 200", p)
	}
	close(release)
	flush(t, w)
	mu.Lock()
	defer mu.Unlock()
	if n != 200 {
		t.Errorf("endpoint got %d events", n)
	}
}

func TestWebhookTenantsAndEndpoints(t *testing.T) {
	all, srvAll := newReceiver(t, "a")
	acme, srvAcme := newReceiver(t, "b")
	cfg := testConfig(t.TempDir(), "")
	cfg.Endpoints = []Endpoint{
		{Name: "all", URL: srvAll.URL, Secret: []byte("a")},
		{Name: "acme", URL: srvAcme.URL, Secret: []byte("b"), Tenants: []string{"acme"}},
	}
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeW(t, w)
	acmeN := 0
	for i := range 50 {
		e := seqEvent(i)
		if i%3 == 0 {
			e.Tenant = "acme"
			e.Metadata = map[string]string{"seq": strconv.Itoa(acmeN)}
			acmeN++
		} else {
			e.Tenant = "other"
			e.Metadata = map[string]string{"seq": "x"}
		}
		w.Emit(e)
	}
	flush(t, w)
	acme.sequence(acmeN)
	all.mu.Lock()
	if len(all.got) != 50 {
		t.Errorf("unfiltered endpoint got %d", len(all.got))
	}
	all.mu.Unlock()
}

func TestWebhookConfigErrors(t *testing.T) {
	ep := Endpoint{Name: "a", URL: "http://127.0.0.1:1/", Secret: []byte("x")}
	for name, cfg := range map[string]WebhookConfig{
		"no dir":       {Endpoints: []Endpoint{ep}},
		"no endpoints": {Dir: t.TempDir()},
		"bad name":     {Dir: t.TempDir(), Endpoints: []Endpoint{{Name: "../x", URL: ep.URL, Secret: ep.Secret}}},
		"dup name":     {Dir: t.TempDir(), Endpoints: []Endpoint{ep, ep}},
		"no secret":    {Dir: t.TempDir(), Endpoints: []Endpoint{{Name: "a", URL: ep.URL}}},
	} {
		if _, err := NewWebhook(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestWebhookMaxBytes: with the endpoint down, the outbox stays bounded by
// dropping its oldest segments; the drop is counted and the newest events
// are delivered, in order, when the endpoint returns.
func TestWebhookMaxBytes(t *testing.T) {
	rcv, srv := newReceiver(t, "k")
	rcv.set(func(r *receiver) { r.down = true })
	cfg := testConfig(t.TempDir(), srv.URL)
	cfg.SegmentBytes = 2000
	cfg.MaxBytes = 6000
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeW(t, w)
	const n = 200
	for i := range n {
		w.Emit(seqEvent(i))
	}
	st := w.Stats()
	if st.Bytes > cfg.MaxBytes || st.Dropped == 0 || st.Appended != n {
		t.Fatalf("stats %+v", st)
	}
	rcv.set(func(r *receiver) { r.down = false })
	flush(t, w)
	st = w.Stats()
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	// The sender may have taken one batch before the drop; beyond that,
	// received + dropped = emitted, and what arrived is in order and ends
	// with the newest event.
	if got := uint64(len(rcv.got)); got+st.Dropped < n || got+st.Dropped > n+uint64(cfg.BatchSize) {
		t.Errorf("received %d + dropped %d, emitted %d", got, st.Dropped, n)
	}
	last := -1
	for _, e := range rcv.got {
		s, _ := strconv.Atoi(e.Metadata["seq"])
		if s <= last {
			t.Fatalf("out of order: %d after %d", s, last)
		}
		last = s
	}
	if last != n-1 {
		t.Errorf("newest event %d not delivered", last)
	}
}

// TestOutboxTornTail: a crash mid-write leaves a partial record; reopening
// truncates it and keeps every whole record.
func TestOutboxTornTail(t *testing.T) {
	rcv, srv := newReceiver(t, "k")
	rcv.set(func(r *receiver) { r.down = true })
	dir := t.TempDir()
	w, err := NewWebhook(testConfig(dir, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		w.Emit(seqEvent(i))
	}
	closeW(t, w)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := appendRecord(nil, 11, []byte(`{"id":"torn","type":"queued"}`))
	f.Write(torn[:len(torn)-5])
	f.Close()

	rcv.set(func(r *receiver) { r.down = false })
	w, err = NewWebhook(testConfig(dir, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	defer closeW(t, w)
	for i := 10; i < 20; i++ {
		w.Emit(seqEvent(i))
	}
	flush(t, w)
	rcv.sequence(20)
}

func TestRetryDelay(t *testing.T) {
	minB, maxB := time.Second, time.Minute
	for _, c := range []struct {
		n    int
		ra   time.Duration
		j    float64
		want time.Duration
	}{
		{1, 0, 0, 500 * time.Millisecond},
		{1, 0, 0.999999999, time.Second - time.Nanosecond},
		{2, 0, 0, time.Second},
		{4, 0, 0, 4 * time.Second},
		{20, 0, 0, 30 * time.Second}, // capped at maxB, jittered down
		{1000, 0, 0.5, 45 * time.Second},
		{1, 10 * time.Second, 0, 10 * time.Second}, // Retry-After lengthens
		{1, time.Hour, 0, time.Minute},             // capped at maxB
		{6, time.Second, 0, 16 * time.Second},      // shorter Retry-After does not shorten
	} {
		if got := retryDelay(c.n, c.ra, minB, maxB, c.j); got != c.want {
			t.Errorf("retryDelay(%d, %v, %v) = %v, want %v", c.n, c.ra, c.j, got, c.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"120":                           2 * time.Minute,
		"0":                             0,
		"-5":                            0,
		"soon":                          0,
		"Mon, 23 Nov 2026 16:00:30 GMT": 30 * time.Second,
		"Mon, 23 Nov 2026 15:00:00 GMT": 0,
		"99999999":                      24 * time.Hour,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestBatchIDStable(t *testing.T) {
	a := BatchID([][]byte{[]byte(`{"id":"1"}`), []byte(`{"id":"2"}`)})
	b := BatchID([][]byte{[]byte(`{"id":"1"}`), []byte(`{"id":"2"}`)})
	c := BatchID([][]byte{[]byte(`{"id":"1"}{"id":"2"}`)})
	if a != b || a == c || len(a) != 32 {
		t.Errorf("%s %s %s", a, b, c)
	}
}
