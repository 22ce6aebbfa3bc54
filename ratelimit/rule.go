package ratelimit

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Package error sentinels. Errors returned by this package wrap one of them
// (or a context error, returned unwrapped) and are classified with errors.Is.
var (
	// ErrSyntax: rule or policy text (or JSON) is malformed.
	ErrSyntax = errors.New("ratelimit: syntax error")
	// ErrInvalid: a rule, request or configuration value is out of range.
	ErrInvalid = errors.New("ratelimit: invalid value")
	// ErrExceedsBurst: a reservation asks for more units than a matching
	// rule's burst, so it could never be granted.
	ErrExceedsBurst = errors.New("ratelimit: request exceeds burst")
	// ErrBusy: TryAcquire found no free connection slot.
	ErrBusy = errors.New("ratelimit: no free connection slot")
	// ErrSuspended: the destination is suspended by back-off (Acquire and
	// TryAcquire report it; Reserve reports it as Reservation.Reason).
	ErrSuspended = errors.New("ratelimit: destination suspended")
	// ErrClosed: the Limiter was closed.
	ErrClosed = errors.New("ratelimit: limiter closed")
	// ErrStore: the state store (file, Redis) failed; the error also wraps
	// the store's own error.
	ErrStore = errors.New("ratelimit: store error")
)

// Rate is N events per Per. The zero Rate means "no rate limit".
type Rate struct {
	N   int           `json:"n"`   // events per period, > 0 unless the Rate is zero
	Per time.Duration `json:"per"` // the period, > 0 unless the Rate is zero
}

// IsZero reports whether r is the zero Rate (no limit).
func (r Rate) IsZero() bool { return r.N == 0 && r.Per == 0 }

// Interval is the time one event uses up at this rate (Per/N), the GCRA
// emission interval. It is zero for the zero Rate.
func (r Rate) Interval() time.Duration {
	if r.N <= 0 || r.Per <= 0 {
		return 0
	}
	iv := r.Per / time.Duration(r.N)
	if iv <= 0 {
		iv = 1
	}
	return iv
}

var rateUnits = []struct {
	name string
	d    time.Duration
}{
	{"s", time.Second}, {"sec", time.Second}, {"second", time.Second},
	{"m", time.Minute}, {"min", time.Minute}, {"minute", time.Minute},
	{"h", time.Hour}, {"hour", time.Hour},
	{"d", 24 * time.Hour}, {"day", 24 * time.Hour},
}

// String formats r as "N/unit" ("3000/min", "5/s", "50/d") or "N/duration"
// ("100/10m0s"); ParseRate reads every form String writes.
func (r Rate) String() string {
	if r.IsZero() {
		return "0"
	}
	unit := r.Per.String()
	switch r.Per {
	case time.Second:
		unit = "s"
	case time.Minute:
		unit = "min"
	case time.Hour:
		unit = "h"
	case 24 * time.Hour:
		unit = "d"
	}
	return strconv.Itoa(r.N) + "/" + unit
}

// ParseRate parses "N/unit" where unit is s, sec, second, m, min, minute, h,
// hour, d or day, or a Go duration ("100/10m"); "0" is the zero Rate. N must
// be positive and the period at least a nanosecond. Errors wrap [ErrSyntax].
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return Rate{}, nil
	}
	ns, per, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%w: rate %q: want N/period", ErrSyntax, s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(ns))
	if err != nil || n <= 0 {
		return Rate{}, fmt.Errorf("%w: rate %q: count must be a positive integer", ErrSyntax, s)
	}
	per = strings.TrimSpace(per)
	for _, u := range rateUnits {
		if strings.EqualFold(per, u.name) {
			return Rate{N: n, Per: u.d}, nil
		}
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("%w: rate %q: bad period", ErrSyntax, s)
	}
	return Rate{N: n, Per: d}, nil
}

// MarshalJSON writes r in its text form ("3000/min").
func (r Rate) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }

