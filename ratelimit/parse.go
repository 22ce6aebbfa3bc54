package ratelimit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParsePolicy reads a policy in the text format: one directive per line,
// "#" starts a comment (outside quotes), values are bare words or Go-quoted
// strings ("..." with backslash escapes). List-valued keys take
// comma-separated values and may also be repeated.
//
//	# Default layer: the most specific matching rule wins.
//	limit per=site,source rate=600/min burst=20 connections=10 messages-per-connection=100
//	limit site=gmail.com per=source rate=3000/min burst=100 connections=20
//	# Own layer: applies on top of the winner above.
//	limit layer=tenant per=tenant rate=100000/h
//
//	backoff defaults    # the DefaultBackoff rules, here in the order
//	backoff name=acme text="slow down" factor=0.5 connections=2 suspend=10m
//	# "backoff off" alone disables back-off; no backoff line keeps the defaults.
//
//	options backoff-per=site,source min-factor=0.05
//	warmup schedule=50,100,500,1000 sources=192.0.2.10,pool-b
//
// limit keys: name, layer, domain, site, source, tenant (match; "*" = any),
// per (dimensions), rate (N/unit, see [ParseRate]), burst, connections,
// messages-per-connection. backoff keys: name, category, code, enhanced,
// text, regexp (conditions), factor, connections, suspend, holddown
// (actions), recover-after, recover-period, recover-step (recovery);
// durations are Go durations ("90s", "1h30m"). warmup keys: schedule
// ("default" or daily caps), sources.
//
// Values are checked as [New] would check them. Errors wrap [ErrSyntax] or
// [ErrInvalid] and name the line. [Policy.String] writes this format back.
func ParsePolicy(text string) (Policy, error) {
	var p Policy
	backoffSeen := false
	off := false
	for n, line := range strings.Split(text, "\n") {
		lineNo := n + 1
		toks, err := tokenize(line)
		if err != nil {
			return Policy{}, fmt.Errorf("%w: line %d: %v", ErrSyntax, lineNo, err)
		}
		if len(toks) == 0 {
			continue
		}
		if toks[0].key != "" {
			return Policy{}, fmt.Errorf("%w: line %d: directive expected, got %s=", ErrSyntax, lineNo, toks[0].key)
		}
		dir, args := toks[0].val, toks[1:]
		switch dir {
		case "limit":
			r, err := parseLimit(args)
			if err == nil {
				_, err = r.compile()
			}
			if err != nil {
				return Policy{}, fmt.Errorf("line %d: %w", lineNo, err)
			}
			p.Rules = append(p.Rules, r)
		case "backoff":
			if len(args) == 1 && args[0].key == "" && (args[0].val == "off" || args[0].val == "defaults") {
				if args[0].val == "off" {
					if backoffSeen {
						return Policy{}, fmt.Errorf("%w: line %d: \"backoff off\" with other backoff lines", ErrSyntax, lineNo)
					}
					off = true
					p.Backoff = []BackoffRule{}
				} else {
					if off {
						return Policy{}, fmt.Errorf("%w: line %d: backoff after \"backoff off\"", ErrSyntax, lineNo)
					}
					p.Backoff = append(p.Backoff, DefaultBackoff()...)
				}
				backoffSeen = true
				continue
			}
			if off {
				return Policy{}, fmt.Errorf("%w: line %d: backoff after \"backoff off\"", ErrSyntax, lineNo)
			}
			r, err := parseBackoff(args)
			if err == nil {
				_, err = r.compile()
			}
			if err != nil {
				return Policy{}, fmt.Errorf("line %d: %w", lineNo, err)
			}
			p.Backoff = append(p.Backoff, r)
			backoffSeen = true
		case "options":
			if err := parseOptions(&p, args); err != nil {
				return Policy{}, fmt.Errorf("line %d: %w", lineNo, err)
			}
		case "warmup":
			if p.Warmup != nil {
				return Policy{}, fmt.Errorf("%w: line %d: second warmup line", ErrSyntax, lineNo)
			}
			w, err := parseWarmup(args)
			if err != nil {
				return Policy{}, fmt.Errorf("line %d: %w", lineNo, err)
			}
			p.Warmup = w
		default:
			return Policy{}, fmt.Errorf("%w: line %d: unknown directive %q", ErrSyntax, lineNo, dir)
		}
	}
	return p, nil
}

type token struct {
	key, val string
	quoted   bool // a quoted value is one list element, never split at commas
}

// list returns the token's value as list elements.
func (t token) list() []string {
	if t.quoted {
		return []string{t.val}
	}
	return splitList(t.val)
}

