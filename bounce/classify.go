package bounce

import (
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// Category is the stable name of why a delivery failed. The string values
// are part of the API: they are stored in suppression lists and events.
type Category string

// Categories. Each is documented with the replies that lead to it.
const (
	// CategoryBadMailbox: the mailbox does not exist, has moved or is
	// permanently disabled (5.1.1, 5.1.6, "user unknown", "no such user").
	CategoryBadMailbox Category = "bad_mailbox"
	// CategoryBadDomain: the recipient domain does not exist or accepts no
	// mail (5.1.2, null MX per RFC 7505, "Host or domain name not found").
	CategoryBadDomain Category = "bad_domain"
	// CategoryMailboxDisabled: the account exists but is suspended,
	// inactive or locked; often temporary on the provider's side.
	CategoryMailboxDisabled Category = "mailbox_disabled"
	// CategoryMailboxFull: over quota (5.2.2, 4.2.2). Transient by default.
	CategoryMailboxFull Category = "mailbox_full"
	// CategoryMessageTooLarge: the message exceeds a size limit (5.3.4, 5.2.3).
	CategoryMessageTooLarge Category = "message_too_large"
	// CategoryContentRejected: spam, virus or content policy (5.7.1 with
	// content wording, 5.6.x).
	CategoryContentRejected Category = "content_rejected"
	// CategoryPolicy: a local policy of the receiving site refused the
	// message or the recipient (not about content, reputation or auth).
	CategoryPolicy Category = "policy"
	// CategoryReputation: the sending IP, host or domain is refused
	// (blocklists such as Spamhaus, no reverse DNS, poor reputation).
	CategoryReputation Category = "reputation"
	// CategoryRateLimited: too many messages, connections or recipients.
	CategoryRateLimited Category = "rate_limited"
	// CategoryAuthFailure: SPF, DKIM or DMARC checks failed (5.7.23-27).
	CategoryAuthFailure Category = "auth_failure"
	// CategoryTLSRequired: TLS or another security requirement was not met.
	CategoryTLSRequired Category = "tls_required"
	// CategoryRelayDenied: the server refused to relay for us (5.7.1 relay).
	CategoryRelayDenied Category = "relay_denied"
	// CategorySenderRejected: the envelope sender or its domain was refused.
	CategorySenderRejected Category = "sender_rejected"
	// CategoryRouting: DNS or routing trouble on the way (4.4.3, loops).
	CategoryRouting Category = "routing"
	// CategoryNetwork: connection refused, timed out or dropped (4.4.1, 4.4.2).
	CategoryNetwork Category = "network"
	// CategoryProtocol: syntax or sequence errors (5.5.x, 500-504).
	CategoryProtocol Category = "protocol"
	// CategorySystem: the remote system failed (disk full, config, local
	// delivery program).
	CategorySystem Category = "system"
	// CategoryExpired: the message stayed queued too long (4.4.7).
	CategoryExpired Category = "expired"
	// CategoryAutoReply: not a failure but an auto-reply (RFC 3834).
	CategoryAutoReply Category = "auto_reply"
	// CategoryDelivered: not a failure: a success report (2.x.x).
	CategoryDelivered Category = "delivered"
	// CategoryUnclassified: nothing matched.
	CategoryUnclassified Category = "unclassified"
)

// categories lists every Category, for rule validation.
var categories = []Category{CategoryBadMailbox, CategoryBadDomain, CategoryMailboxDisabled,
	CategoryMailboxFull, CategoryMessageTooLarge, CategoryContentRejected, CategoryPolicy,
	CategoryReputation, CategoryRateLimited, CategoryAuthFailure, CategoryTLSRequired,
	CategoryRelayDenied, CategorySenderRejected, CategoryRouting, CategoryNetwork,
	CategoryProtocol, CategorySystem, CategoryExpired, CategoryAutoReply, CategoryDelivered,
	CategoryUnclassified}

// Classification is the verdict on one reply.
type Classification struct {
	// Permanent reports whether retrying cannot help. It follows the reply
	// class unless a rule says otherwise (over-quota is transient).
	Permanent bool
	// Category says why.
	Category Category
	// BadAddress is true only when the recipient address itself is bad
	// and the failure is permanent: the one verdict that should suppress
	// the address.
	BadAddress bool
	// Rule is the name of the rule that matched, for debugging; empty
	// when none did.
	Rule string
}

// Rule is one classification rule. All its conditions must hold; a rule
// with no condition matches every reply. See [ParseRules] for the text
// form.
type Rule struct {
	// Name identifies the rule in Classification.Rule.
	Name string
	// Status matches the enhanced status code: "5.1.1", with "*" for any
	// component ("*.1.1", "5.7.*"). Empty: any.
	Status string
	// Code matches the reply code: "550", or "55x", "5xx". Empty: any.
	Code string
	// Text lists substrings of which at least one must occur in the reply
	// text, compared case-insensitively with white space runs folded to a
	// single space. Empty: any.
	Text []string
	// Category is the result.
	Category Category
	// Permanence is "permanent", "transient" or "" (follow the reply class;
	// a reply without a class counts as permanent).
	Permanence string
	// BadAddress marks the recipient address as bad (when permanent).
	BadAddress bool
}

//go:embed rules.txt
var defaultRulesText string

// ErrBadRule is returned (wrapped) for rules that do not parse or validate.
var ErrBadRule = errors.New("bounce: bad classification rule")

// ParseRules parses rules in the text format of the embedded default set
// (rules.txt). One rule per line; '#' starts a comment; blank lines are
// ignored:
//
//	NAME CONDITION... -> CATEGORY [permanent|transient] [bad]
//
// where each CONDITION is status=S (see Rule.Status), code=C (see
// Rule.Code) or text="substring" (repeatable: any one may match; a quoted
// string may contain \" and \\). Example:
//
//	gmail-nouser  status=5.1.1  text="does not exist" text="no such user" -> bad_mailbox bad
func ParseRules(text string) ([]Rule, error) {
	var rules []Rule
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		r, err := parseRule(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadRule, n+1, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseRule(line string) (Rule, error) {
	var r Rule
	cond, result, ok := strings.Cut(line, "->")
	if !ok {
		return r, errors.New(`missing "->"`)
	}
	toks, err := tokenize(cond)
	if err != nil {
		return r, err
	}
	if len(toks) == 0 || strings.Contains(toks[0], "=") {
		return r, errors.New("missing rule name")
	}
	r.Name = toks[0]
	for _, t := range toks[1:] {
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			return r, fmt.Errorf("condition %q is not key=value", t)
		}
		switch k {
		case "status":
			r.Status = v
		case "code":
			r.Code = v
		case "text":
			r.Text = append(r.Text, v)
		default:
			return r, fmt.Errorf("unknown condition %q", k)
		}
	}
	res := strings.Fields(result)
	if len(res) == 0 {
		return r, errors.New("missing category")
	}
	r.Category = Category(res[0])
	for _, f := range res[1:] {
		switch f {
		case "permanent", "transient":
			r.Permanence = f
		case "bad":
			r.BadAddress = true
		default:
			return r, fmt.Errorf("unknown flag %q", f)
		}
	}
	return r, r.validate()
}

// tokenize splits on spaces, keeping key="quoted value" together.
func tokenize(s string) ([]string, error) {
	var toks []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return toks, nil
		}
		i := 0
		var b strings.Builder
		for i < len(s) && s[i] != ' ' && s[i] != '\t' {
			if s[i] == '"' {
				i++
				closed := false
				for i < len(s) {
					c := s[i]
					if c == '\\' && i+1 < len(s) {
						b.WriteByte(s[i+1])
						i += 2
						continue
					}
					i++
					if c == '"' {
						closed = true
						break
					}
					b.WriteByte(c)
				}
				if !closed {
					return nil, errors.New("unterminated quote")
				}
				continue
			}
			b.WriteByte(s[i])
			i++
		}
		toks = append(toks, b.String())
		s = s[i:]
	}
}

