package dkim

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// verifyWithMap verifies msg with go-msgauth, taking keys from recs.
func verifyWithMap(t *testing.T, msg string, recs map[string]string) []*msgdkim.Verification {
	t.Helper()
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(msg), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := recs[name]; ok {
				return []string{r}, nil
			}
			return nil, errors.New("no such record")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestSignInteropDkimpy signs with RSA and Ed25519 in all four
// canonicalization pairs, on CRLF and LF messages, and has dkimpy (an
// independent implementation) verify every signature. All signatures of
// one message go to one dkimpy run to keep the test fast.
func TestSignInteropDkimpy(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	keyDir := t.TempDir()
	writeKeyFile(t, keyDir, "rsa", "example.test", rsaKey.Public())
	writeKeyFile(t, keyDir, "ed", "example.test", edKey.Public())
	canons := [][2]Canonicalization{{Relaxed, Relaxed}, {Relaxed, Simple}, {Simple, Simple}, {Simple, Relaxed}}
	for _, lf := range []bool{false, true} {
		name := "CRLF"
		msg := testMessage
		if lf {
			name = "LF"
			msg = strings.ReplaceAll(msg, "\r\n", "\n")
		}
		t.Run(name, func(t *testing.T) {
			var sigs strings.Builder
			var want []string
			for _, c := range canons {
				s, err := NewSigner(SignerConfig{
					Keys: []SignKey{
						{Domain: "example.test", Selector: "rsa", Key: rsaKey},
						{Domain: "example.test", Selector: "ed", Key: edKey},
					},
					HeaderCanonicalization: c[0],
					BodyCanonicalization:   c[1],
				})
				if err != nil {
					t.Fatal(err)
				}
				sig, err := s.Sign(context.Background(), strings.NewReader(msg))
				if err != nil {
					t.Fatal(err)
				}
				if lf && strings.Contains(sig, "\r") {
					t.Fatalf("LF message got CR in signature: %q", sig)
				}
				if !strings.Contains(unfold(sig), "c="+string(c[0])+"/"+string(c[1])+";") {
					t.Fatalf("signature lacks c=%s/%s: %q", c[0], c[1], sig)
				}
				sigs.WriteString(sig)
				want = append(want, string(c[0])+"/"+string(c[1])+" rsa-sha256", string(c[0])+"/"+string(c[1])+" ed25519-sha256")
			}
			res := pyVerify(t, keyDir, []byte(sigs.String()+msg))
			if len(res) != len(want) {
				t.Fatalf("dkimpy saw %d signatures, want %d", len(res), len(want))
			}
			for i, r := range res {
				if r.Result != "pass" || !strings.HasSuffix(want[i], " "+r.A) || r.D != "example.test" {
					reason := ""
					if r.Reason != nil {
						reason = *r.Reason
					}
					t.Errorf("signature %d (%s): dkimpy says %s %s (%s)", i, want[i], r.Result, r.A, reason)
				}
			}
			if lf {
				return
			}
			// Tampering must be caught by the independent verifier too.
			bad := strings.Replace(sigs.String()+msg, "Hello Bob", "Hello Eve", 1)
			for i, r := range pyVerify(t, keyDir, []byte(bad)) {
				if r.Result != "fail" {
					t.Errorf("tampered body: signature %d: dkimpy says %s", i, r.Result)
				}
			}
		})
	}
}

func TestSignOverSigning(t *testing.T) {
	rsaKey, _ := testKeys(t)
	s, err := NewSigner(SignerConfig{Keys: []SignKey{{Domain: "example.test", Selector: "rsa", Key: rsaKey}}})
	if err != nil {
		t.Fatal(err)
	}
	msg := "Received: x\r\nFrom: a@example.test\r\nTo: b@example.test\r\nTo: c@example.test\r\nSubject: s\r\nX-Other: o\r\n\r\nbody\r\n"
	sig, err := s.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	tags, err := ParseTags(strings.TrimPrefix(unfold(sig), "DKIM-Signature:"))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := tags.Get("h")
	got := map[string]int{}
	for _, n := range strings.Split(removeFWS(h), ":") {
		got[strings.ToLower(n)]++
	}
	want := map[string]int{"from": 2, "to": 3, "subject": 2, "cc": 1, "date": 1, "message-id": 1, "reply-to": 1}
	for n, c := range want {
		if got[n] != c {
			t.Errorf("h= lists %s %d times, want %d (h=%s)", n, got[n], c, h)
		}
	}
	if got["received"] != 0 || got["x-other"] != 0 {
		t.Errorf("h= signs fields not configured: %s", h)
	}
	if got["in-reply-to"] != 0 {
		t.Errorf("absent, not over-signed field listed: %s", h)
	}
	rec, _ := KeyRecord(rsaKey.Public())
	recs := map[string]string{"rsa._domainkey.example.test": rec}
	if vs := verifyWithMap(t, sig+msg, recs); vs[0].Err != nil {
		t.Fatalf("go-msgauth: %v", vs[0].Err)
	}
	// An added instance of an over-signed field breaks the signature.
	for _, added := range []string{"From: evil@example.test\r\n", "Subject: other\r\n", "Cc: x@example.test\r\n", "To: d@example.test\r\n"} {
		if vs := verifyWithMap(t, sig+added+msg, recs); vs[0].Err == nil {
			t.Errorf("adding %q kept the signature valid", added)
		}
	}
	// An unsigned field may be added.
	if vs := verifyWithMap(t, sig+"X-Added: 1\r\n"+msg, recs); vs[0].Err != nil {
		t.Errorf("adding an unsigned field broke the signature: %v", vs[0].Err)
	}
}

func unfold(s string) string {
	return strings.NewReplacer("\r\n", "", "\n", "").Replace(s)
}

func TestSignerConfigErrors(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	small, err := ParsePrivateKeyPEM(mustRead(t, corpusDir(t, "corpus/dkim")+"/rfc8463/rsa.private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  SignerConfig
		want error
	}{
		{"no keys", SignerConfig{}, ErrConfig},
		{"no selector", SignerConfig{Keys: []SignKey{{Domain: "a.test", Key: edKey}}}, ErrConfig},
		{"injected domain", SignerConfig{Keys: []SignKey{{Domain: "a.test; x=1", Selector: "s", Key: edKey}}}, ErrConfig},
		{"CRLF selector", SignerConfig{Keys: []SignKey{{Domain: "a.test", Selector: "s\r\nX: y", Key: edKey}}}, ErrConfig},
		{"1024-bit RSA", SignerConfig{Keys: []SignKey{{Domain: "a.test", Selector: "s", Key: small}}}, ErrKeyTooSmall},
		{"bad canon", SignerConfig{Keys: []SignKey{{Domain: "a.test", Selector: "s", Key: rsaKey}}, BodyCanonicalization: "nowsp"}, ErrConfig},
		{"bad header name", SignerConfig{Keys: []SignKey{{Domain: "a.test", Selector: "s", Key: rsaKey}}, Headers: []string{"Subject:"}}, ErrConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewSigner(tc.cfg); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := NewSigner(SignerConfig{MinRSABits: 1024, Keys: []SignKey{{Domain: "a.test", Selector: "s", Key: small}}}); err != nil {
		t.Fatalf("MinRSABits 1024: %v", err)
	}
}

func TestSignHostileHeader(t *testing.T) {
	_, edKey := testKeys(t)
	s, err := NewSigner(SignerConfig{Keys: []SignKey{{Domain: "a.test", Selector: "s", Key: edKey}}, MaxHeaderBytes: 4096, MaxHeaderFields: 50})
	if err != nil {
		t.Fatal(err)
	}
	huge := "From: a@a.test\r\nSubject: x\r\n" + strings.Repeat(" folded\r\n", 1000) + "\r\nbody\r\n"
	if _, err := s.Sign(context.Background(), strings.NewReader(huge)); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("huge folded header: %v", err)
	}
	many := "From: a@a.test\r\n" + strings.Repeat("X: y\r\n", 60) + "\r\nbody\r\n"
	if _, err := s.Sign(context.Background(), strings.NewReader(many)); !errors.Is(err, ErrTooManyFields) {
		t.Errorf("many fields: %v", err)
	}
	if _, err := s.Sign(context.Background(), strings.NewReader("From: a@a.test\r\nno colon here\r\n\r\n")); !errors.Is(err, ErrHeaderSyntax) {
		t.Errorf("no colon: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Sign(ctx, strings.NewReader(testMessage)); err != context.Canceled {
		t.Errorf("canceled ctx: %v", err)
	}
}

// A message without a body (no blank line) is still signed, and the
// signature verifies once the blank line is there.
func TestSignHeaderOnly(t *testing.T) {
	_, edKey := testKeys(t)
	s, err := NewSigner(SignerConfig{Keys: []SignKey{{Domain: "a.test", Selector: "s", Key: edKey}}})
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: a@a.test\r\nSubject: x"
	sig, err := s.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := KeyRecord(edKey.Public())
	if vs := verifyWithMap(t, sig+msg+"\r\n\r\n", map[string]string{"s._domainkey.a.test": rec}); vs[0].Err != nil {
		t.Fatal(vs[0].Err)
	}
}

func TestKeyRing(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	kr := NewKeyRing(SignerConfig{})
	if err := kr.Set("example.test", SignKey{Domain: "example.test", Selector: "ed", Key: edKey}); err != nil {
		t.Fatal(err)
	}
	if err := kr.Set("Other.Test.", SignKey{Domain: "other.test", Selector: "rsa", Key: rsaKey}, SignKey{Domain: "other.test", Selector: "ed", Key: edKey}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		domain, from string
		wantD        string
		wantN        int
		wantErr      error
	}{
		{"example.test", "a@x.invalid", "d=example.test", 1, nil},
		{"news.example.test", "a@x.invalid", "d=example.test", 1, nil},
		{"", "Alice <a@other.test>", "d=other.test", 2, nil},
		{"", "a@nokey.test", "", 0, ErrNoKey},
		{"", "a@other.test, b@example.test", "", 0, ErrNoKey},
		{"unknown.test", "a@other.test", "", 0, ErrNoKey},
	} {
		msg := "From: " + tc.from + "\r\nSubject: s\r\n\r\nbody\r\n"
		sig, err := kr.Sign(ctx, tc.domain, strings.NewReader(msg))
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s/%s: got %v, want %v", tc.domain, tc.from, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s/%s: %v", tc.domain, tc.from, err)
			continue
		}
		if n := strings.Count(sig, "DKIM-Signature:"); n != tc.wantN || !strings.Contains(unfold(sig), tc.wantD+";") {
			t.Errorf("%s/%s: got %d signatures %q", tc.domain, tc.from, n, sig)
		}
	}
	kr.Remove("example.test")
	if kr.SignerFor("example.test") != nil {
		t.Error("Remove kept the signer")
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := readFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	_, err = io.Copy(&b, f)
	return b.Bytes(), err
}

var _ crypto.Signer = (*fakeHSM)(nil)

// fakeHSM is a crypto.Signer that is not one of the std key types, as an
// HSM- or KMS-backed key would be.
type fakeHSM struct{ crypto.Signer }

func TestSignWithOpaqueSigner(t *testing.T) {
	_, edKey := testKeys(t)
	s, err := NewSigner(SignerConfig{Keys: []SignKey{{Domain: "a.test", Selector: "s", Key: fakeHSM{edKey}}}})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(context.Background(), strings.NewReader(testMessage))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := KeyRecord(edKey.Public())
	if vs := verifyWithMap(t, sig+testMessage, map[string]string{"s._domainkey.a.test": rec}); vs[0].Err != nil {
		t.Fatal(vs[0].Err)
	}
}

// TestReadHeaderShapes signs and verifies messages whose header arrives
// one byte at a time, outgrows the first buffer, or has no body.
func TestReadHeaderShapes(t *testing.T) {
	_, edKey := testKeys(t)
	s, err := NewSigner(SignerConfig{Keys: []SignKey{{Domain: "a.test", Selector: "s", Key: edKey}}})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := KeyRecord(edKey.Public())
	recs := map[string]string{"s._domainkey.a.test": rec}
	big := "From: a@a.test\r\n"
	for i := 0; len(big) < 100<<10; i++ {
		big += fmt.Sprintf("X-Filler-%d: %s\r\n", i, strings.Repeat("v", 200))
	}
	for name, tc := range map[string]struct {
		msg  string
		read func(string) io.Reader
	}{
		"one byte at a time":  {testMessage, func(m string) io.Reader { return iotest.OneByteReader(strings.NewReader(m)) }},
		"half reads":          {testMessage, func(m string) io.Reader { return iotest.HalfReader(strings.NewReader(m)) }},
		"100 KB header":       {big + "\r\nbody\r\n", func(m string) io.Reader { return strings.NewReader(m) }},
		"no body":             {"From: a@a.test\r\nSubject: x\r\n\r\n", func(m string) io.Reader { return strings.NewReader(m) }},
		"body of blank lines": {"From: a@a.test\r\n\r\n\r\n\r\n", func(m string) io.Reader { return strings.NewReader(m) }},
	} {
		t.Run(name, func(t *testing.T) {
			sig, err := s.Sign(context.Background(), tc.read(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if vs := verifyWithMap(t, sig+tc.msg, recs); vs[0].Err != nil {
				t.Fatal(vs[0].Err)
			}
		})
	}
	// A read error in the header is reported, not signed around.
	_, err = s.Sign(context.Background(), iotest.TimeoutReader(iotest.OneByteReader(strings.NewReader(testMessage))))
	if !errors.Is(err, iotest.ErrTimeout) {
		t.Fatalf("read error: %v", err)
	}
}

func TestParseCanonicalization(t *testing.T) {
	for in, want := range map[string][2]Canonicalization{
		"relaxed/simple": {Relaxed, Simple}, "Relaxed/Relaxed": {Relaxed, Relaxed},
		"simple": {Simple, Simple}, "relaxed": {Relaxed, Simple},
	} {
		h, b, err := ParseCanonicalization(in)
		if err != nil || h != want[0] || b != want[1] {
			t.Errorf("%q: %s/%s %v", in, h, b, err)
		}
	}
	for _, bad := range []string{"", "nowsp", "relaxed/", "simple/fancy"} {
		if _, _, err := ParseCanonicalization(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestKeyRingRotationConcurrent signs from many goroutines while the
// domain's key is replaced; every signature uses one of the two keys
// entirely (run with -race).
func TestKeyRingRotationConcurrent(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	kr := NewKeyRing(SignerConfig{})
	if err := kr.Set("example.test", SignKey{Domain: "example.test", Selector: "old", Key: edKey}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				sig, err := kr.Sign(context.Background(), "example.test", strings.NewReader(testMessage))
				if err != nil {
					errs <- err
					return
				}
				u := unfold(sig)
				if !strings.Contains(u, "s=old;") && !strings.Contains(u, "s=new;") {
					errs <- fmt.Errorf("goroutine %d sign %d: unexpected selector in %q", g, i, sig)
				}
			}
		}()
	}
	if err := kr.Set("example.test", SignKey{Domain: "example.test", Selector: "new", Key: rsaKey}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	sig, err := kr.Sign(context.Background(), "example.test", strings.NewReader(testMessage))
	if err != nil || !strings.Contains(unfold(sig), "s=new;") {
		t.Fatalf("after rotation: %v %q", err, sig)
	}
}