// tokenize splits one line into bare words and key=value pairs.
func tokenize(line string) ([]token, error) {
	var toks []token
	i := 0
	for {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
			i++
		}
		if i >= len(line) || line[i] == '#' {
			return toks, nil
		}
		start := i
		for i < len(line) && line[i] != '=' && line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '#' && line[i] != '"' {
			i++
		}
		word := line[start:i]
		if i < len(line) && line[i] == '"' {
			return nil, fmt.Errorf("unexpected quote after %q", word)
		}
		if i >= len(line) || line[i] != '=' {
			if word == "" {
				return nil, fmt.Errorf("unexpected %q", line[i:i+1])
			}
			toks = append(toks, token{val: word})
			continue
		}
		if word == "" {
			return nil, fmt.Errorf("'=' without a key")
		}
		i++ // '='
		var val string
		quoted := false
		if i < len(line) && line[i] == '"' {
			quoted = true
			q, err := strconv.QuotedPrefix(line[i:])
			if err != nil {
				return nil, fmt.Errorf("bad quoted value for %s", word)
			}
			val, _ = strconv.Unquote(q)
			i += len(q)
			if i < len(line) && line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '#' {
				return nil, fmt.Errorf("text after quoted value for %s", word)
			}
		} else {
			vs := i
			for i < len(line) && line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '#' {
				if line[i] == '"' || line[i] == '=' {
					return nil, fmt.Errorf("unexpected %q in value for %s", line[i:i+1], word)
				}
				i++
			}
			val = line[vs:i]
		}
		toks = append(toks, token{key: word, val: val, quoted: quoted})
	}
}

// once tracks single-valued keys.
type once map[string]bool

func (o once) set(k string) error {
	if o[k] {
		return fmt.Errorf("%w: %s given twice", ErrSyntax, k)
	}
	o[k] = true
	return nil
}

func splitList(v string) []string {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func atoiNonNeg(k, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %s=%q: want a non-negative integer", ErrSyntax, k, v)
	}
	return n, nil
}

func parseFloat(k, v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%w: %s=%q: want a number", ErrSyntax, k, v)
	}
	return f, nil
}

func parseDur(k, v string) (Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: %s=%q: want a duration like 90s or 1h", ErrSyntax, k, v)
	}
	return Duration(d), nil
}

func parseDims(k, v string) ([]Dimension, error) {
	var out []Dimension
	for _, s := range splitList(v) {
		d, err := ParseDimension(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, d)
	}
	return out, nil
}

