package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/ratelimit"
)

// storeTimeout bounds the store calls that record an attempt, which run on
// a context detached from shutdown so that results are not lost.
const storeTimeout = 30 * time.Second

// limiterErrorDelay is how long a delivery waits when the Limiter fails.
const limiterErrorDelay = 30 * time.Second

// Start starts the scheduler: Workers goroutines deliver ready deliveries
// through the Transport until Shutdown is called or ctx ends (ending ctx
// aborts attempts in flight, like a Shutdown whose deadline has passed).
// Start returns at once; it fails if the Queue has no Transport or was
// started before.
func (q *Queue) Start(ctx context.Context) error {
	if q.cfg.Transport == nil {
		return fmt.Errorf("%w: Transport is required to Start", ErrConfig)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state != stateNew {
		return fmt.Errorf("%w: Start called twice", ErrNotRunning)
	}
	q.state = stateRunning
	q.stop = make(chan struct{})
	q.dispDone = make(chan struct{})
	q.attempts, q.abort = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		select {
		case <-ctx.Done():
			q.abort()
		case <-q.attempts.Done():
		}
	}()
	go q.dispatch(ctx)
	return nil
}

// Shutdown stops claiming new work and waits for the attempts in flight to
// finish and be recorded. If ctx ends first, it aborts them (the transport
// sees its context cancelled and reports transient results, recorded with
// an immediate retry), waits for them to be recorded, and returns
// ctx.Err(). Deliveries claimed but not yet attempted are released at once.
// A Queue cannot be restarted.
func (q *Queue) Shutdown(ctx context.Context) error {
	q.mu.Lock()
	if q.state != stateRunning {
		q.state = stateStopped
		q.mu.Unlock()
		return nil
	}
	q.state = stateStopped
	close(q.stop)
	q.mu.Unlock()

	<-q.dispDone
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
		q.abort()
		return nil
	case <-ctx.Done():
		q.abort()
		<-done
		return ctx.Err()
	}
}

// dispatch is the claiming loop: it takes a worker slot, claims a delivery
// and hands it to a goroutine, or sleeps until woken.
func (q *Queue) dispatch(ctx context.Context) {
	defer close(q.dispDone)
	slots := make(chan struct{}, q.cfg.Workers)
	var ready <-chan struct{}
	if n, ok := q.store.(Notifier); ok {
		ready = n.Ready()
	}
	timer := time.NewTimer(q.cfg.PollInterval)
	defer timer.Stop()
	for {
		select {
		case slots <- struct{}{}:
		case <-q.stop:
			return
		case <-ctx.Done():
			return
		}
		for {
			cl, site, err := q.claimNext(ctx)
			if cl != nil {
				q.wg.Add(1)
				go func() {
					defer func() {
						<-slots
						q.wg.Done()
					}()
					q.run(cl, site)
				}()
				break
			}
			if err != nil && !errors.Is(err, ErrNoneReady) && ctx.Err() == nil {
				q.log.Error("queue: claim failed", "err", err)
			}
			timer.Reset(q.cfg.PollInterval)
			select {
			case <-q.stop:
				<-slots
				return
			case <-ctx.Done():
				<-slots
				return
			case <-q.wake:
			case <-ready:
			case <-timer.C:
			}
		}
	}
}

