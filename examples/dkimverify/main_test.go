package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/resolver/dnstest"
)

func TestVerify(t *testing.T) {
	key, err := dkim.GenerateKey(dkim.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := dkim.KeyTXT("s1", "example.test", key.Public())
	srv := dnstest.New(t, line)
	s, err := dkim.NewSigner(dkim.SignerConfig{Keys: []dkim.SignKey{
		{Domain: "example.test", Selector: "s1", Key: key},
		{Domain: "example.test", Selector: "gone", Key: key},
	}})
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n"
	sig, err := s.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := realMain(context.Background(), []string{"-dns", srv.Addr}, strings.NewReader(sig+msg), &out, &errb)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if code != 1 || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "signature 1: pass d=example.test s=s1 a=ed25519-sha256") ||
		!strings.HasPrefix(lines[1], "signature 2: permerror d=example.test s=gone") {
		t.Fatalf("exit %d, output:\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := realMain(context.Background(), []string{"-dns", srv.Addr}, strings.NewReader(msg), &out, &errb); code != 1 || !strings.Contains(out.String(), "no DKIM signatures") {
		t.Fatalf("unsigned: %d %s", code, out.String())
	}
	only := sig[:strings.Index(sig, "DKIM-Signature:")+1+strings.Index(sig[1:], "DKIM-Signature:")]
	out.Reset()
	if code := realMain(context.Background(), []string{"-dns", srv.Addr}, strings.NewReader(only+msg), &out, &errb); code != 0 {
		t.Fatalf("one good signature: %d %s", code, out.String())
	}
}
