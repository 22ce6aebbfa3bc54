package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtakit/mta/queue"
)

var pcT0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// pcState is a message state a power cut may leave: removed, or present
// with these recipient states.
type pcState struct {
	removed bool
	states  [2]queue.RecipientState
}

// pcMsg is the test's knowledge of one message.
type pcMsg struct {
	body   []byte
	acked  pcState   // as of the last acknowledged (nil-returning) call
	enqOK  bool      // its Enqueue returned nil
	enqMay bool      // its Enqueue was in flight when the power went
	maybe  []pcState // outcomes of calls in flight when the power went
	// op is held from a claim until the model records the call's outcome,
	// so that outcomes are recorded in the order the store applied them.
	op sync.Mutex
}

type pcModel struct {
	mu   sync.Mutex
	msgs map[string]*pcMsg
	cut  atomic.Bool
}

func pcMessage(id string, domain string) *queue.Message {
	return &queue.Message{
		ID: id, From: "sender@example.test", Created: pcT0, Expires: pcT0.Add(48 * time.Hour),
		Priority: queue.Priority(len(id) % 3),
		Deliveries: []queue.Delivery{{
			Domain:      domain,
			NextAttempt: pcT0,
			Recipients:  []queue.Recipient{{Address: "a@" + domain}, {Address: "b@" + domain}},
		}},
	}
}

// TestPowerCut runs concurrent enqueues, completions, releases and deletes
// against a store on memFS and cuts the power at random moments, hundreds
// of times. After each cut the reopened store must hold every acknowledged
// message intact (body byte for byte, recipient states as last
// acknowledged), nothing whose Enqueue failed before the cut, and nothing
// else. Calls in flight at the cut may land either way.
func TestPowerCut(t *testing.T) {
	cuts := 300
	if testing.Short() {
		cuts = 60
	}
	if v, err := strconv.Atoi(os.Getenv("LOGSTORE_POWERCUTS")); err == nil && v > 0 {
		cuts = v
	}
	const rounds = 6 // cuts per file system, so recovery after recovery is covered
	total := 0
	for seed := uint64(1); total < cuts; seed++ {
		fs := newMemFS(seed)
		model := &pcModel{msgs: map[string]*pcMsg{}}
		rng := rand.New(rand.NewPCG(seed, 7))
		for round := 0; round < rounds && total < cuts; round++ {
			fs = powerCutRound(t, fs, model, rng, fmt.Sprintf("s%d-r%d", seed, round))
			total++
			if t.Failed() {
				return
			}
		}
	}
}

func powerCutRound(t *testing.T, fs *memFS, model *pcModel, rng *rand.Rand, tag string) *memFS {
	t.Helper()
	cfg := &Config{FS: fs, SegmentSize: 16 << 10, LargeBody: 1024}
	s, err := Open("", cfg)
	if err != nil {
		t.Fatalf("%s: Open after power cut: %v", tag, err)
	}
	verifyRecovered(t, s, model, tag)
	if t.Failed() {
		s.Close()
		return fs
	}
	model.cut.Store(false)
	var acked atomic.Int64
	target := int64(1 + rng.IntN(40))
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wseed := rng.Uint64()
		wg.Go(func() {
			pcWorker(t, s, model, rand.New(rand.NewPCG(wseed, uint64(w))), fmt.Sprintf("%s-w%d", tag, w), &acked)
		})
	}
	// Cut the power once enough calls were acknowledged, while the
	// workers keep going.
	var next *memFS
	for acked.Load() < target {
		time.Sleep(100 * time.Microsecond)
	}
	model.cut.Store(true)
	next = fs.Cut()
	wg.Wait()
	s.Close()
	return next
}

