package queue_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/ratelimit"
)

func TestDeliverSplitsByDomain(t *testing.T) {
	tr := &sink{}
	h := newHarness(t, queue.Config{Transport: tr})
	id := h.enqueue("alice@sender.test", "bob@a.test", "carol@b.test", "dave@A.TEST", "bob@a.test")
	h.waitFor("delivered", 3, isType(event.Delivered, id))
	calls := tr.snapshot()
	if len(calls) != 2 {
		t.Fatalf("%d transport calls, want 2 (one per domain)", len(calls))
	}
	got := map[string][]string{}
	for _, c := range calls {
		for _, r := range c.env.Recipients {
			got[deliver.Domain(strings.ToLower(r.Address))] = append(got[deliver.Domain(strings.ToLower(r.Address))], r.Address)
		}
		if c.env.From != "alice@sender.test" || c.env.MessageID != id || string(c.body) != "Subject: test\r\n\r\nhello\r\n" {
			t.Errorf("call %+v: wrong envelope or body %q", c.env, c.body)
		}
		if c.env.Mail.Size != int64(len(c.body)) {
			t.Errorf("Mail.Size = %d, want %d", c.env.Mail.Size, len(c.body))
		}
	}
	if !slices.Equal(got["a.test"], []string{"bob@a.test", "dave@A.TEST"}) || !slices.Equal(got["b.test"], []string{"carol@b.test"}) {
		t.Errorf("recipients by domain = %v (duplicates must be dropped, domains grouped case-insensitively)", got)
	}
	waitGone(t, h, id)
}

// waitGone waits until the finished message has been removed.
func waitGone(t *testing.T, h *harness, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := h.q.Get(t.Context(), id)
		if errors.Is(err, queue.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s still in the store: %v", id, err)
		}
		h.waitAny()
	}
}

// waitAny waits for the next event or a short while.
func (h *harness) waitAny() {
	select {
	case <-h.rec.signal:
	case <-time.After(50 * time.Millisecond):
	}
}

// longLease is used by tests that move the fake clock in big steps while
// attempts may be in flight: with the default lease such a jump expires
// the lease of an attempt that is still running (which real time, where an
// attempt ends before its lease, never does) and the delivery is claimed
// twice.
const longLease = 1000 * time.Hour

func TestBackoffSequence(t *testing.T) {
	tr := &sink{fn: func(ctx context.Context, env *deliver.Envelope, body []byte) []deliver.Result {
		return replyAll(env, 451, smtp.EnhancedCode{4, 3, 0}, "try again later")
	}}
	h := newHarness(t, queue.Config{Transport: tr, RetryMin: 5 * time.Minute, RetryMax: time.Hour, LeaseDuration: longLease})
	start := h.clock.Now()
	id := h.enqueue("a@sender.test", "b@a.test")
	want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}
	for i, base := range want {
		ev := h.waitFor("deferred", i+1, isType(event.Deferred, id))[i]
		if ev.Attempt != i+1 {
			t.Errorf("deferral %d has Attempt %d", i+1, ev.Attempt)
		}
		if ev.Reply == nil || ev.Reply.Code != 451 || ev.Permanent {
			t.Errorf("deferral %d: reply %v permanent %v", i+1, ev.Reply, ev.Permanent)
		}
		delay := ev.NextAttempt.Sub(ev.Time)
		hi := min(base+base/4, time.Hour)
		if delay < base || delay > hi {
			t.Errorf("retry %d after %v, want within [%v, %v]", i+1, delay, base, hi)
		}
		m, err := h.q.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if d := m.Deliveries[0]; d.Attempts != i+1 || !d.NextAttempt.Equal(ev.NextAttempt) || d.Recipients[0].LastReply.Code != 451 {
			t.Errorf("stored delivery after attempt %d: attempts %d next %v reply %v", i+1, d.Attempts, d.NextAttempt, d.Recipients[0].LastReply)
		}
		// The clock stops a second early first: an attempt then would be
		// seen below with that time.
		h.clock.Set(ev.NextAttempt.Add(-time.Second))
		h.q.Wake()
		h.clock.Set(ev.NextAttempt)
		h.q.Wake()
		if i+1 < len(want) {
			at := h.waitFor("attempt", i+2, isType(event.Attempt, id))[i+1]
			if !at.Time.Equal(ev.NextAttempt) {
				t.Errorf("attempt %d at %v, want exactly at its NextAttempt %v", i+2, at.Time, ev.NextAttempt)
			}
		}
	}
	if h.clock.Now().Sub(start) > 4*time.Hour {
		t.Errorf("schedule took %v", h.clock.Now().Sub(start))
	}
}

func TestBackoffBounds(t *testing.T) {
	h := newHarness(t, queue.Config{RetryMin: time.Minute, RetryMax: 30 * time.Minute})
	for n := 1; n <= 10; n++ {
		base := min(time.Minute<<(n-1), 30*time.Minute)
		seen := map[time.Duration]bool{}
		for range 50 {
			d := h.q.Backoff(n)
			if d < base || d > min(base+base/4, 30*time.Minute) {
				t.Fatalf("Backoff(%d) = %v, outside [%v, %v]", n, d, base, min(base+base/4, 30*time.Minute))
			}
			seen[d] = true
		}
		if base < 30*time.Minute && len(seen) < 10 {
			t.Errorf("Backoff(%d) gave only %d distinct values in 50 calls: no jitter", n, len(seen))
		}
	}
}

