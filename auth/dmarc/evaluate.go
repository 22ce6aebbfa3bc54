package dmarc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mtakit/mta/resolver"
)

// Status is the DMARC result, named as in Authentication-Results (RFC 8601).
type Status string

// DMARC results.
const (
	StatusPass      Status = "pass"
	StatusFail      Status = "fail"
	StatusNone      Status = "none" // no policy, or DMARC not applicable
	StatusTempError Status = "temperror"
	StatusPermError Status = "permerror"
)

// Identifier is an authentication result DMARC takes as input: the SPF
// result with the domain SPF checked (the MAIL FROM domain, or the HELO
// domain for a null reverse-path), or one DKIM signature's result and d=.
// Result uses the RFC 8601 names: "pass", "fail", "softfail", "neutral",
// "none", "temperror", "permerror"; only "pass" authenticates.
type Identifier struct {
	Result string
	Domain string
}

// Input is what Evaluate needs about a message.
type Input struct {
	// From are the message's From fields (all of them, in order).
	From []FromField
	// SPF is the SPF result for the MAIL FROM identity.
	SPF Identifier
	// DKIM has one entry per verified DKIM signature.
	DKIM []Identifier
}

// Result is the DMARC verdict for a message.
type Result struct {
	Status Status
	// Reason explains a none, temperror or permerror result, or which
	// identifier passed.
	Reason string
	// AuthorDomain is the From domain (A-label), "" when there is none.
	AuthorDomain string
	// PolicyDomain is where the applied record was found, "" for none.
	PolicyDomain string
	// OrgDomain is the author domain's Organizational Domain.
	OrgDomain string
	// Record is the applied policy record, nil when none.
	Record *Record
	// Policy is the requested policy for this author domain after choosing
	// among p, sp and np; "" when no record applies.
	Policy Policy
	// Disposition is what the receiver should do: none, quarantine or
	// reject, after t=y testing lowered it. "" means DMARC leaves it to the
	// receiver (temporary errors).
	Disposition Policy
	// NonExistent is true when the author domain does not exist in DNS
	// (np applied or considered).
	NonExistent bool
	SPFAligned  bool
	DKIMAligned bool
	// AlignedDKIM is the d= of the first aligned, passing signature.
	AlignedDKIM string
}

// Evaluate applies DMARC to a message. The error is only ctx.Err(): DNS
// trouble gives a temperror Result, bad input a none/permerror Result.
func (e *Evaluator) Evaluate(ctx context.Context, in Input) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res, err := e.evaluate(ctx, in)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return res, nil
	}
	e.log.Debug("dmarc", "from", res.AuthorDomain, "result", string(res.Status), "policy_domain", res.PolicyDomain, "disposition", string(res.Disposition))
	return res, nil
}

