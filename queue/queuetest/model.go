package queuetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/queue"
)

// model is the reference implementation of the Store contract that the
// "model" rule compares a store with: the simplest code that obeys the
// documented rules, with no concern for speed.
type model struct {
	msgs   map[string]*queue.Message
	leases map[string]int // "id/idx" -> sequence number of the current claim
}

func leaseKey(id string, idx int) string { return fmt.Sprintf("%s/%d", id, idx) }

// claim returns the delivery the contract says Claim must return, or nil.
func (m *model) claim(req queue.ClaimRequest) (*queue.Message, *queue.Delivery) {
	var (
		bm *queue.Message
		bd *queue.Delivery
	)
	for _, msg := range m.msgs {
		if req.MaxPriority != nil && msg.Priority > *req.MaxPriority {
			continue
		}
		for i := range msg.Deliveries {
			d := &msg.Deliveries[i]
			if d.Done() || d.Held || d.NextAttempt.After(req.Now) || slices.Contains(req.Skip, d.Domain) {
				continue
			}
			if _, leased := m.leases[leaseKey(msg.ID, i)]; leased && d.LeaseExpires.After(req.Now) {
				continue
			}
			if bm == nil || msg.Priority > bm.Priority ||
				(msg.Priority == bm.Priority && (d.NextAttempt.Before(bd.NextAttempt) ||
					(d.NextAttempt.Equal(bd.NextAttempt) && (msg.ID < bm.ID || (msg.ID == bm.ID && d.Index < bd.Index))))) {
				bm, bd = msg, d
			}
		}
	}
	return bm, bd
}

type modelClaim struct {
	seq   int
	lease queue.Lease
}

// runModel drives the store and the model with the same random operations
// and reports the first divergence of each sequence.
//
// It runs 6 sequences of 150 operations; the environment variable
// QUEUETEST_MODEL_SEQS asks for more (a longer stress run).
func runModel(c *checker) {
	const ops = 150
	seqs := uint64(6)
	if n, err := strconv.ParseUint(os.Getenv("QUEUETEST_MODEL_SEQS"), 10, 32); err == nil && n > 0 {
		seqs = n
	}
	for seed := uint64(1); seed <= seqs; seed++ {
		if err := modelSequence(c, seed, ops); err != nil {
			c.errorf("sequence with seed %d: %v", seed, err)
			return
		}
	}
}

