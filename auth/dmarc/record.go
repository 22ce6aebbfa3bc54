// Package dmarc evaluates DMARC (RFC 9989, which obsoleted RFC 7489): it
// finds the policy and the Organizational Domain of an author domain by
// the DNS Tree Walk, checks whether the SPF-authenticated MAIL FROM
// domain or a DKIM signing domain is aligned with the author domain, and
// says what the receiver should do with the message.
//
// # Records
//
// [ParseRecord] reads a DMARC policy record (RFC 9989 §4.7): v=DMARC1
// first and exact, p, sp, np, adkim, aspf, psd, t, rua, ruf, fo. The
// historic tags pct, rf and ri of RFC 7489 are tolerated and ignored;
// unknown tags are ignored. Invalid adkim/aspf/psd/t values fall back to
// their defaults; an invalid p, sp or np makes the record unusable unless a
// rua= is present, in which case it is read as "v=DMARC1; p=none" (RFC 7489
// §6.6.3 step 6, kept by this package).
//
// # DNS Tree Walk
//
// The author domain is queried first; then, from a name of at most 7
// labels (names of 8 or more labels jump straight to 7), one label is
// removed at a time: at most 8 queries (RFC 9989 §4.10). Several DMARC
// records at one name are all discarded. The Organizational Domain is the
// name of a psd=n record, else the name one label below a psd=y record,
// else the name with the fewest labels that has a record, else the domain
// itself (§4.10.2). The policy comes from the author domain's record, else
// the Organizational Domain's, else the public suffix domain's (§4.10.1).
//
// # Evaluation
//
// DMARC passes when SPF passed for a domain aligned with the author domain
// or a DKIM signature passed for an aligned d= (relaxed: same
// Organizational Domain; strict: same name). The policy is p for the
// domain owning the record, sp for its subdomains, and np for subdomains
// that do not exist (NXDOMAIN for A, AAAA and MX). t=y lowers the
// disposition one step (reject → quarantine → none).
//
// The author domain comes from the single From field with a single
// mailbox; anything else (no From, several From fields or addresses, group
// syntax, and the ambiguous forms of the "Composition Kills" study) never
// passes and carries a reason.
package dmarc

import (
	"errors"
	"fmt"
	"strings"
)

// Policy is a requested handling of failing mail: none, quarantine, reject.
type Policy string

// Policies (RFC 9989 §4.7, p tag).
const (
	PolicyNone       Policy = "none"
	PolicyQuarantine Policy = "quarantine"
	PolicyReject     Policy = "reject"
)

// AlignMode is relaxed or strict alignment (adkim, aspf).
type AlignMode string

// Alignment modes.
const (
	AlignRelaxed AlignMode = "r"
	AlignStrict  AlignMode = "s"
)

// Record errors.
var (
	// ErrNotDMARC reports a TXT record that is not a DMARC record (it does
	// not start with exactly "v=DMARC1"); it is discarded, not an error of
	// the domain.
	ErrNotDMARC = errors.New("dmarc: not a DMARC record")
	// ErrRecordSyntax reports a DMARC record that cannot be used.
	ErrRecordSyntax = errors.New("dmarc: invalid DMARC record")
)

// Record is a parsed DMARC policy record.
type Record struct {
	Policy          Policy    // p; "none" when absent (RFC 9989)
	SubdomainPolicy Policy    // sp; "" when absent (then p applies)
	NonExistent     Policy    // np; "" when absent (then sp, then p)
	ADKIM           AlignMode // default relaxed
	ASPF            AlignMode // default relaxed
	PSD             string    // "y", "n" or "u" (default)
	Testing         bool      // t=y
	RUA, RUF        []string
	FO              string
	// Rescued is true when an invalid p/sp/np was overridden to p=none
	// because rua= is present.
	Rescued bool
	// Ignored lists tags that were ignored: unknown, historic (pct, rf,
	// ri) or with invalid values replaced by defaults.
	Ignored []string
}

