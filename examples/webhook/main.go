// Command webhook is a receiver for the mta event webhooks: an HTTP server
// that checks each request's Mta-Signature with the shared secret, rejects
// replays outside the window, drops events it has already printed (the
// sender delivers at least once) and prints every new event as one JSON
// line on standard output.
//
//	MTA_WEBHOOK_SECRET=... go run ./examples/webhook -addr 127.0.0.1:8025
//
// Point an event.Webhook endpoint at http://127.0.0.1:8025/ with the same
// secret.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/mtakit/mta/event"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8025", "listen address")
	secret := flag.String("secret", os.Getenv("MTA_WEBHOOK_SECRET"), "shared secret (default $MTA_WEBHOOK_SECRET)")
	window := flag.Duration("window", event.DefaultWindow, "replay window for signature timestamps")
	flag.Parse()
	if *secret == "" {
		fmt.Fprintln(os.Stderr, "webhook: no secret: set -secret or MTA_WEBHOOK_SECRET")
		os.Exit(2)
	}
	h := &handler{secret: []byte(*secret), window: *window, out: os.Stdout, now: time.Now, seen: newIDSet(1 << 20)}
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("webhook: listening on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}

// maxBody bounds a request body.
const maxBody = 32 << 20

// handler verifies, deduplicates and prints event batches.
type handler struct {
	secret []byte
	window time.Duration
	out    io.Writer
	now    func() time.Time

	mu   sync.Mutex
	seen *idSet
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	// Verify the raw bytes before parsing anything.
	if err := event.Verify(h.secret, r.Header.Get(event.SignatureHeader), body, h.now(), h.window); err != nil {
		code := http.StatusUnauthorized
		if errors.Is(err, event.ErrSignatureMalformed) {
			code = http.StatusBadRequest
		}
		http.Error(w, err.Error(), code)
		return
	}
	var evs []event.Event
	if err := json.Unmarshal(body, &evs); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	enc := json.NewEncoder(h.out)
	for _, e := range evs {
		if h.seen.has(e.ID) {
			continue // a resent batch: already printed
		}
		if err := enc.Encode(e); err != nil {
			// Not acknowledged: the sender retries the whole batch and the
			// events printed so far are skipped as duplicates.
			http.Error(w, "output: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h.seen.add(e.ID)
	}
	w.WriteHeader(http.StatusNoContent)
}

// idSet remembers the last n IDs added.
type idSet struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newIDSet(n int) *idSet { return &idSet{ids: make(map[string]struct{}), ring: make([]string, n)} }

func (s *idSet) has(id string) bool { _, ok := s.ids[id]; return ok }

func (s *idSet) add(id string) {
	if old := s.ring[s.next]; old != "" {
		delete(s.ids, old)
	}
	s.ring[s.next] = id
	s.ids[id] = struct{}{}
	s.next = (s.next + 1) % len(s.ring)
}
