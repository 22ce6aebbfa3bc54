//go:build openssl && cgo

package openssl

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/internal/sharedtest"
)

var (
	keysOnce sync.Once
	keys     map[int]*rsa.PrivateKey
)

// testKeys makes one key per size, once for all tests.
func testKeys(t testing.TB) map[int]*rsa.PrivateKey {
	t.Helper()
	keysOnce.Do(func() {
		keys = map[int]*rsa.PrivateKey{}
		for _, bits := range []int{1024, 2048, 3072} {
			k, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil {
				panic(err)
			}
			keys[bits] = k
		}
	})
	return keys
}

// RSASSA-PKCS1-v1_5 is deterministic (RFC 8017 §8.2), so OpenSSL must
// produce exactly crypto/rsa's bytes.
func TestSameSignatureAsCryptoRSA(t *testing.T) {
	for bits, goKey := range testKeys(t) {
		k, err := Wrap(goKey)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			digest := sha256.Sum256(fmt.Appendf(nil, "message %d of %d bits", i, bits))
			got, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatalf("%d bits: %v", bits, err)
			}
			want, err := rsa.SignPKCS1v15(nil, goKey, crypto.SHA256, digest[:])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%d bits, message %d: OpenSSL and crypto/rsa signatures differ", bits, i)
			}
			if err := rsa.VerifyPKCS1v15(k.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], got); err != nil {
				t.Fatalf("%d bits: %v", bits, err)
			}
		}
	}
}

func TestOtherSchemesUseCryptoRSA(t *testing.T) {
	goKey := testKeys(t)[2048]
	k, err := Wrap(goKey)
	if err != nil {
		t.Fatal(err)
	}
	d512 := sha512.Sum512([]byte("sha-512"))
	sig, err := k.Sign(rand.Reader, d512[:], crypto.SHA512)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(&goKey.PublicKey, crypto.SHA512, d512[:], sig); err != nil {
		t.Errorf("SHA-512: %v", err)
	}
	d256 := sha256.Sum256([]byte("pss"))
	opts := &rsa.PSSOptions{Hash: crypto.SHA256}
	sig, err = k.Sign(rand.Reader, d256[:], opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPSS(&goKey.PublicKey, crypto.SHA256, d256[:], sig, opts); err != nil {
		t.Errorf("PSS: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := Wrap(nil); !errors.Is(err, ErrKey) {
		t.Errorf("Wrap(nil) = %v, want ErrKey", err)
	}
	good := testKeys(t)[2048]
	bad := *good
	bad.D = new(big.Int).Add(good.D, big.NewInt(2))
	if _, err := Wrap(&bad); !errors.Is(err, ErrKey) {
		t.Errorf("Wrap(inconsistent key) = %v, want ErrKey", err)
	}
	k, err := Wrap(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Sign(nil, []byte("short"), crypto.SHA256); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("short digest: %v", err)
	}
	if _, err := k.Sign(nil, make([]byte, 32), nil); err == nil {
		t.Error("nil SignerOpts: no error")
	}
}

// Many goroutines share one Key and its pool of OpenSSL contexts.
func TestConcurrentSigning(t *testing.T) {
	goKey := testKeys(t)[2048]
	k, err := Wrap(goKey)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				digest := sha256.Sum256(fmt.Appendf(nil, "%d/%d", g, i))
				got, err := k.Sign(nil, digest[:], crypto.SHA256)
				if err != nil {
					errs <- err
					return
				}
				if err := rsa.VerifyPKCS1v15(&goKey.PublicKey, crypto.SHA256, digest[:], got); err != nil {
					errs <- fmt.Errorf("goroutine %d, signature %d: %w", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(k.st.free); n == 0 || n > 8 {
		t.Errorf("%d idle contexts after 8 concurrent signers, want 1 to 8", n)
	}
}

// A message signed through auth/dkim with the OpenSSL key verifies with
// dkimpy, an independent implementation (../shared/tools/dkim-interop.py).
func TestDKIMSignatureVerifiesWithDkimpy(t *testing.T) {
	tool := filepath.Join(sharedtest.Require(t, "tools"), "dkim-interop.py")
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim, nacl").Run(); err != nil {
		t.Skipf("/usr/bin/python3 cannot import dkim (python3-dkim) and nacl: %v", err)
	}
	goKey := testKeys(t)[2048]
	k, err := Wrap(goKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dkim.NewSigner(dkim.SignerConfig{
		Keys:                   []dkim.SignKey{{Domain: "example.test", Selector: "ossl", Key: k}},
		HeaderCanonicalization: dkim.Relaxed,
		BodyCanonicalization:   dkim.Simple,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: a@example.test\r\nTo: b@example.org\r\nSubject: openssl\r\n\r\nHello,\r\nsigned by libcrypto.\r\n"
	field, err := s.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	rec, err := dkim.KeyRecord(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, "ossl._domainkey.example.test.txt"), []byte(rec+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/python3", tool, "verify", "--key-dir", keyDir, "-")
	cmd.Stdin = strings.NewReader(field + msg)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkim-interop.py: %v", err)
	}
	var res struct{ Result string }
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil {
		t.Fatalf("dkim-interop.py output %q: %v", out, err)
	}
	if res.Result != "pass" {
		t.Fatalf("dkimpy: %s", out)
	}
}

func BenchmarkSign(b *testing.B) {
	goKey := testKeys(b)[2048]
	k, err := Wrap(goKey)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("benchmark"))
	for _, c := range []struct {
		name string
		key  crypto.Signer
	}{{"crypto-rsa", goKey}, {"openssl", k}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.key.Sign(nil, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