// UnmarshalJSON reads the text form ("3000/min") or an object
// {"n": 3000, "per": "1m"}.
func (r *Rate) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := ParseRate(s)
		if err != nil {
			return err
		}
		*r = v
		return nil
	}
	var o struct {
		N   int      `json:"n"`
		Per Duration `json:"per"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("%w: rate: %v", ErrSyntax, err)
	}
	v := Rate{N: o.N, Per: time.Duration(o.Per)}
	if v.N < 0 || v.Per < 0 || (v.N == 0) != (v.Per == 0) {
		return fmt.Errorf("%w: rate %v", ErrInvalid, v)
	}
	*r = v
	return nil
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("30m", "1h30m"); it also accepts a number of nanoseconds.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%w: duration %q", ErrSyntax, s)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%w: duration: %v", ErrSyntax, err)
	}
	*d = Duration(n)
	return nil
}

// Rule is one limit. Rules are data: build them in Go, parse them from text
// with [ParsePolicy], or from JSON.
//
// # Matching and precedence
//
// A rule matches a Key when every non-empty field of Match equals the key's
// field ("*" also means any). Rules are grouped by Layer. Within a layer the
// most specific matching rule wins: the one with the most non-empty Match
// fields; among equally specific rules the one listed first wins. Across
// layers every winner applies, so a request must satisfy all of them. This
// lets a per-site override replace the default instead of only tightening
// it (same layer), while a separate tenant-wide cap still holds (its own
// layer). A winning rule with no limits (zero Rate, no connection or
// per-connection cap) exempts the key from that layer.
//
// # Budgets
//
// Per lists the dimensions for which a separate budget is kept: with
// Match{Site: "gmail.com"} and Per [Source], each source IP gets its own
// 3,000/min to gmail.com's site; with Per empty, all keys the rule matches
// share one budget.
type Rule struct {
	// Name identifies the rule in logs and in store keys. Empty: derived
	// from Layer, Match and Per, which keeps budgets stable across restarts
	// and nodes as long as the rule's match does not change.
	Name string `json:"name,omitempty"`
	// Layer groups rules for precedence (see above). Empty is the default
	// layer.
	Layer string `json:"layer,omitempty"`
	// Match selects keys; empty fields match anything.
	Match Key `json:"match"`
	// Per lists the dimensions a separate budget is kept for.
	Per []Dimension `json:"per,omitempty"`
	// Rate limits messages (reservation units). Zero: no rate limit.
	Rate Rate `json:"rate"`
	// Burst is how many units may go back to back before Rate spacing
	// applies. Zero means 1 when Rate is set.
	Burst int `json:"burst,omitempty"`
	// MaxConnections caps concurrently held connection slots (Acquire).
	// Zero: no cap.
	MaxConnections int `json:"max_connections,omitempty"`
	// MaxMessagesPerConnection is reported in Lease.MaxMessages for the
	// caller to close and reopen a connection after that many messages.
	// Zero: no cap.
	MaxMessagesPerConnection int `json:"max_messages_per_connection,omitempty"`
}

// specificity is the number of non-empty match fields.
func (r *Rule) specificity() int {
	n := 0
	for _, d := range allDimensions {
		if v := r.Match.get(d); v != "" && v != "*" {
			n++
		}
	}
	return n
}

func (r *Rule) matches(k Key) bool {
	for _, d := range allDimensions {
		v := r.Match.get(d)
		if v != "" && v != "*" && v != k.get(d) {
			return false
		}
	}
	return true
}

// validate checks ranges and fills defaults on a copy.
func (r Rule) compile() (Rule, error) {
	if r.Rate.N < 0 || r.Rate.Per < 0 || (r.Rate.N == 0) != (r.Rate.Per == 0) {
		return r, fmt.Errorf("%w: rule %s: rate %v", ErrInvalid, r.id(), r.Rate)
	}
	if r.Burst < 0 || r.MaxConnections < 0 || r.MaxMessagesPerConnection < 0 {
		return r, fmt.Errorf("%w: rule %s: negative limit", ErrInvalid, r.id())
	}
	if !r.Rate.IsZero() && r.Burst == 0 {
		r.Burst = 1
	}
	// Keep Burst·Interval (at most about 52 days) far from int64 overflow
	// even when back-off stretches the interval by 1/MinFactor (≤ 100).
	if iv := int64(r.Rate.Interval()); iv > 0 && int64(r.Burst) > (int64(1)<<52)/iv {
		return r, fmt.Errorf("%w: rule %s: burst %d at %v is too large", ErrInvalid, r.id(), r.Burst, r.Rate)
	}
	r.Match = Key{
		Domain: normDomain(r.Match.Domain), Site: normDomain(r.Match.Site),
		Source: r.Match.Source, Tenant: r.Match.Tenant,
	}
	seen := map[Dimension]bool{}
	for _, d := range r.Per {
		if d < Domain || d > Tenant {
			return r, fmt.Errorf("%w: rule %s: invalid dimension %d", ErrInvalid, r.id(), uint8(d))
		}
		if seen[d] {
			return r, fmt.Errorf("%w: rule %s: dimension %v listed twice", ErrInvalid, r.id(), d)
		}
		seen[d] = true
	}
	r.Per = append([]Dimension(nil), r.Per...)
	return r, nil
}

// id is the rule's stable identifier: Name, or Layer, Match and Per.
func (r *Rule) id() string {
	if r.Name != "" {
		return r.Name
	}
	var b strings.Builder
	b.WriteString(r.Layer)
	b.WriteByte('/')
	b.WriteString(r.Match.String())
	b.WriteString("/per=")
	for i, d := range r.Per {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(d.String())
	}
	return b.String()
}

// String formats r as one "limit" line of the text format.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString("limit")
	if r.Name != "" {
		b.WriteString(" name=" + quoteIfNeeded(r.Name))
	}
	if r.Layer != "" {
		b.WriteString(" layer=" + quoteIfNeeded(r.Layer))
	}
	if m := r.Match.String(); m != "" {
		b.WriteString(" " + m)
	}
	if len(r.Per) > 0 {
		b.WriteString(" per=")
		for i, d := range r.Per {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(d.String())
		}
	}
	if !r.Rate.IsZero() {
		b.WriteString(" rate=" + r.Rate.String())
	}
	if r.Burst != 0 {
		b.WriteString(" burst=" + strconv.Itoa(r.Burst))
	}
	if r.MaxConnections != 0 {
		b.WriteString(" connections=" + strconv.Itoa(r.MaxConnections))
	}
	if r.MaxMessagesPerConnection != 0 {
		b.WriteString(" messages-per-connection=" + strconv.Itoa(r.MaxMessagesPerConnection))
	}
	return b.String()
}

// quoteIfNeeded returns s as is when it is a plain token of the text
// format, and Go-quoted otherwise.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '#' || c == '=' || c == '\\' || c == ',' {
			return strconv.Quote(s)
		}
	}
	return s
}
