package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

const msg = "From: alice@example.test\nTo: bob@example.test\nSubject: hi\n\nHello,  world.\n"

// TestGenkeySignVerify makes a key, publishes the printed record on a
// loopback DNS server, signs with the command and verifies the result.
func TestGenkeySignVerify(t *testing.T) {
	for _, alg := range []string{"ed25519", "rsa"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			keyFile := filepath.Join(dir, "k.pem")
			var out, errb bytes.Buffer
			ctx := context.Background()
			if code := realMain(ctx, []string{"-genkey", alg, "-domain", "example.test", "-selector", "s1", "-key", keyFile}, nil, &out, &errb); code != 0 {
				t.Fatalf("genkey: %d %s", code, errb.String())
			}
			record := strings.TrimSpace(out.String())
			if !strings.HasPrefix(record, `s1._domainkey.example.test. IN TXT "v=DKIM1; k=`+alg) {
				t.Fatalf("record %q", record)
			}
			if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v %v", fi, err)
			}
			// Never overwrite a key.
			if code := realMain(ctx, []string{"-genkey", alg, "-domain", "example.test", "-selector", "s1", "-key", keyFile}, nil, &out, &errb); code != 1 {
				t.Fatalf("overwrite allowed: %d", code)
			}
			out.Reset()
			if code := realMain(ctx, []string{"-domain", "example.test", "-selector", "s1", "-key", keyFile, "-canon", "relaxed/simple"}, strings.NewReader(msg), &out, &errb); code != 0 {
				t.Fatalf("sign: %d %s", code, errb.String())
			}
			signed := out.String()
			if !strings.HasSuffix(signed, msg) || !strings.Contains(signed, "c=relaxed/simple;") || strings.Contains(signed, "\r") {
				t.Fatalf("signed output %q", signed)
			}
			srv := dnstest.New(t, record)
			res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			v, err := dkim.NewVerifier(dkim.VerifierConfig{Resolver: res})
			if err != nil {
				t.Fatal(err)
			}
			results, err := v.Verify(ctx, strings.NewReader(signed))
			if err != nil || len(results) != 1 || results[0].Status != dkim.StatusPass {
				t.Fatalf("verify: %v %+v", err, results)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{{}, {"-domain", "d"}, {"-domain", "d", "-selector", "s", "-key", "k", "-canon", "fancy"}, {"-domain", "d", "-selector", "s", "-key", "k", "-genkey", "dsa"}} {
		if code := realMain(context.Background(), args, strings.NewReader(msg), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d", args, code)
		}
	}
	if code := realMain(context.Background(), []string{"-domain", "d", "-selector", "s", "-key", filepath.Join(t.TempDir(), "none")}, strings.NewReader(msg), &out, &errb); code != 1 {
		t.Errorf("missing key file: exit %d", code)
	}
}