// ParseRecord parses a DMARC record (a TXT value with its strings joined).
// It returns an error wrapping [ErrNotDMARC] when the record does not
// start with "v=DMARC1", or [ErrRecordSyntax] when it is malformed.
func ParseRecord(s string) (*Record, error) {
	specs := strings.Split(s, ";")
	first := strings.TrimLeft(specs[0], " \t")
	name, value, ok := strings.Cut(first, "=")
	if !ok || strings.TrimRight(name, " \t") != "v" || strings.Trim(value, " \t") != "DMARC1" {
		return nil, ErrNotDMARC
	}
	r := &Record{Policy: PolicyNone, ADKIM: AlignRelaxed, ASPF: AlignRelaxed, PSD: "u"}
	seen := map[string]bool{"v": true}
	var badPolicy []string
	for _, spec := range specs[1:] {
		if strings.Trim(spec, " \t") == "" {
			continue // trailing or doubled separator
		}
		n, v, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q has no '='", ErrRecordSyntax, clip(spec))
		}
		n = strings.ToLower(strings.Trim(n, " \t"))
		v = strings.Trim(v, " \t")
		if n == "" || strings.ContainsAny(n, " \t") {
			return nil, fmt.Errorf("%w: bad tag name %q", ErrRecordSyntax, clip(n))
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] == 0x7f {
				return nil, fmt.Errorf("%w: control character in %s=", ErrRecordSyntax, n)
			}
		}
		if seen[n] {
			return nil, fmt.Errorf("%w: duplicate tag %s", ErrRecordSyntax, n)
		}
		seen[n] = true
		switch n {
		case "p":
			if pol, ok := parsePolicy(v); ok {
				r.Policy = pol
			} else {
				badPolicy = append(badPolicy, "p="+v)
			}
		case "sp", "np":
			pol, ok := parsePolicy(v)
			if !ok {
				badPolicy = append(badPolicy, n+"="+v)
			} else if n == "sp" {
				r.SubdomainPolicy = pol
			} else {
				r.NonExistent = pol
			}
		case "adkim", "aspf":
			m := AlignMode(strings.ToLower(v))
			if m != AlignRelaxed && m != AlignStrict {
				r.Ignored = append(r.Ignored, n+"="+v)
				continue
			}
			if n == "adkim" {
				r.ADKIM = m
			} else {
				r.ASPF = m
			}
		case "psd":
			switch strings.ToLower(v) {
			case "y", "n", "u":
				r.PSD = strings.ToLower(v)
			default:
				r.Ignored = append(r.Ignored, n+"="+v)
			}
		case "t":
			switch strings.ToLower(v) {
			case "y":
				r.Testing = true
			case "n":
			default:
				r.Ignored = append(r.Ignored, n+"="+v)
			}
		case "rua", "ruf":
			var uris []string
			for _, u := range strings.Split(v, ",") {
				if u = strings.Trim(u, " \t"); u != "" {
					uris = append(uris, u)
				}
			}
			if n == "rua" {
				r.RUA = uris
			} else {
				r.RUF = uris
			}
		case "fo":
			r.FO = v
		default:
			// pct, rf, ri (historic, RFC 9989 Appendix A) and unknown tags.
			r.Ignored = append(r.Ignored, n)
		}
	}
	if len(badPolicy) > 0 {
		if !validRUA(r.RUA) {
			return nil, fmt.Errorf("%w: invalid %s", ErrRecordSyntax, strings.Join(badPolicy, ", "))
		}
		// RFC 7489 §6.6.3 step 6.1: with a usable rua=, act as if
		// "v=DMARC1; p=none" had been published.
		r.Policy, r.SubdomainPolicy, r.NonExistent, r.Rescued = PolicyNone, "", "", true
		r.Ignored = append(r.Ignored, badPolicy...)
	}
	return r, nil
}

func validRUA(uris []string) bool {
	for _, u := range uris {
		if strings.HasPrefix(strings.ToLower(u), "mailto:") && strings.Contains(u, "@") {
			return true
		}
	}
	return false
}

func parsePolicy(v string) (Policy, bool) {
	switch p := Policy(strings.ToLower(v)); p {
	case PolicyNone, PolicyQuarantine, PolicyReject:
		return p, true
	}
	return "", false
}

// String formats the record in canonical tag order.
func (r *Record) String() string {
	var b strings.Builder
	b.WriteString("v=DMARC1; p=" + string(r.Policy))
	if r.SubdomainPolicy != "" {
		b.WriteString("; sp=" + string(r.SubdomainPolicy))
	}
	if r.NonExistent != "" {
		b.WriteString("; np=" + string(r.NonExistent))
	}
	if r.ADKIM == AlignStrict {
		b.WriteString("; adkim=s")
	}
	if r.ASPF == AlignStrict {
		b.WriteString("; aspf=s")
	}
	if r.PSD != "u" && r.PSD != "" {
		b.WriteString("; psd=" + r.PSD)
	}
	if r.Testing {
		b.WriteString("; t=y")
	}
	if len(r.RUA) > 0 {
		b.WriteString("; rua=" + strings.Join(r.RUA, ","))
	}
	if len(r.RUF) > 0 {
		b.WriteString("; ruf=" + strings.Join(r.RUF, ","))
	}
	if r.FO != "" {
		b.WriteString("; fo=" + r.FO)
	}
	return b.String()
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
