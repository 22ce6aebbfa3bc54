package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
)

// Store errors. Stores return them (wrapped or not) so that the Queue can
// tell the cases apart with errors.Is.
var (
	// ErrNotFound: no message with that ID (never enqueued, deleted, or
	// finished and removed).
	ErrNotFound = errors.New("queue: message not found")
	// ErrExists: Store.Enqueue was given an ID that is already stored.
	ErrExists = errors.New("queue: message ID already exists")
	// ErrNoneReady: Store.Claim found no delivery that is ready.
	ErrNoneReady = errors.New("queue: no delivery ready")
	// ErrLeaseLost: the lease given to Complete or Release is not the
	// delivery's current lease (it was completed or released already, or it
	// expired and another worker claimed the delivery, or the message was
	// deleted). Nothing was changed.
	ErrLeaseLost = errors.New("queue: lease lost")
	// ErrBadUpdate: a Completion names a recipient the delivery does not
	// have, one that is already final, or an invalid state. Nothing was
	// changed.
	ErrBadUpdate = errors.New("queue: invalid update")
	// ErrDuplicate: an idempotent enqueue found an earlier message with the
	// same key inside the window (see IdempotentStore).
	ErrDuplicate = errors.New("queue: duplicate idempotency key")
)

// Store keeps messages, their bodies and their scheduling state. The Queue
// is its only writer in normal use; users implement Store to put the queue
// on their own database, and check their implementation with
// queue/queuetest.
//
// # General guarantees
//
// Every method is safe for concurrent use, by several goroutines and (for
// shared stores such as PostgreSQL) by several processes at once. Methods
// honour ctx: when ctx is done before the operation took effect they return
// ctx.Err() (unwrapped) and change nothing; an operation that took effect is
// reported as done.
//
// A store never keeps a pointer it was given, nor hands out one it keeps:
// every *Message, Delivery and reply in arguments and results is a copy
// (Message.Clone helps). A store never calls back into the Queue and never
// holds a lock across its method's return. Times are always passed in by
// the caller (the Queue's clock); a store does not read its own clock for
// scheduling decisions.
//
// Every mutating method is atomic (all of its effect or none) and durable
// before it returns nil: after a crash and restart, everything a successful
// call did is there. (An in-memory store is "durable" for the life of the
// process and says so.)
//
// A store reports errors and does not retry; the Queue decides.
//
// # Leases
//
// Claim hands a delivery to one worker under a [Lease] that expires at
// ClaimRequest.Until. While the lease is live (Until after the Now of a
// later Claim) no other Claim returns that delivery, so no delivery is
// processed by two live workers. Once the lease has expired, a Claim may
// hand the delivery to another worker with a new lease; this is how a
// crashed worker's deliveries come back. A lease is identified by its
// Token, which is new for every claim. Complete and Release succeed only
// with the delivery's current token (even after expiry, as long as nobody
// claimed the delivery since), and consume it: any later use of the same
// lease fails with ErrLeaseLost.
type Store interface {
	// Enqueue stores msg and reads body to its end, storing it byte for
	// byte. msg.ID is set (by the Queue) and must be new: an existing ID
	// gives ErrExists. msg has at least one delivery; every delivery's
	// Index equals its position. The store sets Size from the bytes read
	// and otherwise keeps msg as given (its deliveries may carry recipients
	// that are already final, e.g. suppressed, and NextAttempt times).
	//
	// Enqueue returns nil only once the message and body are durable. If it
	// fails (including when body returns an error or ctx ends while
	// reading), nothing of the message is stored and the ID stays free.
	// The body may be larger than memory: stores stream it.
	Enqueue(ctx context.Context, msg *Message, body io.Reader) error

	// Claim leases one ready delivery to req.Owner until req.Until and
	// returns it, or returns ErrNoneReady. A delivery is ready at req.Now
	// when it is not done, not held, its NextAttempt is not after req.Now,
	// it has no live lease (none, or LeaseExpires not after req.Now), its
	// domain is not in req.Skip, and its message's Priority is at most
	// *req.MaxPriority when that is set. Among ready deliveries, Claim picks
	// the highest message Priority, then the earliest NextAttempt, then the
	// smallest message ID, then the smallest Index.
	//
	// Claim records LeaseOwner and LeaseExpires on the delivery and returns
	// copies: the message's header (Deliveries nil), the delivery and the
	// lease. Attempts and NextAttempt are unchanged by a claim. Expired
	// messages are still claimed: finishing them (DSN) is the Queue's job.
	Claim(ctx context.Context, req ClaimRequest) (*Claim, error)

	// Complete records the outcome of one attempt on a leased delivery and
	// ends the lease, atomically: every RecipientResult is applied (state,
	// reply, attempt time; the recipient's Attempts grows by one), the
	// delivery's Attempts grows by one and LastAttempt becomes c.Now, Warned
	// is set if c.Warned, and then either the delivery is done (every
	// recipient final) or it is rescheduled at c.NextAttempt. Recipients
	// without a result keep their state. The lease is cleared.
	//
	// When the message is done after this (every recipient of every
	// delivery final) the store removes it and its body in the same step;
	// Get then returns ErrNotFound.
	//
	// Complete fails with ErrLeaseLost when c.Lease is not the current lease
	// of that delivery (see Leases), ErrNotFound when the message is gone,
	// and ErrBadUpdate when a result names an address the delivery does
	// not have, a recipient that is already final, or a state that is not
	// valid. On any error nothing is changed.
	Complete(ctx context.Context, c *Completion) error

	// Release ends a lease without recording an attempt: Attempts, the
	// recipients and LastAttempt are unchanged, and the delivery becomes
	// ready again at next (the Queue uses it when shutting down and when a
	// destination is throttled). It fails like Complete with ErrLeaseLost
	// or ErrNotFound, changing nothing.
	Release(ctx context.Context, lease Lease, next time.Time) error

	// Get returns a copy of the message with all of its deliveries, or
	// ErrNotFound.
	Get(ctx context.Context, id string) (*Message, error)

	// List returns copies of the messages that match f (see Filter), in
	// ascending ID order, at most f.Limit of them when f.Limit > 0, each
	// with all of its deliveries. No match is an empty result, not an
	// error.
	List(ctx context.Context, f Filter) ([]*Message, error)

	// OpenBody opens the body of a message for reading. The Body reads the
	// exact bytes given to Enqueue, from any offset, concurrently. The
	// caller closes it. Reads may fail once the message has been removed
	// (by Delete or completion); until then they succeed. ErrNotFound when
	// the message is not there.
	OpenBody(ctx context.Context, id string) (Body, error)

	// SetHeld holds (held true) or releases (false) every delivery of the
	// message that is not done. A held delivery is never claimed; a lease
	// taken before the hold stays valid, and the delivery stays held after
	// that lease is completed. Holding a held message, or releasing one
	// that is not held, succeeds and changes nothing. ErrNotFound when the
	// message is not there.
	SetHeld(ctx context.Context, id string, held bool) error

	// Reschedule sets NextAttempt to at for every delivery of the message
	// that is not done ("retry now" passes the current time). Held
	// deliveries stay held; a live lease stays valid, and its Complete or
	// Release sets NextAttempt again. ErrNotFound when the message is not
	// there.
	Reschedule(ctx context.Context, id string, at time.Time) error

	// Delete removes the message and its body at once, whatever the state
	// of its deliveries. Outstanding leases become invalid (ErrLeaseLost or
	// ErrNotFound). ErrNotFound when the message is not there.
	Delete(ctx context.Context, id string) error

	// Close releases the store's resources. Leases are not released (they
	// expire). Calls after Close may fail.
	Close() error
}