// claimNext claims the next delivery, skipping busy and throttled
// destinations, and serving the bulk lane one claim in BulkShare. It
// returns the claim and the MX site counted for it ("" when not known).
func (q *Queue) claimNext(ctx context.Context) (*Claim, string, error) {
	now := q.now()
	q.mu.Lock()
	// Skip the domains at their own limit and every domain of a site at
	// its limit. The work is proportional to what is in flight and to the
	// domains of busy sites, not to every domain the queue has seen.
	var skip []string
	for d, n := range q.inflight {
		if n >= q.cfg.DestinationConcurrency {
			skip = append(skip, d)
		}
	}
	for site, n := range q.siteBusy {
		if n >= q.cfg.DestinationConcurrency {
			for d := range q.siteDoms[site] {
				skip = append(skip, d)
			}
		}
	}
	for d, until := range q.throttled {
		if until.After(now) {
			skip = append(skip, d)
		} else {
			delete(q.throttled, d)
		}
	}
	q.claims++
	bulkFirst := q.cfg.BulkShare > 0 && q.claims%uint64(q.cfg.BulkShare) == 0
	owner := q.cfg.NodeID + "/" + strconv.FormatUint(q.claims, 36)
	q.mu.Unlock()
	slices.Sort(skip)
	skip = slices.Compact(skip)

	req := ClaimRequest{Owner: owner, Now: now, Until: now.Add(q.cfg.LeaseDuration), Skip: skip}
	var (
		cl  *Claim
		err error
	)
	if bulkFirst {
		maxp := PriorityNormal
		req.MaxPriority = &maxp
		cl, err = q.store.Claim(ctx, req)
		req.MaxPriority = nil
	}
	if cl == nil && (err == nil || errors.Is(err, ErrNoneReady)) {
		cl, err = q.store.Claim(ctx, req)
	}
	if err != nil {
		return nil, "", err
	}
	q.mu.Lock()
	q.inflight[cl.Delivery.Domain]++
	site := q.siteOf[cl.Delivery.Domain]
	if site != "" {
		q.siteBusy[site]++
	}
	q.mu.Unlock()
	return cl, site, nil
}

// learnSite records that domain's mail goes to site. The map is bounded:
// past 100,000 domains it starts again (sites are learnt anew from the
// next results). q.mu is held.
func (q *Queue) learnSite(domain, site string) {
	old, known := q.siteOf[domain]
	if known && old == site {
		return
	}
	if known {
		delete(q.siteDoms[old], domain)
		if len(q.siteDoms[old]) == 0 {
			delete(q.siteDoms, old)
		}
	}
	if !known && len(q.siteOf) >= 100000 {
		clear(q.siteOf)
		clear(q.siteDoms)
	}
	q.siteOf[domain] = site
	doms := q.siteDoms[site]
	if doms == nil {
		doms = make(map[string]struct{})
		q.siteDoms[site] = doms
	}
	doms[domain] = struct{}{}
}

// run processes one claimed delivery and frees its destination slot.
func (q *Queue) run(cl *Claim, site string) {
	domain := cl.Delivery.Domain
	defer func() {
		q.mu.Lock()
		if q.inflight[domain]--; q.inflight[domain] <= 0 {
			delete(q.inflight, domain)
		}
		if site != "" {
			if q.siteBusy[site]--; q.siteBusy[site] <= 0 {
				delete(q.siteBusy, site)
			}
		}
		q.mu.Unlock()
		q.poke()
	}()
	q.process(cl, site)
}

// recordCtx returns a context for recording results: detached from
// shutdown, bounded in time.
func (q *Queue) recordCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(q.attempts), storeTimeout)
}

