package logstore

import (
	"errors"
	"fmt"
)

// writeReq asks the writer to append data (one or more framed records) to
// the log and make it durable. The records are written contiguously in one
// segment.
type writeReq struct {
	data []byte
	done chan writeRes
}

// writeRes tells where a request's data starts, or why it failed.
type writeRes struct {
	seg uint32
	off int64
	err error
}

// maxBatch caps the bytes gathered into one write.
const maxBatch = 16 << 20

// writer is the log's only writer: it gathers every pending request into
// one write and one fsync (group commit), rotating to a new segment when the
// active one is full.
func (s *Store) writer() {
	defer close(s.writerExit)
	var (
		batch []writeReq
		res   []writeRes
		buf   []byte
	)
	for {
		var first writeReq
		select {
		case first = <-s.reqs:
		case <-s.done:
			return
		}
		batch = append(batch[:0], first)
		size := len(first.data)
	gather:
		for size < maxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
				size += len(r.data)
			default:
				break gather
			}
		}
		res = res[:0]
		start := 0
		for start < len(batch) {
			// Take as many requests as fit the active segment (at least
			// one, after rotating when the segment is not empty).
			seg := s.active
			if seg.size > int64(len(segMagic)) && seg.size+int64(len(batch[start].data)) > s.cfg.SegmentSize {
				if err := s.rotate(); err != nil {
					for range batch[start:] {
						res = append(res, writeRes{err: err})
					}
					break
				}
				seg = s.active
			}
			end := start
			buf = buf[:0]
			for end < len(batch) && (end == start || seg.size+int64(len(buf)+len(batch[end].data)) <= s.cfg.SegmentSize) {
				res = append(res, writeRes{seg: seg.num, off: seg.size + int64(len(buf))})
				buf = append(buf, batch[end].data...)
				end++
			}
			if err := s.append(seg, buf, end-start); err != nil {
				for i := start; i < end; i++ {
					res[i] = writeRes{err: err}
				}
			}
			start = end
		}
		for i, r := range batch {
			r.done <- res[i]
		}
		if cap(buf) > maxBatch*2 {
			buf = nil
		}
		clear(batch)
		select {
		case s.compactCh <- struct{}{}:
		default:
		}
	}
}

// append writes buf (n requests) at the end of seg and syncs it; each
// request's submitter must call applied once it has updated the index. On failure it cuts the
// segment back to its previous size, so that no unacknowledged record can
// appear at recovery; if even that fails, the store stops writing.
func (s *Store) append(seg *segment, buf []byte, n int) error {
	if err := s.writeErr(); err != nil {
		return err
	}
	_, err := seg.f.WriteAt(buf, seg.size)
	if err == nil {
		if err = seg.f.Sync(); err != nil {
			// After a failed fsync the file's state is unknown (the
			// kernel may have dropped the dirty pages): stop writing.
			err = fmt.Errorf("logstore: fsync of segment %d: %w", seg.num, err)
			s.setFailed(err)
			return err
		}
		s.mu.Lock()
		seg.size += int64(len(buf))
		seg.unapplied += n
		s.mu.Unlock()
		return nil
	}
	err = fmt.Errorf("logstore: writing segment %d: %w", seg.num, err)
	if terr := seg.f.Truncate(seg.size); terr != nil {
		s.setFailed(errors.Join(err, terr))
	} else if serr := seg.f.Sync(); serr != nil {
		s.setFailed(errors.Join(err, serr))
	}
	return err
}

// rotate starts a new active segment: created, its header written and
// synced, and its name made durable before any record goes in.
func (s *Store) rotate() error {
	if err := s.writeErr(); err != nil {
		return err
	}
	num := s.active.num + 1
	seg, err := s.createSegment(num)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.segs[num] = seg
	s.order = append(s.order, num)
	s.active = seg
	s.mu.Unlock()
	return nil
}

// applied records that a submitter applied its record in seg to the index.
// s.mu is held.
func (s *Store) applied(seg uint32) {
	if sg := s.segs[seg]; sg != nil {
		sg.unapplied--
	}
}

// createSegment creates segment num with its header, durably.
func (s *Store) createSegment(num uint32) (*segment, error) {
	name := segName(num)
	f, err := s.fs.Create(name)
	if err != nil {
		return nil, fmt.Errorf("logstore: creating segment: %w", err)
	}
	fail := func(err error) (*segment, error) {
		f.Close()
		s.fs.Remove(name)
		return nil, fmt.Errorf("logstore: creating segment: %w", err)
	}
	if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := s.fs.SyncDir(); err != nil {
		return fail(err)
	}
	return &segment{num: num, f: f, size: int64(len(segMagic)), refs: 1}, nil
}

// submit hands data to the writer and waits until it is durable (or
// failed). It does not watch a context: once submitted, a record may reach
// the disk, so the caller must learn the outcome.
func (s *Store) submit(data []byte) writeRes {
	r := writeReq{data: data, done: make(chan writeRes, 1)}
	select {
	case s.reqs <- r:
	case <-s.done:
		return writeRes{err: ErrClosed}
	}
	select {
	case res := <-r.done:
		return res
	case <-s.done:
		// The writer may have taken the request before stopping; it
		// answers every request it took before it returns.
		select {
		case res := <-r.done:
			return res
		default:
		}
		<-s.writerExit
		select {
		case res := <-r.done:
			return res
		default:
			return writeRes{err: ErrClosed}
		}
	}
}
