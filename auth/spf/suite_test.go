package spf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/mtakit/mta/internal/sharedtest"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

// The openspf/pyspf conformance suites (see
// /work/shared/corpus/spf/README.md), served by a real DNS server on
// loopback (dnstest) and checked through the real resolver.

type suiteScenario struct {
	Description string                     `yaml:"description"`
	Tests       map[string]suiteTest       `yaml:"tests"`
	Zonedata    map[string][]yaml.Node     `yaml:"zonedata"`
	zone        map[string][]suiteZoneItem // decoded Zonedata
}

type suiteTest struct {
	Host        string `yaml:"host"`
	MailFrom    string `yaml:"mailfrom"`
	HELO        string `yaml:"helo"`
	Result      any    `yaml:"result"`
	Explanation string `yaml:"explanation"`
	Spec        any    `yaml:"spec"`
}

// suiteZoneItem is one zonedata entry: a record, or the TIMEOUT marker.
type suiteZoneItem struct {
	typ   string // "A", "AAAA", "MX", "PTR", "CNAME", "TXT", "SPF", "TIMEOUT"
	value any
}

// corpusDir returns ../shared/corpus/<sub>, or skips when it is absent.
func corpusDir(t testing.TB, sub string) string {
	t.Helper()
	return sharedtest.Require(t, "corpus", sub)
}

func loadSuite(t testing.TB, file string) []*suiteScenario {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir(t, "spf"), file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var out []*suiteScenario
	for {
		var sc suiteScenario
		if err := dec.Decode(&sc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", file, err)
		}
		sc.zone = make(map[string][]suiteZoneItem)
		for name, items := range sc.Zonedata {
			for _, n := range items {
				var it suiteZoneItem
				if n.Kind == yaml.ScalarNode && n.Value == "TIMEOUT" {
					it.typ = "TIMEOUT"
				} else {
					var m map[string]any
					if err := n.Decode(&m); err != nil || len(m) != 1 {
						t.Fatalf("%s: zonedata %s: bad entry (%v)", file, name, err)
					}
					for k, v := range m {
						it.typ, it.value = strings.ToUpper(k), v
					}
				}
				sc.zone[name] = append(sc.zone[name], it)
			}
		}
		out = append(out, &sc)
	}
	return out
}

// presentation escapes a raw domain name the way miekg/dns prints names
// it unpacks from the wire, so that the owner names the server stores
// match the names it is asked about.
func presentation(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case strings.IndexByte("();@\"\\ '", c) >= 0:
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x21 || c > 0x7e:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return dns.Fqdn(b.String())
}

// txtStrings turns a TXT/SPF zonedata value into character-strings.
func txtStrings(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, s := range v {
			str, ok := s.(string)
			if !ok {
				return nil, fmt.Errorf("TXT piece %v is not a string", s)
			}
			out = append(out, str)
		}
		return out, nil
	}
	return nil, fmt.Errorf("bad TXT value %#v", v)
}

