// Package spf checks whether a client IP address may send mail for a
// domain, by the Sender Policy Framework of RFC 7208.
//
// A Checker evaluates RFC 7208's check_host() function (section 4) over a
// DNS Resolver, normally a *resolver.Resolver from this module:
//
//	r, _ := resolver.New(resolver.Config{})
//	c := &spf.Checker{Resolver: r, Hostname: "mx.example.org"}
//	res := c.CheckMailFrom(ctx, clientIP, heloName, mailFrom)
//	if res.Status == spf.Fail {
//		// reject with res.Explanation
//	}
//
// # Identities
//
// CheckMailFrom checks the MAIL FROM identity (section 2.4); a null
// reverse-path checks postmaster@<HELO> instead. CheckHELO checks the
// HELO/EHLO identity (section 2.3). CheckHost is check_host() itself.
//
// # Results
//
// Every check returns a Result whose Status is one of None, Neutral, Pass,
// Fail, Softfail, TempError and PermError (section 2.6, with the
// semantics of sections 4 to 6). Results are verdicts, not Go errors:
// Result.Err only explains None, TempError and PermError and wraps one of
// the package's sentinels (ErrNoRecord, ErrSyntax, ErrLookupLimit, ...)
// and, for DNS failures, the resolver's error. Result.Domain is the
// domain whose policy was evaluated, the one DMARC aligns with; for Fail,
// Result.Explanation holds the expanded exp= text (section 6.2) or the
// configured default.
//
// # Records and processing
//
// The record is the single TXT record starting with "v=spf1" (section
// 4.5; the obsolete SPF RR type 99 is not queried); more than one is a
// PermError. The whole record is parsed before evaluation, so a syntax
// error anywhere is a PermError (section 4.6). All mechanisms (all,
// include, a, mx, ptr, ip4, ip6, exists), the redirect= and exp=
// modifiers, unknown modifiers (ignored after a syntax check) and every
// macro of section 7, including the explanation-only c, r and t, are
// supported.
//
// # Limits
//
// Section 4.6.4 limits are enforced across nested include and redirect
// evaluations: at most 10 terms that query DNS (Checker.MaxLookups), at
// most 2 void lookups (Checker.MaxVoidLookups), at most 10 MX hosts per mx
// mechanism (PermError beyond) and 10 PTR names per ptr mechanism or %{p}
// macro (the rest ignored). A whole check is bounded by Checker.Timeout
// (20 s by default), after which the result is TempError.
//
// # Conformance
//
// The tests run the openspf/pyspf RFC 7208 and RFC 4408 test suites
// against a real DNS server on loopback (resolver/dnstest).
package spf