// dsnReport is a parsed DSN.
type dsnReport struct {
	header     message.Header
	perMessage textproto.MIMEHeader
	recipients []textproto.MIMEHeader
	original   string
	origType   string
}

func parseDSN(t *testing.T, raw []byte) *dsnReport {
	t.Helper()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parsing DSN: %v\n%s", err, raw)
	}
	ct, params, _ := e.Header.ContentType()
	if ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type %s %v, want multipart/report; report-type=delivery-status", ct, params)
	}
	mr := e.MultipartReader()
	rep := &dsnReport{header: e.Header}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part: %v", err)
		}
		pt, _, _ := p.Header.ContentType()
		b, _ := io.ReadAll(p.Body)
		switch pt {
		case "message/delivery-status", "message/global-delivery-status":
			tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
			rep.perMessage, err = tp.ReadMIMEHeader()
			if err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			for {
				h, err := tp.ReadMIMEHeader()
				if len(h) > 0 {
					rep.recipients = append(rep.recipients, h)
				}
				if err != nil {
					break
				}
			}
		case "message/rfc822", "text/rfc822-headers":
			rep.original, rep.origType = string(b), pt
		}
	}
	return rep
}

// dsnCalls returns the transport calls that carried DSNs (null sender).
func dsnCalls(tr *sink) []sinkCall {
	var out []sinkCall
	for _, c := range tr.snapshot() {
		if c.env.From == "" {
			out = append(out, c)
		}
	}
	return out
}

func TestExpiryDSN(t *testing.T) {
	tr := &sink{fn: func(ctx context.Context, env *deliver.Envelope, body []byte) []deliver.Result {
		if env.From == "" { // DSNs go through
			return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
		}
		return replyAll(env, 421, smtp.EnhancedCode{4, 4, 2}, "connection dropped")
	}}
	h := newHarness(t, queue.Config{Transport: tr, RetryMin: 10 * time.Minute, RetryMax: 20 * time.Minute, Lifetime: time.Hour, LeaseDuration: longLease})
	created := h.clock.Now()
	id := h.enqueueMsg(&queue.NewMessage{
		From: "alice@sender.test",
		Mail: smtp.MailOptions{EnvelopeID: "env-42", Return: smtp.DSNReturnFull},
		Recipients: []deliver.Recipient{{Address: "bob@a.test", Options: smtp.RcptOptions{
			OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "Bob@a.test",
		}}},
		Tags: []string{"receipt"},
	}, "Subject: lost\r\n\r\nbody of the lost message\r\n")
	// Drive the clock through the retries until the message expires.
	for i := 1; ; i++ {
		ev := h.waitFor("deferred or expired", i, func(e event.Event) bool {
			return e.MessageID == id && (e.Type == event.Deferred || e.Type == event.Expired)
		})[i-1]
		if ev.Type == event.Expired {
			if !ev.Time.Equal(created.Add(time.Hour)) {
				t.Errorf("expired at %v, want exactly at the end of the lifetime (last retry scheduled then)", ev.Time.Sub(created))
			}
			if !slices.Equal(ev.Tags, []string{"receipt"}) || ev.DSN == "" {
				t.Errorf("expired event: tags %v DSN %q", ev.Tags, ev.DSN)
			}
			break
		}
		if ev.NextAttempt.After(created.Add(time.Hour)) {
			t.Fatalf("retry scheduled at %v, after expiry", ev.NextAttempt.Sub(created))
		}
		h.clock.Set(ev.NextAttempt)
		h.q.Wake()
		if i > 20 {
			t.Fatal("never expired")
		}
	}
	waitGone(t, h, id)
	h.waitFor("delivered DSN", 1, func(e event.Event) bool { return e.Type == event.Delivered && e.Recipient == "alice@sender.test" })
	dsns := dsnCalls(tr)
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs sent, want 1", len(dsns))
	}
	if rs := dsns[0].env.Recipients; len(rs) != 1 || rs[0].Address != "alice@sender.test" {
		t.Fatalf("DSN recipients %+v", rs)
	}
	rep := parseDSN(t, dsns[0].body)
	if got := rep.perMessage.Get("Reporting-MTA"); got != "dns; mx.sender.test" {
		t.Errorf("Reporting-MTA %q", got)
	}
	if got := rep.perMessage.Get("Original-Envelope-Id"); got != "env-42" {
		t.Errorf("Original-Envelope-Id %q", got)
	}
	if len(rep.recipients) != 1 {
		t.Fatalf("%d recipient blocks, want 1", len(rep.recipients))
	}
	r := rep.recipients[0]
	for field, want := range map[string]string{
		"Final-Recipient":    "rfc822; bob@a.test",
		"Original-Recipient": "rfc822; Bob@a.test",
		"Action":             "failed",
		"Status":             "4.4.7",
		"Remote-Mta":         "dns; mx.a.test",
	} {
		if got := r.Get(field); !strings.EqualFold(strings.ReplaceAll(got, " ", ""), strings.ReplaceAll(want, " ", "")) {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}
	if got := r.Get("Diagnostic-Code"); !strings.Contains(got, "421") || !strings.Contains(got, "connection dropped") {
		t.Errorf("Diagnostic-Code %q, want the last reply", got)
	}
	if rep.origType != "message/rfc822" || !strings.Contains(rep.original, "body of the lost message") {
		t.Errorf("RET=FULL: original part %s %q", rep.origType, rep.original)
	}
	if to := rep.header.Get("To"); !strings.Contains(to, "alice@sender.test") {
		t.Errorf("DSN To %q", to)
	}
}