func pcWorker(t *testing.T, s *Store, model *pcModel, rng *rand.Rand, tag string, acked *atomic.Int64) {
	ctx := context.Background()
	// failed reports whether err ends the worker: an error after the cut
	// does; one before it is a test failure.
	failed := func(op string, err error) bool {
		if err == nil {
			return false
		}
		if !model.cut.Load() {
			t.Errorf("%s: %s before the power cut: %v", tag, op, err)
		}
		return true
	}
	for i := 0; ; i++ {
		if model.cut.Load() && i%8 == 0 {
			return
		}
		if rng.IntN(2) == 0 {
			id := fmt.Sprintf("%s-%04d", tag, i)
			n := rng.IntN(1500)
			if rng.IntN(4) == 0 {
				n = 1024 + rng.IntN(4096)
			}
			body := make([]byte, n)
			for j := range body {
				body[j] = byte(rng.Uint32())
			}
			pm := &pcMsg{body: body, enqMay: true}
			model.mu.Lock()
			model.msgs[id] = pm
			model.mu.Unlock()
			err := s.Enqueue(ctx, pcMessage(id, fmt.Sprintf("d%d.test", rng.IntN(3))), bytes.NewReader(body))
			model.mu.Lock()
			if err == nil {
				pm.enqOK, pm.enqMay = true, false
			} else if !model.cut.Load() {
				pm.enqMay = false
			}
			model.mu.Unlock()
			if failed("Enqueue", err) {
				return
			}
			acked.Add(1)
			continue
		}
		cl, err := s.Claim(ctx, queue.ClaimRequest{Owner: tag, Now: pcT0.Add(time.Hour), Until: pcT0.Add(2 * time.Hour)})
		if errors.Is(err, queue.ErrNoneReady) {
			continue
		}
		if failed("Claim", err) {
			return
		}
		id := cl.Lease.MessageID
		model.mu.Lock()
		pm := model.msgs[id]
		model.mu.Unlock()
		if pm == nil {
			t.Errorf("%s: claimed unknown message %s", tag, id)
			return
		}
		pm.op.Lock()
		// The claimed delivery is the current state (the model may not
		// have recorded the call that made it yet).
		var cur pcState
		for j, r := range cl.Delivery.Recipients {
			cur.states[j] = r.State
		}
		var next pcState
		var call func() error
		switch op := rng.IntN(10); {
		case op < 7:
			next = cur
			var res []queue.RecipientResult
			for j, r := range cl.Delivery.Recipients {
				if r.State.Final() {
					continue
				}
				st := []queue.RecipientState{queue.RecipientDelivered, queue.RecipientFailed, queue.RecipientPending}[rng.IntN(3)]
				next.states[j] = st
				res = append(res, queue.RecipientResult{Address: r.Address, State: st, Attempted: pcT0})
			}
			next.removed = next.states[0].Final() && next.states[1].Final()
			call = func() error {
				return s.Complete(ctx, &queue.Completion{Lease: cl.Lease, Now: pcT0, Results: res, NextAttempt: pcT0})
			}
		case op < 9:
			next = cur
			call = func() error { return s.Release(ctx, cl.Lease, pcT0) }
		default:
			next = pcState{removed: true}
			call = func() error { return s.Delete(ctx, id) }
		}
		model.mu.Lock()
		pm.maybe = append(pm.maybe, next)
		model.mu.Unlock()
		err = call()
		model.mu.Lock()
		if err == nil {
			pm.acked = next
			pm.maybe = pm.maybe[:len(pm.maybe)-1]
		} else if !model.cut.Load() {
			pm.maybe = pm.maybe[:len(pm.maybe)-1]
		}
		model.mu.Unlock()
		pm.op.Unlock()
		if failed("Complete/Release/Delete", err) {
			return
		}
		acked.Add(1)
	}
}

