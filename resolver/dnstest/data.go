package dnstest

import (
	"strings"

	"github.com/miekg/dns"
)

// data is the server's records, indexed by lower-case owner name. It is
// not safe for concurrent use; Server guards it with its mutex.
type data struct {
	rrs   map[string][]dns.RR
	names map[string]int // every owner and each of its ancestors: how many owners at or below
}

func newData() *data {
	return &data{rrs: make(map[string][]dns.RR), names: make(map[string]int)}
}

// add adds rrs, skipping duplicates.
func (d *data) add(rrs []dns.RR) {
	for _, rr := range rrs {
		rr = dns.Copy(rr)
		h := rr.Header()
		h.Name = strings.ToLower(dns.Fqdn(h.Name))
		owner := h.Name
		dup := false
		for _, have := range d.rrs[owner] {
			if dns.IsDuplicate(have, rr) {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		if len(d.rrs[owner]) == 0 {
			d.addName(owner, 1)
		}
		d.rrs[owner] = append(d.rrs[owner], rr)
	}
}

// remove deletes the records of qtype (all for TypeANY or 0) at owner.
func (d *data) remove(owner string, qtype uint16) {
	owner = fqdn(owner)
	old := d.rrs[owner]
	if len(old) == 0 {
		return
	}
	var keep []dns.RR
	if qtype != 0 && qtype != dns.TypeANY {
		for _, rr := range old {
			if rr.Header().Rrtype != qtype {
				keep = append(keep, rr)
			}
		}
	}
	if len(keep) == 0 {
		delete(d.rrs, owner)
		d.addName(owner, -1)
		return
	}
	d.rrs[owner] = keep
}

// addName counts owner (delta 1) or uncounts it (delta -1) in names, for
// itself and every ancestor, so empty non-terminals exist.
func (d *data) addName(owner string, delta int) {
	for n := owner; ; {
		d.names[n] += delta
		if d.names[n] <= 0 {
			delete(d.names, n)
		}
		if n == "." {
			return
		}
		n = parent(n)
	}
}

// parent returns the name one label up: "a.b." → "b.", "b." → ".".
func parent(name string) string {
	i, _ := dns.NextLabel(name, 0)
	if i >= len(name) {
		return "."
	}
	return name[i:]
}

// lookup returns the records at name and whether name exists. A name that
// does not exist may be covered by a wildcard (RFC 4592 section 3.3.1): the
// closest encloser's "*" child, whose records are returned with name as
// owner.
func (d *data) lookup(name string) ([]dns.RR, bool) {
	if d.names[name] > 0 {
		return d.rrs[name], true
	}
	if name == "." {
		return nil, false
	}
	ce := parent(name)
	for d.names[ce] == 0 && ce != "." {
		ce = parent(ce)
	}
	if d.names[ce] == 0 {
		return nil, false
	}
	wild := "*." + ce
	if ce == "." {
		wild = "*."
	}
	if d.names[wild] == 0 {
		return nil, false
	}
	src := d.rrs[wild]
	out := make([]dns.RR, len(src))
	for i, rr := range src {
		c := dns.Copy(rr)
		c.Header().Name = name
		out[i] = c
	}
	return out, true
}

// zoneOf returns the closest ancestor of name (or name itself) that owns a
// SOA record, or "" if there is none.
func (d *data) zoneOf(name string) string {
	for n := name; ; n = parent(n) {
		for _, rr := range d.rrs[n] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return n
			}
		}
		if n == "." {
			return ""
		}
	}
}
