package queuetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/queue"
)

// newMessage makes a message with one delivery per domain, two recipients
// each (a@domain with full DSN options, b@domain with none), and every other
// field set so that round trips are checked.
func newMessage(id string, prio queue.Priority, created time.Time, domains ...string) *queue.Message {
	auth := "sender@example.test"
	mtp := 3
	m := &queue.Message{
		ID:   id,
		From: "sender@example.test",
		Mail: smtp.MailOptions{
			Body:       smtp.Body8BitMIME,
			Size:       1234,
			UTF8:       true,
			Return:     smtp.DSNReturnHeaders,
			EnvelopeID: "env-" + id,
			Auth:       &auth,
		},
		Tenant:         "tenant-1",
		SourcePool:     "pool-a",
		Tags:           []string{"welcome", "t2"},
		Metadata:       map[string]string{"user": "42", "campaign": "c-" + id},
		Priority:       prio,
		Created:        created,
		NotBefore:      created,
		Expires:        created.Add(5 * 24 * time.Hour),
		IdempotencyKey: "",
	}
	for i, d := range domains {
		m.Deliveries = append(m.Deliveries, queue.Delivery{
			Index:       i,
			Domain:      d,
			NextAttempt: created,
			Recipients: []queue.Recipient{
				{
					Address: "a@" + d,
					Options: smtp.RcptOptions{
						Notify:                []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed},
						OriginalRecipientType: smtp.DSNAddressTypeRFC822,
						OriginalRecipient:     "A@" + d,
						DeliverBy:             &smtp.DeliverByOptions{Time: time.Hour, Mode: smtp.DeliverByReturn},
						MTPriority:            &mtp,
					},
				},
				{Address: "b@" + d},
			},
		})
	}
	return m
}

// patternReader yields n deterministic bytes (all 256 values, CR, LF and NUL
// included) without holding them in memory.
type patternReader struct {
	off, n int64
	err    error // returned instead of io.EOF at the end, if set
}

func patternByte(i int64) byte { return byte(i*131 + (i>>9)*7 + (i >> 17)) }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		if p.err != nil {
			return 0, p.err
		}
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		b[i] = patternByte(p.off + int64(i))
	}
	p.off += int64(len(b))
	return len(b), nil
}

// pattern returns the first n bytes patternReader yields.
func pattern(n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = patternByte(int64(i))
	}
	return b
}

// checkPattern reads body at every offset in 32 KiB chunks and compares it
// with want.
func checkPattern(body queue.Body, want []byte) error {
	n := int64(len(want))
	if body.Size() != n {
		return fmt.Errorf("body Size() = %d, want %d", body.Size(), n)
	}
	buf := make([]byte, 32<<10)
	for off := int64(0); off < n; off += int64(len(buf)) {
		k, err := body.ReadAt(buf, off)
		wantN := min(int64(len(buf)), n-off)
		if int64(k) != wantN {
			return fmt.Errorf("ReadAt(off %d) read %d bytes, want %d (err %v)", off, k, wantN, err)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("ReadAt(off %d): %v", off, err)
		}
		if !bytes.Equal(buf[:k], want[off:off+int64(k)]) {
			i := 0
			for buf[i] == want[off+int64(i)] {
				i++
			}
			return fmt.Errorf("body byte %d = %#x, want %#x", off+int64(i), buf[i], want[off+int64(i)])
		}
	}
	return nil
}

// diffMessage describes the differences between want and got, comparing
// times with Equal and treating nil and empty slices and maps alike.
func diffMessage(want, got *queue.Message) string {
	var d []string
	add := func(field string, w, g any) { d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w)) }
	if want == nil || got == nil {
		if want != got {
			return fmt.Sprintf("got %v, want %v", got, want)
		}
		return ""
	}
	if want.ID != got.ID {
		add("ID", want.ID, got.ID)
	}
	if want.From != got.From {
		add("From", want.From, got.From)
	}
	if !equalMail(want.Mail, got.Mail) {
		add("Mail", fmtMail(want.Mail), fmtMail(got.Mail))
	}
	if want.Tenant != got.Tenant || want.SourcePool != got.SourcePool {
		add("Tenant/SourcePool", want.Tenant+"/"+want.SourcePool, got.Tenant+"/"+got.SourcePool)
	}
	if !slices.Equal(want.Tags, got.Tags) {
		add("Tags", want.Tags, got.Tags)
	}
	if !maps.Equal(want.Metadata, got.Metadata) {
		add("Metadata", want.Metadata, got.Metadata)
	}
	if want.Priority != got.Priority {
		add("Priority", want.Priority, got.Priority)
	}
	for _, f := range []struct {
		name string
		w, g time.Time
	}{{"Created", want.Created, got.Created}, {"NotBefore", want.NotBefore, got.NotBefore}, {"Expires", want.Expires, got.Expires}} {
		if !f.w.Equal(f.g) {
			add(f.name, f.w, f.g)
		}
	}
	if want.Size != got.Size {
		add("Size", want.Size, got.Size)
	}
	if want.IdempotencyKey != got.IdempotencyKey {
		add("IdempotencyKey", want.IdempotencyKey, got.IdempotencyKey)
	}
	if want.IsDSN != got.IsDSN {
		add("IsDSN", want.IsDSN, got.IsDSN)
	}
	if len(want.Deliveries) != len(got.Deliveries) {
		add("len(Deliveries)", len(want.Deliveries), len(got.Deliveries))
	} else {
		for i := range want.Deliveries {
			if s := diffDelivery(&want.Deliveries[i], &got.Deliveries[i]); s != "" {
				d = append(d, fmt.Sprintf("Deliveries[%d]: %s", i, s))
			}
		}
	}
	return strings.Join(d, "; ")
}

