package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mtakit/mta/queue"
)

// rcptRow is a recipient as stored in deliveries.recipients (jsonb array).
type rcptRow struct {
	Address     string           `json:"address"`
	Options     smtp.RcptOptions `json:"options"`
	State       int              `json:"state"`
	Attempts    int              `json:"attempts"`
	LastAttempt time.Time        `json:"last_attempt"`
	LastReply   *smtp.SMTPError  `json:"last_reply,omitempty"`
}

func encodeRecipients(rs []queue.Recipient) ([]byte, error) {
	rows := make([]rcptRow, len(rs))
	for i, r := range rs {
		rows[i] = rcptRow{Address: r.Address, Options: r.Options, State: int(r.State), Attempts: r.Attempts, LastAttempt: r.LastAttempt, LastReply: r.LastReply}
	}
	return json.Marshal(rows)
}

func decodeRecipients(b []byte) ([]queue.Recipient, error) {
	var rows []rcptRow
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, fmt.Errorf("pgstore: decoding recipients: %w", err)
	}
	rs := make([]queue.Recipient, len(rows))
	for i, r := range rows {
		rs[i] = queue.Recipient{Address: r.Address, Options: r.Options, State: queue.RecipientState(r.State), Attempts: r.Attempts, LastAttempt: r.LastAttempt, LastReply: r.LastReply}
	}
	return rs, nil
}

// ceilMicro rounds t up to PostgreSQL's microsecond precision, so that a
// stored lease expiry is never earlier than the one asked for.
func ceilMicro(t time.Time) time.Time {
	u := t.Truncate(time.Microsecond)
	if u.Before(t) {
		u = u.Add(time.Microsecond)
	}
	return u
}

// err turns a database error into the method's result: ctx.Err() when ctx
// ended, the error wrapped with the operation otherwise.
func (s *Store) err(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, queue.ErrNotFound) || errors.Is(err, queue.ErrLeaseLost) || errors.Is(err, queue.ErrBadUpdate) ||
		errors.Is(err, queue.ErrExists) || errors.Is(err, queue.ErrDuplicate) {
		return err
	}
	if s.closed.Load() {
		return fmt.Errorf("pgstore: %s: %w", op, ErrClosed)
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}

func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

const msgCols = `m.id, m.sender, m.mail, m.tenant, m.source_pool, m.tags, m.metadata, m.priority,
	m.created, m.not_before, m.expires, m.size, m.idempotency_key, m.is_dsn`

const delCols = `d.idx, d.domain, d.recipients, d.next_attempt, d.attempts, d.last_attempt,
	d.held, d.warned, d.lease_owner, d.lease_expires`

func scanTargets(m *queue.Message, mail *[]byte, meta *[]byte, d *queue.Delivery, rcpts *[]byte) []any {
	t := []any{&m.ID, &m.From, mail, &m.Tenant, &m.SourcePool, &m.Tags, meta, &m.Priority,
		&m.Created, &m.NotBefore, &m.Expires, &m.Size, &m.IdempotencyKey, &m.IsDSN}
	if d != nil {
		t = append(t, &d.Index, &d.Domain, rcpts, &d.NextAttempt, &d.Attempts, &d.LastAttempt,
			&d.Held, &d.Warned, &d.LeaseOwner, &d.LeaseExpires)
	}
	return t
}

func finishMessage(m *queue.Message, mail, meta []byte) error {
	if err := json.Unmarshal(mail, &m.Mail); err != nil {
		return fmt.Errorf("pgstore: decoding mail options of %s: %w", m.ID, err)
	}
	m.Metadata = nil
	if err := json.Unmarshal(meta, &m.Metadata); err != nil {
		return fmt.Errorf("pgstore: decoding metadata of %s: %w", m.ID, err)
	}
	if len(m.Tags) == 0 {
		m.Tags = nil
	}
	return nil
}

// scanMessages reads rows of msgCols+delCols ordered by message ID and
// delivery index into messages.
func scanMessages(rows pgx.Rows) ([]*queue.Message, error) {
	defer rows.Close()
	var out []*queue.Message
	for rows.Next() {
		var (
			m               queue.Message
			d               queue.Delivery
			mail, meta, rcp []byte
		)
		if err := rows.Scan(scanTargets(&m, &mail, &meta, &d, &rcp)...); err != nil {
			return nil, err
		}
		rs, err := decodeRecipients(rcp)
		if err != nil {
			return nil, err
		}
		d.Recipients = rs
		if n := len(out); n > 0 && out[n-1].ID == m.ID {
			out[n-1].Deliveries = append(out[n-1].Deliveries, d)
			continue
		}
		if err := finishMessage(&m, mail, meta); err != nil {
			return nil, err
		}
		m.Deliveries = []queue.Delivery{d}
		out = append(out, &m)
	}
	return out, rows.Err()
}

