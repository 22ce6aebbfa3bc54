package dmarc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/mtakit/mta/resolver"
)

// MaxWalkQueries is the most DNS queries one Tree Walk makes (RFC 9989 §4.10).
const MaxWalkQueries = 8

// ErrTemporary reports a DNS failure that may go away (SERVFAIL, timeout):
// the result is temperror, never a permanent verdict.
var ErrTemporary = errors.New("dmarc: temporary DNS failure")

// Config configures an [Evaluator]. Only Resolver is required.
type Config struct {
	// Resolver answers the _dmarc TXT queries and the A/AAAA/MX existence
	// checks for np=. Required.
	Resolver *resolver.Resolver
	// Logger gets one debug line per evaluation; nil discards.
	Logger *slog.Logger
}

// Evaluator discovers DMARC policies and evaluates messages. It is safe
// for concurrent use.
type Evaluator struct {
	res *resolver.Resolver
	log *slog.Logger
}

// New returns an Evaluator; it fails when cfg.Resolver is nil.
func New(cfg Config) (*Evaluator, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("dmarc: Config.Resolver is nil")
	}
	e := &Evaluator{res: cfg.Resolver, log: cfg.Logger}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e, nil
}

// Found is a DMARC record found at a name during a walk.
type Found struct {
	Domain string  // the name under _dmarc (lower case, no trailing dot)
	Record *Record // nil when Err is set
	// Err is set when the one DMARC record there is invalid (wraps
	// ErrRecordSyntax); the name still counts as having a record.
	Err error
}

// Walk is the outcome of a DNS Tree Walk from one domain.
type Walk struct {
	Domain string // the domain walked from
	// Queried lists the names queried under _dmarc, in order (at most 8).
	Queried []string
	// Records are the names that had exactly one DMARC record, in order.
	Records []Found
	// Discarded lists names where several DMARC records were found (all
	// discarded, RFC 9989 §4.10 step 2).
	Discarded []string
	// OrgDomain is the Organizational Domain (RFC 9989 §4.10.2).
	OrgDomain string
	// PSD is the public suffix domain whose psd=y record the walk met, or "".
	PSD string
}

// walkNames lists the names a Tree Walk queries from domain: the domain
// itself, then from at most 7 labels one label less each time, down to
// the top-level domain (RFC 9989 §4.10 steps 1-8).
func walkNames(domain string) []string {
	labels := strings.Split(domain, ".")
	names := []string{domain}
	n := len(labels)
	next := n - 1
	if n >= 8 {
		next = 7
	}
	for k := next; k >= 1; k-- {
		names = append(names, strings.Join(labels[n-k:], "."))
	}
	return names
}

// lookup queries _dmarc.name and returns the one DMARC record there
// (found=true), nothing, or several (dup=true).
func (e *Evaluator) lookup(ctx context.Context, name string) (f Found, found, dup bool, err error) {
	res, err := e.res.LookupTXT(ctx, "_dmarc."+name)
	if err != nil {
		if resolver.IsNotFound(err) {
			return Found{}, false, false, nil
		}
		if ctx.Err() != nil {
			return Found{}, false, false, ctx.Err()
		}
		if resolver.IsTemporary(err) {
			return Found{}, false, false, fmt.Errorf("%w: _dmarc.%s: %v", ErrTemporary, name, err)
		}
		// Invalid names and the like: no record can exist there.
		return Found{}, false, false, nil
	}
	var recs []Found
	for _, txt := range res.Records {
		r, perr := ParseRecord(txt)
		if errors.Is(perr, ErrNotDMARC) {
			continue
		}
		recs = append(recs, Found{Domain: name, Record: r, Err: perr})
		if perr != nil {
			recs[len(recs)-1].Record = nil
		}
	}
	switch len(recs) {
	case 0:
		return Found{}, false, false, nil
	case 1:
		return recs[0], true, false, nil
	}
	return Found{}, false, true, nil
}

// TreeWalk performs the DNS Tree Walk from domain (an A-label domain, as
// returned by NormalizeDomain) and determines its Organizational Domain.
// The error wraps ErrTemporary on DNS trouble, or is ctx.Err().
func (e *Evaluator) TreeWalk(ctx context.Context, domain string) (*Walk, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	w := &Walk{Domain: domain}
	names := walkNames(domain)
	labels := strings.Split(domain, ".")
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		w.Queried = append(w.Queried, name)
		f, found, dup, err := e.lookup(ctx, name)
		if err != nil {
			return nil, err
		}
		if dup {
			w.Discarded = append(w.Discarded, name)
			continue
		}
		if !found {
			continue
		}
		w.Records = append(w.Records, f)
		if f.Record != nil && f.Record.PSD == "n" {
			// §4.10.2 rule 1: psd=n names the Organizational Domain.
			w.OrgDomain = name
			return w, nil
		}
		if f.Record != nil && f.Record.PSD == "y" {
			// §4.10.2 rule 2: the Organizational Domain is one label
			// below the public suffix domain.
			w.PSD = name
			k := strings.Count(name, ".") + 2
			if k > len(labels) {
				k = len(labels)
			}
			w.OrgDomain = strings.Join(labels[len(labels)-k:], ".")
			return w, nil
		}
	}
	// §4.10.2 rule 3: the name with the fewest labels holding a record,
	// or the domain itself when none has one.
	w.OrgDomain = domain
	if len(w.Records) > 0 {
		w.OrgDomain = w.Records[len(w.Records)-1].Domain
	}
	return w, nil
}

// record returns the record found at name during the walk.
func (w *Walk) record(name string) (Found, bool) {
	for _, f := range w.Records {
		if f.Domain == name {
			return f, true
		}
	}
	return Found{}, false
}

// PolicyRecord picks the policy record for the walk's domain (RFC 9989
// §4.10.1): the domain's own record, else the Organizational Domain's,
// else the public suffix domain's. ok is false when there is none.
func (w *Walk) PolicyRecord() (f Found, ok bool) {
	if f, ok := w.record(w.Domain); ok {
		return f, true
	}
	if f, ok := w.record(w.OrgDomain); ok {
		return f, true
	}
	if w.PSD != "" {
		return w.record(w.PSD)
	}
	return Found{}, false
}