func modelSequence(c *checker, seed uint64, ops int) error {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	if err := empty(c.ctx, c.s); err != nil {
		return fmt.Errorf("emptying the store: %w", err)
	}
	md := &model{msgs: map[string]*queue.Message{}, leases: map[string]int{}}
	now := t0.Add(time.Duration(seed) * 1000 * time.Hour)
	var (
		claims  []modelClaim
		seq     int
		nextID  int
		domains = []string{"a.test", "b.test", "c.test"}
		history []string
	)
	pickID := func() string {
		if len(md.msgs) == 0 || rng.IntN(10) == 0 {
			return fmt.Sprintf("s%d-none", seed)
		}
		ids := make([]string, 0, len(md.msgs))
		for id := range md.msgs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids[rng.IntN(len(ids))]
	}
	fail := func(format string, args ...any) error {
		if len(history) > 12 {
			history = history[len(history)-12:]
		}
		return fmt.Errorf("%s\nlast operations:\n  %s", fmt.Sprintf(format, args...), strings.Join(history, "\n  "))
	}
	sameErr := func(got error, want error) bool {
		if want == nil {
			return got == nil
		}
		return errors.Is(got, want)
	}
	for op := 0; op < ops; op++ {
		switch k := rng.IntN(100); {
		case k < 15: // enqueue
			nextID++
			id := fmt.Sprintf("s%03d-%05d", seed, nextID)
			prio := []queue.Priority{queue.PriorityBulk, queue.PriorityNormal, queue.PriorityTransactional}[rng.IntN(3)]
			n := 1 + rng.IntN(3)
			msg := newMessage(id, prio, now, domains[:n]...)
			for i := range msg.Deliveries {
				msg.Deliveries[i].NextAttempt = now.Add(time.Duration(rng.IntN(3)) * 10 * time.Second)
				if rng.IntN(2) == 0 {
					msg.Deliveries[i].Recipients = msg.Deliveries[i].Recipients[:1]
				}
			}
			history = append(history, fmt.Sprintf("Enqueue %s prio %d domains %d", id, prio, n))
			if err := c.s.Enqueue(c.ctx, msg, strings.NewReader(id)); err != nil {
				return fail("Enqueue %s: %v", id, err)
			}
			stored := msg.Clone()
			stored.Size = int64(len(id))
			md.msgs[id] = stored
		case k < 40: // claim
			req := queue.ClaimRequest{Owner: fmt.Sprintf("w%d", rng.IntN(3)), Now: now, Until: now.Add(time.Duration(30+rng.IntN(60)) * time.Second)}
			for _, d := range domains {
				if rng.IntN(5) == 0 {
					req.Skip = append(req.Skip, d)
				}
			}
			if rng.IntN(4) == 0 {
				p := queue.PriorityNormal
				req.MaxPriority = &p
			}
			wm, wd := md.claim(req)
			cl, err := c.s.Claim(c.ctx, req)
			history = append(history, fmt.Sprintf("Claim skip %v maxprio %v -> %v %v", req.Skip, req.MaxPriority != nil, cl != nil, err))
			if wm == nil {
				if !errors.Is(err, queue.ErrNoneReady) {
					return fail("Claim: %v %v, model says ErrNoneReady", cl, err)
				}
				continue
			}
			if err != nil {
				return fail("Claim: %v, model says %s/%d", err, wm.ID, wd.Index)
			}
			if cl.Lease.MessageID != wm.ID || cl.Lease.Delivery != wd.Index {
				return fail("Claim = %s/%d, model says %s/%d", cl.Lease.MessageID, cl.Lease.Delivery, wm.ID, wd.Index)
			}
			seq++
			md.leases[leaseKey(wm.ID, wd.Index)] = seq
			wd.LeaseOwner, wd.LeaseExpires = req.Owner, req.Until
			claims = append(claims, modelClaim{seq: seq, lease: cl.Lease})
			if d := diffDelivery(wd, cl.Delivery); d != "" {
				return fail("claimed delivery differs from the model: %s", d)
			}
		case k < 60 && len(claims) > 0: // complete
			mc := claims[rng.IntN(len(claims))]
			msg, ok := md.msgs[mc.lease.MessageID]
			var wantErr error
			var d *queue.Delivery
			switch {
			case !ok:
				wantErr = queue.ErrNotFound
			case md.leases[leaseKey(mc.lease.MessageID, mc.lease.Delivery)] != mc.seq:
				wantErr = queue.ErrLeaseLost
			default:
				d = &msg.Deliveries[mc.lease.Delivery]
			}
			comp := &queue.Completion{Lease: mc.lease, Now: now, NextAttempt: now.Add(time.Duration(rng.IntN(4)) * 20 * time.Second), Warned: rng.IntN(4) == 0}
			var rcpts []queue.Recipient
			if d != nil {
				rcpts = d.Recipients
			} else {
				rcpts = []queue.Recipient{{Address: "a@a.test"}}
			}
			for _, r := range rcpts {
				if rng.IntN(3) == 0 {
					continue
				}
				if r.State.Final() && rng.IntN(3) != 0 {
					continue
				}
				st := []queue.RecipientState{queue.RecipientPending, queue.RecipientDelivered, queue.RecipientFailed}[rng.IntN(3)]
				comp.Results = append(comp.Results, queue.RecipientResult{
					Address: r.Address, State: st, Attempted: now,
					Reply: &smtp.SMTPError{Code: 250 + 100*int(st), EnhancedCode: smtp.EnhancedCode{2, 0, int(st)}, Message: fmt.Sprintf("op %d", op)},
				})
				if d != nil && r.State.Final() {
					wantErr = queue.ErrBadUpdate
				}
			}
			err := c.s.Complete(c.ctx, comp)
			history = append(history, fmt.Sprintf("Complete %s/%d seq %d results %d -> %v", mc.lease.MessageID, mc.lease.Delivery, mc.seq, len(comp.Results), err))
			if wantErr == queue.ErrNotFound || wantErr == queue.ErrLeaseLost {
				// A deleted message may be reported either way.
				if !errors.Is(err, queue.ErrNotFound) && !errors.Is(err, queue.ErrLeaseLost) {
					return fail("Complete: %v, model says %v", err, wantErr)
				}
				continue
			}
			if !sameErr(err, wantErr) {
				return fail("Complete: %v, model says %v", err, wantErr)
			}
			if err != nil {
				continue
			}
			for _, r := range comp.Results {
				i := slices.IndexFunc(d.Recipients, func(x queue.Recipient) bool { return x.Address == r.Address })
				rc := &d.Recipients[i]
				rc.State, rc.LastReply, rc.LastAttempt = r.State, queue.CloneReply(r.Reply), r.Attempted
				rc.Attempts++
			}
			d.Attempts++
			d.LastAttempt = now
			d.Warned = d.Warned || comp.Warned
			if !d.Done() {
				d.NextAttempt = comp.NextAttempt
			}
			d.LeaseOwner, d.LeaseExpires = "", time.Time{}
			delete(md.leases, leaseKey(msg.ID, d.Index))
			if msg.Done() {
				delete(md.msgs, msg.ID)
			}
		case k < 66 && len(claims) > 0: // release
			mc := claims[rng.IntN(len(claims))]
			next := now.Add(time.Duration(rng.IntN(3)) * 15 * time.Second)
			err := c.s.Release(c.ctx, mc.lease, next)
			history = append(history, fmt.Sprintf("Release %s/%d seq %d -> %v", mc.lease.MessageID, mc.lease.Delivery, mc.seq, err))
			msg, ok := md.msgs[mc.lease.MessageID]
			if !ok || md.leases[leaseKey(mc.lease.MessageID, mc.lease.Delivery)] != mc.seq {
				if !errors.Is(err, queue.ErrNotFound) && !errors.Is(err, queue.ErrLeaseLost) {
					return fail("Release: %v, model says ErrLeaseLost or ErrNotFound", err)
				}
				continue
			}
			if err != nil {
				return fail("Release: %v", err)
			}
			d := &msg.Deliveries[mc.lease.Delivery]
			d.NextAttempt, d.LeaseOwner, d.LeaseExpires = next, "", time.Time{}
			delete(md.leases, leaseKey(msg.ID, d.Index))
		case k < 72: // hold or unhold
			id, held := pickID(), rng.IntN(2) == 0
			err := c.s.SetHeld(c.ctx, id, held)
			history = append(history, fmt.Sprintf("SetHeld %s %v -> %v", id, held, err))
			msg, ok := md.msgs[id]
			if !ok {
				if !errors.Is(err, queue.ErrNotFound) {
					return fail("SetHeld(unknown): %v", err)
				}
				continue
			}
			if err != nil {
				return fail("SetHeld: %v", err)
			}
			for i := range msg.Deliveries {
				if !msg.Deliveries[i].Done() {
					msg.Deliveries[i].Held = held
				}
			}
		case k < 76: // reschedule
			id, when := pickID(), now.Add(time.Duration(rng.IntN(3)-1)*time.Minute)
			err := c.s.Reschedule(c.ctx, id, when)
			history = append(history, fmt.Sprintf("Reschedule %s -> %v", id, err))
			msg, ok := md.msgs[id]
			if !ok {
				if !errors.Is(err, queue.ErrNotFound) {
					return fail("Reschedule(unknown): %v", err)
				}
				continue
			}
			if err != nil {
				return fail("Reschedule: %v", err)
			}
			for i := range msg.Deliveries {
				if !msg.Deliveries[i].Done() {
					msg.Deliveries[i].NextAttempt = when
				}
			}
		case k < 79: // delete
			id := pickID()
			err := c.s.Delete(c.ctx, id)
			history = append(history, fmt.Sprintf("Delete %s -> %v", id, err))
			if _, ok := md.msgs[id]; !ok {
				if !errors.Is(err, queue.ErrNotFound) {
					return fail("Delete(unknown): %v", err)
				}
				continue
			}
			if err != nil {
				return fail("Delete: %v", err)
			}
			delete(md.msgs, id)
			for k := range md.leases {
				if strings.HasPrefix(k, id+"/") {
					delete(md.leases, k)
				}
			}
		case k < 88: // advance the clock
			d := time.Duration(rng.IntN(60)) * time.Second
			now = now.Add(d)
			history = append(history, fmt.Sprintf("clock +%v", d))
		case k < 94: // get
			id := pickID()
			got, err := c.s.Get(c.ctx, id)
			want, ok := md.msgs[id]
			if !ok {
				if !errors.Is(err, queue.ErrNotFound) {
					return fail("Get(%s) of a removed or unknown message: %v", id, err)
				}
				continue
			}
			if err != nil {
				return fail("Get(%s): %v", id, err)
			}
			if d := diffMessage(want, got); d != "" {
				return fail("Get(%s) differs from the model: %s", id, d)
			}
		default: // list
			f := queue.Filter{Now: now}
			if rng.IntN(2) == 0 {
				f.State = queue.DeliveryState(1 + rng.IntN(5))
			}
			if rng.IntN(3) == 0 {
				f.Domain = domains[rng.IntN(len(domains))]
			}
			if rng.IntN(4) == 0 {
				f.Limit = 1 + rng.IntN(3)
			}
			got, err := c.s.List(c.ctx, f)
			if err != nil {
				return fail("List: %v", err)
			}
			var want []string
			for id, m := range md.msgs {
				if f.Matches(m) {
					want = append(want, id)
				}
			}
			slices.Sort(want)
			if f.Limit > 0 && len(want) > f.Limit {
				want = want[:f.Limit]
			}
			var ids []string
			for _, m := range got {
				ids = append(ids, m.ID)
			}
			if !slices.Equal(ids, want) {
				return fail("List(%+v) = %v, model says %v", f, ids, want)
			}
		}
	}
	return nil
}