// process attempts one delivery and records the outcome.
func (q *Queue) process(cl *Claim, site string) {
	msg, d := cl.Message, cl.Delivery
	rctx, cancel := q.recordCtx()
	defer cancel()
	// Claimed before its Enqueue emitted queued: let that event go first.
	q.waitGate(msg.ID)

	// A shutdown before the attempt starts: give the delivery back.
	select {
	case <-q.stop:
		q.release(rctx, cl, q.now())
		return
	default:
	}

	key := ratelimit.Key{Domain: d.Domain, Site: site, Source: msg.SourcePool, Tenant: msg.Tenant}
	var releaseLimit func()
	if q.cfg.Limiter != nil {
		wait, release, err := q.cfg.Limiter.Reserve(q.attempts, key)
		if err != nil {
			q.log.Warn("queue: limiter failed", "domain", d.Domain, "err", err)
			wait = limiterErrorDelay
		}
		if wait > 0 {
			now := q.now()
			q.mu.Lock()
			q.throttled[d.Domain] = now.Add(wait)
			q.mu.Unlock()
			if q.release(rctx, cl, now.Add(wait)) {
				e := q.msgEvent(event.Throttled, msg, now)
				e.Domain, e.NextAttempt, e.Attempt = d.Domain, now.Add(wait), d.Attempts+1
				q.emit(e)
			}
			return
		}
		releaseLimit = release
	}

	var pending []Recipient
	for _, r := range d.Recipients {
		if r.State == RecipientPending {
			pending = append(pending, r)
		}
	}
	env := &deliver.Envelope{
		MessageID:  msg.ID,
		From:       msg.From,
		Mail:       msg.Mail,
		Tenant:     msg.Tenant,
		SourcePool: msg.SourcePool,
	}
	env.Mail.Size = msg.Size
	for _, r := range pending {
		env.Recipients = append(env.Recipients, deliver.Recipient{Address: r.Address, Options: r.Options})
	}
	start := q.now()
	ev := q.msgEvent(event.Attempt, msg, start)
	ev.Domain, ev.Attempt = d.Domain, d.Attempts+1
	q.emit(ev)

	body, err := q.store.OpenBody(rctx, msg.ID)
	var results []deliver.Result
	switch {
	case errors.Is(err, ErrNotFound):
		if releaseLimit != nil {
			releaseLimit()
		}
		return // deleted meanwhile; the lease is gone with it
	case err != nil:
		results = deliver.Fail(env, deliver.Reply(451, 4, 3, 0, "queue: cannot open the message body"), err, start, q.now())
	default:
		defer body.Close()
		results = q.attempt(env, body, start)
	}
	if releaseLimit != nil {
		releaseLimit()
	}
	q.finish(rctx, cl, body, env, results, key)
}

// attempt calls the transport with the attempt timeout, turning a panic, a
// broken result list or a transport that does not return after its deadline
// into transient failures. A transport that ignores its context is
// abandoned (its goroutine keeps running until it returns) so that it
// cannot hold a worker forever.
func (q *Queue) attempt(env *deliver.Envelope, body deliver.Body, start time.Time) []deliver.Result {
	ctx, cancel := context.WithTimeout(q.attempts, q.cfg.AttemptTimeout)
	defer cancel()
	own := *env // the transport's copy: an abandoned transport may still use it
	own.Recipients = slices.Clone(env.Recipients)
	ch := make(chan []deliver.Result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				q.log.Error("queue: transport panicked", "msg", env.MessageID, "panic", p, "stack", string(debug.Stack()))
				ch <- deliver.Fail(env, deliver.Reply(451, 4, 3, 0, "queue: transport failed (panic)"),
					fmt.Errorf("queue: transport panicked: %v", p), start, q.now())
			}
		}()
		ch <- q.cfg.Transport.Deliver(ctx, &own, body)
	}()
	var results []deliver.Result
	select {
	case results = <-ch:
	case <-ctx.Done():
		// A transport gets a tenth of the attempt timeout (at least 1 s,
		// at most 30 s) to notice the deadline and return its results.
		grace := time.NewTimer(min(max(q.cfg.AttemptTimeout/10, time.Second), 30*time.Second))
		defer grace.Stop()
		select {
		case results = <-ch:
		case <-grace.C:
			q.log.Error("queue: transport ignored its deadline; abandoned", "msg", env.MessageID)
			return deliver.Fail(env, deliver.Reply(451, 4, 4, 1, "queue: delivery attempt did not end in time"), ctx.Err(), start, q.now())
		}
	}
	if err := deliver.Check(env, results); err != nil {
		q.log.Error("queue: transport broke its contract", "msg", env.MessageID, "err", err)
		return deliver.Fail(env, deliver.Reply(451, 4, 3, 0, "queue: transport returned invalid results"), err, start, q.now())
	}
	for i := range results {
		if results[i].Attempted.IsZero() {
			results[i].Attempted = start
		}
	}
	return results
}

