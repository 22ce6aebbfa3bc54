package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyPEMRoundTrip(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	for _, key := range []struct {
		name string
		k    crypto.Signer
	}{{"rsa", rsaKey}, {"ed25519", edKey}} {
		pemData, err := MarshalPrivateKeyPEM(key.k)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(pemData), "-----BEGIN PRIVATE KEY-----") {
			t.Errorf("%s: not PKCS#8: %.40s", key.name, pemData)
		}
		back, err := ParsePrivateKeyPEM(pemData)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := KeyRecord(back.Public())
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := ParseKeyRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !parsed.Matches(key.k) || parsed.KeyType != key.name {
			t.Errorf("%s: record %q does not match the key", key.name, rec)
		}
		other := edKey
		if key.name == "ed25519" {
			other = rsaKey
		}
		if parsed.Matches(other) {
			t.Errorf("%s: record matches another key", key.name)
		}
	}
	// PKCS#1 RSA, as opendkim-genkey writes it.
	pk1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey.(*rsa.PrivateKey))})
	if k, err := ParsePrivateKeyPEM(pk1); err != nil || !k.(*rsa.PrivateKey).Equal(rsaKey) {
		t.Errorf("PKCS#1: %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("junk"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})} {
		if _, err := ParsePrivateKeyPEM(bad); !errors.Is(err, ErrKeyFormat) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// The RFC 8463 A.1 keys match the A.2 records (a check of ParseKeyRecord
// and Matches against independent data).
func TestRFC8463Keys(t *testing.T) {
	dir := filepath.Join(corpusDir(t, "corpus/dkim"), "rfc8463")
	seedB64, err := os.ReadFile(filepath.Join(dir, "ed25519.private"))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(seedB64)))
	if err != nil {
		t.Fatal(err)
	}
	edKey := ed25519.NewKeyFromSeed(seed)
	rsaKey, err := ParsePrivateKeyPEM(mustRead(t, filepath.Join(dir, "rsa.private.pem")))
	if err != nil {
		t.Fatal(err)
	}
	for file, key := range map[string]crypto.Signer{
		"brisbane._domainkey.football.example.com.txt": edKey,
		"test._domainkey.football.example.com.txt":     rsaKey,
	} {
		rec, err := ParseKeyRecord(strings.TrimSpace(string(mustRead(t, filepath.Join(dir, "keys", file)))))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !rec.Matches(key) {
			t.Errorf("%s does not match its private key", file)
		}
		// Our own record for the key parses to the same key.
		mine, _ := KeyRecord(key.Public())
		if r2, err := ParseKeyRecord(mine); err != nil || !r2.Matches(key) {
			t.Errorf("%s: own record %q: %v", file, mine, err)
		}
	}
}

func TestParseKeyRecord(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr error
		check   func(*PublicKeyRecord) bool
	}{
		{"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", nil, func(r *PublicKeyRecord) bool { return r.KeyType == "ed25519" }},
		{"v=DKIM1; p=", nil, func(r *PublicKeyRecord) bool { return r.Revoked }},
		{"k=ed25519; t=y:s; s=email; h=sha256; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", nil, func(r *PublicKeyRecord) bool {
			return len(r.Flags) == 2 && r.Services[0] == "email" && r.Hashes[0] == "sha256"
		}},
		{"v=DKIM1; k=ed25519; unknown=x; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=;", nil, nil},
		{"v=DKIM2; p=", ErrKeyFormat, nil},
		{"v=DKIM1; k=rsa", ErrKeyFormat, nil},
		{"v=DKIM1; k=ed25519; p=AAAA", ErrKeyFormat, nil},
		{"v=DKIM1; k=dsa; p=AAAA", ErrKeyType, nil},
		{"v=DKIM1; p=%%%", ErrKeyFormat, nil},
		{"v=DKIM1; p=a; p=b", ErrKeyFormat, nil},
		{"garbage", ErrKeyFormat, nil},
	} {
		r, err := ParseKeyRecord(tc.in)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%q: got %v, want %v", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if tc.check != nil && !tc.check(r) {
			t.Errorf("%q: got %+v", tc.in, r)
		}
	}
}

func TestZoneTXT(t *testing.T) {
	rsaKey, _ := testKeys(t)
	line, err := KeyTXT("Sel", "Example.COM.", rsaKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, `sel._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=`) {
		t.Fatalf("got %s", line)
	}
	// An RSA-2048 record is ~400 octets: two character-strings, each ≤255.
	parts := strings.Split(line, `" "`)
	if len(parts) != 2 {
		t.Fatalf("want 2 strings, got %d: %s", len(parts), line)
	}
	rec, _ := KeyRecord(rsaKey.Public())
	first := strings.SplitN(parts[0], `"`, 2)[1]
	if len(first) != 255 || first+strings.TrimSuffix(parts[1], `"`) != rec {
		t.Fatalf("split wrong: %d octets first", len(first))
	}
	if got := ZoneTXT("a.test.", `x"y\z`); got != `a.test. IN TXT "x\"y\\z"` {
		t.Errorf("escaping: %s", got)
	}
}