func diffDelivery(want, got *queue.Delivery) string {
	var d []string
	add := func(field string, w, g any) { d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w)) }
	if want.Index != got.Index {
		add("Index", want.Index, got.Index)
	}
	if want.Domain != got.Domain {
		add("Domain", want.Domain, got.Domain)
	}
	if !want.NextAttempt.Equal(got.NextAttempt) {
		add("NextAttempt", want.NextAttempt, got.NextAttempt)
	}
	if want.Attempts != got.Attempts {
		add("Attempts", want.Attempts, got.Attempts)
	}
	if !want.LastAttempt.Equal(got.LastAttempt) {
		add("LastAttempt", want.LastAttempt, got.LastAttempt)
	}
	if want.Held != got.Held {
		add("Held", want.Held, got.Held)
	}
	if want.Warned != got.Warned {
		add("Warned", want.Warned, got.Warned)
	}
	if want.LeaseOwner != got.LeaseOwner {
		add("LeaseOwner", want.LeaseOwner, got.LeaseOwner)
	}
	if want.LeaseOwner != "" && !want.LeaseExpires.Equal(got.LeaseExpires) {
		add("LeaseExpires", want.LeaseExpires, got.LeaseExpires)
	}
	if len(want.Recipients) != len(got.Recipients) {
		add("len(Recipients)", len(want.Recipients), len(got.Recipients))
		return strings.Join(d, "; ")
	}
	for i := range want.Recipients {
		w, g := &want.Recipients[i], &got.Recipients[i]
		if w.Address != g.Address {
			add(fmt.Sprintf("Recipients[%d].Address", i), w.Address, g.Address)
		}
		if !equalRcptOptions(w.Options, g.Options) {
			add(fmt.Sprintf("Recipients[%d].Options", i), fmtRcpt(w.Options), fmtRcpt(g.Options))
		}
		if w.State != g.State {
			add(fmt.Sprintf("Recipients[%d].State", i), w.State, g.State)
		}
		if w.Attempts != g.Attempts {
			add(fmt.Sprintf("Recipients[%d].Attempts", i), w.Attempts, g.Attempts)
		}
		if !w.LastAttempt.Equal(g.LastAttempt) {
			add(fmt.Sprintf("Recipients[%d].LastAttempt", i), w.LastAttempt, g.LastAttempt)
		}
		if !equalReply(w.LastReply, g.LastReply) {
			add(fmt.Sprintf("Recipients[%d].LastReply", i), w.LastReply, g.LastReply)
		}
	}
	return strings.Join(d, "; ")
}

func equalReply(a, b *smtp.SMTPError) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Code == b.Code && a.EnhancedCode == b.EnhancedCode && a.Message == b.Message
}

func equalMail(a, b smtp.MailOptions) bool {
	if (a.Auth == nil) != (b.Auth == nil) || (a.Auth != nil && *a.Auth != *b.Auth) {
		return false
	}
	a.Auth, b.Auth = nil, nil
	return a == b
}

func fmtMail(o smtp.MailOptions) string {
	auth := "<nil>"
	if o.Auth != nil {
		auth = *o.Auth
	}
	return fmt.Sprintf("{Body:%s Size:%d RequireTLS:%v UTF8:%v Return:%s EnvelopeID:%s Auth:%s}",
		o.Body, o.Size, o.RequireTLS, o.UTF8, o.Return, o.EnvelopeID, auth)
}

func equalRcptOptions(a, b smtp.RcptOptions) bool {
	if !slices.Equal(a.Notify, b.Notify) || a.OriginalRecipientType != b.OriginalRecipientType ||
		a.OriginalRecipient != b.OriginalRecipient || !a.RequireRecipientValidSince.Equal(b.RequireRecipientValidSince) {
		return false
	}
	if (a.DeliverBy == nil) != (b.DeliverBy == nil) || (a.DeliverBy != nil && *a.DeliverBy != *b.DeliverBy) {
		return false
	}
	return (a.MTPriority == nil) == (b.MTPriority == nil) && (a.MTPriority == nil || *a.MTPriority == *b.MTPriority)
}

func fmtRcpt(o smtp.RcptOptions) string {
	s := fmt.Sprintf("{Notify:%v ORCPT:%s;%s", o.Notify, o.OriginalRecipientType, o.OriginalRecipient)
	if o.DeliverBy != nil {
		s += fmt.Sprintf(" By:%+v", *o.DeliverBy)
	}
	if o.MTPriority != nil {
		s += fmt.Sprintf(" MTPriority:%d", *o.MTPriority)
	}
	return s + "}"
}

// errReader fails after n bytes.
type errReader struct {
	n   int
	err error
}

func (r *errReader) Read(b []byte) (int, error) {
	if r.n <= 0 {
		return 0, r.err
	}
	k := min(len(b), r.n)
	for i := range k {
		b[i] = 'x'
	}
	r.n -= k
	return k, nil
}