func TestPermanentFailureAndNotify(t *testing.T) {
	tr := &sink{fn: func(ctx context.Context, env *deliver.Envelope, body []byte) []deliver.Result {
		res := replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
		if env.From == "" {
			return res
		}
		for i, r := range env.Recipients {
			switch strings.SplitN(r.Address, "@", 2)[0] {
			case "gone", "quiet":
				res[i].Reply = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			case "full":
				res[i].Reply = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "mailbox full"}
			}
		}
		return res
	}}
	list := suppressions(t, "")
	h := newHarness(t, queue.Config{Transport: tr, Suppressions: list})
	id := h.enqueueMsg(&queue.NewMessage{
		From: "alice@sender.test",
		Recipients: []deliver.Recipient{
			{Address: "gone@a.test"},
			{Address: "quiet@a.test", Options: smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyNever}}},
			{Address: "full@a.test"},
			{Address: "ok@a.test", Options: smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}}},
			{Address: "plain@a.test"},
		},
	}, "Subject: x\r\n\r\nsecret body\r\n")
	h.waitFor("bounced", 2, isType(event.Bounced, id))
	h.waitFor("deferred", 1, isType(event.Deferred, id))
	h.waitFor("delivered DSN", 1, func(e event.Event) bool { return e.Type == event.Delivered && e.Recipient == "alice@sender.test" })
	for _, e := range h.rec.all() {
		if e.MessageID != id {
			continue
		}
		switch {
		case e.Recipient == "full@a.test" && e.Type != event.Deferred:
			t.Errorf("552 5.2.2 mailbox full gave %s, want deferred (bounce.Classify says transient)", e.Type)
		case e.Type == event.Bounced && !e.Permanent:
			t.Errorf("bounced event without a permanent classification: %+v", e)
		}
	}
	// A bad address feeds the suppression list; a full mailbox does not.
	if e, ok, err := list.Lookup(t.Context(), "gone@a.test"); err != nil || !ok || e.Source != bounce.SourceBounce || !strings.Contains(e.Reason, "5.1.1") {
		t.Errorf("suppression entry for gone@a.test: %+v %v %v", e, ok, err)
	}
	if _, ok, _ := list.Lookup(t.Context(), "full@a.test"); ok {
		t.Errorf("a transient failure was suppressed")
	}
	m, err := h.q.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]queue.RecipientState{}
	for _, r := range m.Deliveries[0].Recipients {
		states[r.Address] = r.State
	}
	want := map[string]queue.RecipientState{"gone@a.test": queue.RecipientFailed, "quiet@a.test": queue.RecipientFailed,
		"full@a.test": queue.RecipientPending, "ok@a.test": queue.RecipientDelivered, "plain@a.test": queue.RecipientDelivered}
	for a, s := range want {
		if states[a] != s {
			t.Errorf("%s is %s, want %s", a, states[a], s)
		}
	}
	dsns := dsnCalls(tr)
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want 1 for the whole attempt", len(dsns))
	}
	rep := parseDSN(t, dsns[0].body)
	actions := map[string]string{}
	for _, r := range rep.recipients {
		addr := strings.TrimSpace(strings.TrimPrefix(r.Get("Final-Recipient"), "rfc822;"))
		actions[addr] = r.Get("Action")
		if addr == "gone@a.test" && r.Get("Status") != "5.1.1" {
			t.Errorf("gone@a.test Status %q, want 5.1.1", r.Get("Status"))
		}
	}
	wantActions := map[string]string{"gone@a.test": "failed", "ok@a.test": "relayed"}
	if fmt.Sprint(actions) != fmt.Sprint(wantActions) {
		t.Errorf("DSN blocks %v, want %v (NOTIFY=NEVER and plain successes get none)", actions, wantActions)
	}
	if rep.origType != "text/rfc822-headers" || strings.Contains(rep.original, "secret body") {
		t.Errorf("without RET=FULL the DSN must carry headers only: %s %q", rep.origType, rep.original)
	}
}

func TestNullSenderGetsNoDSN(t *testing.T) {
	var calls atomic.Int32
	tr := deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
		calls.Add(1)
		return replyAll(env, 550, smtp.EnhancedCode{5, 1, 1}, "no such user")
	})
	h := newHarness(t, queue.Config{Transport: tr})
	id := h.enqueue("", "x@a.test")
	h.waitFor("bounced", 1, isType(event.Bounced, id))
	waitGone(t, h, id)
	if msgs, err := h.q.List(t.Context(), queue.Filter{}); err != nil || len(msgs) != 0 {
		t.Errorf("queue holds %d messages after a null-sender bounce (%v), want none: no DSN to <>", len(msgs), err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d transport calls, want 1", n)
	}
	if n := h.rec.count(isType(event.Queued, "")); n != 1 {
		t.Errorf("%d queued events, want 1 (no DSN)", n)
	}
}