// Body is a stored message body: random access for the transport
// ([deliver.Body]) plus Close.
type Body interface {
	deliver.Body
	io.Closer
}

// ClaimRequest asks Store.Claim for one ready delivery.
type ClaimRequest struct {
	// Owner identifies the claiming worker or node (e.g. "host-a/w3"); it
	// is recorded as Delivery.LeaseOwner.
	Owner string

	// Now is the current time by the caller's clock; Until is when the
	// lease expires (after Now).
	Now   time.Time
	Until time.Time

	// Skip lists destination domains (lower case) not to claim now: those
	// at their concurrency limit or throttled. The Queue passes it sorted
	// and without duplicates, so a store may binary-search it; other
	// callers need not, and a store must check before relying on it.
	Skip []string

	// MaxPriority, when not nil, restricts the claim to messages whose
	// Priority is at most *MaxPriority (the scheduler uses it to serve the
	// bulk lane its share).
	MaxPriority *Priority
}

// Claim is a leased delivery: the message header (Deliveries nil), a copy of
// the delivery and the lease.
type Claim struct {
	Message  *Message
	Delivery *Delivery
	Lease    Lease
}

// Lease identifies one claim of one delivery.
type Lease struct {
	// MessageID and Delivery (the index) name the delivery.
	MessageID string
	Delivery  int
	// Owner is ClaimRequest.Owner; Token is chosen by the store, unique for
	// every claim (e.g. random or a sequence), and is what Complete and
	// Release check.
	Owner string
	Token string
	// Expires is ClaimRequest.Until.
	Expires time.Time
}

// Completion is the outcome of one attempt, given to Store.Complete.
type Completion struct {
	Lease Lease

	// Now is when the attempt ended; it becomes Delivery.LastAttempt.
	Now time.Time

	// Results hold the new state of the recipients this attempt decided,
	// each named by address. A recipient may appear at most once.
	Results []RecipientResult

	// NextAttempt is when the delivery becomes ready again if any recipient
	// stays pending. Ignored when the delivery is done.
	NextAttempt time.Time

	// Warned marks that a delay-warning DSN was sent (sets Delivery.Warned).
	Warned bool
}

