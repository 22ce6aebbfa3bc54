package queue_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/memstore"
)

// BenchmarkMemstoreClaimComplete measures one claim plus one completion
// on a memstore holding 1000 ready deliveries.
func BenchmarkMemstoreClaimComplete(b *testing.B) {
	ctx := context.Background()
	s := memstore.New()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		m := &queue.Message{ID: fmt.Sprintf("m%05d", i), From: "s@a.test", Created: now, Expires: now.Add(time.Hour),
			Deliveries: []queue.Delivery{{Domain: "a.test", NextAttempt: now, Recipients: []queue.Recipient{{Address: "r@a.test"}}}}}
		if err := s.Enqueue(ctx, m, strings.NewReader("x")); err != nil {
			b.Fatal(err)
		}
	}
	reply := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 0, 0}, Message: "later"}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t := now.Add(time.Duration(i))
		cl, err := s.Claim(ctx, queue.ClaimRequest{Owner: "w", Now: t, Until: t.Add(time.Minute)})
		if err != nil {
			b.Fatal(err)
		}
		// Transient: the delivery stays, rescheduled behind the others.
		err = s.Complete(ctx, &queue.Completion{Lease: cl.Lease, Now: t, NextAttempt: t,
			Results: []queue.RecipientResult{{Address: "r@a.test", State: queue.RecipientPending, Reply: reply}}})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnqueue measures Queue.Enqueue (validation, ID, store) of a
// 4 KiB message with three recipients in two domains, on memstore.
func BenchmarkEnqueue(b *testing.B) {
	ctx := context.Background()
	q, err := queue.New(queue.Config{Store: memstore.New(), Hostname: "h.test"})
	if err != nil {
		b.Fatal(err)
	}
	body := "Subject: bench\r\n\r\n" + strings.Repeat("x", 4096)
	m := &queue.NewMessage{From: "s@sender.test", Recipients: []deliver.Recipient{{Address: "a@a.test"}, {Address: "b@a.test"}, {Address: "c@b.test"}}}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := q.Enqueue(ctx, m, strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeliverPipeline measures the scheduler end to end: enqueue and
// deliver through a transport that accepts at once.
func BenchmarkDeliverPipeline(b *testing.B) {
	ctx := context.Background()
	done := make(chan struct{}, 1024)
	q, err := queue.New(queue.Config{
		Store: memstore.New(), Hostname: "h.test", Workers: 8, DestinationConcurrency: 8, PollInterval: time.Millisecond,
		Transport: deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
			return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
		}),
		Events: event.SinkFunc(func(e event.Event) {
			if e.Type == event.Delivered {
				done <- struct{}{}
			}
		}),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer q.Shutdown(ctx)
	n := 0
	for b.Loop() {
		m := &queue.NewMessage{From: "s@sender.test", Recipients: []deliver.Recipient{{Address: fmt.Sprintf("r@d%d.test", n%16)}}}
		n++
		if _, err := q.Enqueue(ctx, m, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
			b.Fatal(err)
		}
		<-done
	}
}

// discardStore drains bodies and keeps nothing, to measure the Queue's own
// enqueue overhead (validation, split, ID, suppression, events).
type discardStore struct{ queue.Store }

func (discardStore) Enqueue(ctx context.Context, m *queue.Message, body io.Reader) error {
	_, err := io.Copy(io.Discard, body)
	return err
}

// BenchmarkEnqueueOverhead is BenchmarkEnqueue without the store's cost.
func BenchmarkEnqueueOverhead(b *testing.B) {
	ctx := context.Background()
	q, err := queue.New(queue.Config{Store: discardStore{memstore.New()}, Hostname: "h.test"})
	if err != nil {
		b.Fatal(err)
	}
	body := "Subject: bench\r\n\r\n" + strings.Repeat("x", 4096)
	m := &queue.NewMessage{From: "s@sender.test", Recipients: []deliver.Recipient{{Address: "a@a.test"}, {Address: "b@a.test"}, {Address: "c@b.test"}}}
	for b.Loop() {
		if _, err := q.Enqueue(ctx, m, strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}
