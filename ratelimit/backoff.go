package ratelimit

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Outcome is what a delivery attempt to a destination produced, told to
// [Limiter.Feedback] as data: the bounce package's category name for the
// reply (this package does not import bounce) and the reply itself.
//
// A reply with a 2xx Code is a success and counts towards recovery; other
// outcomes are matched against the back-off rules.
type Outcome struct {
	// Category is the classifier's category ("rate_limited",
	// "reputation", ...). Empty when unknown.
	Category string `json:"category,omitempty"`
	// Code is the SMTP reply code (RFC 5321 §4.2), 0 when there was no
	// reply (connection failure).
	Code int `json:"code,omitempty"`
	// Enhanced is the RFC 3463 enhanced status code, all zero when absent.
	Enhanced [3]int `json:"enhanced,omitempty"`
	// Text is the reply text.
	Text string `json:"text,omitempty"`
}

// Success reports whether o is a 2xx reply.
func (o Outcome) Success() bool { return o.Code >= 200 && o.Code < 300 }

// haystack is the text back-off rules search: "code x.y.z text", so that
// patterns may name the codes too.
func (o Outcome) haystack() string {
	var b strings.Builder
	if o.Code != 0 {
		b.WriteString(strconv.Itoa(o.Code))
		b.WriteByte(' ')
	}
	if o.Enhanced != [3]int{} {
		fmt.Fprintf(&b, "%d.%d.%d ", o.Enhanced[0], o.Enhanced[1], o.Enhanced[2])
	}
	b.WriteString(o.Text)
	return strings.ToLower(b.String())
}

// BackoffRule says how a destination slows down when a reply matches, and
// how it recovers. Rules are data, like [Rule].
//
// # Matching
//
// Each non-empty condition must hold (AND); within a list any entry may
// match (OR). Categories compare case-insensitively with
// Outcome.Category; Codes with Outcome.Code; Enhanced is a dotted prefix of
// the enhanced code ("4.7" matches 4.7.x, "4.7.28" only itself); Text
// entries are case-insensitive substrings and Regexp a Go regular
// expression, both searched in "code enhanced text" (e.g.
// "421 4.7.28 Our system has detected an unusual rate ..."), so they may
// name codes as well. A rule with no condition is invalid. The first
// matching rule in the list applies; later ones are not consulted.
//
// # Actions
//
// Factor (0 < Factor < 1) multiplies the destination's rate factor, which
// scales every rate the destination's rules grant (never below MinFactor
// of Policy); MaxConnections caps its connection slots; Suspend stops it
// entirely for that long. Repeated matches within Holddown of the last
// reduction do not reduce further, so one burst of deferrals over many
// connections counts once.
//
// # Recovery
//
// After RecoverAfter successes, or after each RecoverPeriod without a
// matching reply (counted from the end of a suspension), the rate factor
// is multiplied by RecoverStep, up to 1. Connections stay capped until the
// factor is back at 1; then the destination is back to its configured
// limits.
type BackoffRule struct {
	// Name appears in Status and logs. Empty: the rule's text form.
	Name string `json:"name,omitempty"`

	Categories []string `json:"categories,omitempty"` // any of these Outcome.Category values
	Codes      []int    `json:"codes,omitempty"`      // any of these reply codes
	Enhanced   string   `json:"enhanced,omitempty"`   // dotted prefix of the enhanced code
	Text       []string `json:"text,omitempty"`       // any of these substrings
	Regexp     string   `json:"regexp,omitempty"`     // a Go regular expression

	// Factor multiplies the rate factor; 0 leaves the rate alone.
	Factor float64 `json:"factor,omitempty"`
	// MaxConnections caps connection slots while backed off; 0: no cap.
	MaxConnections int `json:"max_connections,omitempty"`
	// Suspend stops the destination for this long; 0: no suspension.
	Suspend Duration `json:"suspend,omitempty"`
	// Holddown: zero means 30 seconds.
	Holddown Duration `json:"holddown,omitempty"`

	// RecoverAfter: successes per recovery step; zero means 20.
	RecoverAfter int `json:"recover_after,omitempty"`
	// RecoverPeriod: clean time per recovery step; zero means 5 minutes.
	RecoverPeriod Duration `json:"recover_period,omitempty"`
	// RecoverStep: factor growth per step (> 1); zero means 1.25.
	RecoverStep float64 `json:"recover_step,omitempty"`
}

// compiledBackoff is a validated BackoffRule with defaults filled in.
type compiledBackoff struct {
	BackoffRule
	re       *regexp.Regexp
	enhanced []int
	text     []string
}

