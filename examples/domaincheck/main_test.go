package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/resolver/dnstest"
)

func TestDomainCheck(t *testing.T) {
	key, err := dkim.GenerateKey(dkim.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	pemData, _ := dkim.MarshalPrivateKeyPEM(key)
	keyFile := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(keyFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	line, _ := dkim.KeyTXT("s1", "example.test", key.Public())
	srv := dnstest.New(t, line+`
example.test. IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.test. IN MX 10 mx.example.test.
mx.example.test. IN A 192.0.2.25
_dmarc.example.test. IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.test"
_mta-sts.example.test. IN TXT "v=STSv1; id=2026"
`)
	var out, errb bytes.Buffer
	args := []string{"-dns", srv.Addr, "-domain", "example.test", "-ip", "192.0.2.10", "-selector", "s1=" + keyFile}
	if code := realMain(context.Background(), args, &out, &errb); code != 0 {
		t.Fatalf("exit %d:\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "No problems found.") {
		t.Fatalf("output:\n%s", out.String())
	}
	out.Reset()
	args = []string{"-dns", srv.Addr, "-domain", "example.test", "-ip", "192.0.2.10", "-ip", "192.0.2.99", "-selector", "s2=" + keyFile}
	if code := realMain(context.Background(), args, &out, &errb); code != 1 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	for _, want := range []string{`publish: example.test. IN TXT "v=spf1 ip4:192.0.2.10 ip4:192.0.2.99 -all"`, `publish: s2._domainkey.example.test. IN TXT "v=DKIM1; k=ed25519; p=`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in\n%s", want, out.String())
		}
	}
	for _, bad := range [][]string{{}, {"-domain", "d", "-ip", "nope"}, {"-domain", "d", "-selector", "x"}} {
		if code := realMain(context.Background(), bad, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d", bad, code)
		}
	}
}
