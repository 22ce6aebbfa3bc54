package setup

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadDKIM(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	cfg := DKIMConfig{Domains: []string{"a.test", "b.test"}, Selectors: []string{"s1"}, KeyDir: dir, Program: "prog"}
	ring, err := LoadDKIM(cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	// One key per domain, generated with the reused selector.
	for _, d := range []string{"a.test", "b.test"} {
		if _, err := os.Stat(filepath.Join(dir, "s1._domainkey."+d+".pem")); err != nil {
			t.Errorf("no generated key for %s: %v", d, err)
		}
		if !strings.Contains(out.String(), "prog: DKIM signing for "+d+" with ") {
			t.Errorf("output lacks the line for %s:\n%s", d, out.String())
		}
	}
	if strings.Count(out.String(), "generated DKIM key") != 2 {
		t.Errorf("want two keys generated:\n%s", out.String())
	}
	sig, err := ring.Sign(context.Background(), "b.test", strings.NewReader("From: x@b.test\r\n\r\nhi\r\n"))
	if err != nil || !strings.Contains(sig, "d=b.test") || !strings.Contains(sig, "s=s1") || !strings.Contains(sig, "c=relaxed/simple") {
		t.Fatalf("signature %q, %v", sig, err)
	}
	// A second start reuses the keys.
	out.Reset()
	if _, err := LoadDKIM(cfg, &out); err != nil || strings.Contains(out.String(), "generated") {
		t.Errorf("second load: %v\n%s", err, out.String())
	}

	for _, tc := range []struct {
		cfg  DKIMConfig
		want string
	}{
		{DKIMConfig{Keys: []string{"k.pem"}}, "-dkim-key needs -dkim-domain"},
		{DKIMConfig{Domains: []string{"a.test"}}, "-dkim-key: no key file for a.test"},
		{DKIMConfig{Domains: []string{"a.test"}, KeyDir: dir, Canonicalization: "loose"}, "-dkim-canon"},
		{DKIMConfig{Domains: []string{"a.test"}, Keys: []string{filepath.Join(dir, "missing.pem")}}, "-dkim-key"},
	} {
		if _, err := LoadDKIM(tc.cfg, &out); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if ring, err := LoadDKIM(DKIMConfig{}, &out); ring != nil || err != nil {
		t.Errorf("no domains: %v, %v; want nothing", ring, err)
	}
}