func TestPriorityLanes(t *testing.T) {
	var mu sync.Mutex
	var order []string
	tr := deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
		mu.Lock()
		order = append(order, strings.SplitN(env.Recipients[0].Address, "@", 2)[0][:1])
		mu.Unlock()
		return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
	})
	h := newHarness(t, queue.Config{Workers: 1, BulkShare: 5})
	for i := range 4 {
		h.enqueueMsg(&queue.NewMessage{From: "s@sender.test", Recipients: recipients(fmt.Sprintf("b%d@bulk.test", i)), Priority: queue.PriorityBulk}, "x")
	}
	for i := range 8 {
		h.enqueueMsg(&queue.NewMessage{From: "s@sender.test", Recipients: recipients(fmt.Sprintf("t%d@tx%d.test", i, i)), Priority: queue.PriorityTransactional}, "x")
	}
	q2, err := queue.New(queue.Config{Store: h.store, Transport: tr, Workers: 1, BulkShare: 5, Now: h.clock.Now, Rand: newRand(), Events: h.rec, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer q2.Shutdown(context.Background())
	h.waitFor("delivered", 12, isType(event.Delivered, ""))
	mu.Lock()
	got := strings.Join(order, "")
	mu.Unlock()
	// Transactional first, but every fifth claim serves bulk.
	if want := "ttttbttttbbb"; got != want {
		t.Errorf("delivery order %s, want %s", got, want)
	}
}

func TestFairnessBlackholedDestination(t *testing.T) {
	var (
		mu        sync.Mutex
		deadNow   int
		deadMax   int
		deadTotal int
	)
	deadStarted := make(chan struct{}, 10)
	tr := deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
		if deliver.Domain(env.Recipients[0].Address) != "dead.test" {
			return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
		}
		mu.Lock()
		deadNow++
		deadTotal++
		deadMax = max(deadMax, deadNow)
		mu.Unlock()
		deadStarted <- struct{}{}
		<-ctx.Done() // a blackhole: never answers
		mu.Lock()
		deadNow--
		mu.Unlock()
		return deliver.Fail(env, deliver.Reply(451, 4, 4, 2, "timeout"), ctx.Err(), time.Now(), time.Now())
	})
	h := newHarness(t, queue.Config{Workers: 4, DestinationConcurrency: 2, AttemptTimeout: time.Hour})
	var dead []string
	for i := range 6 { // older: they would be claimed first
		dead = append(dead, h.enqueue("s@sender.test", fmt.Sprintf("u%d@dead.test", i)))
	}
	h.clock.Advance(time.Second)
	var healthy []string
	for i := range 20 {
		healthy = append(healthy, h.enqueue("s@sender.test", fmt.Sprintf("u%d@ok%d.test", i, i%4)))
	}
	q2, err := queue.New(queue.Config{Store: h.store, Transport: tr, Workers: 4, DestinationConcurrency: 2, AttemptTimeout: time.Hour,
		Now: h.clock.Now, Rand: newRand(), Events: h.rec, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.waitFor("delivered", len(healthy), isType(event.Delivered, ""))
	for range 2 {
		select {
		case <-deadStarted:
		case <-time.After(30 * time.Second):
			t.Fatal("the dead destination's attempts never started")
		}
	}
	mu.Lock()
	if deadMax > 2 || deadNow != 2 {
		t.Errorf("dead.test: %d attempts at once at most, %d now; want at most 2 and 2 hanging", deadMax, deadNow)
	}
	mu.Unlock()
	// Shutdown with a short deadline aborts the hanging attempts and
	// records them, releasing the leases for an immediate retry.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want DeadlineExceeded (attempts were hanging)", err)
	}
	now := h.clock.Now()
	leased := 0
	for _, id := range dead {
		m, err := h.q.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("dead message %s: %v", id, err)
		}
		d := m.Deliveries[0]
		if d.LeaseOwner != "" {
			leased++
		}
		if d.Attempts > 0 && (d.NextAttempt.After(now) || d.Recipients[0].State != queue.RecipientPending) {
			t.Errorf("aborted attempt recorded with next %v state %s; want an immediate retry", d.NextAttempt.Sub(now), d.Recipients[0].State)
		}
	}
	if leased != 0 {
		t.Errorf("%d leases left after Shutdown", leased)
	}
	mu.Lock()
	if deadTotal != 2 {
		t.Errorf("%d attempts to dead.test, want 2", deadTotal)
	}
	mu.Unlock()
}

// noIdem hides memstore's IdempotentStore to test the in-memory fallback.
type noIdem struct{ queue.Store }

