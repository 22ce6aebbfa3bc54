package transport

import (
	"strings"
	"testing"

	"github.com/mtakit/mta/deliver"
)

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
		kind string
	}{
		{"sandbox", Config{Sandbox: t.TempDir()}, "", "*deliver.Sandbox"},
		{"catch-all route: no MX", Config{Routes: []string{"*=127.0.0.1:2526"}}, "", "*deliver.Static"},
		{"route with MX fallback", Config{Routes: []string{"example.test=127.0.0.1:2526"}, DNS: []string{"127.0.0.1:5353"}, MXPort: 25}, "", "*deliver.Static"},
		{"MX", Config{DNS: []string{"127.0.0.1:5353"}, MXPort: 2525, MTASTS: true}, "", "*deliver.MX"},
		{"route without host", Config{Routes: []string{"example.test="}}, `-route "example.test=": want DOMAIN=HOST:PORT`, ""},
		{"route without =", Config{Routes: []string{"127.0.0.1:25"}}, "want DOMAIN=HOST:PORT", ""},
		{"MX port out of range", Config{MXPort: 70000}, "-mx-port 70000 out of range", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, closeFn, err := Build(tc.cfg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer closeFn()
			var kind string
			switch tr.(type) {
			case *deliver.Sandbox:
				kind = "*deliver.Sandbox"
			case *deliver.Static:
				kind = "*deliver.Static"
			case *deliver.MX:
				kind = "*deliver.MX"
			}
			if kind != tc.kind {
				t.Errorf("transport %T, want %s", tr, tc.kind)
			}
		})
	}
	for cfg, want := range map[*Config]string{
		{Routes: []string{"*=127.0.0.1:2526"}}:            "by routes *=127.0.0.1:2526",
		{Routes: []string{"example.test=127.0.0.1:2526"}}: "by routes example.test=127.0.0.1:2526 (then MX)",
		{}: "by MX",
	} {
		if got := Describe(*cfg); got != want {
			t.Errorf("Describe(%+v) = %q, want %q", *cfg, got, want)
		}
	}
}
