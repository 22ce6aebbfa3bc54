package queuetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/queue"
)

func (c *checker) enqueue(m *queue.Message, body string) bool {
	if err := c.s.Enqueue(c.ctx, m, strings.NewReader(body)); err != nil {
		c.errorf("Enqueue(%s): %v", m.ID, err)
		return false
	}
	return true
}

func (c *checker) claim(owner string, now time.Time, lease time.Duration, skip ...string) (*queue.Claim, error) {
	return c.s.Claim(c.ctx, queue.ClaimRequest{Owner: owner, Now: now, Until: now.Add(lease), Skip: skip})
}

// mustClaim claims and reports a violation unless the claim returns the
// delivery (id, idx).
func (c *checker) mustClaim(id string, idx int, now time.Time) *queue.Claim {
	cl, err := c.claim("w1", now, time.Minute)
	switch {
	case err != nil:
		c.errorf("Claim(now %v): %v, want delivery %s/%d", now.Sub(t0), err, id, idx)
		return nil
	case cl.Lease.MessageID != id || cl.Lease.Delivery != idx:
		c.errorf("Claim(now %v) = %s/%d, want %s/%d", now.Sub(t0), cl.Lease.MessageID, cl.Lease.Delivery, id, idx)
		return nil
	}
	return cl
}

func (c *checker) mustNone(now time.Time, why string, skip ...string) {
	cl, err := c.claim("w1", now, time.Minute, skip...)
	if err == nil {
		c.errorf("Claim(now %v) = %s/%d, want ErrNoneReady (%s)", now.Sub(t0), cl.Lease.MessageID, cl.Lease.Delivery, why)
	} else if !errors.Is(err, queue.ErrNoneReady) {
		c.errorf("Claim(now %v): %v, want ErrNoneReady (%s)", now.Sub(t0), err, why)
	}
}

func (c *checker) get(id string) *queue.Message {
	m, err := c.s.Get(c.ctx, id)
	if err != nil {
		c.errorf("Get(%s): %v", id, err)
		return nil
	}
	return m
}

// unchanged reports when message id no longer equals before; what names
// the calls that must not have changed it.
func (c *checker) unchanged(id string, before *queue.Message, what string) {
	if got := c.get(id); got != nil && before != nil {
		if d := diffMessage(before, got); d != "" {
			c.errorf("%s changed the message: %s", what, d)
		}
	}
}

func (c *checker) complete(cl *queue.Claim, now, next time.Time, results ...queue.RecipientResult) error {
	return c.s.Complete(c.ctx, &queue.Completion{Lease: cl.Lease, Now: now, Results: results, NextAttempt: next})
}

func reply(code int, enh smtp.EnhancedCode, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
}