// RecipientResult is the new state of one recipient after an attempt.
type RecipientResult struct {
	Address string
	// State is the new state; RecipientPending means a transient failure.
	State RecipientState
	// Reply is the reply that decided it (copied by the store).
	Reply *smtp.SMTPError
	// Attempted is when the attempt for this recipient started.
	Attempted time.Time
}

// Filter selects messages for Store.List and Queue.List. Zero fields select
// everything. A message matches when every message-level condition holds
// (Tenant, CreatedBefore, CreatedAfter, After) and, if Domain or State is
// set, at least one of its deliveries has that domain and that state at Now
// (the same delivery for both). [Filter.Matches] implements these rules.
type Filter struct {
	// State selects deliveries by [Delivery.State] at Now.
	State DeliveryState
	// Domain selects deliveries by recipient domain (case-insensitive).
	Domain string
	// Tenant selects messages by tenant (exact).
	Tenant string
	// CreatedBefore selects messages created strictly before it (older
	// than an age); CreatedAfter those created strictly after it.
	CreatedBefore time.Time
	CreatedAfter  time.Time
	// Now is the time used to evaluate State (active leases).
	Now time.Time
	// After is a cursor: only IDs greater than After. Limit caps the
	// number of results (0 = no limit).
	After string
	Limit int
}

// The optional Store extensions. The Queue finds them by type assertion and
// falls back as documented on each.

// IdempotentStore is a Store that deduplicates enqueues by key, across
// processes. Without it, the Queue deduplicates in its own memory: correct
// within one process only and forgotten on restart.
type IdempotentStore interface {
	Store
	// EnqueueIdempotent is Enqueue for a message with a non-empty
	// IdempotencyKey. If the store holds a record of a message with the
	// same Tenant and IdempotencyKey whose Created is at or after since,
	// it returns that message's ID and ErrDuplicate, reading nothing and
	// storing nothing. The record outlives the message (a finished or
	// deleted message still counts) until it is older than since for every
	// later call; stores may forget records older than the window. Two
	// concurrent calls with the same key store at most one message: the
	// other gets ErrDuplicate with the winner's ID. Otherwise it enqueues
	// exactly like Enqueue and returns msg.ID, nil.
	EnqueueIdempotent(ctx context.Context, msg *Message, body io.Reader, since time.Time) (string, error)
}

// Notifier is a Store that signals when work may have become ready sooner
// than the Queue's poll interval, e.g. a message enqueued by another node
// (PostgreSQL LISTEN/NOTIFY). Without it, the Queue polls every
// Config.PollInterval and wakes itself on its own enqueues.
type Notifier interface {
	Store
	// Ready returns a channel that receives a value (non-blocking send to a
	// capacity-1 channel) after an Enqueue, Release, Reschedule or SetHeld
	// (release) may have made a delivery ready. The same channel is
	// returned every time; it is never closed while the store is open.
	Ready() <-chan struct{}
}

// CheckMessage checks what every Store.Enqueue requires of msg: an ID, at
// least one delivery, and deliveries indexed 0, 1, ... in order. The error
// wraps ErrBadUpdate. Stores call it before storing anything.
func CheckMessage(msg *Message) error {
	if msg == nil || msg.ID == "" {
		return fmt.Errorf("%w: message without ID", ErrBadUpdate)
	}
	if len(msg.Deliveries) == 0 {
		return fmt.Errorf("%w: message %s has no deliveries", ErrBadUpdate, msg.ID)
	}
	for i := range msg.Deliveries {
		if msg.Deliveries[i].Index != i {
			return fmt.Errorf("%w: delivery %d has index %d", ErrBadUpdate, i, msg.Deliveries[i].Index)
		}
	}
	return nil
}

// ApplyResults records an attempt's results in the recipients of one
// delivery, as every Store.Complete must: each result names a recipient
// of rs by address, at most once, that is not final yet, with a valid new
// state. It checks every result before changing anything; on error rs is
// unchanged and the error wraps ErrBadUpdate. Each named recipient gets
// the new state, a copy of the reply, the attempt time and one more
// attempt.
func ApplyResults(rs []Recipient, results []RecipientResult) error {
	idx := make([]int, len(results))
	for i, r := range results {
		j := slices.IndexFunc(rs, func(rc Recipient) bool { return rc.Address == r.Address })
		switch {
		case j < 0:
			return fmt.Errorf("%w: no recipient %q in delivery", ErrBadUpdate, r.Address)
		case rs[j].State.Final():
			return fmt.Errorf("%w: recipient %q is already %s", ErrBadUpdate, r.Address, rs[j].State)
		case !r.State.Valid():
			return fmt.Errorf("%w: state %d", ErrBadUpdate, r.State)
		case slices.Contains(idx[:i], j):
			return fmt.Errorf("%w: recipient %q appears twice", ErrBadUpdate, r.Address)
		}
		idx[i] = j
	}
	for i, r := range results {
		rc := &rs[idx[i]]
		rc.State, rc.LastReply, rc.LastAttempt = r.State, CloneReply(r.Reply), r.Attempted
		rc.Attempts++
	}
	return nil
}
