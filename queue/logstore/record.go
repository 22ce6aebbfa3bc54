package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/queue"
)

// Record framing: every record in a segment is
//
//	length  uint32 LE  (of payload, 1..maxRecord)
//	crc     uint32 LE  (CRC-32C of payload)
//	payload [length]byte (kind byte, then the kind's fields)
//
// A segment starts with the 8-byte segMagic.
const (
	frameHeader = 8
	maxRecord   = 1 << 30
	segMagic    = "MTAQLOG1"
)

// Record kinds.
const (
	kindPut  = 1 // full message state plus its body (inline, file or reference)
	kindDel  = 2 // message removed (done or deleted)
	kindIdem = 3 // an idempotency record carried forward by compaction
)

// Body placements inside a put record.
const (
	bodyInline = 0 // the body bytes end the record
	bodyFile   = 1 // the body is in its own file, named by number
	bodyRef    = 2 // the body is inline in an earlier record (segment, offset)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errCorrupt = errors.New("logstore: corrupt record")

// frame appends the framed payload to dst. payload starts with room for the
// header: frame fills it in place.
func frame(rec []byte) []byte {
	p := rec[frameHeader:]
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(p)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(p, castagnoli))
	return rec
}

// checkFrame validates a header and its payload.
func checkFrame(hdr, payload []byte) bool {
	return binary.LittleEndian.Uint32(hdr[4:]) == crc32.Checksum(payload, castagnoli)
}

// frameLen returns the payload length of a header, or -1 when it is not
// plausible.
func frameLen(hdr []byte) int {
	n := binary.LittleEndian.Uint32(hdr[0:])
	if n == 0 || n > maxRecord {
		return -1
	}
	return int(n)
}

// bodyPlace says where a message body is.
type bodyPlace struct {
	kind uint8
	seg  uint32 // bodyInline/bodyRef: segment number
	off  int64  // bodyInline/bodyRef: offset of the first body byte; bodyFile: file number
	size int64
}

// putRecord is a decoded put record.
type putRecord struct {
	msg  *queue.Message
	body bodyPlace // for bodyInline, off is relative to the payload start
}

// encodePut appends a framed put record for m (whose Size is the body size)
// to dst. For an inline body, the body bytes are appended by the caller after
// the returned prefix: encodePut leaves the frame unfinished (finish with
// frame) and returns the payload offset where the body starts.
func encodePut(dst []byte, m *queue.Message, b bodyPlace) []byte {
	e := enc(dst)
	e = append(e, make([]byte, frameHeader)...)
	e = append(e, kindPut)
	e = e.message(m)
	e = append(e, b.kind)
	switch b.kind {
	case bodyFile:
		e = e.uvarint(uint64(b.off))
	case bodyRef:
		e = e.uvarint(uint64(b.seg)).uvarint(uint64(b.off))
	}
	e = e.uvarint(uint64(b.size))
	return e
}

func encodeDel(dst []byte, id string) []byte {
	e := enc(dst)
	e = append(e, make([]byte, frameHeader)...)
	e = append(e, kindDel)
	e = e.str(id)
	return frame(e)
}

func encodeIdem(dst []byte, k idemKey, r idemRec) []byte {
	e := enc(dst)
	e = append(e, make([]byte, frameHeader)...)
	e = append(e, kindIdem)
	e = e.str(k.tenant).str(k.key).str(r.id).varint(r.created)
	return frame(e)
}

// decoded is one decoded record payload.
type decoded struct {
	kind uint8
	put  putRecord
	id   string // kindDel
	idk  idemKey
	idr  idemRec
}