func TestIdempotentEnqueue(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(queue.Store) queue.Store
	}{
		{"store", func(s queue.Store) queue.Store { return s }},
		{"fallback", func(s queue.Store) queue.Store { return noIdem{s} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, queue.Config{IdempotencyWindow: time.Hour})
			q, err := queue.New(queue.Config{Store: tc.wrap(h.store), Now: h.clock.Now, Rand: newRand(), IdempotencyWindow: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			enq := func(tenant, key string) string {
				id, err := q.Enqueue(t.Context(), &queue.NewMessage{From: "s@sender.test", Recipients: recipients("r@a.test"), Tenant: tenant, IdempotencyKey: key}, strings.NewReader("x"))
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
			first := enq("t1", "order-1")
			h.clock.Advance(30 * time.Minute)
			if again := enq("t1", "order-1"); again != first {
				t.Errorf("same key within the window: %s, want %s", again, first)
			}
			if other := enq("t2", "order-1"); other == first {
				t.Errorf("another tenant's key returned the first message")
			}
			if nokey := enq("t1", ""); nokey == first {
				t.Errorf("an empty key deduplicated")
			}
			h.clock.Advance(31 * time.Minute)
			if later := enq("t1", "order-1"); later == first {
				t.Errorf("same key after the window returned the old ID")
			}
			msgs, _ := q.List(t.Context(), queue.Filter{Tenant: "t1"})
			if len(msgs) != 3 {
				t.Errorf("%d messages for t1, want 3", len(msgs))
			}
		})
	}
}

// suppressions returns a bounce.MemorySuppressions holding addrs (manual
// entries with the given reason).
func suppressions(t *testing.T, reason string, addrs ...string) *bounce.MemorySuppressions {
	t.Helper()
	s := bounce.NewMemorySuppressions(nil)
	for _, a := range addrs {
		if err := s.Add(t.Context(), bounce.Entry{Address: a, Reason: reason, Source: bounce.SourceManual, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestSuppression(t *testing.T) {
	tr := &sink{}
	h := newHarness(t, queue.Config{Transport: tr, Suppressions: suppressions(t, "hard bounce 2030-01-01", "bad@a.test")})
	id := h.enqueue("s@sender.test", "bad@a.test", "good@a.test")
	h.waitFor("suppressed", 1, isType(event.Suppressed, id))
	h.waitFor("delivered", 1, isType(event.Delivered, id))
	for _, c := range tr.snapshot() {
		for _, r := range c.env.Recipients {
			if r.Address == "bad@a.test" {
				t.Errorf("a suppressed recipient was attempted")
			}
		}
	}
	ev := h.rec.all()
	for _, e := range ev {
		if e.Type == event.Suppressed && (e.Recipient != "bad@a.test" || e.Reply == nil || e.Reply.Code != 550) {
			t.Errorf("suppressed event %+v", e)
		}
	}
	_, err := h.q.Enqueue(t.Context(), &queue.NewMessage{From: "s@sender.test", Recipients: recipients("bad@a.test", "BAD@a.test")}, strings.NewReader("x"))
	var se *queue.SuppressedError
	if !errors.Is(err, queue.ErrSuppressed) || !errors.As(err, &se) || len(se.Recipients) != 2 {
		t.Errorf("all recipients suppressed: %v, want a *SuppressedError listing them", err)
	}
}

func TestSuppressedRecipientStored(t *testing.T) {
	h := newHarness(t, queue.Config{Suppressions: suppressions(t, "complaint", "bad@a.test")})
	id := h.enqueue("s@sender.test", "bad@a.test", "good@b.test")
	m, err := h.q.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Deliveries[0].Recipients[0]; r.State != queue.RecipientSuppressed || !strings.Contains(r.LastReply.Message, "complaint") {
		t.Errorf("suppressed recipient stored as %s %v", r.State, r.LastReply)
	}
	if m.Deliveries[1].Recipients[0].State != queue.RecipientPending {
		t.Errorf("the other recipient is %s", m.Deliveries[1].Recipients[0].State)
	}
}

func TestHoldReleaseRetryDelete(t *testing.T) {
	tr := &sink{}
	h := newHarness(t, queue.Config{Transport: tr})
	ctx := t.Context()
	later := h.clock.Now().Add(time.Hour)
	id := h.enqueueMsg(&queue.NewMessage{From: "s@sender.test", Recipients: recipients("r@a.test"), NotBefore: later}, "x")
	other := h.enqueueMsg(&queue.NewMessage{From: "s@sender.test", Recipients: recipients("r@b.test"), NotBefore: later}, "y")
	if err := h.q.Hold(ctx, id); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := h.q.List(ctx, queue.Filter{State: queue.StateHeld}); len(msgs) != 1 || msgs[0].ID != id {
		t.Errorf("List(held) = %v", msgs)
	}
	if err := h.q.RetryNow(ctx, id); err != nil {
		t.Fatal(err)
	}
	h.q.Wake()
	if err := h.q.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Released and due now (RetryNow while held set the time): delivered
	// without moving the clock.
	h.waitFor("delivered", 1, isType(event.Delivered, id))
	if err := h.q.Delete(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := h.q.Get(ctx, other); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	h.clock.Advance(2 * time.Hour)
	h.q.Wake()
	waitGone(t, h, id)
	for _, c := range tr.snapshot() {
		if c.env.MessageID == other {
			t.Errorf("a deleted message was delivered")
		}
	}
	for _, typ := range []event.Type{event.Held, event.Released, event.Deleted} {
		if h.rec.count(func(e event.Event) bool { return e.Type == typ }) != 1 {
			t.Errorf("want one %s event", typ)
		}
	}
	for _, op := range []func(context.Context, string) error{h.q.Hold, h.q.Release, h.q.RetryNow, h.q.Delete} {
		if err := op(ctx, "nope"); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("control of an unknown ID: %v, want ErrNotFound", err)
		}
	}
}

func TestShutdownReleasesClaimed(t *testing.T) {
	started := make(chan struct{}, 10)
	tr := deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
		started <- struct{}{}
		<-ctx.Done()
		return deliver.Fail(env, deliver.Reply(451, 4, 4, 2, "aborted"), ctx.Err(), time.Now(), time.Now())
	})
	h := newHarness(t, queue.Config{Transport: tr, Workers: 2})
	id := h.enqueue("s@sender.test", "r@a.test")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.q.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v", err)
	}
	m, err := h.q.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	d := m.Deliveries[0]
	if d.LeaseOwner != "" || d.Recipients[0].State != queue.RecipientPending || d.NextAttempt.After(h.clock.Now()) {
		t.Errorf("after Shutdown: owner %q state %s next %v; want released, pending, due now", d.LeaseOwner, d.Recipients[0].State, d.NextAttempt)
	}
	if _, err := h.q.Enqueue(t.Context(), &queue.NewMessage{Recipients: recipients("x@a.test")}, strings.NewReader("x")); err != nil {
		t.Errorf("Enqueue after Shutdown (still allowed: the store is open): %v", err)
	}
	if err := h.q.Start(t.Context()); err == nil {
		t.Errorf("Start after Shutdown succeeded")
	}
}

func TestPanickingAndBrokenTransport(t *testing.T) {
	for name, fn := range map[string]deliver.TransportFunc{
		"panic": func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
			panic("transport bug")
		},
		"wrong-count": func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
			return nil
		},
		"nil-reply": func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
			return []deliver.Result{{Recipient: env.Recipients[0].Address}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, queue.Config{Transport: fn})
			id := h.enqueue("s@sender.test", "r@a.test")
			ev := h.waitFor("deferred", 1, isType(event.Deferred, id))[0]
			if ev.Reply.Code != 451 || ev.Reply.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) || !ev.NextAttempt.After(ev.Time) {
				t.Errorf("deferred event %+v", ev)
			}
		})
	}
}