func (r BackoffRule) compile() (*compiledBackoff, error) {
	c := &compiledBackoff{BackoffRule: r}
	name := r.Name
	if name == "" {
		name = r.String()
	}
	if len(r.Categories) == 0 && len(r.Codes) == 0 && r.Enhanced == "" && len(r.Text) == 0 && r.Regexp == "" {
		return nil, fmt.Errorf("%w: backoff %s: no condition", ErrInvalid, name)
	}
	if r.Factor < 0 || r.Factor >= 1 || math.IsNaN(r.Factor) {
		if r.Factor != 0 {
			return nil, fmt.Errorf("%w: backoff %s: factor %v not in (0,1)", ErrInvalid, name, r.Factor)
		}
	}
	if r.Factor == 0 && r.MaxConnections == 0 && r.Suspend == 0 {
		return nil, fmt.Errorf("%w: backoff %s: no action", ErrInvalid, name)
	}
	if r.MaxConnections < 0 || r.Suspend < 0 || r.Holddown < 0 || r.RecoverAfter < 0 || r.RecoverPeriod < 0 {
		return nil, fmt.Errorf("%w: backoff %s: negative value", ErrInvalid, name)
	}
	if r.RecoverStep != 0 && (r.RecoverStep <= 1 || math.IsNaN(r.RecoverStep) || math.IsInf(r.RecoverStep, 0)) {
		return nil, fmt.Errorf("%w: backoff %s: recover step %v must be > 1", ErrInvalid, name, r.RecoverStep)
	}
	if r.Enhanced != "" {
		for p := range strings.SplitSeq(r.Enhanced, ".") {
			v, err := strconv.Atoi(p)
			if err != nil || v < 0 || v > 999 {
				return nil, fmt.Errorf("%w: backoff %s: enhanced code %q", ErrInvalid, name, r.Enhanced)
			}
			c.enhanced = append(c.enhanced, v)
		}
		if len(c.enhanced) > 3 {
			return nil, fmt.Errorf("%w: backoff %s: enhanced code %q", ErrInvalid, name, r.Enhanced)
		}
	}
	if r.Regexp != "" {
		re, err := regexp.Compile(r.Regexp)
		if err != nil {
			return nil, fmt.Errorf("%w: backoff %s: %v", ErrInvalid, name, err)
		}
		c.re = re
	}
	for _, t := range r.Text {
		if t == "" {
			return nil, fmt.Errorf("%w: backoff %s: empty text", ErrInvalid, name)
		}
		c.text = append(c.text, strings.ToLower(t))
	}
	if c.Holddown == 0 {
		c.Holddown = Duration(30 * time.Second)
	}
	if c.RecoverAfter == 0 {
		c.RecoverAfter = 20
	}
	if c.RecoverPeriod == 0 {
		c.RecoverPeriod = Duration(5 * time.Minute)
	}
	if c.RecoverStep == 0 {
		c.RecoverStep = 1.25
	}
	c.Name = name
	return c, nil
}

