package logstore_test

// Benchmarks of the store itself (no scheduler): durable enqueue with group
// commit under concurrent producers, and claim+complete under concurrent
// workers. Every Enqueue and Complete returns only after its record is
// fsynced, so these numbers are bounded by the disk's fsync latency and
// bandwidth; run them on the disk you care about (b.TempDir, i.e. $TMPDIR).
//
//	go test -run '^$' -bench . -benchtime=2000x ./queue/logstore/

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/logstore"
)

var benchT0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// benchMessage is a message with one recipient in one of 100 domains.
func benchMessage(id string, i int) *queue.Message {
	domain := fmt.Sprintf("d%02d.example", i%100)
	return &queue.Message{
		ID:      id,
		From:    "sender@example.com",
		Created: benchT0,
		Expires: benchT0.Add(5 * 24 * time.Hour),
		Deliveries: []queue.Delivery{{
			Index:       0,
			Domain:      domain,
			NextAttempt: benchT0,
			Recipients:  []queue.Recipient{{Address: fmt.Sprintf("user%d@%s", i, domain)}},
		}},
	}
}

// benchBody returns a message of exactly size bytes (at least the header):
// header lines, a blank line and filler lines, all CRLF-terminated and at
// most 78 characters.
func benchBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: sender@example.com\r\nTo: user@d00.example\r\nSubject: logstore benchmark\r\n" +
		"Message-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	line := 0
	for r := size - b.Len(); r >= 2; r = size - b.Len() {
		n := min(r, 78) - 2 // content of this line; a full line is 76 + CRLF
		if r > 78 && r <= 80 {
			n = r - 5 // leave room for a last line of at least one character
		}
		for j := range n {
			b.WriteByte(alphabet[(line+j)%len(alphabet)])
		}
		b.WriteString("\r\n")
		line++
	}
	return b.Bytes()
}

// benchRun calls fn(i) for i in [0, n) from exactly p goroutines and
// returns the first error.
func benchRun(p, n int, fn func(worker, i int) error) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for w := range p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(w, i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func benchOpen(b *testing.B) *logstore.Store {
	b.Helper()
	s, err := logstore.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() }) // before TempDir's removal (cleanups run last-in first-out)
	return s
}

// BenchmarkEnqueue measures durable Enqueue (one fsync per group commit)
// with P producers calling Store.Enqueue concurrently.
func BenchmarkEnqueue(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"1KB", 1 << 10}, {"10KB", 10 << 10}, {"100KB", 100 << 10}}
	for _, sz := range sizes {
		for _, p := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("size=%s/producers=%d", sz.name, p), func(b *testing.B) {
				ctx := context.Background()
				s := benchOpen(b)
				body := benchBody(sz.n)
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				err := benchRun(p, b.N, func(_, i int) error {
					return s.Enqueue(ctx, benchMessage(fmt.Sprintf("m%09d", i), i), bytes.NewReader(body))
				})
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkClaimComplete measures one Claim plus one final Complete
// (delivered: the message is removed, a del record is logged and fsynced)
// with 16 workers, on a store prefilled with b.N messages of 10 KB in 100
// domains.
func BenchmarkClaimComplete(b *testing.B) {
	const workers = 16
	ctx := context.Background()
	s := benchOpen(b)
	body := benchBody(10 << 10)
	err := benchRun(64, b.N, func(_, i int) error {
		return s.Enqueue(ctx, benchMessage(fmt.Sprintf("m%09d", i), i), bytes.NewReader(body))
	})
	if err != nil {
		b.Fatal(err)
	}
	ok := &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "ok"}
	owners := make([]string, workers)
	for w := range owners {
		owners[w] = fmt.Sprintf("bench/w%d", w)
	}
	b.ResetTimer()
	err = benchRun(workers, b.N, func(w, _ int) error {
		cl, err := s.Claim(ctx, queue.ClaimRequest{Owner: owners[w], Now: benchT0, Until: benchT0.Add(time.Hour)})
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		return s.Complete(ctx, &queue.Completion{
			Lease: cl.Lease,
			Now:   benchT0,
			Results: []queue.RecipientResult{{
				Address: cl.Delivery.Recipients[0].Address, State: queue.RecipientDelivered, Reply: ok, Attempted: benchT0,
			}},
		})
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if left, err := s.List(ctx, queue.Filter{Limit: 1}); err != nil || len(left) != 0 {
		b.Fatalf("store not empty after completing every message: %d left, err %v", len(left), err)
	}
}
