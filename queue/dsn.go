package queue

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
)

// sendDSN enqueues one RFC 3464 DSN to msg.From reporting every outcome of
// this attempt that has a DSN action, and returns its ID ("" when none is
// due). The DSN has the null sender, so no DSN is ever sent about it
// (RFC 3461 §6.2, RFC 5321 §4.5.5). The caller checked that msg.From is not
// null and msg is not itself a DSN.
func (q *Queue) sendDSN(ctx context.Context, msg *Message, body deliver.Body, outs []outcome, now time.Time) (string, error) {
	var rcpts []bounce.DSNRecipient
	failed := false
	for _, o := range outs {
		if o.action == "" {
			continue
		}
		r := bounce.DSNRecipient{
			FinalRecipient: o.rcpt.Address,
			Action:         o.action,
			Status:         o.status,
			RemoteMTA:      o.res.Route.Host,
			LastAttempt:    o.res.Attempted,
		}
		if !o.res.Local {
			r.Diagnostic = o.res.Reply
		}
		if o.rcpt.Options.OriginalRecipient != "" {
			typ := string(o.rcpt.Options.OriginalRecipientType)
			if typ == "" {
				typ = "rfc822"
			}
			r.OriginalRecipient = strings.ToLower(typ) + ";" + o.rcpt.Options.OriginalRecipient
		}
		if o.action == bounce.ActionDelayed {
			r.WillRetryUntil = msg.Expires
		}
		if o.action == bounce.ActionFailed {
			failed = true
		}
		rcpts = append(rcpts, r)
	}
	if len(rcpts) == 0 {
		return "", nil
	}
	id, err := q.NewID()
	if err != nil {
		return "", err
	}
	ret := smtp.DSNReturnHeaders
	if failed && msg.Mail.Return == smtp.DSNReturnFull {
		ret = smtp.DSNReturnFull // RET applies to failure reports (RFC 3461 §4.3)
	}
	report := &bounce.DSN{
		ReportingMTA:     q.cfg.Hostname,
		To:               msg.From,
		EnvelopeID:       msg.Mail.EnvelopeID,
		ArrivalDate:      msg.Created,
		Date:             now,
		MessageID:        id + "@" + q.cfg.Hostname,
		Recipients:       rcpts,
		Return:           ret,
		Original:         deliver.Reader(body),
		MaxOriginalBytes: q.cfg.MaxDSNOriginal,
	}
	dsn := &Message{
		ID:         id,
		From:       "",
		Mail:       smtp.MailOptions{UTF8: msg.Mail.UTF8, Body: smtp.Body8BitMIME},
		Tenant:     msg.Tenant,
		SourcePool: msg.SourcePool,
		Metadata:   map[string]string{"dsn-for": msg.ID},
		Priority:   PriorityTransactional,
		Created:    now,
		Expires:    now.Add(q.cfg.Lifetime),
		IsDSN:      true,
	}
	domain, err := checkAddress(msg.From, true)
	if err != nil {
		return "", fmt.Errorf("queue: DSN recipient %q: %w", msg.From, err)
	}
	dsn.Deliveries = []Delivery{{Domain: domain, NextAttempt: now, Recipients: []Recipient{{
		Address: msg.From,
		Options: smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyNever}},
	}}}}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(bounce.NewDSN(pw, report)) }()
	ungate := q.gate(id)
	defer ungate()
	err = q.store.Enqueue(ctx, dsn, pr)
	pr.CloseWithError(io.ErrClosedPipe) // unblock the writer if the store stopped early
	if err != nil {
		return "", err
	}
	ev := q.msgEvent(event.Queued, dsn, now)
	ev.DSN = id
	q.emit(ev)
	q.poke()
	return id, nil
}
