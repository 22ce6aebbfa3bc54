package dkim

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

// newTestVerifier starts a dnstest server with zone and returns a Verifier
// using the real resolver against it.
func newTestVerifier(t testing.TB, zone string, cfg VerifierConfig) (*Verifier, *dnstest.Server) {
	t.Helper()
	srv := dnstest.New(t, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Resolver = r
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v, srv
}

// keyDirZone turns a dkim-interop key directory into zone text, using
// ZoneTXT (so records over 255 octets are split as published).
func keyDirZone(t testing.TB, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var zone strings.Builder
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(e.Name(), ".txt") + "."
		zone.WriteString(ZoneTXT(name, strings.TrimSpace(string(b))) + "\n")
	}
	return zone.String()
}

// TestVerifyCorpusVectors checks every message of shared/corpus/dkim
// (RFC 6376, RFC 8463 and derived) against vectors.json.
func TestVerifyCorpusVectors(t *testing.T) {
	dir := corpusDir(t, "corpus/dkim")
	var vec struct {
		Vectors []struct {
			File   string `json:"file"`
			KeyDir string `json:"key_dir"`
			Expect []struct {
				D, S, A, Result, Why string
			} `json:"expect"`
		} `json:"vectors"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vec); err != nil {
		t.Fatal(err)
	}
	if len(vec.Vectors) < 10 {
		t.Fatalf("only %d vectors", len(vec.Vectors))
	}
	for _, tc := range vec.Vectors {
		t.Run(tc.File, func(t *testing.T) {
			v, _ := newTestVerifier(t, keyDirZone(t, filepath.Join(dir, tc.KeyDir)), VerifierConfig{})
			f, err := os.Open(filepath.Join(dir, tc.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			res, err := v.Verify(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != len(tc.Expect) {
				t.Fatalf("%d results, want %d", len(res), len(tc.Expect))
			}
			for i, want := range tc.Expect {
				got := res[i]
				if got.Domain != want.D || got.Selector != want.S || got.Algorithm != want.A || string(got.Status) != want.Result {
					t.Errorf("signature %d: got %s d=%s s=%s a=%s (%s); want %s d=%s s=%s a=%s (%s)",
						i, got.Status, got.Domain, got.Selector, got.Algorithm, got.Reason, want.Result, want.D, want.S, want.A, want.Why)
				}
			}
		})
	}
}

// TestVerifyDkimpySigned has dkimpy sign with RSA and Ed25519 keys in all
// canonicalizations; our verifier, with keys served by dnstest, must pass
// them all and fail tampered copies.
func TestVerifyDkimpySigned(t *testing.T) {
	tool := interopTool(t)
	rsaKey, edKey := testKeys(t)
	tmp := t.TempDir()
	var zone strings.Builder
	keys := []struct {
		sel  string
		key  crypto.Signer
		algo string
	}{{"rsa", rsaKey, "rsa-sha256"}, {"ed", edKey, "ed25519-sha256"}}
	for _, k := range keys {
		pemData, err := MarshalPrivateKeyPEM(k.key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, k.sel+".pem"), pemData, 0o600); err != nil {
			t.Fatal(err)
		}
		line, err := KeyTXT(k.sel, "example.test", k.key.Public())
		if err != nil {
			t.Fatal(err)
		}
		zone.WriteString(line + "\n")
	}
	msgPath := filepath.Join(tmp, "msg.eml")
	if err := os.WriteFile(msgPath, []byte(testMessage), 0o600); err != nil {
		t.Fatal(err)
	}
	// dkimpy adds one signature per run; chain the runs so one message
	// carries all eight signatures, then verify it in one pass.
	signed := msgPath
	var want []string
	for _, canon := range []string{"relaxed/relaxed", "relaxed/simple", "simple/simple", "simple/relaxed"} {
		for _, k := range keys {
			out, err := exec.Command("/usr/bin/python3", tool, "sign", "--key", filepath.Join(tmp, k.sel+".pem"),
				"--selector", k.sel, "--domain", "example.test", "--canon", canon, signed).Output()
			if err != nil {
				t.Fatalf("dkimpy sign %s %s: %v", k.sel, canon, err)
			}
			signed = filepath.Join(tmp, "signed-"+k.sel+"-"+strings.ReplaceAll(canon, "/", "-")+".eml")
			if err := os.WriteFile(signed, out, 0o600); err != nil {
				t.Fatal(err)
			}
			want = append([]string{k.algo + " " + canon}, want...)
		}
	}
	v, _ := newTestVerifier(t, zone.String(), VerifierConfig{})
	msg, err := os.ReadFile(signed)
	if err != nil {
		t.Fatal(err)
	}
	res, err := v.Verify(context.Background(), strings.NewReader(string(msg)))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(want) {
		t.Fatalf("%d results, want %d", len(res), len(want))
	}
	for i, r := range res {
		if r.Status != StatusPass || r.Algorithm+" "+r.Canonicalization != want[i] || r.Domain != "example.test" {
			t.Errorf("signature %d: %s %s %s (%s), want pass %s", i, r.Status, r.Algorithm, r.Canonicalization, r.Reason, want[i])
		}
	}
	bad := strings.Replace(string(msg), "Hello Bob", "Hello Eve", 1)
	res, err = v.Verify(context.Background(), strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Status != StatusFail || !strings.Contains(r.Reason, "body hash") {
			t.Errorf("tampered: signature %d: %s (%s)", i, r.Status, r.Reason)
		}
	}
}

// TestVerifyOutcomes covers the verdicts other than pass: DNS trouble,
// missing and revoked keys, l=, expiry, signature caps, duplicates.
func TestVerifyOutcomes(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	edLine, _ := KeyTXT("ed", "example.test", edKey.Public())
	rsaLine, _ := KeyTXT("rsa", "example.test", rsaKey.Public())
	zone := edLine + "\n" + rsaLine + "\n" +
		"revoked._domainkey.example.test. IN TXT \"v=DKIM1; k=ed25519; p=\"\n" +
		"garbage._domainkey.example.test. IN TXT \"v=DKIM1; p=!!!\"\n"
	v, srv := newTestVerifier(t, zone, VerifierConfig{MaxSignatures: 3, Now: time.Now})
	sign := func(sel string, key crypto.Signer, msg string, mod func(*SignerConfig)) string {
		cfg := SignerConfig{Keys: []SignKey{{Domain: "example.test", Selector: sel, Key: key}}}
		if mod != nil {
			mod(&cfg)
		}
		s, err := NewSigner(cfg)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := s.Sign(context.Background(), strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	verify := func(msg string) []Result {
		t.Helper()
		res, err := v.Verify(context.Background(), strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ctx := context.Background()
	_ = ctx

	t.Run("unsigned", func(t *testing.T) {
		if res := verify(testMessage); len(res) != 0 {
			t.Fatalf("got %v", res)
		}
	})
	t.Run("temperror", func(t *testing.T) {
		srv.SetFault("tmp._domainkey.example.test", dns.TypeTXT, dnstest.ServFail)
		res := verify(sign("tmp", edKey, testMessage, nil) + testMessage)
		if res[0].Status != StatusTempError {
			t.Fatalf("got %s (%s)", res[0].Status, res[0].Reason)
		}
	})
	for _, tc := range []struct{ sel, why string }{{"missing", "no key"}, {"revoked", "revoked"}, {"garbage", "key syntax"}} {
		t.Run(tc.sel, func(t *testing.T) {
			res := verify(sign(tc.sel, edKey, testMessage, nil) + testMessage)
			if res[0].Status != StatusPermError || !strings.Contains(res[0].Reason, tc.why) {
				t.Fatalf("got %s (%s)", res[0].Status, res[0].Reason)
			}
		})
	}
	t.Run("wrong key type", func(t *testing.T) {
		// Signed with Ed25519 under the selector publishing the RSA key.
		res := verify(sign("rsa", edKey, testMessage, nil) + testMessage)
		if res[0].Status != StatusPermError {
			t.Fatalf("got %s (%s)", res[0].Status, res[0].Reason)
		}
	})
	t.Run("expired", func(t *testing.T) {
		sig := sign("ed", edKey, testMessage, func(c *SignerConfig) {
			c.Expiration = time.Hour
			c.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
		})
		res := verify(sig + testMessage)
		if res[0].Status != StatusPermError || !strings.Contains(res[0].Reason, "expired") {
			t.Fatalf("got %s (%s)", res[0].Status, res[0].Reason)
		}
	})
	t.Run("l= with appended content", func(t *testing.T) {
		// dkimpy signs with l= when asked? It cannot from the tool, so
		// build a signature header by hand: l= makes the verdict fail
		// whatever the crypto says, and the counter reports appended text.
		body := "Hello\r\n"
		msg := "From: a@example.test\r\nSubject: s\r\n\r\n" + body
		sig := sign("ed", edKey, msg, nil)
		withL := strings.Replace(sig, "DKIM-Signature: ", "DKIM-Signature: l=7; ", 1)
		res := verify(withL + msg + "Appended by an attacker\r\n")
		if res[0].Status != StatusFail || !res[0].BodyAppended || res[0].BodyLength != 7 || !strings.Contains(res[0].Reason, "appended") {
			t.Fatalf("got %+v", res[0])
		}
		res = verify(withL + msg)
		if res[0].Status != StatusFail || res[0].BodyAppended {
			t.Fatalf("l= covering the body: got %s appended=%v (%s)", res[0].Status, res[0].BodyAppended, res[0].Reason)
		}
	})
	t.Run("signature cap", func(t *testing.T) {
		sig := sign("ed", edKey, testMessage, nil)
		msg := strings.Repeat(sig, 5) + testMessage // duplicated DKIM-Signature fields
		res := verify(msg)
		if len(res) != 5 {
			t.Fatalf("%d results", len(res))
		}
		for i, r := range res {
			want := StatusPass
			if i >= 3 {
				want = StatusPermError
			}
			if r.Status != want {
				t.Errorf("signature %d: %s (%s), want %s", i, r.Status, r.Reason, want)
			}
		}
	})
	t.Run("key cache", func(t *testing.T) {
		msg := sign("rsa", rsaKey, testMessage, nil) + testMessage
		verify(msg)
		before := srv.Queries("rsa._domainkey.example.test", dns.TypeTXT)
		for range 3 {
			if res := verify(msg); res[0].Status != StatusPass {
				t.Fatalf("got %s (%s)", res[0].Status, res[0].Reason)
			}
		}
		if after := srv.Queries("rsa._domainkey.example.test", dns.TypeTXT); after != before {
			t.Fatalf("key fetched again: %d -> %d queries", before, after)
		}
	})
	t.Run("hostile header", func(t *testing.T) {
		hv, _ := newTestVerifier(t, zone, VerifierConfig{MaxHeaderBytes: 8192, MaxHeaderFields: 100})
		folded := "From: a@example.test\r\nSubject: x\r\n" + strings.Repeat(" y\r\n", 5000) + "\r\nbody\r\n"
		if _, err := hv.Verify(context.Background(), strings.NewReader(folded)); !errors.Is(err, ErrHeaderTooLarge) {
			t.Errorf("folded: %v", err)
		}
		many := strings.Repeat("X: y\r\n", 200) + "\r\nbody\r\n"
		if _, err := hv.Verify(context.Background(), strings.NewReader(many)); !errors.Is(err, ErrTooManyFields) {
			t.Errorf("many: %v", err)
		}
	})
	t.Run("oversized key record", func(t *testing.T) {
		// 8 KB of junk in one TXT record (32 strings): a clean permerror.
		srv.AddRR(dnstest.TXT("huge._domainkey.example.test", 300, "v=DKIM1; k=ed25519; p="+strings.Repeat("QUFB", 2048)))
		res := verify(sign("huge", edKey, testMessage, nil) + testMessage)
		if res[0].Status != StatusPermError {
			t.Fatalf("got %s (%s)", res[0].Status, res[0].Reason)
		}
	})
	t.Run("two key records", func(t *testing.T) {
		srv.AddRR(dnstest.TXT("two._domainkey.example.test", 300, "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="))
		srv.AddRR(dnstest.TXT("two._domainkey.example.test", 300, "v=DKIM1; k=ed25519; p=AAAA"))
		res := verify(sign("two", edKey, testMessage, nil) + testMessage)
		if res[0].Status != StatusPermError {
			t.Fatalf("got %s (%s)", res[0].Status, res[0].Reason)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		c, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := v.Verify(c, strings.NewReader(testMessage)); err != context.Canceled {
			t.Fatalf("got %v", err)
		}
	})
}
