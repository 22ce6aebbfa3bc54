// Package resolver looks up the DNS records a mail transfer agent needs
// (MX, A/AAAA, TXT, TLSA, PTR) through recursive resolvers, with a cache,
// and with errors that tell "nothing there" apart from "try again later".
//
// It is built on github.com/miekg/dns. Every package of mta that uses DNS
// takes a *Resolver, and tests point it at a
// [github.com/mtakit/mta/resolver/dnstest] server on loopback.
//
// # Queries
//
// Queries go over UDP with EDNS0 (RFC 6891), advertising a 1232-octet
// buffer and setting the DO bit (RFC 3225), so that a validating upstream
// resolver reports DNSSEC-validated answers with the AD bit
// (RFC 4035 section 3.2.3); see Result.Authentic. A truncated UDP answer is
// retried over TCP (RFC 7766). The servers of Config.Servers are tried in
// order, Config.Attempts rounds, each attempt bounded by Config.Timeout.
// A response must carry the query's ID and question (RFC 5452), else it is
// ignored as a failure of that server.
//
// CNAME chains are followed (RFC 1034 section 3.6.2), within one response
// and, when the upstream returns a CNAME without its target's records or a
// negative answer, by querying the target. Result.Name is the final name.
// A chain of more than 10 CNAMEs, or one that loops, is ErrCNAMEChain: a
// permanent misconfiguration, neither "not found" nor temporary.
//
// # Names
//
// Names are accepted with or without the trailing dot, in any letter case,
// and are reported in lower case without the trailing dot. An ASCII name
// must consist of labels of letters, digits, '-' and '_' (for service
// labels such as "_dmarc" and "_25._tcp", RFC 8552), 1 to 63 octets each,
// 253 octets in all. A name with non-ASCII characters must be valid UTF-8
// and is converted to A-labels ("xn--", RFC 5890) with
// golang.org/x/net/idna, using the UTS #46 lookup mapping (so "BÜCHER.example"
// becomes "xn--bcher-kva.example") without the STD3 host-name rule (so that
// underscores survive). Anything else (spaces, escapes, other punctuation,
// empty labels, labels IDNA2008 rejects) is ErrInvalidName, and no query is
// sent. Names in answers (MX hosts, PTR targets, CNAME targets) are data:
// they are returned as the upstream sent them, lower-cased, in miekg/dns
// presentation format (unusual octets as \DDD escapes), and are not
// converted back to U-labels.
//
// # Errors
//
// Every failure is a context error (the caller's ctx.Err(), returned as is)
// or an *Error wrapping one sentinel: ErrNotFound (NXDOMAIN), ErrNoData,
// ErrTemporary, ErrInvalidName or ErrCNAMEChain. IsNotFound, IsNXDomain,
// IsNoData and IsTemporary classify them; a temporary failure is never
// reported as not found. SERVFAIL, REFUSED and other error codes, timeouts,
// network errors, malformed responses and answers truncated even over TCP
// are temporary, after every server and attempt has been tried.
//
// # Cache
//
// Answers are cached by (lower-cased name, type) for their TTL, the
// smallest over the records and the CNAMEs that led to them, capped by
// Config.MaxTTL; a cached answer reports its remaining TTL and keeps its
// Authentic flag. NXDOMAIN and no-data answers are cached per RFC 2308
// section 5 for the smaller of the SOA record's TTL and its MINIMUM field,
// capped by Config.NegativeTTL; a negative answer without a SOA record is
// not cached. Temporary failures are never cached. Answers with TTL 0 are
// not cached. The cache holds at most Config.CacheSize entries and evicts
// the least recently used.
//
// Concurrent lookups of the same name and type share one upstream query.
// A caller whose context ends stops waiting and gets ctx.Err(); the shared
// query goes on for the others (and for the cache), bounded by the
// timeouts.
package resolver
