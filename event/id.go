package event

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// IDSource makes event IDs: 26 characters of Crockford base32 (digits and
// upper-case letters without I, L, O, U) encoding 48 bits of milliseconds
// since the Unix epoch followed by 80 bits that are random for the first ID
// of a millisecond and incremented for the next ones (the ULID layout). IDs
// from one IDSource are unique and strictly increasing as strings, also
// when the clock stands still or steps back; IDs from different sources
// sort by time to the millisecond and are unique with overwhelming
// probability.
//
// The zero value is ready to use and safe for concurrent use. Use one
// IDSource per stream (a [Fanout] has its own).
type IDSource struct {
	mu   sync.Mutex
	ms   uint64
	hi   uint16 // top 16 of the 80 bits
	lo   uint64 // low 64 of the 80 bits
	init bool
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// New returns a new ID for an event at time t.
func (s *IDSource) New(t time.Time) string {
	ms := uint64(t.UnixMilli())
	if t.UnixMilli() < 0 {
		ms = 0
	}
	ms &= 1<<48 - 1
	s.mu.Lock()
	if !s.init || ms > s.ms {
		var b [10]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
		s.ms, s.hi, s.lo, s.init = ms, binary.BigEndian.Uint16(b[:2]), binary.BigEndian.Uint64(b[2:]), true
	} else {
		// Same millisecond or clock stepped back: keep the last time and
		// increment, so IDs keep increasing.
		s.lo++
		if s.lo == 0 {
			s.hi++
			if s.hi == 0 {
				s.ms++ // 80 bits exhausted within one millisecond: borrow the next
			}
		}
	}
	ms, hi, lo := s.ms, s.hi, s.lo
	s.mu.Unlock()
	return encodeID(ms, hi, lo)
}

// encodeID writes the 128-bit value ms(48) | hi(16) | lo(64) as 26 base32
// digits, most significant first (the first digit carries 3 bits).
func encodeID(ms uint64, hi uint16, lo uint64) string {
	// 128 bits as two halves.
	top := ms<<16 | uint64(hi)
	bot := lo
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[bot&31]
		bot = bot>>5 | (top&31)<<59
		top >>= 5
	}
	return string(out[:])
}
