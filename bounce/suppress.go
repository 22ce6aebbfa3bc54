package bounce

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Source says where a suppression entry came from.
type Source string

// Sources of suppression entries.
const (
	SourceBounce    Source = "bounce"    // a hard bounce (BadAddress)
	SourceComplaint Source = "complaint" // an ARF complaint or unsubscribe
	SourceManual    Source = "manual"    // added by an operator or API
)

// ErrBadAddress is returned (wrapped) for addresses that cannot be
// normalised (no '@', empty local part or domain).
var ErrBadAddress = errors.New("bounce: bad address")

// Entry is one suppressed address.
type Entry struct {
	// Address is the normalised address: surrounding space and angle
	// brackets removed, the domain lower-cased, the local part's case
	// kept as given. Lookups match the whole address case-insensitively
	// (RFC 5321 §2.4 lets local parts be case-sensitive, but no large
	// provider treats them so, and a suppression list must not miss).
	Address string `json:"address"`
	// Reason is free text: the diagnostic or the operator's note.
	Reason string `json:"reason,omitempty"`
	// Category is the classification that caused the entry, if any.
	Category Category `json:"category,omitempty"`
	// Source says where the entry came from.
	Source Source `json:"source"`
	// Created is when the entry was made.
	Created time.Time `json:"created"`
	// Expires is when the entry stops applying; zero means never.
	Expires time.Time `json:"expires,omitzero"`
}

// Expired reports whether e no longer applies at now.
func (e Entry) Expired(now time.Time) bool {
	return !e.Expires.IsZero() && !now.Before(e.Expires)
}

// ListOptions selects entries for [SuppressionList.List]. The zero value
// lists every live entry, in address order.
type ListOptions struct {
	// After continues a listing: only addresses whose lower-cased form
	// sorts after it are returned.
	After string
	// Limit caps the number of entries; zero means no cap.
	Limit int
	// Source, when set, keeps only entries from that source.
	Source Source
	// IncludeExpired also returns expired entries not yet purged.
	IncludeExpired bool
}

// SuppressionList stores addresses that must not be sent to. The queue
// consults Lookup at enqueue. Implementations are safe for concurrent use.
type SuppressionList interface {
	// Add adds or replaces the entry for e.Address (normalised). It
	// returns only after the entry is durable, for durable lists.
	Add(ctx context.Context, e Entry) error
	// Lookup returns the live entry for address, if any. Expired entries
	// are not returned.
	Lookup(ctx context.Context, address string) (Entry, bool, error)
	// Remove deletes the entry for address; removing an absent address is
	// not an error.
	Remove(ctx context.Context, address string) error
	// List returns entries in the order of their lower-cased addresses.
	List(ctx context.Context, opts ListOptions) ([]Entry, error)
}

// NormalizeAddress returns the stored form of addr (domain lower-cased,
// local part kept) and its lookup key (all lower case).
func NormalizeAddress(addr string) (stored, key string, err error) {
	a := strings.TrimSpace(addr)
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || strings.ContainsAny(a, " \t\r\n\x00") || len(a) > maxAddrLen {
		return "", "", fmt.Errorf("%w: %q", ErrBadAddress, addr)
	}
	stored = a[:at] + "@" + strings.ToLower(strings.TrimSuffix(a[at+1:], "."))
	return stored, strings.ToLower(stored), nil
}

// SuppressionPolicy says which verdicts suppress an address and for how
// long. It is plain data; the zero value suppresses hard bounces
// (BadAddress) and complaints forever.
type SuppressionPolicy struct {
	// Durations gives the lifetime of entries by category; a category
	// absent from the map, or mapped to zero, never expires.
	Durations map[Category]time.Duration
	// Soft lists categories that suppress even without BadAddress (for
	// example mailbox_full for a week). Empty: only BadAddress verdicts
	// suppress.
	Soft []Category
	// Complaint is the lifetime of complaint entries; zero: never expires.
	Complaint time.Duration
	// IgnoreComplaints turns complaint suppression off.
	IgnoreComplaints bool
}

// DefaultSuppressionPolicy suppresses unknown mailboxes forever, unknown
// domains for 30 days (domains get registered again), and complaints
// forever.
func DefaultSuppressionPolicy() SuppressionPolicy {
	return SuppressionPolicy{Durations: map[Category]time.Duration{
		CategoryBadMailbox: 0,
		CategoryBadDomain:  30 * 24 * time.Hour,
	}}
}

