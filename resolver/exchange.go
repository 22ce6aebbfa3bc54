package resolver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// answer is the outcome of resolving one question, before conversion.
type answer struct {
	rrs       []dns.RR      // records of the type, owned by name
	name      string        // final name after CNAMEs
	ttl       time.Duration // positive: min TTL over chain and RRset; negative: RFC 2308 TTL, 0 = do not cache
	authentic bool          // every response had AD set
	server    string        // the server of the last response
	negative  error         // ErrNotFound or ErrNoData (possibly wrapped with detail), nil for a positive answer
	rcode     int           // rcode of the last response
}

// resolve answers k from the upstream servers, following CNAME chains.
// Errors are *Error wrapping ErrTemporary or ErrCNAMEChain, or ctx.Err().
func (r *Resolver) resolve(ctx context.Context, k key) (answer, error) {
	ch := chase{qname: k.name, qtype: k.qtype, ttl: math.MaxUint32, authentic: true}
	cur := k.name
	for {
		resp, server, err := r.exchange(ctx, cur, k.qtype)
		if err != nil {
			var e *Error
			if cur != k.name && errors.As(err, &e) {
				e.Name = k.name
				e.Err = fmt.Errorf("%w (querying CNAME target %s)", e.Err, cur)
			}
			return answer{}, err
		}
		ans, next, err := ch.process(resp, cur)
		if err != nil {
			return answer{}, &Error{Name: k.name, Type: typeString(k.qtype), Server: server, Err: err}
		}
		if next == "" {
			ans.server = server
			ans.ttl = r.capTTL(ans)
			return ans, nil
		}
		// The chain leaves this response without an answer and without
		// a negative one (no SOA): ask for the target itself.
		cur = next
	}
}

// capTTL applies MaxTTL to positive answers and NegativeTTL to negative ones.
func (r *Resolver) capTTL(ans answer) time.Duration {
	if ans.negative != nil {
		return min(ans.ttl, r.negativeTTL)
	}
	return min(ans.ttl, r.maxTTL)
}

// chase is the state of following one question through CNAMEs, possibly
// across several responses.
type chase struct {
	qname     string
	qtype     uint16
	visited   []string // names already seen in the chain, to detect loops
	cnames    int
	ttl       uint32 // min TTL so far, seconds
	authentic bool
}

// process handles one NOERROR or NXDOMAIN response to the question cur.
// It returns either a final answer (next == ""), or the name to ask about
// next (when the response ends in a CNAME whose target it does not cover),
// or ErrCNAMEChain.
//
// Only records that belong to the chain starting at cur are used; anything
// else in the answer section is ignored, so records an upstream added for
// other names cannot be injected (the "bailiwick" of a recursive answer is
// the chain itself).
func (c *chase) process(resp *dns.Msg, cur string) (ans answer, next string, err error) {
	c.authentic = c.authentic && resp.AuthenticatedData
	name := cur
	for {
		var rrs []dns.RR
		var cname *dns.CNAME
		for _, rr := range resp.Answer {
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(strings.TrimSuffix(h.Name, "."), name) {
				continue
			}
			switch {
			case h.Rrtype == c.qtype:
				rrs = append(rrs, rr)
			case h.Rrtype == dns.TypeCNAME && cname == nil:
				cname = rr.(*dns.CNAME)
			}
		}
		if len(rrs) > 0 && resp.Rcode == dns.RcodeSuccess {
			for _, rr := range rrs {
				c.ttl = min(c.ttl, rr.Header().Ttl)
			}
			return answer{rrs: rrs, name: name, ttl: seconds(c.ttl), authentic: c.authentic}, "", nil
		}
		if cname == nil || c.qtype == dns.TypeCNAME {
			break
		}
		// RFC 1034 section 3.6.2: restart the query at the canonical name.
		c.cnames++
		if c.cnames > maxCNAMEs {
			return answer{}, "", fmt.Errorf("%w: more than %d CNAMEs from %s", ErrCNAMEChain, maxCNAMEs, c.qname)
		}
		if c.visited == nil {
			c.visited = append(c.visited, c.qname)
		}
		target := canon(cname.Target)
		if target == "" {
			return answer{}, "", fmt.Errorf("%w: %s is an alias of the root", ErrCNAMEChain, name)
		}
		for _, v := range c.visited {
			if v == target {
				return answer{}, "", fmt.Errorf("%w: %s points back to %s", ErrCNAMEChain, name, target)
			}
		}
		c.visited = append(c.visited, target)
		c.ttl = min(c.ttl, cname.Hdr.Ttl)
		name = target
	}
	// No records of the type at the end of the chain so far.
	soa := findSOA(resp.Ns)
	if resp.Rcode == dns.RcodeSuccess && name != cur && soa == nil {
		// RFC 1034 section 4.3.2 step 3a: a server that did not follow the
		// CNAME leaves the chase to us.
		return answer{}, name, nil
	}
	neg := ErrNoData
	if resp.Rcode == dns.RcodeNameError {
		neg = ErrNotFound
	}
	ans = answer{name: name, authentic: c.authentic, rcode: resp.Rcode, negative: neg}
	if name != c.qname {
		ans.negative = fmt.Errorf("%w: %s (via CNAME from %s)", neg, name, c.qname)
	}
	if soa != nil {
		// RFC 2308 section 5: the negative TTL is the smaller of the SOA
		// record's TTL and its MINIMUM field. Without a SOA the answer is
		// not cached (ttl 0), as section 5 also advises.
		ans.ttl = seconds(min(c.ttl, soa.Hdr.Ttl, soa.Minttl))
	}
	return ans, "", nil
}