func (r *Rule) validate() error {
	if r.Name == "" {
		return errors.New("missing rule name")
	}
	known := false
	for _, c := range categories {
		known = known || c == r.Category
	}
	if !known {
		return fmt.Errorf("unknown category %q", r.Category)
	}
	if r.Status != "" {
		parts := strings.Split(r.Status, ".")
		if len(parts) != 3 {
			return fmt.Errorf("status %q is not X.Y.Z", r.Status)
		}
		for _, p := range parts {
			if _, err := strconv.Atoi(p); err != nil && p != "*" {
				return fmt.Errorf("status %q: bad component %q", r.Status, p)
			}
		}
	}
	if r.Code != "" {
		if len(r.Code) != 3 {
			return fmt.Errorf("code %q is not three characters", r.Code)
		}
		for _, c := range r.Code {
			if (c < '0' || c > '9') && c != 'x' {
				return fmt.Errorf("code %q: bad character %q", r.Code, c)
			}
		}
	}
	for _, t := range r.Text {
		if normText(t) == "" {
			return errors.New("empty text pattern")
		}
		for i := 0; i < len(t); i++ {
			if t[i] < 0x20 || t[i] > 0x7e {
				return fmt.Errorf("text pattern %q is not printable ASCII", t)
			}
		}
	}
	return nil
}

// compiledRule is a Rule prepared for matching.
type compiledRule struct {
	Rule
	status  [3]int // -1: any
	code    [3]int // -1: any
	hasStat bool
	hasCode bool
	texts   []int // pattern ids
}

// Classifier classifies replies with an ordered rule list: the first rule
// whose conditions all hold decides. A Classifier is immutable and safe for
// concurrent use. The zero value is not usable; use [DefaultClassifier] or
// [NewClassifier].
type Classifier struct {
	rules   []compiledRule
	noText  []int // indices of rules without text conditions, ascending
	byPat   [][]int
	matcher *acMatcher
}