func parseLimit(args []token) (Rule, error) {
	var r Rule
	seen := once{}
	for _, t := range args {
		if t.key == "" {
			return r, fmt.Errorf("%w: limit: unexpected word %q", ErrSyntax, t.val)
		}
		if t.key != "per" {
			if err := seen.set(t.key); err != nil {
				return r, err
			}
		}
		var err error
		switch t.key {
		case "name":
			r.Name = t.val
		case "layer":
			r.Layer = t.val
		case "domain":
			r.Match.Domain = t.val
		case "site":
			r.Match.Site = t.val
		case "source":
			r.Match.Source = t.val
		case "tenant":
			r.Match.Tenant = t.val
		case "per":
			var d []Dimension
			d, err = parseDims(t.key, t.val)
			r.Per = append(r.Per, d...)
		case "rate":
			r.Rate, err = ParseRate(t.val)
		case "burst":
			r.Burst, err = atoiNonNeg(t.key, t.val)
		case "connections":
			r.MaxConnections, err = atoiNonNeg(t.key, t.val)
		case "messages-per-connection":
			r.MaxMessagesPerConnection, err = atoiNonNeg(t.key, t.val)
		default:
			err = fmt.Errorf("%w: limit: unknown key %q", ErrSyntax, t.key)
		}
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

func parseBackoff(args []token) (BackoffRule, error) {
	var r BackoffRule
	seen := once{}
	for _, t := range args {
		if t.key == "" {
			return r, fmt.Errorf("%w: backoff: unexpected word %q", ErrSyntax, t.val)
		}
		switch t.key {
		case "category", "code", "text":
		default:
			if err := seen.set(t.key); err != nil {
				return r, err
			}
		}
		var err error
		switch t.key {
		case "name":
			r.Name = t.val
		case "category":
			r.Categories = append(r.Categories, t.list()...)
		case "code":
			for _, s := range splitList(t.val) {
				c, cerr := strconv.Atoi(s)
				if cerr != nil || c < 100 || c > 599 {
					return r, fmt.Errorf("%w: code=%q: want a reply code", ErrSyntax, s)
				}
				r.Codes = append(r.Codes, c)
			}
		case "enhanced":
			r.Enhanced = t.val
		case "text":
			if t.val == "" {
				return r, fmt.Errorf("%w: empty text", ErrSyntax)
			}
			r.Text = append(r.Text, t.val)
		case "regexp":
			r.Regexp = t.val
		case "factor":
			r.Factor, err = parseFloat(t.key, t.val)
		case "connections":
			r.MaxConnections, err = atoiNonNeg(t.key, t.val)
		case "suspend":
			r.Suspend, err = parseDur(t.key, t.val)
		case "holddown":
			r.Holddown, err = parseDur(t.key, t.val)
		case "recover-after":
			r.RecoverAfter, err = atoiNonNeg(t.key, t.val)
		case "recover-period":
			r.RecoverPeriod, err = parseDur(t.key, t.val)
		case "recover-step":
			r.RecoverStep, err = parseFloat(t.key, t.val)
		default:
			err = fmt.Errorf("%w: backoff: unknown key %q", ErrSyntax, t.key)
		}
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

func parseOptions(p *Policy, args []token) error {
	for _, t := range args {
		switch t.key {
		case "backoff-per":
			if len(p.BackoffPer) > 0 {
				return fmt.Errorf("%w: backoff-per given twice", ErrSyntax)
			}
			d, err := parseDims(t.key, t.val)
			if err != nil {
				return err
			}
			seen := map[Dimension]bool{}
			for _, x := range d {
				if seen[x] {
					return fmt.Errorf("%w: backoff-per: %v twice", ErrInvalid, x)
				}
				seen[x] = true
			}
			p.BackoffPer = d
		case "min-factor":
			if p.MinFactor != 0 {
				return fmt.Errorf("%w: min-factor given twice", ErrSyntax)
			}
			f, err := parseFloat(t.key, t.val)
			if err != nil {
				return err
			}
			if !(f >= 0.01 && f <= 1) {
				return fmt.Errorf("%w: min-factor %v not in [0.01,1]", ErrInvalid, f)
			}
			p.MinFactor = f
		default:
			if t.key == "" {
				return fmt.Errorf("%w: options: unexpected word %q", ErrSyntax, t.val)
			}
			return fmt.Errorf("%w: options: unknown key %q", ErrSyntax, t.key)
		}
	}
	return nil
}

func parseWarmup(args []token) (*WarmupPlan, error) {
	w := &WarmupPlan{}
	seen := once{}
	for _, t := range args {
		switch t.key {
		case "schedule":
			if err := seen.set(t.key); err != nil {
				return nil, err
			}
			if t.val == "default" {
				continue
			}
			w.Schedule = []int{}
			for _, s := range splitList(t.val) {
				n, err := atoiNonNeg("schedule", s)
				if err != nil {
					return nil, err
				}
				w.Schedule = append(w.Schedule, n)
			}
			if len(w.Schedule) == 0 {
				return nil, fmt.Errorf("%w: empty schedule", ErrSyntax)
			}
		case "sources":
			w.Sources = append(w.Sources, t.list()...)
		default:
			if t.key == "" {
				return nil, fmt.Errorf("%w: warmup: unexpected word %q", ErrSyntax, t.val)
			}
			return nil, fmt.Errorf("%w: warmup: unknown key %q", ErrSyntax, t.key)
		}
	}
	return w, nil
}

// String writes p in the text format read by [ParsePolicy]; parsing the
// result gives p back (with nil and empty lists equal).
func (p Policy) String() string {
	var b strings.Builder
	for _, r := range p.Rules {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	if p.Backoff != nil && len(p.Backoff) == 0 {
		b.WriteString("backoff off\n")
	}
	for _, r := range p.Backoff {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	if len(p.BackoffPer) > 0 || p.MinFactor != 0 {
		b.WriteString("options")
		if len(p.BackoffPer) > 0 {
			b.WriteString(" backoff-per=")
			for i, d := range p.BackoffPer {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(d.String())
			}
		}
		if p.MinFactor != 0 {
			b.WriteString(" min-factor=" + strconv.FormatFloat(p.MinFactor, 'g', -1, 64))
		}
		b.WriteByte('\n')
	}
	if w := p.Warmup; w != nil {
		b.WriteString("warmup")
		if w.Schedule != nil {
			b.WriteString(" schedule=")
			for i, n := range w.Schedule {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.Itoa(n))
			}
		}
		for _, s := range w.Sources {
			b.WriteString(" sources=" + quoteIfNeeded(s))
		}
		b.WriteByte('\n')
	}
	return b.String()
}
