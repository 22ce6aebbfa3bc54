package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mtakit/mta/resolver/dnstest"
)

const zone = `
example.test.      IN TXT "v=spf1 ip4:192.0.2.0/24 -all exp=why.example.test"
why.example.test.  IN TXT "%{i} is not allowed to send for %{d}"
mail.example.test. IN TXT "v=spf1 a -all"
mail.example.test. IN A   198.51.100.5
broken.test.       IN TXT "v=spf1 bogus"
`

func TestRunAgainstDNSTest(t *testing.T) {
	srv := dnstest.New(t, zone)
	in := strings.Join([]string{
		`{"ip":"192.0.2.1","helo":"mail.example.test","sender":"alice@example.test"}`,
		`{"ip":"203.0.113.9","helo":"mail.example.test","sender":"alice@example.test"}`,
		``,
		`{"ip":"198.51.100.5","helo":"mail.example.test","sender":""}`,
		`{"ip":"198.51.100.5","helo":"mail.example.test","scope":"helo"}`,
		`{"ip":"192.0.2.1","helo":"x","sender":"bob@broken.test"}`,
		`{"ip":"192.0.2.1","helo":"x","sender":"bob@nothing.test"}`,
		`{"ip":"not-an-ip","helo":"x","sender":"a@example.test"}`,
		`{"ip":"192.0.2.1",`,
		`{"ip":"192.0.2.1","scope":"dkim"}`,
	}, "\n")
	var out, errOut bytes.Buffer
	code := realMain(context.Background(), []string{"-dns", srv.Addr, "-hostname", "mx.test"}, strings.NewReader(in), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	want := []response{
		{Result: "pass", Domain: "example.test", Mechanism: "ip4:192.0.2.0/24"},
		{Result: "fail", Domain: "example.test", Mechanism: "-all", Explanation: "203.0.113.9 is not allowed to send for example.test"},
		{Result: "pass", Domain: "mail.example.test", Mechanism: "a"},
		{Result: "pass", Domain: "mail.example.test", Mechanism: "a"},
		{Result: "permerror", Domain: "broken.test", Error: "broken.test: spf: syntax error: term \"bogus\": unknown mechanism \"bogus\""},
		{Result: "none", Domain: "nothing.test"},
		{Error: "input:"},
		{Error: "input:"},
		{Error: "input:"},
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d output lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, line := range lines {
		var got response
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %d %q: %v", i+1, line, err)
		}
		w := want[i]
		switch {
		case w.Result == "none":
			if got.Result != "none" || got.Domain != w.Domain || !strings.Contains(got.Error, "no SPF record") {
				t.Errorf("line %d = %+v, want none with a no-record error", i+1, got)
			}
		case w.Result == "":
			if got.Result != "" || !strings.HasPrefix(got.Error, w.Error) {
				t.Errorf("line %d = %+v, want an input error", i+1, got)
			}
		default:
			if got != w {
				t.Errorf("line %d = %+v, want %+v", i+1, got, w)
			}
		}
	}
}

func TestBadFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := realMain(context.Background(), []string{"-nope"}, strings.NewReader(""), &out, &errOut); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	if code := realMain(context.Background(), []string{"extra"}, strings.NewReader(""), &out, &errOut); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}