func (c *compiledBackoff) matches(o Outcome, hay string) bool {
	if len(c.Categories) > 0 {
		ok := false
		for _, cat := range c.Categories {
			if strings.EqualFold(cat, o.Category) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(c.Codes) > 0 {
		ok := false
		for _, code := range c.Codes {
			if code == o.Code {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i, v := range c.enhanced {
		if o.Enhanced[i] != v {
			return false
		}
	}
	if len(c.text) > 0 {
		ok := false
		for _, t := range c.text {
			if strings.Contains(hay, t) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if c.re != nil && !c.re.MatchString(hay) {
		return false
	}
	return true
}

// String formats r as one "backoff" line of the text format.
func (r BackoffRule) String() string {
	var b strings.Builder
	b.WriteString("backoff")
	if r.Name != "" {
		b.WriteString(" name=" + quoteIfNeeded(r.Name))
	}
	for _, c := range r.Categories {
		b.WriteString(" category=" + quoteIfNeeded(c))
	}
	for _, c := range r.Codes {
		b.WriteString(" code=" + strconv.Itoa(c))
	}
	if r.Enhanced != "" {
		b.WriteString(" enhanced=" + quoteIfNeeded(r.Enhanced))
	}
	for _, t := range r.Text {
		b.WriteString(" text=" + quoteIfNeeded(t))
	}
	if r.Regexp != "" {
		b.WriteString(" regexp=" + quoteIfNeeded(r.Regexp))
	}
	if r.Factor != 0 {
		b.WriteString(" factor=" + strconv.FormatFloat(r.Factor, 'g', -1, 64))
	}
	if r.MaxConnections != 0 {
		b.WriteString(" connections=" + strconv.Itoa(r.MaxConnections))
	}
	if r.Suspend != 0 {
		b.WriteString(" suspend=" + time.Duration(r.Suspend).String())
	}
	if r.Holddown != 0 {
		b.WriteString(" holddown=" + time.Duration(r.Holddown).String())
	}
	if r.RecoverAfter != 0 {
		b.WriteString(" recover-after=" + strconv.Itoa(r.RecoverAfter))
	}
	if r.RecoverPeriod != 0 {
		b.WriteString(" recover-period=" + time.Duration(r.RecoverPeriod).String())
	}
	if r.RecoverStep != 0 {
		b.WriteString(" recover-step=" + strconv.FormatFloat(r.RecoverStep, 'g', -1, 64))
	}
	return b.String()
}

// DefaultBackoff returns the back-off rules used when Policy.Backoff is nil.
// They follow the deferral replies large mailbox providers document or are
// widely seen to send when a sender goes too fast:
//
//   - Gmail's 421 4.7.28 "unusual rate of unsolicited mail": halve the rate,
//     at most 2 connections, pause 2 minutes.
//   - Microsoft's 4.7.650 / "temporarily rate limited" (Outlook.com, Office
//     365): halve the rate, at most 2 connections, pause 5 minutes.
//   - Yahoo's [TSS04] "temporarily deferred due to unexpected volume or user
//     complaints": halve the rate and pause 15 minutes.
//   - "too many connections" / "too many concurrent": cap at 1 connection.
//   - Category "reputation" (a block for the sender's reputation): quarter the
//     rate and pause 10 minutes.
//   - Category "rate_limited", or any 4.7.x reply mentioning a rate,
//     throttling or too many messages: halve the rate.
//
// Every rule recovers with the defaults: ×1.25 per 20 successes or per 5
// clean minutes. The returned slice is new; callers may modify it.
func DefaultBackoff() []BackoffRule {
	return []BackoffRule{
		{Name: "gmail-unusual-rate", Text: []string{"4.7.28", "unusual rate"}, Factor: 0.5, MaxConnections: 2, Suspend: Duration(2 * time.Minute)},
		{Name: "microsoft-rate-limited", Text: []string{"4.7.650", "temporarily rate limited"}, Factor: 0.5, MaxConnections: 2, Suspend: Duration(5 * time.Minute)},
		{Name: "yahoo-tss04", Text: []string{"[tss04]", "tss04"}, Factor: 0.5, Suspend: Duration(15 * time.Minute)},
		{Name: "too-many-connections", Text: []string{"too many connections", "too many concurrent", "too many simultaneous"}, MaxConnections: 1},
		{Name: "reputation", Categories: []string{"reputation"}, Factor: 0.25, Suspend: Duration(10 * time.Minute)},
		{Name: "rate-limited", Categories: []string{"rate_limited"}, Factor: 0.5},
		{Name: "throttled-4.7", Enhanced: "4.7", Text: []string{"rate", "throttl", "too many", "try again later", "deferred"}, Factor: 0.5},
	}
}

// Status is a destination's back-off state as seen at one moment.
type Status struct {
	// Factor scales the destination's rates: 1 when not backed off.
	Factor float64
	// MaxConnections is the back-off connection cap, 0 when none.
	MaxConnections int
	// SuspendedUntil is the end of a suspension, zero when not suspended.
	SuspendedUntil time.Time
	// Rule is the name of the back-off rule that last engaged, empty when
	// not backed off.
	Rule string
}

// Active reports whether s differs from normal operation.
func (s Status) Active() bool {
	return s.Factor < 1 || s.MaxConnections > 0 || !s.SuspendedUntil.IsZero()
}

// backoffState is the mutable state of one destination.
type backoffState struct {
	factor    float64
	conns     int
	suspended time.Time // end of suspension
	since     time.Time // start of the current clean period
	reduced   time.Time // time of the last reduction
	successes int
	rule      *compiledBackoff
}

// advance applies the recovery steps due by now; it reports whether the
// state is back to normal (and can be dropped).
func (s *backoffState) advance(now time.Time) bool {
	if !s.suspended.IsZero() && !now.Before(s.suspended) {
		s.suspended = time.Time{}
	}
	if s.suspended.IsZero() {
		period := time.Duration(s.rule.RecoverPeriod)
		if k := now.Sub(s.since) / period; k > 0 {
			s.step(int(min(k, 1000)))
			s.since = s.since.Add(k * period)
		}
	}
	return s.factor >= 1 && s.conns == 0 && s.suspended.IsZero()
}

func (s *backoffState) step(k int) {
	for range k {
		s.factor *= s.rule.RecoverStep
		if s.factor >= 1 {
			s.factor = 1
			s.conns = 0
			return
		}
	}
}

func (s *backoffState) status() Status {
	st := Status{Factor: s.factor, MaxConnections: s.conns, SuspendedUntil: s.suspended}
	if s.rule != nil {
		st.Rule = s.rule.Name
	}
	return st
}