func TestAttemptTimeout(t *testing.T) {
	tr := deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
		<-ctx.Done()
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "wrong: cancelled, not timed out")
		}
		return deliver.Fail(env, deliver.Reply(421, 4, 4, 2, "timed out"), ctx.Err(), time.Now(), time.Now())
	})
	h := newHarness(t, queue.Config{Transport: tr, AttemptTimeout: 20 * time.Millisecond})
	id := h.enqueue("s@sender.test", "r@a.test")
	ev := h.waitFor("deferred", 1, isType(event.Deferred, id))[0]
	if ev.Reply.Code != 421 {
		t.Errorf("reply %v", ev.Reply)
	}
}

func TestLimiterThrottles(t *testing.T) {
	var mu sync.Mutex
	var keys []ratelimit.Key
	released := 0
	throttledOnce := false
	lim := queue.LimiterFunc(func(ctx context.Context, key ratelimit.Key) (time.Duration, func(), error) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, key)
		if key.Domain == "slow.test" && !throttledOnce {
			throttledOnce = true
			return 10 * time.Minute, nil, nil
		}
		return 0, func() { mu.Lock(); released++; mu.Unlock() }, nil
	})
	tr := &sink{}
	h := newHarness(t, queue.Config{Transport: tr, Limiter: lim})
	slow := h.enqueueMsg(&queue.NewMessage{From: "s@sender.test", Recipients: recipients("r@slow.test"), Tenant: "t1", SourcePool: "p1"}, "x")
	h.clock.Advance(time.Second)
	fast := h.enqueue("s@sender.test", "r@fast.test")
	th := h.waitFor("throttled", 1, isType(event.Throttled, slow))[0]
	h.waitFor("delivered", 1, isType(event.Delivered, fast))
	if th.NextAttempt.Sub(th.Time) != 10*time.Minute {
		t.Errorf("throttled until +%v, want +10m", th.NextAttempt.Sub(th.Time))
	}
	if n := h.rec.count(isType(event.Throttled, slow)); n != 1 {
		t.Errorf("%d throttled events before the wait is over, want 1 (no busy loop)", n)
	}
	m, _ := h.q.Get(t.Context(), slow)
	if m == nil || m.Deliveries[0].Attempts != 0 {
		t.Errorf("a throttled delivery counted an attempt: %+v", m)
	}
	h.clock.Advance(10 * time.Minute)
	h.q.Wake()
	h.waitFor("delivered", 1, isType(event.Delivered, slow))
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(keys, ratelimit.Key{Domain: "slow.test", Source: "p1", Tenant: "t1"}) {
		t.Errorf("limiter keys %v, want slow.test's with source p1 and tenant t1", keys)
	}
	if released != 2 {
		t.Errorf("release called %d times, want 2 (once per granted attempt)", released)
	}
}

func TestDelayWarning(t *testing.T) {
	tr := &sink{fn: func(ctx context.Context, env *deliver.Envelope, body []byte) []deliver.Result {
		if env.From == "" {
			return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
		}
		return replyAll(env, 450, smtp.EnhancedCode{4, 2, 1}, "greylisted")
	}}
	h := newHarness(t, queue.Config{Transport: tr, DelayWarning: 30 * time.Minute, RetryMin: 10 * time.Minute, RetryMax: 10 * time.Minute, LeaseDuration: longLease})
	id := h.enqueueMsg(&queue.NewMessage{From: "s@sender.test", Recipients: []deliver.Recipient{
		{Address: "a@a.test"},
		{Address: "b@a.test", Options: smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure}}},
	}}, "x")
	for i := 1; i <= 6; i++ {
		ev := h.waitFor("deferred", 2*i, isType(event.Deferred, id))[2*i-1]
		h.clock.Set(ev.NextAttempt)
		h.q.Wake()
	}
	h.waitFor("delivered DSN", 1, func(e event.Event) bool { return e.Type == event.Delivered && e.Recipient == "s@sender.test" })
	dsns := dsnCalls(tr)
	if len(dsns) != 1 {
		t.Fatalf("%d delay DSNs, want exactly 1", len(dsns))
	}
	rep := parseDSN(t, dsns[0].body)
	if len(rep.recipients) != 1 || rep.recipients[0].Get("Action") != "delayed" || !strings.Contains(rep.recipients[0].Get("Final-Recipient"), "a@a.test") {
		t.Errorf("delay DSN blocks %v, want one delayed block for a@a.test (b@ asked for FAILURE only)", rep.recipients)
	}
	if rep.recipients[0].Get("Will-Retry-Until") == "" {
		t.Errorf("delay DSN without Will-Retry-Until")
	}
}