// Get implements queue.Store.
func (s *Store) Get(ctx context.Context, id string) (*queue.Message, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+msgCols+`, `+delCols+`
		FROM messages m JOIN deliveries d ON d.message_id = m.id
		WHERE m.id = $1 ORDER BY d.idx`, id)
	if err != nil {
		return nil, s.err(ctx, "get", err)
	}
	msgs, err := scanMessages(rows)
	if err != nil {
		return nil, s.err(ctx, "get", err)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	return msgs[0], nil
}

// stateCond returns the SQL condition on deliveries d for a delivery state
// at the time in parameter now (see queue.Delivery.State).
func stateCond(st queue.DeliveryState, now string) string {
	active := `(d.lease_owner <> '' AND d.lease_expires > ` + now + `)`
	switch st {
	case queue.StateDone:
		return `d.done`
	case queue.StateHeld:
		return `(NOT d.done AND d.held)`
	case queue.StateActive:
		return `(NOT d.done AND NOT d.held AND ` + active + `)`
	case queue.StateDeferred:
		return `(NOT d.done AND NOT d.held AND NOT ` + active + ` AND d.attempts > 0)`
	case queue.StateQueued:
		return `(NOT d.done AND NOT d.held AND NOT ` + active + ` AND d.attempts = 0)`
	}
	return `false`
}

// List implements queue.Store. It reads the matching messages and their
// deliveries in one statement (one snapshot).
func (s *Store) List(ctx context.Context, f queue.Filter) ([]*queue.Message, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	var (
		conds []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Tenant != "" {
		conds = append(conds, `m.tenant = `+arg(f.Tenant))
	}
	if !f.CreatedBefore.IsZero() {
		conds = append(conds, `m.created < `+arg(f.CreatedBefore))
	}
	if !f.CreatedAfter.IsZero() {
		conds = append(conds, `m.created > `+arg(f.CreatedAfter))
	}
	if f.After != "" {
		conds = append(conds, `m.id > `+arg(f.After))
	}
	if f.Domain != "" || f.State != queue.StateAny {
		var dc []string
		if f.Domain != "" {
			dc = append(dc, `d.domain = `+arg(strings.ToLower(f.Domain)))
		}
		switch f.State {
		case queue.StateAny:
		case queue.StateDone, queue.StateHeld:
			dc = append(dc, stateCond(f.State, ""))
		default:
			dc = append(dc, stateCond(f.State, arg(f.Now)))
		}
		conds = append(conds, `EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND `+strings.Join(dc, " AND ")+`)`)
	}
	where := ""
	if len(conds) > 0 {
		where = "WHERE " + strings.Join(conds, " AND ")
	}
	limit := ""
	if f.Limit > 0 {
		limit = "LIMIT " + arg(f.Limit)
	}
	q := `SELECT ` + msgCols + `, ` + delCols + `
		FROM messages m JOIN deliveries d ON d.message_id = m.id
		WHERE m.id IN (SELECT m.id FROM messages m ` + where + ` ORDER BY m.id ` + limit + `)
		ORDER BY m.id, d.idx`
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.err(ctx, "list", err)
	}
	msgs, err := scanMessages(rows)
	if err != nil {
		return nil, s.err(ctx, "list", err)
	}
	return msgs, nil
}

