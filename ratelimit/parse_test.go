package ratelimit_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
)

const samplePolicy = `
# Default layer: the most specific matching rule wins.
limit per=site,source rate=600/min burst=20 connections=10 messages-per-connection=100
limit name=gmail site=gmail.com per=source rate=3000/min burst=100 connections=20   # override
limit layer=tenant per=tenant rate=100000/h burst=500
limit domain=internal.test

backoff defaults
backoff name="acme slow" text="slow down" text="4.7.1 busy" code=421,451 factor=0.5 connections=2 suspend=10m recover-after=50 recover-period=2m recover-step=1.5
backoff category=reputation,rate_limited regexp="(?i)blocked.*\\bIP\\b" suspend=1h holddown=1m

options backoff-per=site,source,tenant min-factor=0.1
warmup schedule=50,100,500,1000 sources=192.0.2.10,pool-b sources="odd, name"
`

func TestParsePolicy(t *testing.T) {
	p, err := ratelimit.ParsePolicy(samplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	want := ratelimit.Rule{Name: "gmail", Match: ratelimit.Key{Site: "gmail.com"}, Per: []ratelimit.Dimension{ratelimit.Source},
		Rate: ratelimit.Rate{N: 3000, Per: time.Minute}, Burst: 100, MaxConnections: 20}
	if len(p.Rules) != 4 || !reflect.DeepEqual(p.Rules[1], want) {
		t.Fatalf("rules %+v", p.Rules)
	}
	if n := len(ratelimit.DefaultBackoff()); len(p.Backoff) != n+2 {
		t.Fatalf("%d backoff rules, want %d", len(p.Backoff), n+2)
	}
	acme := p.Backoff[len(p.Backoff)-2]
	if acme.Name != "acme slow" || !reflect.DeepEqual(acme.Text, []string{"slow down", "4.7.1 busy"}) ||
		!reflect.DeepEqual(acme.Codes, []int{421, 451}) || acme.Suspend != ratelimit.Duration(10*time.Minute) || acme.RecoverStep != 1.5 {
		t.Fatalf("acme rule %+v", acme)
	}
	if re := p.Backoff[len(p.Backoff)-1].Regexp; re != `(?i)blocked.*\bIP\b` {
		t.Fatalf("regexp %q", re)
	}
	if p.MinFactor != 0.1 || len(p.BackoffPer) != 3 {
		t.Fatalf("options %v %v", p.MinFactor, p.BackoffPer)
	}
	if p.Warmup == nil || !reflect.DeepEqual(p.Warmup.Schedule, []int{50, 100, 500, 1000}) ||
		!reflect.DeepEqual(p.Warmup.Sources, []string{"192.0.2.10", "pool-b", "odd, name"}) {
		t.Fatalf("warmup %+v", p.Warmup)
	}
	// Text round trip.
	back, err := ratelimit.ParsePolicy(p.String())
	if err != nil {
		t.Fatalf("reparse: %v\n%s", err, p.String())
	}
	if !reflect.DeepEqual(p, back) {
		t.Fatalf("text round trip differs:\n%s\n%s", p, back)
	}
	// JSON round trip.
	js, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON ratelimit.Policy
	if err := json.Unmarshal(js, &fromJSON); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, fromJSON) {
		t.Fatalf("JSON round trip differs:\n%s", js)
	}
	if _, err := ratelimit.New(ratelimit.Config{Policy: p}); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyJSON(t *testing.T) {
	const js = `{
  "rules": [
    {"match": {"site": "gmail.com"}, "per": ["source"], "rate": "3000/min", "burst": 100, "max_connections": 20},
    {"per": ["site", "source"], "rate": {"n": 10, "per": "1s"}}
  ],
  "backoff": [{"name": "x", "text": ["TSS04"], "suspend": "15m", "recover_period": 60000000000}],
  "warmup": {"schedule": [50, 100]}
}`
	var p ratelimit.Policy
	if err := json.Unmarshal([]byte(js), &p); err != nil {
		t.Fatal(err)
	}
	if p.Rules[0].Rate != (ratelimit.Rate{N: 3000, Per: time.Minute}) || p.Rules[1].Rate != (ratelimit.Rate{N: 10, Per: time.Second}) ||
		p.Rules[0].Per[0] != ratelimit.Source || p.Backoff[0].Suspend != ratelimit.Duration(15*time.Minute) ||
		p.Backoff[0].RecoverPeriod != ratelimit.Duration(time.Minute) {
		t.Fatalf("decoded %+v", p)
	}
	var empty ratelimit.Policy
	if err := json.Unmarshal([]byte(`{"backoff": []}`), &empty); err != nil || empty.Backoff == nil || len(empty.Backoff) != 0 {
		t.Fatalf("empty backoff list: %v %v", empty.Backoff, err)
	}
	for _, bad := range []string{`{"rules":[{"rate":"3000"}]}`, `{"rules":[{"per":["planet"]}]}`, `{"backoff":[{"suspend":"soon"}]}`} {
		if err := json.Unmarshal([]byte(bad), &p); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestParsePolicyErrors(t *testing.T) {
	cases := []struct {
		text string
		want error
	}{
		{"limiter rate=1/s", ratelimit.ErrSyntax},
		{"limit rate=1/fortnight", ratelimit.ErrSyntax},
		{"limit rate=-1/s", ratelimit.ErrSyntax},
		{"limit rate=1/s rate=2/s", ratelimit.ErrSyntax},
		{"limit per=site,site", ratelimit.ErrInvalid},
		{"limit per=moon", ratelimit.ErrSyntax},
		{"limit burst=5", nil},
		{"limit colour=red", ratelimit.ErrSyntax},
		{"limit site=\"unterminated", ratelimit.ErrSyntax},
		{"limit site=a\"b", ratelimit.ErrSyntax},
		{"limit =x", ratelimit.ErrSyntax},
		{"limit rate=1/s burst=99999999999999999999", ratelimit.ErrSyntax},
		{"limit rate=1/d burst=9000000", ratelimit.ErrInvalid},
		{"backoff factor=0.5", ratelimit.ErrInvalid},
		{"backoff text=x", ratelimit.ErrInvalid},
		{"backoff text=x factor=1.5", ratelimit.ErrInvalid},
		{"backoff text=x factor=NaN", ratelimit.ErrSyntax},
		{"backoff text=x suspend=1m recover-step=0.5", ratelimit.ErrInvalid},
		{"backoff regexp=\"(\" suspend=1m", ratelimit.ErrInvalid},
		{"backoff enhanced=4.x suspend=1m", ratelimit.ErrInvalid},
		{"backoff code=99 suspend=1m", ratelimit.ErrSyntax},
		{"backoff off\nbackoff text=x suspend=1m", ratelimit.ErrSyntax},
		{"backoff text=x suspend=1m\nbackoff off", ratelimit.ErrSyntax},
		{"options min-factor=0", ratelimit.ErrInvalid},
		{"warmup schedule=1,x", ratelimit.ErrSyntax},
		{"warmup\nwarmup", ratelimit.ErrSyntax},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			_, err := ratelimit.ParsePolicy(c.text)
			if c.text == "limit burst=5" {
				// A burst without a rate is accepted (it has no effect).
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), "line ") {
				t.Fatalf("error %q does not name the line", err)
			}
		})
	}
}

func TestRateText(t *testing.T) {
	for in, want := range map[string]ratelimit.Rate{
		"3000/min": {3000, time.Minute}, "5/s": {5, time.Second}, "50/day": {50, 24 * time.Hour},
		"100/10m": {100, 10 * time.Minute}, "7/Hour": {7, time.Hour}, "0": {},
	} {
		got, err := ratelimit.ParseRate(in)
		if err != nil || got != want {
			t.Fatalf("%q: %v %v", in, got, err)
		}
		if back, err := ratelimit.ParseRate(got.String()); err != nil || back != got {
			t.Fatalf("%q: round trip %q gives %v %v", in, got.String(), back, err)
		}
	}
}