// decodePayload decodes a record payload. For an inline body it checks that
// the body bytes are present and reports their offset within the payload.
func decodePayload(p []byte) (decoded, error) {
	d := dec{b: p}
	var r decoded
	r.kind = d.byte()
	switch r.kind {
	case kindPut:
		r.put.msg = d.message()
		r.put.body.kind = d.byte()
		switch r.put.body.kind {
		case bodyInline:
		case bodyFile:
			r.put.body.off = int64(d.uvarint())
		case bodyRef:
			seg := d.uvarint()
			if seg > math.MaxUint32 {
				d.fail()
			}
			r.put.body.seg = uint32(seg)
			r.put.body.off = int64(d.uvarint())
		default:
			d.fail()
		}
		size := d.uvarint()
		if size > math.MaxInt64/2 || r.put.body.off < 0 {
			d.fail()
		}
		r.put.body.size = int64(size)
		if r.put.body.kind == bodyInline {
			if d.err == nil && uint64(len(d.b)) != size {
				d.fail()
			}
			r.put.body.off = int64(len(p) - len(d.b))
			d.b = nil
		}
		if d.err == nil {
			r.put.msg.Size = r.put.body.size
		}
	case kindDel:
		r.id = d.str()
	case kindIdem:
		r.idk.tenant = d.str()
		r.idk.key = d.str()
		r.idr.id = d.str()
		r.idr.created = d.varint()
	default:
		d.fail()
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return decoded{}, d.err
	}
	return r, nil
}

// enc is an append-only encoder.
type enc []byte

func (e enc) uvarint(v uint64) enc { return binary.AppendUvarint(e, v) }
func (e enc) varint(v int64) enc   { return binary.AppendVarint(e, v) }
func (e enc) str(s string) enc     { return append(e.uvarint(uint64(len(s))), s...) }
func (e enc) bool(b bool) enc {
	if b {
		return append(e, 1)
	}
	return append(e, 0)
}

// time encodes the zero time as a single 0 byte, anything else as 1, the
// Unix seconds and the nanoseconds.
func (e enc) time(t time.Time) enc {
	if t.IsZero() {
		return append(e, 0)
	}
	return append(e, 1).varint(t.Unix()).uvarint(uint64(t.Nanosecond()))
}

func (e enc) message(m *queue.Message) enc {
	e = e.str(m.ID).str(m.From)
	e = e.str(string(m.Mail.Body)).varint(m.Mail.Size).bool(m.Mail.RequireTLS).bool(m.Mail.UTF8).
		str(string(m.Mail.Return)).str(m.Mail.EnvelopeID)
	if m.Mail.Auth != nil {
		e = append(e, 1).str(*m.Mail.Auth)
	} else {
		e = append(e, 0)
	}
	e = e.str(m.Tenant).str(m.SourcePool)
	e = e.uvarint(uint64(len(m.Tags)))
	for _, t := range m.Tags {
		e = e.str(t)
	}
	e = e.uvarint(uint64(len(m.Metadata)))
	for _, k := range slices.Sorted(maps.Keys(m.Metadata)) {
		e = e.str(k).str(m.Metadata[k])
	}
	e = e.varint(int64(m.Priority)).time(m.Created).time(m.NotBefore).time(m.Expires).
		str(m.IdempotencyKey).bool(m.IsDSN)
	e = e.uvarint(uint64(len(m.Deliveries)))
	for i := range m.Deliveries {
		d := &m.Deliveries[i]
		e = e.str(d.Domain).time(d.NextAttempt).varint(int64(d.Attempts)).time(d.LastAttempt).
			bool(d.Held).bool(d.Warned)
		e = e.uvarint(uint64(len(d.Recipients)))
		for j := range d.Recipients {
			e = e.recipient(&d.Recipients[j])
		}
	}
	return e
}

func (e enc) recipient(r *queue.Recipient) enc {
	e = e.str(r.Address)
	o := &r.Options
	e = e.uvarint(uint64(len(o.Notify)))
	for _, n := range o.Notify {
		e = e.str(string(n))
	}
	e = e.str(string(o.OriginalRecipientType)).str(o.OriginalRecipient).time(o.RequireRecipientValidSince)
	if o.DeliverBy != nil {
		e = append(e, 1).varint(int64(o.DeliverBy.Time)).str(string(o.DeliverBy.Mode)).bool(o.DeliverBy.Trace)
	} else {
		e = append(e, 0)
	}
	if o.MTPriority != nil {
		e = append(e, 1).varint(int64(*o.MTPriority))
	} else {
		e = append(e, 0)
	}
	e = e.varint(int64(r.State)).varint(int64(r.Attempts)).time(r.LastAttempt)
	if r.LastReply != nil {
		x := r.LastReply
		e = append(e, 1).varint(int64(x.Code)).varint(int64(x.EnhancedCode[0])).
			varint(int64(x.EnhancedCode[1])).varint(int64(x.EnhancedCode[2])).str(x.Message)
	} else {
		e = append(e, 0)
	}
	return e
}