// Claim implements queue.Store. One statement picks the first ready
// delivery in claim order with FOR UPDATE SKIP LOCKED (so concurrent
// claimers on any node never wait for each other nor take the same row)
// and records the lease.
func (s *Store) Claim(ctx context.Context, req queue.ClaimRequest) (*queue.Claim, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	skip := req.Skip
	if skip == nil {
		skip = []string{}
	}
	var maxp *int32
	if req.MaxPriority != nil {
		p := int32(*req.MaxPriority)
		maxp = &p
	}
	var (
		m          queue.Message
		d          queue.Delivery
		mail, meta []byte
		rcp        []byte
	)
	err = s.pool.QueryRow(ctx, `WITH c AS (
		UPDATE deliveries d SET lease_owner = $4, lease_token = $5, lease_expires = $6
		WHERE (d.message_id, d.idx) = (
			SELECT message_id, idx FROM deliveries
			WHERE NOT done AND NOT held AND next_attempt <= $1
				AND (lease_token IS NULL OR lease_expires <= $1)
				AND NOT (domain = ANY($2))
				AND ($3::integer IS NULL OR priority <= $3)
			ORDER BY priority DESC, next_attempt, message_id, idx
			LIMIT 1
			FOR UPDATE SKIP LOCKED)
		RETURNING d.*)
		SELECT `+msgCols+`, `+delCols+` FROM c d JOIN messages m ON m.id = d.message_id`,
		req.Now, skip, maxp, req.Owner, token, ceilMicro(req.Until)).Scan(scanTargets(&m, &mail, &meta, &d, &rcp)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, queue.ErrNoneReady
	}
	if err != nil {
		return nil, s.err(ctx, "claim", err)
	}
	if err := finishMessage(&m, mail, meta); err != nil {
		return nil, err
	}
	if d.Recipients, err = decodeRecipients(rcp); err != nil {
		return nil, err
	}
	return &queue.Claim{
		Message:  &m,
		Delivery: &d,
		Lease:    queue.Lease{MessageID: m.ID, Delivery: d.Index, Owner: req.Owner, Token: token, Expires: req.Until},
	}, nil
}

// lostOrGone returns ErrNotFound when message id does not exist, else
// ErrLeaseLost.
func (s *Store) lostOrGone(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, l queue.Lease) error {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1)`, l.MessageID).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, l.MessageID)
	}
	return fmt.Errorf("%w: %s delivery %d", queue.ErrLeaseLost, l.MessageID, l.Delivery)
}

// Complete implements queue.Store. In one transaction it locks the message
// row (serialising the completions of one message's deliveries, so that
// exactly one of them sees the message done), checks the lease, applies the
// results, reschedules or finishes the delivery and removes the message and
// its body when every delivery is done.
func (s *Store) Complete(ctx context.Context, c *queue.Completion) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	l := c.Lease
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			msgExists bool
			token     *string
			rcp       []byte
		)
		b := &pgx.Batch{}
		b.Queue(`SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1 FOR UPDATE)`, l.MessageID).QueryRow(func(r pgx.Row) error {
			return r.Scan(&msgExists)
		})
		found := false
		b.Queue(`SELECT lease_token, recipients FROM deliveries WHERE message_id = $1 AND idx = $2 FOR UPDATE`, l.MessageID, l.Delivery).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				found = true
				if err := rows.Scan(&token, &rcp); err != nil {
					return err
				}
			}
			return rows.Err()
		})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		switch {
		case !msgExists:
			return fmt.Errorf("%w: %s", queue.ErrNotFound, l.MessageID)
		case !found || token == nil || l.Token == "" || *token != l.Token:
			return fmt.Errorf("%w: %s delivery %d", queue.ErrLeaseLost, l.MessageID, l.Delivery)
		}
		rs, err := decodeRecipients(rcp)
		if err != nil {
			return err
		}
		if err := queue.ApplyResults(rs, c.Results); err != nil {
			return err
		}
		done := !slices.ContainsFunc(rs, func(r queue.Recipient) bool { return !r.State.Final() })
		enc, err := encodeRecipients(rs)
		if err != nil {
			return err
		}
		b = &pgx.Batch{}
		b.Queue(`UPDATE deliveries SET recipients = $3, attempts = attempts + 1, last_attempt = $4,
				warned = warned OR $5, done = $6,
				next_attempt = CASE WHEN $6 THEN next_attempt ELSE $7 END,
				lease_owner = '', lease_token = NULL, lease_expires = '0001-01-01 00:00:00Z'
			WHERE message_id = $1 AND idx = $2`,
			l.MessageID, l.Delivery, enc, c.Now, c.Warned, done, c.NextAttempt)
		if done {
			b.Queue(`DELETE FROM messages WHERE id = $1
				AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = $1 AND NOT done)`, l.MessageID)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	return s.err(ctx, "complete", err)
}

// Release implements queue.Store.
func (s *Store) Release(ctx context.Context, lease queue.Lease, next time.Time) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, `WITH u AS (
			UPDATE deliveries SET next_attempt = $4, lease_owner = '', lease_token = NULL,
				lease_expires = '0001-01-01 00:00:00Z'
			WHERE message_id = $1 AND idx = $2 AND lease_token = $3
			RETURNING 1)
		SELECT pg_notify($5, '') FROM u`, lease.MessageID, lease.Delivery, lease.Token, next, s.channel)
	if err != nil {
		return s.err(ctx, "release", err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s.err(ctx, "release", err)
	}
	if n == 0 {
		return s.err(ctx, "release", s.lostOrGone(ctx, s.pool, lease))
	}
	s.signal()
	return nil
}

// Renew extends a live lease to until, for attempts that run longer than
// the lease given at claim time, and returns the lease with its new
// Expires (the token is unchanged). It fails like Release with
// ErrLeaseLost (the lease was consumed, or expired and the delivery was
// claimed again) or ErrNotFound, changing nothing. A lease that expired but
// whose delivery nobody claimed since can still be renewed.
func (s *Store) Renew(ctx context.Context, lease queue.Lease, until time.Time) (queue.Lease, error) {
	if err := s.begin(ctx); err != nil {
		return lease, err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE deliveries SET lease_expires = $4
		WHERE message_id = $1 AND idx = $2 AND lease_token = $3`, lease.MessageID, lease.Delivery, lease.Token, ceilMicro(until))
	if err != nil {
		return lease, s.err(ctx, "renew", err)
	}
	if tag.RowsAffected() == 0 {
		return lease, s.err(ctx, "renew", s.lostOrGone(ctx, s.pool, lease))
	}
	lease.Expires = until
	return lease, nil
}

