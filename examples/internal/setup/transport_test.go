package setup

import (
	"strings"
	"testing"

	"github.com/mtakit/mta/deliver"
)

func TestTransport(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  TransportConfig
		err  string
		kind string
	}{
		{"sandbox", TransportConfig{Sandbox: t.TempDir()}, "", "*deliver.Sandbox"},
		{"catch-all route: no MX", TransportConfig{Routes: []string{"*=127.0.0.1:2526"}}, "", "*deliver.Static"},
		{"route with MX fallback", TransportConfig{Routes: []string{"example.test=127.0.0.1:2526"}, DNS: []string{"127.0.0.1:5353"}, MXPort: 25}, "", "*deliver.Static"},
		{"MX", TransportConfig{DNS: []string{"127.0.0.1:5353"}, MXPort: 2525, MTASTS: true}, "", "*deliver.MX"},
		{"route without host", TransportConfig{Routes: []string{"example.test="}}, `-route "example.test=": want DOMAIN=HOST:PORT`, ""},
		{"route without =", TransportConfig{Routes: []string{"127.0.0.1:25"}}, "want DOMAIN=HOST:PORT", ""},
		{"MX port out of range", TransportConfig{MXPort: 70000}, "-mx-port 70000 out of range", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, closeFn, err := Transport(tc.cfg)
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
	for cfg, want := range map[*TransportConfig]string{
		{Routes: []string{"*=127.0.0.1:2526"}}:            "by routes *=127.0.0.1:2526",
		{Routes: []string{"example.test=127.0.0.1:2526"}}: "by routes example.test=127.0.0.1:2526 (then MX)",
		{}: "by MX",
	} {
		if got := DescribeTransport(*cfg); got != want {
			t.Errorf("DescribeTransport(%+v) = %q, want %q", *cfg, got, want)
		}
	}
}
