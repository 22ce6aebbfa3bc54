package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/deliver"
)

// Suppressions is what the queue needs from a suppression list:
// bounce.SuppressionList (bounce.MemorySuppressions,
// bounce.FileSuppressions) satisfies it. Lookup reports whether an address
// must not be mailed; the entry's Reason is shown in the recipient's reply.
//
// If the list also has Add (as bounce.SuppressionList does), the queue adds
// an entry (Source bounce) for every recipient that fails permanently with
// a classification saying the address itself is bad (BadAddress).
type Suppressions interface {
	Lookup(ctx context.Context, address string) (bounce.Entry, bool, error)
}

// suppressionAdder is the optional Add of a suppression list.
type suppressionAdder interface {
	Add(ctx context.Context, e bounce.Entry) error
}

// suppress marks suppressed recipients of msg and returns their addresses.
func (q *Queue) suppress(ctx context.Context, msg *Message, now time.Time) ([]string, error) {
	if q.cfg.Suppressions == nil {
		return nil, nil
	}
	var out []string
	for i := range msg.Deliveries {
		for j := range msg.Deliveries[i].Recipients {
			r := &msg.Deliveries[i].Recipients[j]
			entry, ok, err := q.cfg.Suppressions.Lookup(ctx, r.Address)
			if err != nil {
				return nil, fmt.Errorf("queue: suppression lookup for %q: %w", r.Address, err)
			}
			if !ok {
				continue
			}
			r.State = RecipientSuppressed
			r.LastReply = CloneReply(suppressedReply)
			if entry.Reason != "" {
				r.LastReply.Message = deliver.CleanText(suppressedReply.Message+": "+entry.Reason, 512)
			}
			r.LastAttempt = now
			out = append(out, r.Address)
		}
	}
	return out, nil
}

// learnBadAddress adds a permanently bad address to the suppression list,
// when the list accepts additions.
func (q *Queue) learnBadAddress(ctx context.Context, o *outcome, now time.Time) {
	add, ok := q.cfg.Suppressions.(suppressionAdder)
	if !ok || !o.class.BadAddress || o.state != RecipientFailed {
		return
	}
	e := bounce.Entry{
		Address:  o.rcpt.Address,
		Reason:   deliver.CleanText(formatReply(o.res.Reply), 512),
		Category: o.class.Category,
		Source:   bounce.SourceBounce,
		Created:  now,
	}
	if err := add.Add(ctx, e); err != nil {
		q.log.Error("queue: cannot add to the suppression list", "rcpt", o.rcpt.Address, "err", err)
	}
}

// formatReply writes a reply as "550 5.1.1 text".
func formatReply(r *smtp.SMTPError) string {
	c := r.EnhancedCode
	if c == (smtp.EnhancedCode{}) || c == smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %s", r.Code, r.Message)
	}
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, c[0], c[1], c[2], r.Message)
}