// release gives a lease back and reports whether it succeeded.
func (q *Queue) release(ctx context.Context, cl *Claim, next time.Time) bool {
	if err := q.store.Release(ctx, cl.Lease, next); err != nil {
		if !errors.Is(err, ErrLeaseLost) && !errors.Is(err, ErrNotFound) {
			q.log.Error("queue: release failed", "msg", cl.Lease.MessageID, "delivery", cl.Lease.Delivery, "err", err)
		}
		return false
	}
	return true
}

// outcome is one recipient's fate after an attempt.
type outcome struct {
	rcpt   Recipient
	res    deliver.Result
	state  RecipientState
	class  bounce.Classification
	event  event.Type
	action bounce.Action // DSN action, "" when no DSN is due
	status smtp.EnhancedCode
}

// finish classifies results, sends the DSN, records everything in one
// Complete and emits the events.
func (q *Queue) finish(ctx context.Context, cl *Claim, body Body, env *deliver.Envelope, results []deliver.Result, key ratelimit.Key) {
	msg, d := cl.Message, cl.Delivery
	now := q.now()
	aborted := q.attempts.Err() != nil // shutdown deadline or Start's ctx
	attemptNo := d.Attempts + 1

	// Learn the MX site for per-site concurrency.
	for _, r := range results {
		if r.Route.Site != "" {
			q.mu.Lock()
			q.learnSite(d.Domain, r.Route.Site)
			q.mu.Unlock()
			key.Site = r.Route.Site
			break
		}
	}
	fb, _ := q.cfg.Limiter.(LimiterFeedback)

	outs := make([]outcome, len(results))
	stillPending := false
	for i, r := range results {
		o := outcome{rcpt: d.recipient(r.Recipient), res: r}
		switch {
		case r.Delivered():
			o.state, o.event = RecipientDelivered, event.Delivered
			if wantsNotify(o.rcpt.Options, smtp.DSNNotifySuccess) {
				// We relayed the message to another MTA: RFC 3464 §2.3.3
				// "relayed" (the next hop may send its own "delivered").
				o.action, o.status = bounce.ActionRelayed, r.Reply.EnhancedCode
			}
		default:
			o.class = q.cfg.Classify(r.Reply)
			if o.class.Permanent {
				o.state, o.event = RecipientFailed, event.Bounced
				if wantsNotify(o.rcpt.Options, smtp.DSNNotifyFailure) {
					o.action, o.status = bounce.ActionFailed, r.Reply.EnhancedCode
				}
			} else {
				o.state, o.event = RecipientPending, event.Deferred
				stillPending = true
			}
		}
		if fb != nil {
			fb.Feedback(key, ratelimit.Outcome{Category: string(o.class.Category), Code: r.Reply.Code,
				Enhanced: [3]int(r.Reply.EnhancedCode), Text: r.Reply.Message})
		}
		outs[i] = o
	}

	comp := &Completion{Lease: cl.Lease, Now: now}
	if stillPending {
		switch {
		case aborted:
			comp.NextAttempt = now // interrupted by shutdown: no penalty
		case !now.Before(msg.Expires):
			for i := range outs {
				if o := &outs[i]; o.state == RecipientPending {
					o.state, o.event = RecipientFailed, event.Expired
					o.class.Permanent = true
					if wantsNotify(o.rcpt.Options, smtp.DSNNotifyFailure) {
						o.action, o.status = bounce.ActionFailed, smtp.EnhancedCode{4, 4, 7}
					}
				}
			}
		default:
			next := now.Add(q.Backoff(attemptNo))
			if next.After(msg.Expires) {
				next = msg.Expires // one last try at the end of the lifetime
			}
			comp.NextAttempt = next
			if q.cfg.DelayWarning > 0 && !d.Warned && now.Sub(firstTime(msg)) >= q.cfg.DelayWarning {
				comp.Warned = true
				for i := range outs {
					if o := &outs[i]; o.state == RecipientPending && wantsNotify(o.rcpt.Options, smtp.DSNNotifyDelayed) {
						o.action, o.status = bounce.ActionDelayed, o.res.Reply.EnhancedCode
					}
				}
			}
		}
	}
	for _, o := range outs {
		comp.Results = append(comp.Results, RecipientResult{Address: o.rcpt.Address, State: o.state, Reply: o.res.Reply, Attempted: o.res.Attempted})
	}

	dsnID := ""
	if msg.From != "" && !msg.IsDSN && body != nil {
		var err error
		dsnID, err = q.sendDSN(ctx, msg, body, outs, now)
		if err != nil {
			q.log.Error("queue: cannot enqueue DSN; failures will be retried", "msg", msg.ID, "err", err)
			q.keepForDSN(comp, outs, now)
		}
	}
	if err := q.store.Complete(ctx, comp); err != nil {
		if errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrNotFound) {
			q.log.Warn("queue: attempt outcome not recorded: lease lost", "msg", msg.ID, "domain", d.Domain)
		} else {
			q.log.Error("queue: cannot record attempt", "msg", msg.ID, "domain", d.Domain, "err", err)
		}
		if dsnID != "" {
			if err := q.store.Delete(ctx, dsnID); err != nil {
				q.log.Error("queue: cannot withdraw DSN", "dsn", dsnID, "err", err)
			}
		}
		return
	}
	for i := range outs {
		q.learnBadAddress(ctx, &outs[i], now)
	}
	q.log.Debug("queue: attempt", "msg", msg.ID, "domain", d.Domain, "attempt", attemptNo, "recipients", len(outs), "next", comp.NextAttempt)
	for _, o := range outs {
		e := q.msgEvent(o.event, msg, now)
		e.Recipient, e.Domain, e.Attempt = o.rcpt.Address, d.Domain, attemptNo
		e.Reply = o.res.Reply
		setRoute(&e, o.res.Route)
		if o.event != event.Delivered {
			setClass(&e, o.class)
		}
		e.Latency = o.res.Duration
		if o.event == event.Delivered {
			e.Latency = now.Sub(msg.Created)
		}
		if o.state == RecipientPending {
			e.NextAttempt = comp.NextAttempt
		}
		if o.action != "" {
			e.DSN = dsnID
		}
		q.emit(e)
	}
}