func findSOA(ns []dns.RR) *dns.SOA {
	for _, rr := range ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa
		}
	}
	return nil
}

func seconds(s uint32) time.Duration { return time.Duration(s) * time.Second }

// exchange sends the question to the servers in order, Attempts rounds,
// until one gives a NOERROR or NXDOMAIN response. UDP answers with TC set
// are retried over TCP with the same server (RFC 7766 section 5).
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	m := new(dns.Msg)
	m.SetQuestion(name+".", qtype)
	m.RecursionDesired = true
	// RFC 6891 EDNS0 with the DO bit (RFC 3225), so that a validating
	// resolver sets AD on authenticated answers (RFC 4035 section 3.2.3).
	m.SetEdns0(ednsSize, true)

	var (
		lastErr    error
		lastServer string
		lastRcode  int
	)
	for range r.attempts {
		for _, server := range r.servers {
			if err := ctx.Err(); err != nil {
				return nil, "", err
			}
			resp, err := r.exchangeOne(ctx, m, server)
			if err != nil {
				if ctxErr := ctx.Err(); ctxErr != nil {
					return nil, "", ctxErr
				}
				lastErr, lastServer, lastRcode = err, server, 0
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return resp, server, nil
			}
			// SERVFAIL, REFUSED, FORMERR, NOTIMP and the rest: this server
			// cannot answer; another one may (RFC 1035 section 7.2).
			lastErr, lastServer, lastRcode = errors.New("server answered with an error"), server, resp.Rcode
		}
	}
	return nil, "", &Error{Name: name, Type: typeString(qtype), Server: lastServer, Rcode: lastRcode,
		Err: fmt.Errorf("%w: %v", ErrTemporary, lastErr)}
}

// exchangeOne queries one server: UDP, then TCP if the answer is truncated.
func (r *Resolver) exchangeOne(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	m.Id = dns.Id()
	resp, _, err := r.udp.ExchangeContext(ctx, m, server)
	if err != nil {
		return nil, err
	}
	if err := checkResponse(m, resp); err != nil {
		return nil, err
	}
	if !resp.Truncated {
		return resp, nil
	}
	m.Id = dns.Id()
	resp, _, err = r.tcp.ExchangeContext(ctx, m, server)
	if err != nil {
		return nil, fmt.Errorf("after truncated UDP answer: %w", err)
	}
	if err := checkResponse(m, resp); err != nil {
		return nil, err
	}
	if resp.Truncated {
		return nil, errors.New("answer truncated over TCP")
	}
	return resp, nil
}

// checkResponse verifies that resp answers m: a response, to a query, for
// the same question (RFC 5452 section 9.1; the ID is checked by miekg/dns).
// Error responses may come without a question section (some servers drop
// it in FORMERR, REFUSED or SERVFAIL answers).
func checkResponse(m, resp *dns.Msg) error {
	if !resp.Response || resp.Opcode != dns.OpcodeQuery {
		return errors.New("malformed response (not a query response)")
	}
	if len(resp.Question) == 0 && resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return nil
	}
	if len(resp.Question) != 1 {
		return fmt.Errorf("malformed response (%d questions)", len(resp.Question))
	}
	q, want := resp.Question[0], m.Question[0]
	if q.Qtype != want.Qtype || q.Qclass != want.Qclass || !strings.EqualFold(q.Name, want.Name) {
		return fmt.Errorf("response for another question (%s %s)", q.Name, typeString(q.Qtype))
	}
	return nil
}