// verifyRecovered checks the reopened store against the model, then makes
// the model match what was found (resolving the calls that were in flight).
func verifyRecovered(t *testing.T, s *Store, model *pcModel, tag string) {
	t.Helper()
	ctx := context.Background()
	msgs, err := s.List(ctx, queue.Filter{})
	if err != nil {
		t.Fatalf("%s: List: %v", tag, err)
	}
	model.mu.Lock()
	defer model.mu.Unlock()
	found := map[string]*queue.Message{}
	for _, m := range msgs {
		found[m.ID] = m
		if model.msgs[m.ID] == nil {
			t.Errorf("%s: recovered message %s was never enqueued", tag, m.ID)
		}
	}
	for id, pm := range model.msgs {
		m := found[id]
		if m == nil {
			switch {
			case !pm.enqOK && !pm.enqMay, pm.acked.removed:
			case slices_any(pm.maybe, func(st pcState) bool { return st.removed }):
			case !pm.enqOK && pm.enqMay:
			default:
				t.Errorf("%s: acknowledged message %s (states %v) is missing after the power cut\n%s", tag, id, pm.acked.states, s.debugFind(id))
			}
			pm.acked = pcState{removed: true}
			pm.enqOK, pm.enqMay, pm.maybe = true, false, nil
			continue
		}
		if !pm.enqOK && !pm.enqMay {
			t.Errorf("%s: message %s, whose Enqueue failed before the cut, was recovered", tag, id)
		}
		if pm.enqOK && pm.acked.removed && len(pm.maybe) == 0 {
			t.Errorf("%s: message %s, acknowledged as removed, came back", tag, id)
		}
		got := pcState{states: [2]queue.RecipientState{m.Deliveries[0].Recipients[0].State, m.Deliveries[0].Recipients[1].State}}
		ok := got == pm.acked && pm.enqOK
		if !pm.enqOK && got == (pcState{}) {
			ok = true
		}
		for _, st := range pm.maybe {
			ok = ok || got == st
		}
		if !ok {
			t.Errorf("%s: message %s recovered with states %v; acknowledged %v, in flight %v", tag, id, got.states, pm.acked.states, pm.maybe)
		}
		if m.Size != int64(len(pm.body)) {
			t.Errorf("%s: message %s Size %d, want %d", tag, id, m.Size, len(pm.body))
		}
		b, err := s.OpenBody(ctx, id)
		if err != nil {
			t.Errorf("%s: OpenBody(%s): %v", tag, id, err)
		} else {
			data, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
			b.Close()
			if err != nil || !bytes.Equal(data, pm.body) {
				t.Errorf("%s: body of %s differs after the power cut (%d bytes, want %d; err %v)", tag, id, len(data), len(pm.body), err)
			}
		}
		pm.acked = got
		pm.enqOK, pm.enqMay, pm.maybe = true, false, nil
	}
}

func slices_any[T any](s []T, f func(T) bool) bool {
	for _, v := range s {
		if f(v) {
			return true
		}
	}
	return false
}

// debugFind describes the records about id in the log, for failure reports.
func (s *Store) debugFind(id string) string {
	var out bytes.Buffer
	names, _ := s.fs.List()
	fmt.Fprintf(&out, "files: %v\n", names)
	for _, name := range names {
		n, ok := parseNum(name, ".seg", 32)
		if !ok {
			continue
		}
		f, err := s.fs.Open(name)
		if err != nil {
			continue
		}
		size, _ := f.Size()
		data := make([]byte, size)
		f.ReadAt(data, 0)
		off := len(segMagic)
		for off+frameHeader <= len(data) {
			l := frameLen(data[off:])
			if l < 0 || off+frameHeader+l > len(data) {
				fmt.Fprintf(&out, "  seg %d: bad frame at %d\n", n, off)
				break
			}
			rec, err := decodePayload(data[off+frameHeader : off+frameHeader+l])
			if err == nil {
				switch {
				case rec.kind == kindPut && rec.put.msg.ID == id:
					fmt.Fprintf(&out, "  seg %d off %d: put body kind %d seg %d off %d states %v %v\n", n, off, rec.put.body.kind, rec.put.body.seg, rec.put.body.off,
						rec.put.msg.Deliveries[0].Recipients[0].State, rec.put.msg.Deliveries[0].Recipients[1].State)
				case rec.kind == kindDel && rec.id == id:
					fmt.Fprintf(&out, "  seg %d off %d: del\n", n, off)
				}
			}
			off += frameHeader + l
		}
	}
	return out.String()
}