// update runs set on every unfinished delivery of message id, with the
// message row locked, notifying listeners when notify is set. ErrNotFound
// when the message is not there.
func (s *Store) update(ctx context.Context, op, id, set string, arg any, notify bool) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	note := `NULL`
	if notify {
		note = `CASE WHEN EXISTS (SELECT 1 FROM m) THEN pg_notify($3, '') END`
	}
	args := []any{id, arg}
	if notify {
		args = append(args, s.channel)
	}
	var found bool
	err := s.pool.QueryRow(ctx, `WITH m AS (SELECT id FROM messages WHERE id = $1 FOR UPDATE),
		u AS (UPDATE deliveries SET `+set+` WHERE message_id IN (SELECT id FROM m) AND NOT done RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM m), `+note+`::text`, args...).Scan(&found, nil)
	if err != nil {
		return s.err(ctx, op, err)
	}
	if !found {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	if notify {
		s.signal()
	}
	return nil
}

// SetHeld implements queue.Store.
func (s *Store) SetHeld(ctx context.Context, id string, held bool) error {
	return s.update(ctx, "set held", id, `held = $2`, held, !held)
}

// Reschedule implements queue.Store.
func (s *Store) Reschedule(ctx context.Context, id string, at time.Time) error {
	return s.update(ctx, "reschedule", id, `next_attempt = $2`, at, true)
}

