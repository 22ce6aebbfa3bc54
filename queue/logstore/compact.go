package logstore

import (
	"fmt"
	"time"

	"github.com/mtakit/mta/queue"
)

// compactBatch caps the messages moved forward by one compaction step.
const compactBatch = 1024

// compactor removes segments whose data is no longer needed, oldest first.
// It runs after every group commit.
func (s *Store) compactor() {
	defer s.wg.Done()
	for {
		select {
		case <-s.compactCh:
		case <-s.done:
			return
		}
		for range 64 {
			did, err := s.compactOnce()
			if err != nil {
				s.log.Warn("logstore: compaction", "err", err)
				break
			}
			if !did {
				break
			}
			select {
			case <-s.done:
				return
			default:
			}
		}
	}
}

// compactOnce does one step on the oldest segment: remove it when nothing
// in it is needed; otherwise, when it is mostly garbage or the log is more
// than twice its live data, copy its live messages (state and inline body)
// and idempotency records forward to the active segment. Only the oldest
// segment is ever removed, so a removal record (which lives in a later
// segment) never disappears before the records it cancels.
func (s *Store) compactOnce() (bool, error) {
	s.mu.Lock()
	if s.closed || s.failed != nil || len(s.order) < 2 {
		s.mu.Unlock()
		return false, nil
	}
	head := s.segs[s.order[0]]
	if head.unapplied > 0 {
		s.mu.Unlock()
		return false, nil
	}
	if head.live == 0 && head.idems == 0 {
		s.order = s.order[1:]
		delete(s.segs, head.num)
		head.removed = true
		s.unrefLocked(head)
		s.mu.Unlock()
		if err := s.fs.Remove(segName(head.num)); err != nil {
			return false, fmt.Errorf("removing segment %d: %w", head.num, err)
		}
		if err := s.fs.SyncDir(); err != nil {
			return false, fmt.Errorf("removing segment %d: %w", head.num, err)
		}
		s.log.Debug("logstore: removed segment", "segment", head.num)
		return true, nil
	}
	var total, live int64
	for _, sg := range s.segs {
		total += sg.size
		live += sg.live
	}
	if head.live*2 > head.size && total <= 2*live+s.cfg.SegmentSize {
		s.mu.Unlock()
		return false, nil
	}
	type move struct {
		m  *msgEnt
		sn snap
	}
	var moves []move
	for _, m := range s.msgs {
		if m.pending || m.busy != nil {
			continue
		}
		if m.recSeg != head.num && (m.body.kind == bodyFile || m.body.seg != head.num) {
			continue
		}
		m.busy = make(chan struct{}) // blocks mutations, not claims
		moves = append(moves, move{m: m, sn: s.snapshot(m)})
		if len(moves) == compactBatch {
			break
		}
	}
	type idemMove struct {
		k idemKey
		r *idemRec
	}
	var idems []idemMove
	horizon := s.newest - int64(s.cfg.IdempotencyRetention)
	for k, r := range s.idem {
		if r.pending != nil || r.seg != head.num {
			continue
		}
		if m := s.msgs[r.id]; m != nil && m.recSeg == head.num {
			continue // carried forward by the message's own record
		}
		if r.created < horizon {
			delete(s.idem, k)
			head.idems--
			continue
		}
		idems = append(idems, idemMove{k, r})
	}
	var bodySeg *segment
	if len(moves) > 0 {
		bodySeg = head
		head.refs++
	}
	again := head.idems == 0 && head.live == 0
	s.mu.Unlock()
	if len(moves) == 0 && len(idems) == 0 {
		return again, nil
	}

	// Build the records outside the lock.
	var data []byte
	type placed struct {
		msg  *queue.Message
		off  int
		n    int
		body bodyPlace
	}
	out := make([]placed, len(moves))
	var err error
	for i, mv := range moves {
		if err != nil {
			s.unref(mv.sn.seg)
			continue
		}
		msg, rerr := s.read(mv.sn)
		if rerr != nil {
			err = rerr
			continue
		}
		m := mv.m
		start := len(data)
		b := m.body
		if b.kind != bodyFile && b.seg == head.num {
			body := make([]byte, b.size)
			if _, rerr := bodySeg.f.ReadAt(body, b.off); rerr != nil {
				err = fmt.Errorf("reading a body to move: %w", rerr)
				continue
			}
			for j := range msg.Deliveries {
				msg.Deliveries[j].LeaseOwner, msg.Deliveries[j].LeaseExpires = "", time.Time{}
			}
			data = encodePut(data, msg, bodyPlace{kind: bodyInline, size: b.size})
			nb := bodyPlace{kind: bodyInline, off: int64(len(data) - start), size: b.size}
			data = append(data, body...)
			frame(data[start:])
			out[i] = placed{msg: msg, off: start, n: len(data) - start, body: nb}
		} else {
			for j := range msg.Deliveries {
				msg.Deliveries[j].LeaseOwner, msg.Deliveries[j].LeaseExpires = "", time.Time{}
			}
			data = append(data, putFor(m, msg)...)
			out[i] = placed{msg: msg, off: start, n: len(data) - start, body: m.body}
		}
	}
	for _, im := range idems {
		data = encodeIdem(data, im.k, *im.r)
	}
	if bodySeg != nil {
		s.unref(bodySeg)
	}
	var res writeRes
	if err == nil {
		res = s.submit(data)
		err = res.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.applied(res.seg)
	}
	for i, mv := range moves {
		m := mv.m
		if err == nil {
			p := out[i]
			msg := p.msg
			body := p.body
			if body.kind == bodyInline {
				body.seg = res.seg
				body.off += res.off + int64(p.off)
			}
			s.account(m, -1)
			s.setState(m, msg, res.seg, res.off+int64(p.off), p.n, body)
			s.account(m, +1)
			if msg.IdempotencyKey != "" {
				k := idemKey{msg.Tenant, msg.IdempotencyKey}
				if r := s.idem[k]; r != nil && r.pending == nil && r.id == m.id {
					s.setIdem(k, idemRec{id: r.id, created: r.created, seg: res.seg})
				}
			}
		}
		s.unbusy(m)
	}
	if err != nil {
		return false, err
	}
	for _, im := range idems {
		if s.idem[im.k] == im.r {
			s.setIdem(im.k, idemRec{id: im.r.id, created: im.r.created, seg: res.seg})
		}
	}
	return true, nil
}