func TestEnqueueValidation(t *testing.T) {
	h := newHarness(t, queue.Config{MaxMessageSize: 1000})
	ctx := t.Context()
	boom := errors.New("disk read error")
	for _, tc := range []struct {
		name string
		m    *queue.NewMessage
		body io.Reader
		want error
	}{
		{"no recipients", &queue.NewMessage{From: "s@sender.test"}, strings.NewReader("x"), queue.ErrNoRecipients},
		{"bad sender", &queue.NewMessage{From: "no-at-sign", Recipients: recipients("r@a.test")}, strings.NewReader("x"), queue.ErrInvalidSender},
		{"bad recipient", &queue.NewMessage{Recipients: recipients("r@a.test", "bad recipient@a.test")}, strings.NewReader("x"), queue.ErrInvalidRecipient},
		{"bad domain", &queue.NewMessage{Recipients: recipients("r@-a.test")}, strings.NewReader("x"), queue.ErrInvalidRecipient},
		{"empty domain label", &queue.NewMessage{Recipients: recipients("r@a..test")}, strings.NewReader("x"), queue.ErrInvalidRecipient},
		{"utf8 without SMTPUTF8", &queue.NewMessage{Recipients: recipients("jörg@a.test")}, strings.NewReader("x"), queue.ErrInvalidRecipient},
		{"newline", &queue.NewMessage{Recipients: recipients("r@a.test\r\nRCPT TO:<x@y>")}, strings.NewReader("x"), queue.ErrInvalidRecipient},
		{"bad literal", &queue.NewMessage{Recipients: recipients("r@[300.1.1.1]")}, strings.NewReader("x"), queue.ErrInvalidRecipient},
		{"too big", &queue.NewMessage{Recipients: recipients("r@a.test")}, strings.NewReader(strings.Repeat("x", 1001)), queue.ErrTooBig},
		{"body error", &queue.NewMessage{Recipients: recipients("r@a.test")}, io.MultiReader(strings.NewReader("abc"), errReader{boom}), queue.ErrBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.q.Enqueue(ctx, tc.m, tc.body)
			if !errors.Is(err, tc.want) {
				t.Errorf("Enqueue: %v, want %v", err, tc.want)
			}
			if tc.want == queue.ErrBody && !errors.Is(err, boom) {
				t.Errorf("Enqueue: %v does not wrap the reader's error", err)
			}
		})
	}
	if msgs, err := h.q.List(ctx, queue.Filter{}); err != nil || len(msgs) != 0 {
		t.Errorf("%d messages stored by failed enqueues (%v)", len(msgs), err)
	}
	for _, ok := range []string{"r@[192.0.2.1]", "r@[IPv6:2001:db8::1]", `"odd local"@a.test`, "x+tag@sub.a.test"} {
		if _, err := h.q.Enqueue(ctx, &queue.NewMessage{Recipients: recipients(ok)}, strings.NewReader(strings.Repeat("x", 1000))); err != nil {
			t.Errorf("Enqueue to %s: %v", ok, err)
		}
	}
	if _, err := h.q.Enqueue(ctx, &queue.NewMessage{Mail: smtp.MailOptions{UTF8: true}, Recipients: recipients("jörg@bücher.test")}, strings.NewReader("x")); err != nil {
		t.Errorf("SMTPUTF8 enqueue: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := h.q.Enqueue(cctx, &queue.NewMessage{Recipients: recipients("r@a.test")}, strings.NewReader("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue with a cancelled ctx: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestIDs(t *testing.T) {
	h := newHarness(t, queue.Config{})
	seen := map[string]bool{}
	prev := ""
	for i := range 2000 {
		if i%500 == 0 {
			h.clock.Advance(time.Millisecond)
		}
		id, err := h.q.NewID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 20 || strings.Trim(id, "0123456789abcdefghijklmnopqrstuv") != "" {
			t.Fatalf("ID %q: want 20 base32hex characters", id)
		}
		if seen[id] || id <= prev {
			t.Fatalf("ID %q after %q: not unique and increasing", id, prev)
		}
		seen[id], prev = true, id
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := queue.New(queue.Config{}); !errors.Is(err, queue.ErrConfig) {
		t.Errorf("New without Store: %v", err)
	}
	h := newHarness(t, queue.Config{})
	if _, err := queue.New(queue.Config{Store: h.store, AttemptTimeout: time.Hour, LeaseDuration: time.Minute}); !errors.Is(err, queue.ErrConfig) {
		t.Errorf("New with a lease shorter than an attempt: %v", err)
	}
	if err := h.q.Start(t.Context()); !errors.Is(err, queue.ErrConfig) {
		t.Errorf("Start without Transport: %v", err)
	}
}

func TestSiteConcurrency(t *testing.T) {
	var (
		mu       sync.Mutex
		now, top int
	)
	started := make(chan string, 16)
	gate := make(chan struct{})
	tr := deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
		mu.Lock()
		now++
		top = max(top, now)
		mu.Unlock()
		started <- env.Recipients[0].Address
		select {
		case <-gate:
		case <-ctx.Done():
		}
		mu.Lock()
		now--
		mu.Unlock()
		res := replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "ok")
		for i := range res {
			res[i].Route.Site = "shared-mx" // a.test and b.test share their MX hosts
		}
		return res
	})
	h := newHarness(t, queue.Config{Transport: tr, Workers: 4, DestinationConcurrency: 1})
	// Learn the site of both domains.
	for _, d := range []string{"a.test", "b.test"} {
		h.enqueue("s@sender.test", "first@"+d)
		<-started
		gate <- struct{}{}
		h.waitFor("delivered", 1, func(e event.Event) bool { return e.Type == event.Delivered && e.Recipient == "first@"+d })
	}
	for i := range 3 {
		h.enqueue("s@sender.test", fmt.Sprintf("r%d@a.test", i))
		h.enqueue("s@sender.test", fmt.Sprintf("r%d@b.test", i))
	}
	for range 6 {
		<-started
		gate <- struct{}{}
	}
	h.waitFor("delivered", 8, isType(event.Delivered, ""))
	mu.Lock()
	defer mu.Unlock()
	if top != 1 {
		t.Errorf("%d attempts at once to one MX site, want at most 1", top)
	}
}

