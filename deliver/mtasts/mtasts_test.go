package mtasts

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mtakit/mta/deliver/smtptest"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

func TestParse(t *testing.T) {
	good := func(text string, mode Mode, mx []string, age time.Duration) {
		t.Helper()
		p, err := Parse(text)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if p.Mode != mode || p.MaxAge != age || strings.Join(p.MX, ",") != strings.Join(mx, ",") {
			t.Fatalf("%q: %+v", text, p)
		}
	}
	bad := func(text string) {
		t.Helper()
		if p, err := Parse(text); !errors.Is(err, ErrPolicy) {
			t.Fatalf("%q: accepted %+v (%v)", text, p, err)
		}
	}
	// RFC 8461 §3.2 example.
	good("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
		ModeEnforce, []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, 604800*time.Second)
	good("version: STSv1\nmode: testing\nmx: MX.Example.COM.\nmax_age: 0\nextension: ignored\n", ModeTesting, []string{"mx.example.com"}, 0)
	good("version: STSv1\nmode: none\nmax_age: 31557600", ModeNone, nil, 31557600*time.Second)
	bad("")
	bad("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n")
	bad("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n")
	bad("version: STSv1\nmode: enforce\nmax_age: 1\n")
	bad("version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557601\n")
	bad("version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n")
	bad("version: STSv1\nmode: enforce\nmx: a\n")
	bad("version: STSv1\nmode enforce\nmx: a\nmax_age: 1\n")
}

func TestMatch(t *testing.T) {
	p := &Policy{MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com":      true,
		"MAIL.example.com.":     true,
		"x.example.net":         true,
		"example.net":           false,
		"a.b.example.net":       false,
		"mail.example.com.evil": false,
		"other.example.com":     false,
	} {
		if got := p.Match(host); got != want {
			t.Errorf("Match(%q) = %v", host, got)
		}
	}
}

func TestParseRecord(t *testing.T) {
	for txt, want := range map[string]string{
		"v=STSv1; id=20160831085700Z;": "20160831085700Z",
		"v=STSv1;id=abc":               "abc",
		"v=STSv1; id=1; ext=x":         "1",
	} {
		if id, err := ParseRecord(txt); err != nil || id != want {
			t.Errorf("%q: %q %v", txt, id, err)
		}
	}
	for _, txt := range []string{"v=STSv2; id=1", "v=STSv1;", "v=STSv1; id=a-b", "v=STSv1; id=" + strings.Repeat("a", 33), "id=1; v=STSv1"} {
		if _, err := ParseRecord(txt); !errors.Is(err, ErrRecord) {
			t.Errorf("%q accepted", txt)
		}
	}
}

type lab struct {
	dns     *dnstest.Server
	client  *Client
	fetches atomic.Int32
	body    atomic.Value
	ctype   atomic.Value
	status  atomic.Int32
	now     time.Time
}

func newLab(t *testing.T, id string) *lab {
	t.Helper()
	ca, err := smtptest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l.body.Store("version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 3600\n")
	l.ctype.Store("text/plain")
	l.status.Store(200)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.fetches.Add(1)
		if r.URL.Path != "/.well-known/mta-sts.txt" || r.Host != "mta-sts.example.test" {
			http.NotFound(w, r)
			return
		}
		if s := int(l.status.Load()); s != 200 {
			http.Redirect(w, r, "https://elsewhere.test/", s)
			return
		}
		w.Header().Set("Content-Type", l.ctype.Load().(string))
		fmt.Fprint(w, l.body.Load().(string))
	}))
	c, err := ca.Issue("mta-sts.example.test")
	if err != nil {
		t.Fatal(err)
	}
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{c}}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	zone := ""
	if id != "" {
		zone = `_mta-sts.example.test. 300 IN TXT "v=STSv1; id=` + id + `"`
	}
	l.dns = dnstest.New(t, zone+"\nexample.test. 300 IN A 127.0.0.1\n")
	r, err := resolver.New(resolver.Config{Servers: []string{l.dns.Addr}, MaxTTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	l.client, err = New(Config{
		Resolver: r,
		RootCAs:  ca.Pool,
		Now:      func() time.Time { return l.now },
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, hs.Listener.Addr().String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestGetAndCache(t *testing.T) {
	l := newLab(t, "one")
	ctx := context.Background()
	p, err := l.client.Get(ctx, "example.test")
	if err != nil || p == nil || p.Mode != ModeEnforce || p.ID != "one" || !p.Match("mx.example.test") {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := l.client.Get(ctx, "Example.Test."); err != nil || l.fetches.Load() != 1 {
		t.Fatalf("cached policy refetched (%d fetches, %v)", l.fetches.Load(), err)
	}
	// A new id fetches again.
	if err := l.dns.SetRecords("_mta-sts.example.test", dns.TypeTXT, `_mta-sts.example.test. 300 IN TXT "v=STSv1; id=two"`); err != nil {
		t.Fatal(err)
	}
	l.body.Store("version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 3600\n")
	p, err = l.client.Get(ctx, "example.test")
	if err != nil || p.Mode != ModeTesting || p.ID != "two" || l.fetches.Load() != 2 {
		t.Fatalf("%+v %v %d", p, err, l.fetches.Load())
	}
	// The record disappears: the cached policy is used until max_age.
	l.dns.SetFault("_mta-sts.example.test", dns.TypeTXT, dnstest.NXDomain)
	if p, err := l.client.Get(ctx, "example.test"); err != nil || p == nil || p.Mode != ModeTesting {
		t.Fatalf("%+v %v", p, err)
	}
	l.now = l.now.Add(2 * time.Hour)
	if p, err := l.client.Get(ctx, "example.test"); err != nil || p != nil {
		t.Fatalf("expired policy still used: %+v %v", p, err)
	}
}

func TestNoPolicy(t *testing.T) {
	l := newLab(t, "")
	if p, err := l.client.Get(context.Background(), "example.test"); p != nil || err != nil {
		t.Fatalf("%+v %v", p, err)
	}
	if l.fetches.Load() != 0 {
		t.Fatal("fetched without a record")
	}
}

func TestFetchRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		set    func(l *lab)
		policy bool
	}{
		{"redirect not followed", func(l *lab) { l.status.Store(302) }, false},
		{"wrong media type", func(l *lab) { l.ctype.Store("text/html") }, false},
		{"media type with parameters", func(l *lab) { l.ctype.Store("text/plain; charset=utf-8") }, true},
		{"too large", func(l *lab) {
			l.body.Store("version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 3600\n" + strings.Repeat("x: y\n", MaxPolicySize/5+1))
		}, false},
		{"bad policy", func(l *lab) { l.body.Store("version: STSv1\nmode: enforce\n") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, "x1")
			tc.set(l)
			p, err := l.client.Get(context.Background(), "example.test")
			if (p != nil) != tc.policy || (err == nil) != tc.policy {
				t.Fatalf("%+v %v", p, err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
	f.Add("version: STSv1\nmode: none\nmax_age: 0\n")
	f.Add("version: STSv1\nmode: testing\nmx: a.\nmax_age: 99999999999\n")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if p.Mode != ModeNone && len(p.MX) == 0 {
			t.Fatal("policy without mx")
		}
		for _, m := range p.MX {
			p.Match(m)
		}
		if _, err := ParseRecord(s); err == nil && !strings.HasPrefix(s, "v=STSv1") {
			t.Fatal("record without version")
		}
	})
}
