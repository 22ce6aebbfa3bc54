package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mta/event"
)

// syncBuffer is a bytes.Buffer safe for the handler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestHandler(out *syncBuffer) *handler {
	return &handler{secret: []byte("topsecret"), window: event.DefaultWindow, out: out, now: time.Now, seen: newIDSet(16)}
}

// TestReceiverFromWebhookSink sends events through the real Webhook sink
// to the handler and reads them back from its output.
func TestReceiverFromWebhookSink(t *testing.T) {
	var out syncBuffer
	srv := httptest.NewServer(newTestHandler(&out))
	defer srv.Close()
	w, err := event.NewWebhook(event.WebhookConfig{
		Dir:       t.TempDir(),
		Endpoints: []event.Endpoint{{Name: "example", URL: srv.URL, Secret: []byte("topsecret")}},
		BatchSize: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer w.Close(ctx)
	for i := range 10 {
		w.Emit(event.Event{Type: event.Delivered, MessageID: "m" + strconv.Itoa(i), Recipient: "a@example.test"})
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	i := 0
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if e.MessageID != "m"+strconv.Itoa(i) || e.Type != event.Delivered || e.ID == "" {
			t.Errorf("line %d: %+v", i, e)
		}
		i++
	}
	if i != 10 {
		t.Errorf("%d lines:\n%s", i, out.String())
	}
}

func TestReceiverRejects(t *testing.T) {
	var out syncBuffer
	h := newTestHandler(&out)
	body := []byte(`[{"id":"01A","type":"queued","time":"2026-11-23T16:00:00.000Z"}]`)
	now := time.Now()
	post := func(sig string, b []byte) int {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(b))
		if sig != "" {
			req.Header.Set(event.SignatureHeader, sig)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for name, c := range map[string]struct {
		sig  string
		body []byte
		want int
	}{
		"no signature":  {"", body, http.StatusBadRequest},
		"wrong secret":  {event.Sign([]byte("guess"), body, now), body, http.StatusUnauthorized},
		"tampered body": {event.Sign([]byte("topsecret"), body, now), append([]byte(" "), body...), http.StatusUnauthorized},
		"replay":        {event.Sign([]byte("topsecret"), body, now.Add(-time.Hour)), body, http.StatusUnauthorized},
		"bad JSON":      {event.Sign([]byte("topsecret"), []byte("{"), now), []byte("{"), http.StatusBadRequest},
	} {
		if got := post(c.sig, c.body); got != c.want {
			t.Errorf("%s: status %d, want %d", name, got, c.want)
		}
	}
	if out.String() != "" {
		t.Errorf("printed rejected events: %s", out.String())
	}
	// A good request prints once, its repeat (a resend) not again.
	for range 2 {
		if got := post(event.Sign([]byte("topsecret"), body, now), body); got != http.StatusNoContent {
			t.Fatalf("good request: %d", got)
		}
	}
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Errorf("%d lines for a resent batch: %s", n, out.String())
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.Code)
	}
}

func TestIDSetForgetsOldest(t *testing.T) {
	s := newIDSet(2)
	s.add("a")
	s.add("b")
	s.add("c")
	if s.has("a") || !s.has("b") || !s.has("c") {
		t.Errorf("set %v", s.ids)
	}
}