func TestTransportIgnoringDeadlineIsAbandoned(t *testing.T) {
	release := make(chan struct{})
	defer close(release) // let the abandoned goroutine end with the test
	tr := deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
		<-release // ignores ctx
		return replyAll(env, 250, smtp.EnhancedCode{2, 0, 0}, "too late")
	})
	h := newHarness(t, queue.Config{Transport: tr, AttemptTimeout: 20 * time.Millisecond, Workers: 1})
	id := h.enqueue("s@sender.test", "r@a.test")
	ev := h.waitFor("deferred", 1, isType(event.Deferred, id))[0]
	if ev.Reply.EnhancedCode != (smtp.EnhancedCode{4, 4, 1}) {
		t.Errorf("abandoned attempt recorded as %v, want 4.4.1", ev.Reply)
	}
	// The only worker is free again: another message is attempted.
	other := h.enqueue("s@sender.test", "r@b.test")
	h.waitFor("deferred", 1, isType(event.Deferred, other))
}

// failDSNStore refuses to store DSNs.
type failDSNStore struct{ queue.Store }

func (s failDSNStore) Enqueue(ctx context.Context, m *queue.Message, body io.Reader) error {
	if m.IsDSN {
		io.Copy(io.Discard, body)
		return errors.New("disk full")
	}
	return s.Store.Enqueue(ctx, m, body)
}

func TestBounceKeptWhenDSNCannotBeStored(t *testing.T) {
	tr := deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
		return replyAll(env, 550, smtp.EnhancedCode{5, 1, 1}, "no such user")
	})
	h := newHarness(t, queue.Config{})
	q, err := queue.New(queue.Config{Store: failDSNStore{h.store}, Transport: tr, Now: h.clock.Now, Rand: newRand(), Events: h.rec, PollInterval: 10 * time.Millisecond, RetryMin: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer q.Shutdown(context.Background())
	id, err := q.Enqueue(t.Context(), &queue.NewMessage{From: "s@sender.test", Recipients: recipients("gone@a.test")}, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	ev := h.waitFor("deferred", 1, isType(event.Deferred, id))[0]
	if ev.NextAttempt.Sub(ev.Time) != time.Minute {
		t.Errorf("retry in %v, want RetryMin", ev.NextAttempt.Sub(ev.Time))
	}
	m, err := q.Get(t.Context(), id)
	if err != nil || m.Deliveries[0].Recipients[0].State != queue.RecipientPending {
		t.Errorf("a bounce whose DSN could not be stored was finished: %v %v", m, err)
	}
	if n := h.rec.count(isType(event.Bounced, id)); n != 0 {
		t.Errorf("%d bounced events, want 0 until the DSN is stored", n)
	}
}

// TestEventOrder: whatever the scheduler does concurrently with Enqueue, a
// message's queued event comes before its attempt, and the attempt before
// its outcome, in the one stream the observer sees.
func TestEventOrder(t *testing.T) {
	h := newHarness(t, queue.Config{Transport: &sink{}, Workers: 8})
	const n = 300
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for i := range n / 4 {
				h.enqueue("s@sender.test", fmt.Sprintf("r%d-%d@d%d.test", p, i, i%7))
			}
		})
	}
	wg.Wait()
	h.waitFor("delivered", n, isType(event.Delivered, ""))
	rank := map[event.Type]int{event.Queued: 0, event.Attempt: 1, event.Delivered: 2}
	last := map[string]int{}
	for _, e := range h.rec.all() {
		r, ok := rank[e.Type]
		if !ok {
			continue
		}
		if prev, seen := last[e.MessageID]; seen && r < prev || !seen && r != 0 {
			t.Fatalf("message %s: %s out of order (after rank %d, seen %v)", e.MessageID, e.Type, prev, seen)
		}
		last[e.MessageID] = r
	}
}