// Decide returns the entry a bounce verdict for addr yields, and whether
// there is one: for BadAddress verdicts and for the policy's Soft
// categories.
func (p SuppressionPolicy) Decide(addr string, cl Classification, reason string, now time.Time) (Entry, bool) {
	soft := false
	for _, c := range p.Soft {
		soft = soft || c == cl.Category
	}
	if !cl.BadAddress && !soft {
		return Entry{}, false
	}
	stored, _, err := NormalizeAddress(addr)
	if err != nil {
		return Entry{}, false
	}
	e := Entry{Address: stored, Reason: clean(reason, maxTextLen), Category: cl.Category, Source: SourceBounce, Created: now}
	if d := p.Durations[cl.Category]; d > 0 {
		e.Expires = now.Add(d)
	}
	return e, true
}

// DecideComplaint returns the entries a complaint yields: one per
// reported recipient (Original-Rcpt-To), unless complaints are ignored.
// Feedback types "not-spam" (RFC 5965 §7.3) yield none.
func (p SuppressionPolicy) DecideComplaint(c *Complaint, now time.Time) []Entry {
	if p.IgnoreComplaints || c == nil || c.FeedbackType == "not-spam" {
		return nil
	}
	var out []Entry
	for _, a := range c.OriginalRcptTo {
		stored, _, err := NormalizeAddress(a)
		if err != nil {
			continue
		}
		e := Entry{Address: stored, Reason: "complaint: " + c.FeedbackType, Source: SourceComplaint, Created: now}
		if p.Complaint > 0 {
			e.Expires = now.Add(p.Complaint)
		}
		out = append(out, e)
	}
	return out
}

// SuppressionConfig configures the suppression lists. The zero value is
// ready to use.
type SuppressionConfig struct {
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
	// CompactAfter is, for file lists, how many superseded log records
	// trigger a rewrite of the log. Zero: 1000.
	CompactAfter int
}

func (c *SuppressionConfig) now() time.Time {
	if c != nil && c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// MemorySuppressions is an in-memory [SuppressionList]. Create it with
// [NewMemorySuppressions]; it is safe for concurrent use.
type MemorySuppressions struct {
	cfg     SuppressionConfig
	mu      sync.RWMutex
	entries map[string]Entry // by key
}

var _ SuppressionList = (*MemorySuppressions)(nil)

// NewMemorySuppressions returns an empty in-memory list. cfg may be nil.
func NewMemorySuppressions(cfg *SuppressionConfig) *MemorySuppressions {
	m := &MemorySuppressions{entries: map[string]Entry{}}
	if cfg != nil {
		m.cfg = *cfg
	}
	return m
}

// Add implements [SuppressionList].
func (m *MemorySuppressions) Add(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e, key, err := prepareEntry(e, m.cfg.now())
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.entries[key] = e
	m.mu.Unlock()
	return nil
}

func prepareEntry(e Entry, now time.Time) (Entry, string, error) {
	stored, key, err := NormalizeAddress(e.Address)
	if err != nil {
		return e, "", err
	}
	e.Address = stored
	e.Reason = clean(e.Reason, maxTextLen)
	if e.Source == "" {
		e.Source = SourceManual
	}
	if e.Created.IsZero() {
		e.Created = now
	}
	return e, key, nil
}

// Lookup implements [SuppressionList].
func (m *MemorySuppressions) Lookup(ctx context.Context, address string) (Entry, bool, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, false, err
	}
	_, key, err := NormalizeAddress(address)
	if err != nil {
		return Entry{}, false, err
	}
	m.mu.RLock()
	e, ok := m.entries[key]
	m.mu.RUnlock()
	if !ok || e.Expired(m.cfg.now()) {
		return Entry{}, false, nil
	}
	return e, true, nil
}

// Remove implements [SuppressionList].
func (m *MemorySuppressions) Remove(ctx context.Context, address string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, key, err := NormalizeAddress(address)
	if err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.entries, key)
	m.mu.Unlock()
	return nil
}

// List implements [SuppressionList].
func (m *MemorySuppressions) List(ctx context.Context, opts ListOptions) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return listEntries(m.entries, opts, m.cfg.now()), nil
}

func listEntries(entries map[string]Entry, opts ListOptions, now time.Time) []Entry {
	keys := make([]string, 0, len(entries))
	after := strings.ToLower(opts.After)
	for k := range entries {
		if k > after {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []Entry
	for _, k := range keys {
		e := entries[k]
		if opts.Source != "" && e.Source != opts.Source || !opts.IncludeExpired && e.Expired(now) {
			continue
		}
		out = append(out, e)
		if opts.Limit > 0 && len(out) >= opts.Limit {
			break
		}
	}
	return out
}