// DefaultClassifier returns a classifier with the embedded default rules.
func DefaultClassifier() *Classifier {
	c, err := NewClassifier()
	if err != nil {
		panic("bounce: embedded rules: " + err.Error()) // covered by tests
	}
	return c
}

// NewClassifier returns a classifier that tries the given rules first, in
// order, and then the embedded default rules. To override a default, add a
// rule matching the same replies; to replace the defaults entirely, use
// [NewClassifierRules].
func NewClassifier(rules ...Rule) (*Classifier, error) {
	def, err := ParseRules(defaultRulesText)
	if err != nil {
		return nil, err
	}
	return NewClassifierRules(append(append([]Rule(nil), rules...), def...))
}

// NewClassifierRules returns a classifier using exactly the given rules.
func NewClassifierRules(rules []Rule) (*Classifier, error) {
	c := &Classifier{}
	var pats []string
	patID := map[string]int{}
	for i, r := range rules {
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("%w: rule %q: %v", ErrBadRule, r.Name, err)
		}
		cr := compiledRule{Rule: r}
		cr.Text = append([]string(nil), r.Text...)
		if r.Status != "" {
			cr.hasStat = true
			for j, p := range strings.Split(r.Status, ".") {
				cr.status[j] = -1
				if p != "*" {
					cr.status[j], _ = strconv.Atoi(p)
				}
			}
		}
		if r.Code != "" {
			cr.hasCode = true
			for j := 0; j < 3; j++ {
				cr.code[j] = -1
				if r.Code[j] != 'x' {
					cr.code[j] = int(r.Code[j] - '0')
				}
			}
		}
		for _, t := range r.Text {
			t = normText(t)
			id, ok := patID[t]
			if !ok {
				id = len(pats)
				patID[t] = id
				pats = append(pats, t)
				c.byPat = append(c.byPat, nil)
			}
			cr.texts = append(cr.texts, id)
			c.byPat[id] = append(c.byPat[id], i)
		}
		if len(cr.texts) == 0 {
			c.noText = append(c.noText, i)
		}
		c.rules = append(c.rules, cr)
	}
	m, err := newACMatcher(pats)
	if err != nil {
		return nil, err
	}
	c.matcher = m
	return c, nil
}

// Classify classifies reply with the default rules. The default
// classifier is built once, on first use, and never changes afterwards.
func Classify(reply *smtp.SMTPError) Classification {
	return defaultClassifier().Classify(reply)
}

// Classify classifies reply. A nil reply is unclassified. A 2xx reply is
// CategoryDelivered.
func (c *Classifier) Classify(reply *smtp.SMTPError) Classification {
	if reply == nil {
		return Classification{Category: CategoryUnclassified}
	}
	return c.classify(reply.Code, reply.EnhancedCode, reply.Message)
}

func (c *Classifier) classify(code int, status smtp.EnhancedCode, text string) Classification {
	if !validStatus(status) {
		status = smtp.EnhancedCode{}
	}
	// Candidate rules: those without text, and those with a text that
	// occurs. Both lists are ascending, so merge to keep rule order.
	var buf [64]int
	matched := c.matcher.appendRules(buf[:0], text, c.byPat)
	i, j := 0, 0
	for i < len(c.noText) || j < len(matched) {
		var idx int
		switch {
		case j >= len(matched) || (i < len(c.noText) && c.noText[i] < matched[j]):
			idx = c.noText[i]
			i++
		default:
			idx = matched[j]
			j++
			for j < len(matched) && matched[j] == idx {
				j++
			}
		}
		r := &c.rules[idx]
		if r.hasStat && !matchDigits(r.status, status[0], status[1], status[2]) {
			continue
		}
		if r.hasCode && !matchDigits(r.code, code/100, code/10%10, code%10) {
			continue
		}
		return r.result(code, status)
	}
	return Classification{Category: CategoryUnclassified, Permanent: replyClass(code, status) != 4}
}

func matchDigits(want [3]int, a, b, c int) bool {
	return (want[0] < 0 || want[0] == a) && (want[1] < 0 || want[1] == b) && (want[2] < 0 || want[2] == c)
}

// replyClass returns 2, 4 or 5 from the status or the reply code, or 0.
func replyClass(code int, status smtp.EnhancedCode) int {
	if status[0] != 0 {
		return status[0]
	}
	if code >= 200 && code < 600 {
		return code / 100
	}
	return 0
}

func (r *compiledRule) result(code int, status smtp.EnhancedCode) Classification {
	cl := Classification{Category: r.Category, Rule: r.Name}
	switch r.Permanence {
	case "permanent":
		cl.Permanent = true
	case "transient":
		cl.Permanent = false
	default:
		cl.Permanent = replyClass(code, status) != 4
	}
	if r.Category == CategoryDelivered || r.Category == CategoryAutoReply {
		cl.Permanent = false
	}
	cl.BadAddress = r.BadAddress && cl.Permanent
	return cl
}

// normText lowercases ASCII letters and folds white space runs to one
// space, trimming the ends: the form patterns and texts are compared in.
func normText(s string) string {
	var b strings.Builder
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}