func (e *Evaluator) evaluate(ctx context.Context, in Input) (*Result, error) {
	author, err := AuthorDomain(in.From)
	if err != nil {
		r := &Result{Status: StatusNone, Reason: err.Error()}
		switch {
		case errors.Is(err, ErrGroup):
			// No meaningful author: DMARC does not apply.
			r.Disposition = PolicyNone
		case errors.Is(err, ErrAmbiguousFrom):
			// The forms the "Composition Kills" attacks use: never pass,
			// and hand the message to stricter local handling.
			r.Status = StatusPermError
			r.Disposition = PolicyQuarantine
		default:
			// No, several From fields or several authors: DMARC stops
			// (RFC 9989 §5.3.1); such messages violate RFC 5322 and are
			// mostly abusive (§11.5), so the suggested handling is reject.
			r.Disposition = PolicyReject
		}
		return r, nil
	}
	r := &Result{AuthorDomain: author}
	walk, err := e.TreeWalk(ctx, author)
	if err != nil {
		r.Status, r.Reason = StatusTempError, err.Error()
		return r, err
	}
	r.OrgDomain = walk.OrgDomain
	pf, ok := walk.PolicyRecord()
	if !ok {
		r.Status, r.Reason, r.Disposition = StatusNone, "no DMARC policy record", PolicyNone
		return r, nil
	}
	if pf.Err != nil {
		// An unusable record: no policy applies (RFC 7489 §6.6.3 step 6.2).
		r.Status, r.Reason, r.Disposition = StatusPermError, "_dmarc."+pf.Domain+": "+pf.Err.Error(), PolicyNone
		return r, nil
	}
	r.PolicyDomain = pf.Domain
	rec := pf.Record
	r.Record = rec

	// Alignment (RFC 9989 §4.4): a passing identifier aligned with the
	// author domain.
	orgs := map[string]string{author: walk.OrgDomain}
	var tempErr error
	aligned := func(d string, mode AlignMode) (bool, error) {
		d, err := NormalizeDomain(d)
		if err != nil {
			return false, nil
		}
		if d == author {
			return true, nil
		}
		if mode == AlignStrict {
			return false, nil
		}
		org, ok := orgs[d]
		if !ok {
			w, err := e.TreeWalk(ctx, d)
			if err != nil {
				return false, err
			}
			org = w.OrgDomain
			orgs[d] = org
		}
		return org == walk.OrgDomain, nil
	}
	var tempMech []string
	if in.SPF.Domain != "" {
		ok, err := aligned(in.SPF.Domain, rec.ASPF)
		if err != nil {
			tempErr = err
		}
		switch strings.ToLower(in.SPF.Result) {
		case "pass":
			r.SPFAligned = ok
		case "temperror":
			if ok {
				tempMech = append(tempMech, "spf")
			}
		}
	}
	for _, d := range in.DKIM {
		res := strings.ToLower(d.Result)
		if res != "pass" && res != "temperror" {
			continue
		}
		ok, err := aligned(d.Domain, rec.ADKIM)
		if err != nil {
			tempErr = err
			continue
		}
		if !ok {
			continue
		}
		if res == "pass" {
			if !r.DKIMAligned {
				r.DKIMAligned, r.AlignedDKIM = true, strings.ToLower(d.Domain)
			}
		} else {
			tempMech = append(tempMech, "dkim")
		}
	}

	// Policy selection (RFC 9989 §4.7 p/sp/np, §4.10.1).
	r.Policy = rec.Policy
	if r.PolicyDomain != author {
		if rec.SubdomainPolicy != "" {
			r.Policy = rec.SubdomainPolicy
		}
		if rec.NonExistent != "" {
			nx, err := e.nonExistent(ctx, author)
			if err != nil {
				tempErr = err
			}
			r.NonExistent = nx
			if nx {
				r.Policy = rec.NonExistent
			}
		}
	}

	switch {
	case r.SPFAligned || r.DKIMAligned:
		r.Status, r.Disposition = StatusPass, PolicyNone
		if r.DKIMAligned {
			r.Reason = "aligned DKIM pass (d=" + r.AlignedDKIM + ")"
		} else {
			r.Reason = "aligned SPF pass (" + strings.ToLower(in.SPF.Domain) + ")"
		}
	case len(tempMech) > 0 || tempErr != nil:
		// Nothing passed and something failed temporarily: no permanent
		// verdict, the receiver decides (defer or deliver).
		r.Status, r.Disposition = StatusTempError, ""
		if tempErr != nil {
			r.Reason = tempErr.Error()
		} else {
			r.Reason = "no aligned pass; temporary error in " + strings.Join(tempMech, ", ")
		}
	default:
		r.Status = StatusFail
		r.Reason = "no aligned SPF or DKIM pass"
		r.Disposition = r.Policy
		if rec.Testing {
			// t=y: apply the policy one level below (RFC 9989 §4.7).
			switch r.Policy {
			case PolicyReject:
				r.Disposition = PolicyQuarantine
			case PolicyQuarantine:
				r.Disposition = PolicyNone
			}
			r.Reason += "; t=y testing lowers the disposition"
		}
	}
	return r, nil
}

// nonExistent reports whether domain does not exist: NXDOMAIN for A,
// AAAA and MX (RFC 9989 np, RFC 8020).
func (e *Evaluator) nonExistent(ctx context.Context, domain string) (bool, error) {
	checks := []func() error{
		func() error { _, err := e.res.LookupIP(ctx, "ip4", domain); return err },
		func() error { _, err := e.res.LookupIP(ctx, "ip6", domain); return err },
		func() error { _, err := e.res.LookupMX(ctx, domain); return err },
	}
	for _, c := range checks {
		err := c()
		if err == nil || resolver.IsNoData(err) {
			return false, nil
		}
		if !resolver.IsNXDomain(err) {
			if resolver.IsTemporary(err) {
				return false, fmt.Errorf("%w: existence of %s: %v", ErrTemporary, domain, err)
			}
			return false, nil
		}
	}
	return true, nil
}