// serveScenario starts a dnstest server with the scenario's zonedata,
// applying the runner rules of the corpus README: SPF records are served
// as TXT when a name has no TXT entry; SPF-type records themselves are not
// served (RFC 7208 queries TXT only); a bare TIMEOUT drops every query of
// the name except for the types listed before it.
func serveScenario(t *testing.T, sc *suiteScenario) *dnstest.Server {
	t.Helper()
	srv := dnstest.New(t, "")
	hdr := func(name string, typ uint16) dns.RR_Header {
		return dns.RR_Header{Name: presentation(name), Rrtype: typ, Class: dns.ClassINET, Ttl: 300}
	}
	for name, items := range sc.zone {
		hasTXT := slices.ContainsFunc(items, func(it suiteZoneItem) bool { return it.typ == "TXT" })
		exempt := map[uint16]bool{}
		timeout := false
		for _, it := range items {
			var rr dns.RR
			var qtype uint16
			switch it.typ {
			case "TIMEOUT":
				timeout = true
				continue
			case "A", "AAAA":
				s, _ := it.value.(string)
				ip, err := netip.ParseAddr(s)
				if err != nil {
					t.Fatalf("zonedata %s: %s %v: %v", name, it.typ, it.value, err)
				}
				if it.typ == "A" {
					qtype = dns.TypeA
					rr = &dns.A{Hdr: hdr(name, qtype), A: ip.AsSlice()}
				} else {
					qtype = dns.TypeAAAA
					rr = &dns.AAAA{Hdr: hdr(name, qtype), AAAA: ip.AsSlice()}
				}
			case "MX":
				pair, ok := it.value.([]any)
				if !ok || len(pair) != 2 {
					t.Fatalf("zonedata %s: bad MX %v", name, it.value)
				}
				pref, _ := pair[0].(int)
				host, _ := pair[1].(string)
				qtype = dns.TypeMX
				target := "."
				if host != "" {
					target = presentation(host)
				}
				rr = &dns.MX{Hdr: hdr(name, qtype), Preference: uint16(pref), Mx: target}
			case "PTR":
				s, _ := it.value.(string)
				qtype = dns.TypePTR
				rr = &dns.PTR{Hdr: hdr(name, qtype), Ptr: presentation(s)}
			case "CNAME":
				s, _ := it.value.(string)
				qtype = dns.TypeCNAME
				rr = &dns.CNAME{Hdr: hdr(name, qtype), Target: presentation(s)}
			case "TXT", "SPF":
				if it.typ == "SPF" && hasTXT {
					continue // SPF type 99 records are not served (RFC 7208 section 3.1)
				}
				qtype = dns.TypeTXT
				if s, ok := it.value.(string); ok && s == "NONE" && it.typ == "TXT" {
					continue
				}
				strs, err := txtStrings(it.value)
				if err != nil {
					t.Fatalf("zonedata %s: %v", name, err)
				}
				txt := dnstest.TXT(name, 300, strs...)
				txt.Hdr.Name = presentation(name)
				if len(strs) == 0 {
					txt.Txt = []string{} // a TXT record without strings
				}
				rr = txt
			default:
				t.Fatalf("zonedata %s: unknown type %s", name, it.typ)
			}
			if !timeout {
				exempt[qtype] = true
			}
			srv.AddRR(rr)
		}
		if timeout {
			srv.SetFault(presentation(name), 0, dnstest.Drop)
			for qtype := range exempt {
				srv.SetFault(presentation(name), qtype, 0)
			}
		}
	}
	return srv
}

// suiteCase is the outcome of one test of a suite.
type suiteCase struct {
	scenario, name string
	want           []string
	wantExp        string
	got            Result
	ok             bool
	spec           any
	test           suiteTest
}

// runSuite runs every test of a suite file and returns the outcomes.
func runSuite(t *testing.T, file string) []*suiteCase {
	var (
		mu    sync.Mutex
		cases []*suiteCase
	)
	for _, sc := range loadSuite(t, file) {
		t.Run(sc.Description, func(t *testing.T) {
			srv := serveScenario(t, sc)
			names := make([]string, 0, len(sc.Tests))
			for name := range sc.Tests {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				tc := sc.Tests[name]
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					c := runSuiteTest(t, srv, sc.Description, name, tc)
					mu.Lock()
					cases = append(cases, c)
					mu.Unlock()
				})
			}
		})
	}
	return cases
}

