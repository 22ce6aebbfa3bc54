package queue

import (
	"context"

	"github.com/mtakit/mta/event"
)

// Get returns a copy of the message with its deliveries and every
// recipient's state, or an error wrapping ErrNotFound (also for a message
// that has finished: finished messages are removed).
func (q *Queue) Get(ctx context.Context, id string) (*Message, error) {
	return q.store.Get(ctx, id)
}

// List returns the messages matching f (see Filter), oldest ID first. A
// zero f.Now is the queue's current time.
func (q *Queue) List(ctx context.Context, f Filter) ([]*Message, error) {
	if f.Now.IsZero() {
		f.Now = q.now()
	}
	return q.store.List(ctx, f)
}

// Hold stops every unfinished delivery of the message from being attempted
// until Release. An attempt already in flight completes.
func (q *Queue) Hold(ctx context.Context, id string) error {
	return q.control(ctx, id, event.Held, func() error { return q.store.SetHeld(ctx, id, true) })
}

// Release undoes Hold. The deliveries keep their scheduled times; use
// RetryNow to attempt them at once.
func (q *Queue) Release(ctx context.Context, id string) error {
	return q.control(ctx, id, event.Released, func() error { return q.store.SetHeld(ctx, id, false) })
}

// RetryNow makes every unfinished, unheld delivery of the message due now.
func (q *Queue) RetryNow(ctx context.Context, id string) error {
	return q.control(ctx, id, "", func() error { return q.store.Reschedule(ctx, id, q.now()) })
}

// Delete removes the message without any DSN. An attempt in flight may
// still deliver, but its outcome is not recorded.
func (q *Queue) Delete(ctx context.Context, id string) error {
	m, err := q.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := q.store.Delete(ctx, id); err != nil {
		return err
	}
	q.emit(q.msgEvent(event.Deleted, m, q.now()))
	return nil
}

func (q *Queue) control(ctx context.Context, id string, t event.Type, op func() error) error {
	if err := op(); err != nil {
		return err
	}
	if t != "" && q.cfg.Events != nil {
		if m, err := q.store.Get(ctx, id); err == nil {
			q.emit(q.msgEvent(t, m, q.now()))
		}
	}
	q.poke()
	return nil
}