// dec is a decoder that records the first error and then returns zero
// values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *dec) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *dec) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

func (d *dec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int decodes a varint that must fit an int32 (counts, codes, states).
func (d *dec) int() int {
	v := d.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail()
		return 0
	}
	return int(v)
}

// count decodes a length that cannot exceed the bytes left (every element
// takes at least min bytes).
func (d *dec) count(min int) int {
	v := d.uvarint()
	if v > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *dec) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *dec) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
		sec := d.varint()
		nsec := d.uvarint()
		if nsec >= 1e9 {
			d.fail()
			return time.Time{}
		}
		t := time.Unix(sec, int64(nsec)).UTC()
		if t.IsZero() {
			// Only the zero flag may decode to the zero time.
			d.fail()
		}
		return t
	}
	d.fail()
	return time.Time{}
}

func (d *dec) message() *queue.Message {
	m := &queue.Message{}
	m.ID = d.str()
	m.From = d.str()
	m.Mail.Body = smtp.BodyType(d.str())
	m.Mail.Size = d.varint()
	m.Mail.RequireTLS = d.bool()
	m.Mail.UTF8 = d.bool()
	m.Mail.Return = smtp.DSNReturn(d.str())
	m.Mail.EnvelopeID = d.str()
	if d.bool() {
		a := d.str()
		m.Mail.Auth = &a
	}
	m.Tenant = d.str()
	m.SourcePool = d.str()
	if n := d.count(1); n > 0 {
		m.Tags = make([]string, n)
		for i := range m.Tags {
			m.Tags[i] = d.str()
		}
	}
	if n := d.count(2); n > 0 {
		m.Metadata = make(map[string]string, n)
		for range n {
			k := d.str()
			m.Metadata[k] = d.str()
		}
	}
	m.Priority = queue.Priority(d.int())
	m.Created = d.time()
	m.NotBefore = d.time()
	m.Expires = d.time()
	m.IdempotencyKey = d.str()
	m.IsDSN = d.bool()
	n := d.count(8)
	if n > 0 {
		m.Deliveries = make([]queue.Delivery, n)
	}
	for i := range m.Deliveries {
		dl := &m.Deliveries[i]
		dl.Index = i
		dl.Domain = d.str()
		dl.NextAttempt = d.time()
		dl.Attempts = d.int()
		dl.LastAttempt = d.time()
		dl.Held = d.bool()
		dl.Warned = d.bool()
		if k := d.count(10); k > 0 {
			dl.Recipients = make([]queue.Recipient, k)
			for j := range dl.Recipients {
				d.recipient(&dl.Recipients[j])
			}
		}
	}
	if d.err != nil {
		return nil
	}
	return m
}

func (d *dec) recipient(r *queue.Recipient) {
	r.Address = d.str()
	if n := d.count(1); n > 0 {
		r.Options.Notify = make([]smtp.DSNNotify, n)
		for i := range r.Options.Notify {
			r.Options.Notify[i] = smtp.DSNNotify(d.str())
		}
	}
	r.Options.OriginalRecipientType = smtp.DSNAddressType(d.str())
	r.Options.OriginalRecipient = d.str()
	r.Options.RequireRecipientValidSince = d.time()
	if d.bool() {
		r.Options.DeliverBy = &smtp.DeliverByOptions{
			Time: time.Duration(d.varint()),
			Mode: smtp.DeliverByMode(d.str()),
		}
		r.Options.DeliverBy.Trace = d.bool()
	}
	if d.bool() {
		p := d.int()
		r.Options.MTPriority = &p
	}
	r.State = queue.RecipientState(d.int())
	r.Attempts = d.int()
	r.LastAttempt = d.time()
	if d.bool() {
		x := &smtp.SMTPError{Code: d.int()}
		x.EnhancedCode = smtp.EnhancedCode{d.int(), d.int(), d.int()}
		x.Message = d.str()
		r.LastReply = x
	}
}

// errTooLarge is returned for a message whose encoded state does not fit a
// record.
var errTooLarge = fmt.Errorf("logstore: message state larger than %d bytes", maxRecord)