func runSuiteTest(t *testing.T, srv *dnstest.Server, scenario, name string, tc suiteTest) *suiteCase {
	c := &suiteCase{scenario: scenario, name: name, wantExp: tc.Explanation, spec: tc.Spec, test: tc}
	switch r := tc.Result.(type) {
	case string:
		c.want = []string{r}
	case []any:
		for _, x := range r {
			c.want = append(c.want, fmt.Sprint(x))
		}
	default:
		t.Fatalf("bad result %#v", tc.Result)
	}
	// A fresh resolver per test: no cache hides queries across tests. The
	// short timeout makes TIMEOUT entries fail fast.
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 400 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(tc.Host)
	if err != nil {
		t.Fatalf("host %q: %v", tc.Host, err)
	}
	chk := &Checker{Resolver: res, DefaultExplanation: "DEFAULT", Hostname: "receiver.test"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.got = chk.CheckMailFrom(ctx, ip, tc.HELO, tc.MailFrom)
	c.ok = slices.Contains(c.want, c.got.Status.String())
	if c.ok && c.wantExp != "" && c.got.Explanation != c.wantExp {
		c.ok = false
	}
	return c
}

func (c *suiteCase) String() string {
	return fmt.Sprintf("%s / %s (spec %v): host=%s helo=%q mailfrom=%q: want %v explanation %q; got %s explanation %q mechanism %q err %v",
		c.scenario, c.name, c.spec, c.test.Host, c.test.HELO, c.test.MailFrom, c.want, c.wantExp,
		c.got.Status, c.got.Explanation, c.got.Mechanism, c.got.Err)
}

func score(cases []*suiteCase) (passed int, failed []*suiteCase) {
	for _, c := range cases {
		if c.ok {
			passed++
		} else {
			failed = append(failed, c)
		}
	}
	slices.SortFunc(failed, func(a, b *suiteCase) int { return strings.Compare(a.scenario+a.name, b.scenario+b.name) })
	return passed, failed
}

// checkScore logs the score and fails the test for every failed case,
// except those superseded names as superseded (RFC 4408 cases that RFC 7208
// changed).
func checkScore(t *testing.T, file string, cases []*suiteCase, superseded func(*suiteCase) (string, bool)) {
	passed, failed := score(cases)
	t.Logf("SPF suite: %d/%d passed (%s)", passed, len(cases), file)
	for _, c := range cases {
		if c.ok && c.got.Status.String() != c.want[0] {
			t.Logf("accepted alternative %s (preferred %s): %s / %s", c.got.Status, c.want[0], c.scenario, c.name)
		}
	}
	for _, c := range failed {
		if superseded != nil {
			if why, ok := superseded(c); ok {
				t.Logf("superseded by RFC 7208 (%s): %s", why, c)
				continue
			}
		}
		t.Errorf("FAIL %s", c)
	}
}

// TestSuiteRFC7208 runs the RFC 7208 conformance suite; every test must
// pass.
func TestSuiteRFC7208(t *testing.T) {
	var cases []*suiteCase
	var skipped bool
	t.Run("suite", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		cases = runSuite(t, "rfc7208-tests.yml")
	})
	if skipped {
		t.Skip("the SPF corpus is absent (see the suite subtest)")
	}
	if len(cases) != 203 {
		t.Errorf("ran %d tests, the suite has 203", len(cases))
	}
	checkScore(t, "rfc7208-tests.yml", cases, nil)
}

// TestSuiteRFC4408 runs the older RFC 4408 suite, reported separately.
// Where RFC 7208 changed an expectation, RFC 7208 wins (corpus README):
// every failure must be a test whose RFC 7208 version expects something
// else, and that RFC 7208 version passes in TestSuiteRFC7208.
func TestSuiteRFC4408(t *testing.T) {
	if testing.Short() {
		t.Skip("RFC 4408 suite is long; skipped in -short")
	}
	newer := map[string]suiteTest{}
	for _, sc := range loadSuite(t, "rfc7208-tests.yml") {
		for name, tc := range sc.Tests {
			newer[name] = tc
		}
	}
	var cases []*suiteCase
	t.Run("suite", func(t *testing.T) { cases = runSuite(t, "rfc4408-tests.yml") })
	checkScore(t, "rfc4408-tests.yml", cases, func(c *suiteCase) (string, bool) {
		n, ok := newer[c.name]
		if ok && (fmt.Sprint(n.Result) != fmt.Sprint(c.test.Result) || n.Explanation != c.test.Explanation) {
			return fmt.Sprintf("expects %v there", n.Result), true
		}
		return "", false
	})
}