var rules = []rule{
	{
		name:        "enqueue-get-roundtrip",
		explanation: "Get returns exactly the message given to Enqueue (every field, deliveries and recipient options), with Size set from the body",
		run: func(c *checker) {
			m := newMessage("m1", queue.PriorityTransactional, at(0), "a.test", "b.test")
			m.Deliveries[1].Recipients[1].State = queue.RecipientSuppressed
			m.Deliveries[1].Recipients[1].LastReply = reply(550, smtp.EnhancedCode{5, 7, 1}, "suppressed")
			m.Deliveries[1].NextAttempt = at(time.Hour)
			m.IsDSN = true
			m.IdempotencyKey = "k1"
			if !c.enqueue(m, "Subject: hi\r\n\r\nbody\r\n") {
				return
			}
			want := m.Clone()
			want.Size = int64(len("Subject: hi\r\n\r\nbody\r\n"))
			if got := c.get("m1"); got != nil {
				if d := diffMessage(want, got); d != "" {
					c.errorf("Get after Enqueue: %s", d)
				}
			}
			if _, err := c.s.Get(c.ctx, "nope"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("Get(unknown ID): %v, want ErrNotFound", err)
			}
		},
	},
	{
		name:        "enqueue-duplicate-id",
		explanation: "Enqueue with an ID that exists fails with ErrExists and leaves the first message untouched",
		run: func(c *checker) {
			m := newMessage("m1", 0, at(0), "a.test")
			if !c.enqueue(m, "first") {
				return
			}
			m2 := newMessage("m1", 5, at(time.Hour), "z.test")
			if err := c.s.Enqueue(c.ctx, m2, strings.NewReader("second")); !errors.Is(err, queue.ErrExists) {
				c.errorf("second Enqueue with the same ID: %v, want ErrExists", err)
			}
			if got := c.get("m1"); got != nil && got.Deliveries[0].Domain != "a.test" {
				c.errorf("the first message was replaced: domain %s", got.Deliveries[0].Domain)
			}
			c.checkBody("m1", "first")
		},
	},
	{
		name:        "enqueue-failure-stores-nothing",
		explanation: "when the body reader fails (or ctx ends while reading), Enqueue returns an error and stores nothing; the ID stays free",
		run: func(c *checker) {
			boom := errors.New("disk on fire")
			m := newMessage("m1", 0, at(0), "a.test")
			err := c.s.Enqueue(c.ctx, m, &errReader{n: 100 << 10, err: boom})
			if err == nil {
				c.errorf("Enqueue with a failing body returned nil")
			} else if !errors.Is(err, boom) {
				c.errorf("Enqueue with a failing body: %v, want an error wrapping the reader's error", err)
			}
			if _, err := c.s.Get(c.ctx, "m1"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("Get after a failed Enqueue: %v, want ErrNotFound", err)
			}
			c.mustNone(at(time.Hour), "a failed enqueue must leave nothing claimable")
			if msgs, err := c.s.List(c.ctx, queue.Filter{}); err != nil || len(msgs) != 0 {
				c.errorf("List after a failed Enqueue: %d messages, %v; want none", len(msgs), err)
			}
			ctx, cancel := context.WithCancel(c.ctx)
			cr := &cancelReader{r: &patternReader{n: 4 << 20}, after: 1 << 20, cancel: cancel}
			if err := c.s.Enqueue(ctx, newMessage("m2", 0, at(0), "a.test"), cr); !errors.Is(err, context.Canceled) {
				c.errorf("Enqueue whose ctx is cancelled while reading the body: %v, want context.Canceled", err)
			}
			if _, err := c.s.Get(c.ctx, "m2"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("Get after a cancelled Enqueue: %v, want ErrNotFound", err)
			}
			c.enqueue(newMessage("m1", 0, at(0), "a.test"), "ok")
		},
	},
	{
		name:        "body-roundtrip",
		explanation: "OpenBody returns the exact bytes given to Enqueue (binary, CR/LF/NUL, several MB, streamed), readable at any offset and concurrently",
		run: func(c *checker) {
			const n = 6<<20 + 12345
			if err := c.s.Enqueue(c.ctx, newMessage("big", 0, at(0), "a.test"), &patternReader{n: n}); err != nil {
				c.errorf("Enqueue of a %d-byte body: %v", n, err)
				return
			}
			if m := c.get("big"); m != nil && m.Size != n {
				c.errorf("Size = %d, want %d", m.Size, n)
			}
			b, err := c.s.OpenBody(c.ctx, "big")
			if err != nil {
				c.errorf("OpenBody: %v", err)
				return
			}
			defer b.Close()
			want := pattern(n)
			var wg sync.WaitGroup
			errs := make([]error, 3)
			for i := range errs {
				wg.Go(func() { errs[i] = checkPattern(b, want) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					c.errorf("reading the body back: %v", err)
					break
				}
			}
			if !c.enqueue(newMessage("empty", 0, at(0), "a.test"), "") {
				return
			}
			c.checkBody("empty", "")
			if _, err := c.s.OpenBody(c.ctx, "nope"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("OpenBody(unknown): %v, want ErrNotFound", err)
			}
		},
	},
	{
		name:        "durable-across-reopen",
		explanation: "everything a successful call did survives closing and reopening the store: messages, bodies, recipient states, schedules and holds",
		skip: func(s queue.Store, short bool) string {
			if _, ok := s.(Reopener); !ok {
				return fmt.Sprintf("%T does not implement queuetest.Reopener, so durability cannot be checked; a store that claims durability must implement it", s)
			}
			return ""
		},
		run: func(c *checker) {
			m := newMessage("m1", queue.PriorityTransactional, at(0), "a.test", "b.test")
			if !c.enqueue(m, "Subject: durable\r\n\r\nhello\r\n") || !c.enqueue(newMessage("m2", 0, at(0), "c.test"), "two") {
				return
			}
			cl := c.mustClaim("m1", 0, at(time.Second))
			if cl == nil {
				return
			}
			r := reply(250, smtp.EnhancedCode{2, 0, 0}, "ok")
			if err := c.complete(cl, at(2*time.Second), at(time.Hour), queue.RecipientResult{Address: "a@a.test", State: queue.RecipientDelivered, Reply: r, Attempted: at(time.Second)}); err != nil {
				c.errorf("Complete: %v", err)
				return
			}
			if err := c.s.SetHeld(c.ctx, "m2", true); err != nil {
				c.errorf("SetHeld: %v", err)
				return
			}
			want1, want2 := c.get("m1"), c.get("m2")
			s2, err := c.s.(Reopener).Reopen()
			if err != nil {
				c.errorf("Reopen: %v", err)
				return
			}
			c.s = s2
			c.closers = append(c.closers, func() { s2.Close() })
			for _, w := range []*queue.Message{want1, want2} {
				if w == nil {
					continue
				}
				if got := c.get(w.ID); got != nil {
					if d := diffMessage(w, got); d != "" {
						c.errorf("after reopen, %s differs: %s", w.ID, d)
					}
				}
			}
			c.checkBody("m1", "Subject: durable\r\n\r\nhello\r\n")
			c.checkBody("m2", "two")
		},
	},
	{
		name:        "claim-order",
		explanation: "Claim picks the highest Priority, then the earliest NextAttempt, then the smallest message ID, then the smallest delivery index",
		run: func(c *checker) {
			for _, m := range []*queue.Message{
				newMessage("m3", queue.PriorityBulk, at(0), "a.test"),
				newMessage("m2", queue.PriorityNormal, at(2*time.Second), "a.test"),
				newMessage("m1", queue.PriorityNormal, at(2*time.Second), "a.test", "b.test"),
				newMessage("m4", queue.PriorityNormal, at(time.Second), "a.test"),
				newMessage("m5", queue.PriorityTransactional, at(3*time.Second), "a.test"),
			} {
				if !c.enqueue(m, "x") {
					return
				}
			}
			now := at(time.Minute)
			for _, w := range []struct {
				id  string
				idx int
			}{{"m5", 0}, {"m4", 0}, {"m1", 0}, {"m1", 1}, {"m2", 0}, {"m3", 0}} {
				if c.mustClaim(w.id, w.idx, now) == nil {
					return
				}
			}
			c.mustNone(now, "every delivery is leased")
		},
	},
	{
		name:        "due-time",
		explanation: "a delivery is not claimed before its NextAttempt (scheduled sending, retries), and is claimable from that instant on",
		run: func(c *checker) {
			m := newMessage("m1", 0, at(0), "a.test")
			m.NotBefore = at(time.Hour)
			m.Deliveries[0].NextAttempt = at(time.Hour)
			if !c.enqueue(m, "x") {
				return
			}
			c.mustNone(at(time.Hour-time.Second), "NextAttempt is in the future")
			c.mustClaim("m1", 0, at(time.Hour))
		},
	},
	{
		name:        "claim-skip-and-max-priority",
		explanation: "Claim never returns a delivery whose domain is in Skip, nor one whose message Priority exceeds MaxPriority",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", queue.PriorityTransactional, at(0), "a.test", "b.test"), "x") ||
				!c.enqueue(newMessage("m2", queue.PriorityBulk, at(0), "a.test"), "y") {
				return
			}
			now := at(time.Minute)
			cl, err := c.claim("w", now, time.Minute, "a.test")
			if err != nil || cl.Lease.MessageID != "m1" || cl.Delivery.Domain != "b.test" {
				c.errorf("Claim skipping a.test: %v %v, want m1's b.test delivery", cl, err)
			}
			c.mustNone(now, "a.test is skipped and b.test is leased", "a.test")
			maxp := queue.PriorityNormal
			cl, err = c.s.Claim(c.ctx, queue.ClaimRequest{Owner: "w", Now: now, Until: now.Add(time.Minute), MaxPriority: &maxp})
			if err != nil || cl.Lease.MessageID != "m2" {
				c.errorf("Claim with MaxPriority %d: %v %v, want m2 (bulk)", maxp, cl, err)
			}
		},
	},
	{
		name:        "lease-expiry-recovery",
		explanation: "a lease hides its delivery from other claims until it expires; then another worker claims it with a new lease (a crashed worker's work comes back); the claim itself changes neither Attempts nor NextAttempt",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test"), "x") {
				return
			}
			first, err := c.claim("dead-worker", at(time.Second), time.Minute)
			if err != nil {
				c.errorf("first Claim: %v", err)
				return
			}
			if first.Lease.Owner != "dead-worker" || !first.Lease.Expires.Equal(at(time.Minute+time.Second)) || first.Lease.Token == "" {
				c.errorf("lease = %+v, want owner dead-worker, expiry at +1m1s and a token", first.Lease)
			}
			if m := c.get("m1"); m != nil {
				d := m.Deliveries[0]
				if d.LeaseOwner != "dead-worker" || d.State(at(2*time.Second)) != queue.StateActive {
					c.errorf("leased delivery: owner %q state %s, want dead-worker/active", d.LeaseOwner, d.State(at(2*time.Second)))
				}
			}
			c.mustNone(at(time.Minute), "the lease is live until +1m1s")
			second, err := c.claim("w2", at(time.Minute+time.Second), time.Minute)
			if err != nil {
				c.errorf("Claim at lease expiry: %v, want the delivery back", err)
				return
			}
			if second.Lease.Token == first.Lease.Token {
				c.errorf("the new lease reuses token %q", first.Lease.Token)
			}
			if second.Delivery.Attempts != 0 || !second.Delivery.NextAttempt.Equal(at(0)) {
				c.errorf("after two claims Attempts=%d NextAttempt=%v, want 0 and +0", second.Delivery.Attempts, second.Delivery.NextAttempt.Sub(t0))
			}
			if second.Message.ID != "m1" || second.Message.Deliveries != nil || second.Message.Tenant != "tenant-1" {
				c.errorf("Claim.Message = %+v, want m1's header without deliveries", second.Message)
			}
		},
	},
	{
		name:        "no-double-claim",
		explanation: "under many concurrent claimers no delivery is handed out twice while its lease is live, and every ready delivery is handed out",
		run: func(c *checker) {
			const msgs, workers = 40, 12
			for i := range msgs {
				if !c.enqueue(newMessage(fmt.Sprintf("m%03d", i), queue.Priority(i%3), at(time.Duration(i)*time.Millisecond), "a.test", "b.test", "c.test"), "x") {
					return
				}
			}
			now := at(time.Minute)
			var (
				mu   sync.Mutex
				seen = map[string]int{}
				errs []error
				wg   sync.WaitGroup
			)
			for w := range workers {
				wg.Go(func() {
					for {
						cl, err := c.s.Claim(c.ctx, queue.ClaimRequest{Owner: fmt.Sprintf("w%d", w), Now: now, Until: now.Add(time.Hour)})
						mu.Lock()
						if errors.Is(err, queue.ErrNoneReady) {
							mu.Unlock()
							return
						}
						if err != nil {
							errs = append(errs, err)
							mu.Unlock()
							return
						}
						seen[fmt.Sprintf("%s/%d", cl.Lease.MessageID, cl.Lease.Delivery)]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			for _, err := range errs {
				c.errorf("concurrent Claim: %v", err)
			}
			if len(seen) != msgs*3 {
				c.errorf("%d distinct deliveries claimed, want %d", len(seen), msgs*3)
			}
			for k, n := range seen {
				if n != 1 {
					c.errorf("delivery %s claimed %d times under live leases", k, n)
				}
			}
		},
	},
	{
		name:        "complete-atomic-with-reschedule",
		explanation: "Complete applies every recipient result, counts the attempt and reschedules the delivery in one step; recipients without a result are unchanged; other deliveries are unaffected",
		run: func(c *checker) {
			m := newMessage("m1", 0, at(0), "a.test", "b.test")
			m.Deliveries[0].Recipients = append(m.Deliveries[0].Recipients, queue.Recipient{Address: "c@a.test"})
			if !c.enqueue(m, "x") {
				return
			}
			cl := c.mustClaim("m1", 0, at(time.Second))
			if cl == nil {
				return
			}
			ok := reply(250, smtp.EnhancedCode{2, 0, 0}, "queued as 1")
			tmp := reply(451, smtp.EnhancedCode{4, 3, 0}, "try later")
			err := c.s.Complete(c.ctx, &queue.Completion{
				Lease: cl.Lease, Now: at(3 * time.Second), NextAttempt: at(10 * time.Minute), Warned: true,
				Results: []queue.RecipientResult{
					{Address: "a@a.test", State: queue.RecipientDelivered, Reply: ok, Attempted: at(time.Second)},
					{Address: "b@a.test", State: queue.RecipientPending, Reply: tmp, Attempted: at(2 * time.Second)},
				},
			})
			if err != nil {
				c.errorf("Complete: %v", err)
				return
			}
			ok.Message = "mutated after Complete"
			got := c.get("m1")
			if got == nil {
				return
			}
			want := m.Clone()
			want.Size = 1
			d := &want.Deliveries[0]
			d.Attempts, d.LastAttempt, d.NextAttempt, d.Warned = 1, at(3*time.Second), at(10*time.Minute), true
			d.Recipients[0].State, d.Recipients[0].Attempts, d.Recipients[0].LastAttempt = queue.RecipientDelivered, 1, at(time.Second)
			d.Recipients[0].LastReply = reply(250, smtp.EnhancedCode{2, 0, 0}, "queued as 1")
			d.Recipients[1].Attempts, d.Recipients[1].LastAttempt, d.Recipients[1].LastReply = 1, at(2*time.Second), tmp
			if diff := diffMessage(want, got); diff != "" {
				c.errorf("after Complete: %s", diff)
			}
			c.mustNone(at(10*time.Minute-time.Second), "a.test was rescheduled at +10m", "b.test")
			if cl, err := c.claim("w", at(10*time.Minute), time.Minute, "b.test"); err != nil || cl.Lease.Delivery != 0 {
				c.errorf("Claim at +10m skipping b.test: %v %v, want m1/0", cl, err)
			}
		},
	},
	{
		name:        "complete-invalid-changes-nothing",
		explanation: "a Completion naming an unknown recipient, a final recipient, the same recipient twice, or an invalid state fails with ErrBadUpdate and changes nothing (the lease stays valid)",
		run: func(c *checker) {
			m := newMessage("m1", 0, at(0), "a.test")
			m.Deliveries[0].Recipients[1].State = queue.RecipientSuppressed
			if !c.enqueue(m, "x") {
				return
			}
			cl := c.mustClaim("m1", 0, at(time.Second))
			if cl == nil {
				return
			}
			before := c.get("m1")
			good := queue.RecipientResult{Address: "a@a.test", State: queue.RecipientDelivered, Reply: reply(250, smtp.EnhancedCode{2, 0, 0}, "ok"), Attempted: at(time.Second)}
			for name, bad := range map[string]queue.RecipientResult{
				"unknown":  {Address: "zz@a.test", State: queue.RecipientDelivered},
				"final":    {Address: "b@a.test", State: queue.RecipientDelivered},
				"badstate": {Address: "a@a.test", State: queue.RecipientState(99)},
			} {
				if err := c.complete(cl, at(2*time.Second), at(time.Hour), good, bad); !errors.Is(err, queue.ErrBadUpdate) {
					c.errorf("Complete with a %s result: %v, want ErrBadUpdate", name, err)
				}
			}
			if err := c.complete(cl, at(2*time.Second), at(time.Hour), good, good); !errors.Is(err, queue.ErrBadUpdate) {
				c.errorf("Complete with a duplicate result: %v, want ErrBadUpdate", err)
			}
			c.unchanged("m1", before, "a rejected Complete")
			if err := c.complete(cl, at(2*time.Second), at(time.Hour), good); err != nil {
				c.errorf("valid Complete after rejected ones: %v (the lease must still be valid)", err)
			}
		},
	},
	{
		name:        "done-message-removed",
		explanation: "when the last recipient of the last delivery becomes final, the message and its body are removed in the same step",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test", "b.test"), "x") {
				return
			}
			ok := reply(250, smtp.EnhancedCode{2, 0, 0}, "ok")
			fail := reply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
			for i, d := range []string{"a.test", "b.test"} {
				cl := c.mustClaim("m1", i, at(time.Second))
				if cl == nil {
					return
				}
				if err := c.complete(cl, at(time.Second), at(time.Hour),
					queue.RecipientResult{Address: "a@" + d, State: queue.RecipientDelivered, Reply: ok},
					queue.RecipientResult{Address: "b@" + d, State: queue.RecipientFailed, Reply: fail}); err != nil {
					c.errorf("Complete %s: %v", d, err)
					return
				}
				if i == 0 {
					if m := c.get("m1"); m != nil && m.Deliveries[0].State(at(time.Second)) != queue.StateDone {
						c.errorf("delivery 0 state %s, want done", m.Deliveries[0].State(at(time.Second)))
					}
					if err := c.s.Reschedule(c.ctx, "m1", at(0)); err != nil {
						c.errorf("Reschedule: %v", err)
					}
					c.mustNone(at(time.Hour), "delivery 0 is done and must never be claimed again", "b.test")
				}
			}
			if _, err := c.s.Get(c.ctx, "m1"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("Get of a done message: %v, want ErrNotFound", err)
			}
			if _, err := c.s.OpenBody(c.ctx, "m1"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("OpenBody of a done message: %v, want ErrNotFound", err)
			}
		},
	},
	{
		name:        "lease-lost-rejected",
		explanation: "after a lease expired and another worker claimed the delivery, Complete and Release with the old lease fail with ErrLeaseLost and change nothing",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test"), "x") {
				return
			}
			old, err := c.claim("slow", at(0), time.Minute)
			if err != nil {
				c.errorf("Claim: %v", err)
				return
			}
			cur, err := c.claim("fast", at(2*time.Minute), time.Minute)
			if err != nil {
				c.errorf("Claim after expiry: %v", err)
				return
			}
			before := c.get("m1")
			res := queue.RecipientResult{Address: "a@a.test", State: queue.RecipientDelivered, Reply: reply(250, smtp.EnhancedCode{2, 0, 0}, "ok")}
			if err := c.complete(old, at(3*time.Minute), at(time.Hour), res); !errors.Is(err, queue.ErrLeaseLost) {
				c.errorf("Complete with a lost lease: %v, want ErrLeaseLost", err)
			}
			if err := c.s.Release(c.ctx, old.Lease, at(0)); !errors.Is(err, queue.ErrLeaseLost) {
				c.errorf("Release with a lost lease: %v, want ErrLeaseLost", err)
			}
			forged := cur.Lease
			forged.Token += "x"
			if err := c.s.Release(c.ctx, forged, at(0)); !errors.Is(err, queue.ErrLeaseLost) {
				c.errorf("Release with a wrong token: %v, want ErrLeaseLost", err)
			}
			c.unchanged("m1", before, "a rejected update")
			if err := c.complete(cur, at(3*time.Minute), at(time.Hour), res); err != nil {
				c.errorf("Complete with the current lease: %v", err)
			}
		},
	},
	{
		name:        "expired-lease-completes-if-not-reclaimed",
		explanation: "a lease that expired but whose delivery nobody claimed since is still the current lease: its Complete succeeds",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test"), "x") {
				return
			}
			cl := c.mustClaim("m1", 0, at(0))
			if cl == nil {
				return
			}
			if err := c.complete(cl, at(time.Hour), at(2*time.Hour), queue.RecipientResult{Address: "a@a.test", State: queue.RecipientPending, Reply: reply(421, smtp.EnhancedCode{4, 4, 2}, "timeout")}); err != nil {
				c.errorf("Complete after expiry without a re-claim: %v", err)
			}
		},
	},
	{
		name:        "double-ack",
		explanation: "Complete consumes the lease: completing (or releasing) again with the same lease fails with ErrLeaseLost and counts nothing twice",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test"), "x") {
				return
			}
			cl := c.mustClaim("m1", 0, at(0))
			if cl == nil {
				return
			}
			res := queue.RecipientResult{Address: "a@a.test", State: queue.RecipientPending, Reply: reply(451, smtp.EnhancedCode{4, 0, 0}, "later")}
			if err := c.complete(cl, at(time.Second), at(time.Hour), res); err != nil {
				c.errorf("Complete: %v", err)
				return
			}
			if err := c.complete(cl, at(2*time.Second), at(2*time.Hour), res); !errors.Is(err, queue.ErrLeaseLost) {
				c.errorf("second Complete with the same lease: %v, want ErrLeaseLost", err)
			}
			if err := c.s.Release(c.ctx, cl.Lease, at(0)); !errors.Is(err, queue.ErrLeaseLost) {
				c.errorf("Release after Complete: %v, want ErrLeaseLost", err)
			}
			if m := c.get("m1"); m != nil {
				d := m.Deliveries[0]
				if d.Attempts != 1 || d.Recipients[0].Attempts != 1 || !d.NextAttempt.Equal(at(time.Hour)) || d.LeaseOwner != "" {
					c.errorf("after a double ack: Attempts %d/%d NextAttempt %v owner %q; want 1/1, +1h, no owner",
						d.Attempts, d.Recipients[0].Attempts, d.NextAttempt.Sub(t0), d.LeaseOwner)
				}
			}
		},
	},
	{
		name:        "release",
		explanation: "Release ends a lease without counting an attempt and makes the delivery ready at the given time",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test"), "x") {
				return
			}
			cl := c.mustClaim("m1", 0, at(0))
			if cl == nil {
				return
			}
			if err := c.s.Release(c.ctx, cl.Lease, at(5*time.Minute)); err != nil {
				c.errorf("Release: %v", err)
				return
			}
			if m := c.get("m1"); m != nil {
				d := m.Deliveries[0]
				if d.Attempts != 0 || d.LeaseOwner != "" || !d.NextAttempt.Equal(at(5*time.Minute)) || d.Recipients[0].Attempts != 0 {
					c.errorf("after Release: Attempts %d owner %q NextAttempt %v; want 0, none, +5m", d.Attempts, d.LeaseOwner, d.NextAttempt.Sub(t0))
				}
			}
			c.mustNone(at(5*time.Minute-time.Second), "released until +5m")
			c.mustClaim("m1", 0, at(5*time.Minute))
		},
	},
	{
		name:        "expired-still-claimable",
		explanation: "a store never drops a message because its Expires has passed: the Queue claims it to send the DSN",
		run: func(c *checker) {
			m := newMessage("m1", 0, at(0), "a.test")
			m.Expires = at(time.Hour)
			if !c.enqueue(m, "x") {
				return
			}
			if cl := c.mustClaim("m1", 0, at(48*time.Hour)); cl != nil && !cl.Message.Expires.Equal(at(time.Hour)) {
				c.errorf("claimed Expires = %v, want +1h", cl.Message.Expires.Sub(t0))
			}
		},
	},
	{
		name:        "hold-release-reschedule",
		explanation: "SetHeld(true) hides every unfinished delivery from Claim until SetHeld(false); Reschedule moves NextAttempt of every unfinished delivery",
		run: func(c *checker) {
			m := newMessage("m1", 0, at(0), "a.test")
			m.Deliveries[0].NextAttempt = at(time.Hour)
			if !c.enqueue(m, "x") {
				return
			}
			if err := c.s.SetHeld(c.ctx, "m1", true); err != nil {
				c.errorf("SetHeld(true): %v", err)
				return
			}
			if err := c.s.SetHeld(c.ctx, "m1", true); err != nil {
				c.errorf("SetHeld(true) twice: %v", err)
			}
			if got := c.get("m1"); got != nil && got.Deliveries[0].State(at(0)) != queue.StateHeld {
				c.errorf("state after hold = %s, want held", got.Deliveries[0].State(at(0)))
			}
			c.mustNone(at(2*time.Hour), "the message is held")
			if err := c.s.Reschedule(c.ctx, "m1", at(time.Minute)); err != nil {
				c.errorf("Reschedule: %v", err)
			}
			c.mustNone(at(2*time.Minute), "the message is still held after Reschedule")
			if err := c.s.SetHeld(c.ctx, "m1", false); err != nil {
				c.errorf("SetHeld(false): %v", err)
			}
			c.mustNone(at(time.Minute-time.Second), "rescheduled to +1m")
			c.mustClaim("m1", 0, at(time.Minute))
			for name, err := range map[string]error{
				"SetHeld":    c.s.SetHeld(c.ctx, "nope", true),
				"Reschedule": c.s.Reschedule(c.ctx, "nope", at(0)),
				"Delete":     c.s.Delete(c.ctx, "nope"),
			} {
				if !errors.Is(err, queue.ErrNotFound) {
					c.errorf("%s(unknown): %v, want ErrNotFound", name, err)
				}
			}
		},
	},
	{
		name:        "delete",
		explanation: "Delete removes the message and body whatever their state; its outstanding lease becomes invalid",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test"), "x") || !c.enqueue(newMessage("m2", 0, at(0), "a.test"), "y") {
				return
			}
			cl := c.mustClaim("m1", 0, at(0))
			if cl == nil {
				return
			}
			if err := c.s.Delete(c.ctx, "m1"); err != nil {
				c.errorf("Delete: %v", err)
				return
			}
			if _, err := c.s.Get(c.ctx, "m1"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("Get after Delete: %v, want ErrNotFound", err)
			}
			if _, err := c.s.OpenBody(c.ctx, "m1"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("OpenBody after Delete: %v, want ErrNotFound", err)
			}
			err := c.complete(cl, at(time.Second), at(time.Hour), queue.RecipientResult{Address: "a@a.test", State: queue.RecipientDelivered})
			if !errors.Is(err, queue.ErrLeaseLost) && !errors.Is(err, queue.ErrNotFound) {
				c.errorf("Complete after Delete: %v, want ErrLeaseLost or ErrNotFound", err)
			}
			c.mustClaim("m2", 0, at(0))
			c.mustNone(at(30*time.Second), "m1 is deleted and m2 leased")
		},
	},
	{
		name:        "list-filters",
		explanation: "List returns the messages matching every Filter field (state at Now, domain, tenant, creation time, cursor, limit) in ascending ID order",
		run: func(c *checker) {
			a := newMessage("m1", 0, at(0), "a.test", "b.test")
			b := newMessage("m2", 0, at(time.Hour), "b.test")
			b.Tenant = "tenant-2"
			d := newMessage("m3", 0, at(2*time.Hour), "C.test")
			d.Deliveries[0].Domain = "c.test"
			for _, m := range []*queue.Message{a, b, d} {
				if !c.enqueue(m, "x") {
					return
				}
			}
			if err := c.s.SetHeld(c.ctx, "m3", true); err != nil {
				c.errorf("SetHeld: %v", err)
			}
			now := at(3 * time.Hour)
			// m1's b.test delivery: claim it and complete it as deferred.
			cl, err := c.claim("w", now, time.Hour, "a.test")
			if err != nil || cl.Lease.MessageID != "m1" {
				c.errorf("Claim: %v %v", cl, err)
				return
			}
			if err := c.complete(cl, now, now.Add(time.Hour), queue.RecipientResult{Address: "a@b.test", State: queue.RecipientPending}); err != nil {
				c.errorf("Complete: %v", err)
			}
			if _, err := c.claim("w", now, time.Hour, "b.test"); err != nil { // m1's a.test becomes active
				c.errorf("Claim: %v", err)
			}
			for _, tc := range []struct {
				name string
				f    queue.Filter
				want string
			}{
				{"all", queue.Filter{}, "m1 m2 m3"},
				{"tenant", queue.Filter{Tenant: "tenant-2"}, "m2"},
				{"domain", queue.Filter{Domain: "B.TEST"}, "m1 m2"},
				{"domain-c", queue.Filter{Domain: "c.test"}, "m3"},
				{"held", queue.Filter{State: queue.StateHeld, Now: now}, "m3"},
				{"active", queue.Filter{State: queue.StateActive, Now: now}, "m1"},
				{"active-expired", queue.Filter{State: queue.StateActive, Now: now.Add(2 * time.Hour)}, ""},
				{"deferred", queue.Filter{State: queue.StateDeferred, Now: now}, "m1"},
				{"queued", queue.Filter{State: queue.StateQueued, Now: now}, "m2"},
				{"domain-and-state", queue.Filter{Domain: "a.test", State: queue.StateDeferred, Now: now}, ""},
				{"older", queue.Filter{CreatedBefore: at(time.Hour)}, "m1"},
				{"newer", queue.Filter{CreatedAfter: at(time.Hour)}, "m3"},
				{"cursor", queue.Filter{After: "m1"}, "m2 m3"},
				{"limit", queue.Filter{Limit: 2}, "m1 m2"},
				{"none", queue.Filter{Tenant: "nobody"}, ""},
			} {
				msgs, err := c.s.List(c.ctx, tc.f)
				if err != nil {
					c.errorf("List(%s): %v", tc.name, err)
					continue
				}
				var ids []string
				for _, m := range msgs {
					ids = append(ids, m.ID)
				}
				if got := strings.Join(ids, " "); got != tc.want {
					c.errorf("List(%s) = %q, want %q", tc.name, got, tc.want)
				}
			}
			if msgs, err := c.s.List(c.ctx, queue.Filter{Tenant: "tenant-2"}); err == nil && len(msgs) == 1 {
				if diff := diffMessage(c.get("m2"), msgs[0]); diff != "" {
					c.errorf("List returned a message that differs from Get: %s", diff)
				}
			}
		},
	},
	{
		name:        "no-aliasing",
		explanation: "the store keeps no pointer it was given and hands out none it keeps: mutating a message after Enqueue, or one returned by Get, List or Claim, changes nothing stored",
		run: func(c *checker) {
			m := newMessage("m1", 0, at(0), "a.test")
			if !c.enqueue(m, "x") {
				return
			}
			want := m.Clone()
			want.Size = 1
			mutate := func(m *queue.Message) {
				m.From = "evil@x.test"
				*m.Mail.Auth = "evil"
				m.Tags[0] = "evil"
				m.Metadata["user"] = "evil"
				if len(m.Deliveries) > 0 {
					mutateDelivery(&m.Deliveries[0])
				}
			}
			mutate(m)
			check := func(when string) {
				if got := c.get("m1"); got != nil {
					if d := diffMessage(want, got); d != "" {
						c.errorf("after mutating %s: %s", when, d)
					}
				}
			}
			check("the enqueued message")
			if got := c.get("m1"); got != nil {
				mutate(got)
			}
			check("a message returned by Get")
			if msgs, err := c.s.List(c.ctx, queue.Filter{}); err == nil && len(msgs) == 1 {
				mutate(msgs[0])
			}
			check("a message returned by List")
			cl := c.mustClaim("m1", 0, at(0))
			if cl == nil {
				return
			}
			mutate(cl.Message)
			mutateDelivery(cl.Delivery)
			want.Deliveries[0].LeaseOwner, want.Deliveries[0].LeaseExpires = "w1", at(time.Minute)
			check("a claimed message and delivery")
			r := reply(451, smtp.EnhancedCode{4, 0, 0}, "original")
			if err := c.complete(cl, at(time.Second), at(time.Hour), queue.RecipientResult{Address: "a@a.test", State: queue.RecipientPending, Reply: r, Attempted: at(0)}); err != nil {
				c.errorf("Complete: %v", err)
				return
			}
			r.Message = "evil"
			if got := c.get("m1"); got != nil && got.Deliveries[0].Recipients[0].LastReply.Message != "original" {
				c.errorf("mutating the reply given to Complete changed the stored reply to %q", got.Deliveries[0].Recipients[0].LastReply.Message)
			}
		},
	},
	{
		name:        "context-cancelled",
		explanation: "every method given a done context returns ctx.Err() and changes nothing",
		run: func(c *checker) {
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test"), "x") {
				return
			}
			cl := c.mustClaim("m1", 0, at(0))
			if cl == nil {
				return
			}
			before := c.get("m1")
			ctx, cancel := context.WithCancel(c.ctx)
			cancel()
			res := queue.RecipientResult{Address: "a@a.test", State: queue.RecipientDelivered}
			calls := map[string]func() error{
				"Enqueue": func() error { return c.s.Enqueue(ctx, newMessage("m2", 0, at(0), "a.test"), strings.NewReader("x")) },
				"Claim": func() error {
					_, err := c.s.Claim(ctx, queue.ClaimRequest{Owner: "w", Now: at(time.Hour), Until: at(2 * time.Hour)})
					return err
				},
				"Complete": func() error {
					return c.s.Complete(ctx, &queue.Completion{Lease: cl.Lease, Now: at(0), Results: []queue.RecipientResult{res}})
				},
				"Release":    func() error { return c.s.Release(ctx, cl.Lease, at(0)) },
				"Get":        func() error { _, err := c.s.Get(ctx, "m1"); return err },
				"List":       func() error { _, err := c.s.List(ctx, queue.Filter{}); return err },
				"OpenBody":   func() error { _, err := c.s.OpenBody(ctx, "m1"); return err },
				"SetHeld":    func() error { return c.s.SetHeld(ctx, "m1", true) },
				"Reschedule": func() error { return c.s.Reschedule(ctx, "m1", at(time.Hour)) },
				"Delete":     func() error { return c.s.Delete(ctx, "m1") },
			}
			for name, call := range calls {
				if err := call(); !errors.Is(err, context.Canceled) {
					c.errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
				}
			}
			c.unchanged("m1", before, "calls with a cancelled context")
			if _, err := c.s.Get(c.ctx, "m2"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("Enqueue with a cancelled context stored the message (Get: %v)", err)
			}
			if err := c.s.Complete(c.ctx, &queue.Completion{Lease: cl.Lease, Now: at(0), Results: []queue.RecipientResult{res}}); err != nil {
				c.errorf("Complete after the cancelled calls: %v (the lease must still be valid)", err)
			}
		},
	},
	{
		name:        "idempotency-window",
		explanation: "EnqueueIdempotent returns the earlier message's ID and ErrDuplicate for the same tenant and key created at or after since, stores nothing then, and enqueues normally otherwise (other tenant, older record, finished message)",
		skip: func(s queue.Store, short bool) string {
			if _, ok := s.(queue.IdempotentStore); !ok {
				return fmt.Sprintf("%T does not implement queue.IdempotentStore (the Queue then deduplicates in memory)", s)
			}
			return ""
		},
		run: func(c *checker) {
			s := c.s.(queue.IdempotentStore)
			mk := func(id, tenant string, created time.Time) *queue.Message {
				m := newMessage(id, 0, created, "a.test")
				m.Tenant, m.IdempotencyKey = tenant, "order-17"
				return m
			}
			enq := func(m *queue.Message, since time.Time, wantID string, wantErr error) {
				id, err := s.EnqueueIdempotent(c.ctx, m, strings.NewReader("x"), since)
				if id != wantID || !errors.Is(err, wantErr) {
					c.errorf("EnqueueIdempotent(%s, since %v) = %q, %v; want %q, %v", m.ID, since.Sub(t0), id, err, wantID, wantErr)
				}
			}
			enq(mk("m1", "t1", at(0)), at(-time.Hour), "m1", nil)
			enq(mk("m2", "t1", at(time.Minute)), at(time.Minute-time.Hour), "m1", queue.ErrDuplicate)
			if _, err := c.s.Get(c.ctx, "m2"); !errors.Is(err, queue.ErrNotFound) {
				c.errorf("a duplicate was stored (Get: %v)", err)
			}
			enq(mk("m3", "t2", at(time.Minute)), at(time.Minute-time.Hour), "m3", nil)
			// Finish m1: the key must still count.
			if cl := c.mustClaim("m1", 0, at(2*time.Minute)); cl != nil {
				res := func(a string) queue.RecipientResult {
					return queue.RecipientResult{Address: a, State: queue.RecipientDelivered}
				}
				if err := c.complete(cl, at(2*time.Minute), at(time.Hour), res("a@a.test"), res("b@a.test")); err != nil {
					c.errorf("Complete: %v", err)
				}
			}
			enq(mk("m4", "t1", at(3*time.Minute)), at(3*time.Minute-time.Hour), "m1", queue.ErrDuplicate)
			// Outside the window: a new message.
			enq(mk("m5", "t1", at(2*time.Hour)), at(time.Hour), "m5", nil)
			// Concurrent enqueues of a new key: exactly one wins.
			var wg sync.WaitGroup
			ids := make([]string, 8)
			errs := make([]error, 8)
			for i := range ids {
				wg.Go(func() {
					m := mk(fmt.Sprintf("c%d", i), "t3", at(time.Hour))
					ids[i], errs[i] = s.EnqueueIdempotent(c.ctx, m, strings.NewReader("x"), at(0))
				})
			}
			wg.Wait()
			winners := 0
			for i := range ids {
				switch {
				case errs[i] == nil:
					winners++
				case !errors.Is(errs[i], queue.ErrDuplicate):
					c.errorf("concurrent EnqueueIdempotent: %v", errs[i])
				}
			}
			if winners != 1 {
				c.errorf("%d concurrent enqueues with one key succeeded, want 1", winners)
			}
			for i := range ids {
				if ids[i] != ids[0] {
					c.errorf("concurrent enqueues returned IDs %q and %q, want the winner's for all", ids[0], ids[i])
					break
				}
			}
		},
	},
	{
		name:        "notifier",
		explanation: "a Notifier's Ready channel receives after an Enqueue",
		skip: func(s queue.Store, short bool) string {
			if _, ok := s.(queue.Notifier); !ok {
				return fmt.Sprintf("%T does not implement queue.Notifier (the Queue then polls)", s)
			}
			return ""
		},
		run: func(c *checker) {
			ch := c.s.(queue.Notifier).Ready()
			select { // drain
			case <-ch:
			default:
			}
			if !c.enqueue(newMessage("m1", 0, at(0), "a.test"), "x") {
				return
			}
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				c.errorf("no value on Ready() within 10s of an Enqueue")
			}
		},
	},
	{
		name:        "model",
		explanation: "random sequences of operations give the same observable results as a simple reference model of the contract",
		skip: func(s queue.Store, short bool) string {
			if short {
				return "model-based random test skipped in -short mode"
			}
			return ""
		},
		run: runModel,
	},
}

func mutateDelivery(d *queue.Delivery) {
	d.Domain = "evil.test"
	d.Attempts = 99
	r := &d.Recipients[0]
	r.Address = "evil@evil.test"
	r.Options.Notify[0] = smtp.DSNNotifyNever
	*r.Options.MTPriority = 9
	r.Options.DeliverBy.Time = 0
	if r.LastReply != nil {
		r.LastReply.Message = "evil"
	}
}

func (c *checker) checkBody(id, want string) {
	b, err := c.s.OpenBody(c.ctx, id)
	if err != nil {
		c.errorf("OpenBody(%s): %v", id, err)
		return
	}
	defer b.Close()
	got, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
	if err != nil || string(got) != want {
		c.errorf("body of %s = %q (err %v), want %q", id, got, err, want)
	}
}

// cancelReader cancels a context after some bytes, then keeps reading.
type cancelReader struct {
	r      io.Reader
	after  int
	cancel func()
}

func (r *cancelReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.after -= n
	if r.after <= 0 {
		r.cancel()
	}
	return n, err
}