// recipient returns the delivery's recipient with that address.
func (d *Delivery) recipient(addr string) Recipient {
	for _, r := range d.Recipients {
		if r.Address == addr {
			return r
		}
	}
	return Recipient{Address: addr}
}

// wantsNotify applies NOTIFY (RFC 3461 §4.1): NEVER asks for nothing; an
// explicit list asks for what it names; no NOTIFY means FAILURE (and DELAY,
// our choice as the RFC allows).
func wantsNotify(o smtp.RcptOptions, kind smtp.DSNNotify) bool {
	if len(o.Notify) == 0 {
		return kind == smtp.DSNNotifyFailure || kind == smtp.DSNNotifyDelayed
	}
	if slices.Contains(o.Notify, smtp.DSNNotifyNever) {
		return false
	}
	return slices.Contains(o.Notify, kind)
}

// firstTime is when a message's first attempt was due.
func firstTime(m *Message) time.Time {
	if m.NotBefore.After(m.Created) {
		return m.NotBefore
	}
	return m.Created
}

// keepForDSN handles a DSN that could not be enqueued: recipients whose
// failure needed it stay pending (the next attempt fails them again and
// retries the DSN) rather than being finished without a report, and a
// delay warning is left for the next attempt. A success report cannot be
// taken back and is lost (logged by the caller).
func (q *Queue) keepForDSN(comp *Completion, outs []outcome, now time.Time) {
	comp.Warned = false
	kept := false
	for i := range outs {
		o := &outs[i]
		if o.action == bounce.ActionFailed {
			o.state, o.event, o.action = RecipientPending, event.Deferred, ""
			comp.Results[i].State = RecipientPending
			kept = true
		}
	}
	if kept && (comp.NextAttempt.IsZero() || comp.NextAttempt.After(now.Add(q.cfg.RetryMin))) {
		comp.NextAttempt = now.Add(q.cfg.RetryMin)
	}
}