// Delete implements queue.Store: the message row goes, and its deliveries
// and body chunks with it (ON DELETE CASCADE), in one statement.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM messages WHERE id = $1`, id)
	if err != nil {
		return s.err(ctx, "delete", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	return nil
}

// Enqueue implements queue.Store.
func (s *Store) Enqueue(ctx context.Context, msg *queue.Message, body io.Reader) error {
	_, err := s.enqueue(ctx, msg, body, nil)
	return err
}

// EnqueueIdempotent implements queue.IdempotentStore. The record is a row
// of the idempotency table keyed by (tenant, key); concurrent enqueues of
// one key serialise on that primary key, and the losers get the winner's
// ID. Records older than since are forgotten from time to time.
func (s *Store) EnqueueIdempotent(ctx context.Context, msg *queue.Message, body io.Reader, since time.Time) (string, error) {
	if msg != nil && msg.IdempotencyKey == "" {
		return s.enqueue(ctx, msg, body, nil)
	}
	id, err := s.enqueue(ctx, msg, body, &since)
	if err == nil && s.idemCount.Add(1)%256 == 0 {
		// Forget old records, a bounded batch at a time.
		_, gcErr := s.pool.Exec(ctx, `DELETE FROM idempotency WHERE ctid = ANY (ARRAY (
			SELECT ctid FROM idempotency WHERE created < $1 LIMIT 1000))`, since)
		if gcErr != nil && ctx.Err() == nil {
			s.log.Warn("pgstore: forgetting old idempotency records", "err", gcErr)
		}
	}
	return id, err
}

func (s *Store) enqueue(ctx context.Context, msg *queue.Message, body io.Reader, since *time.Time) (string, error) {
	if err := s.begin(ctx); err != nil {
		return "", err
	}
	if err := queue.CheckMessage(msg); err != nil {
		return "", err
	}
	mail, err := json.Marshal(msg.Mail)
	if err != nil {
		return "", fmt.Errorf("pgstore: encoding mail options: %w", err)
	}
	meta, err := json.Marshal(msg.Metadata)
	if err != nil {
		return "", fmt.Errorf("pgstore: encoding metadata: %w", err)
	}
	tags := msg.Tags
	if tags == nil {
		tags = []string{}
	}
	dels := make([][]byte, len(msg.Deliveries))
	for i := range msg.Deliveries {
		if dels[i], err = encodeRecipients(msg.Deliveries[i].Recipients); err != nil {
			return "", fmt.Errorf("pgstore: encoding recipients: %w", err)
		}
	}
	var dupID string
	bw := &bodyWriter{ctx: ctx, r: body, id: msg.ID, buf: make([]byte, s.chunkSize)}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if since != nil {
			err := tx.QueryRow(ctx, `INSERT INTO idempotency (tenant, key, message_id, created) VALUES ($1, $2, $3, $4)
				ON CONFLICT (tenant, key) DO UPDATE SET message_id = excluded.message_id, created = excluded.created
				WHERE idempotency.created < $5
				RETURNING message_id`, msg.Tenant, msg.IdempotencyKey, msg.ID, msg.Created, *since).Scan(new(string))
			if errors.Is(err, pgx.ErrNoRows) {
				if err := tx.QueryRow(ctx, `SELECT message_id FROM idempotency WHERE tenant = $1 AND key = $2`,
					msg.Tenant, msg.IdempotencyKey).Scan(&dupID); err != nil {
					return err
				}
				return queue.ErrDuplicate
			}
			if err != nil {
				return err
			}
		}
		// Read the first chunk: a body that fits in it goes in the same
		// round trip as the message.
		first, err := bw.next()
		if err != nil {
			return err
		}
		b := &pgx.Batch{}
		inserted := int64(-1)
		b.Queue(`INSERT INTO messages (id, sender, mail, tenant, source_pool, tags, metadata, priority,
				created, not_before, expires, size, chunk_size, idempotency_key, is_dsn)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $14)
			ON CONFLICT (id) DO NOTHING`,
			msg.ID, msg.From, mail, msg.Tenant, msg.SourcePool, tags, meta, int(msg.Priority),
			msg.Created, msg.NotBefore, msg.Expires, s.chunkSize, msg.IdempotencyKey, msg.IsDSN).Exec(func(ct pgconn.CommandTag) error {
			inserted = ct.RowsAffected()
			return nil
		})
		for i := range msg.Deliveries {
			d := &msg.Deliveries[i]
			b.Queue(`INSERT INTO deliveries (message_id, idx, priority, domain, recipients, next_attempt, attempts,
					last_attempt, held, warned, done, lease_owner, lease_token, lease_expires)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '', NULL, '0001-01-01 00:00:00Z')`,
				msg.ID, i, int(msg.Priority), d.Domain, dels[i], d.NextAttempt, d.Attempts, d.LastAttempt,
				d.Held, d.Warned, d.Done())
		}
		if first != nil {
			b.Queue(`INSERT INTO bodies (message_id, seq, data) VALUES ($1, 0, $2)`, msg.ID, first)
		}
		err = tx.SendBatch(ctx, b).Close()
		if inserted == 0 { // the deliveries then failed on their primary key
			return fmt.Errorf("%w: %s", queue.ErrExists, msg.ID)
		}
		if err != nil {
			return err
		}
		if !bw.eof {
			// The rest of the body, streamed with COPY chunk by chunk.
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"bodies"}, []string{"message_id", "seq", "data"}, bw); err != nil {
				if bw.err != nil {
					return bw.err
				}
				return err
			}
			if bw.err != nil {
				return bw.err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE messages SET size = $2 WHERE id = $1`, msg.ID, bw.size)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, '')`, s.channel)
		return err
	})
	if errors.Is(err, queue.ErrDuplicate) {
		return dupID, queue.ErrDuplicate
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if bw.err != nil {
			return "", bw.err
		}
		return "", s.err(ctx, "enqueue", err)
	}
	s.signal()
	return msg.ID, nil
}
