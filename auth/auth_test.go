package auth

import (
	"context"
	"crypto"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

var clientIP = netip.MustParseAddr("192.0.2.10")

type fixture struct {
	v      *Verifier
	signer *dkim.Signer
	srv    *dnstest.Server
	res    *resolver.Resolver
	key    crypto.Signer
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	key, err := dkim.GenerateKey(dkim.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	keyLine, err := dkim.KeyTXT("ed", "example.com", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.New(t, keyLine+`
example.com. IN TXT "v=spf1 ip4:192.0.2.10 -all"
example.com. IN MX 10 mx.example.com.
mx.example.com. IN A 192.0.2.25
_dmarc.example.com. IN TXT "v=DMARC1; p=reject"
bank.example. IN TXT "v=spf1 -all"
_dmarc.bank.example. IN TXT "v=DMARC1; p=reject"
`)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Resolver = res
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.test"
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dkim.NewSigner(dkim.SignerConfig{Keys: []dkim.SignKey{{Domain: "example.com", Selector: "ed", Key: key}}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{v: v, signer: s, srv: srv, res: res, key: key}
}

const msg = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n"

func (f *fixture) sign(t *testing.T, m string) string {
	t.Helper()
	sig, err := f.signer.Sign(context.Background(), strings.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	return sig + m
}

// checkHeader asserts the field is one header field: every line break is
// a fold, nothing escapes the value, and authres parses it back.
func checkHeader(t *testing.T, h string) []authres.Result {
	t.Helper()
	if !strings.HasPrefix(h, "Authentication-Results: ") || !strings.HasSuffix(h, "\r\n") {
		t.Fatalf("bad field %q", h)
	}
	body := strings.TrimSuffix(h, "\r\n")
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '\r' && !(i+2 < len(body) && body[i+1] == '\n' && (body[i+2] == ' ' || body[i+2] == '\t')) {
			t.Fatalf("CR that is not a fold at %d in %q", i, h)
		}
		if c == '\n' && (i == 0 || body[i-1] != '\r') {
			t.Fatalf("bare LF in %q", h)
		}
		if c == '\\' || c == 0 || c >= 0x7f {
			t.Fatalf("unsafe octet %q in %q", c, h)
		}
	}
	unfolded := strings.ReplaceAll(strings.TrimPrefix(body, "Authentication-Results: "), "\r\n", "")
	id, results, err := authres.Parse(unfolded)
	if err != nil || id != "mx.test" {
		t.Fatalf("authres cannot parse %q: %v (id %q)", unfolded, err, id)
	}
	return results
}

func TestVerifyPass(t *testing.T) {
	f := newFixture(t, Config{})
	r, err := f.v.Verify(context.Background(), strings.NewReader(f.sign(t, msg)), clientIP, "mail.example.com", "bounce@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r.SPF.Status.String() != "pass" || len(r.DKIM) != 1 || r.DKIM[0].Status != dkim.StatusPass || r.DMARC.Status != "pass" {
		t.Fatalf("spf=%s dkim=%v dmarc=%s (%s)", r.SPF.Status, r.DKIM, r.DMARC.Status, r.DMARC.Reason)
	}
	h := r.Header()
	results := checkHeader(t, h)
	if len(results) != 3 {
		t.Fatalf("%d results in %q", len(results), h)
	}
	for _, want := range []string{"spf=pass smtp.mailfrom=bounce@example.com", "dkim=pass header.a=ed25519-sha256", "header.d=example.com", "header.s=ed", "dmarc=pass header.from=example.com"} {
		if !strings.Contains(strings.ReplaceAll(h, "\r\n", ""), want) {
			t.Errorf("header lacks %q: %s", want, h)
		}
	}
}

func TestVerifyForgery(t *testing.T) {
	f := newFixture(t, Config{})
	forged := strings.Replace(msg, "alice@example.com", "ceo@bank.example", 1)
	// Signed by example.com, sent from example.com's IP, From bank.example.
	r, err := f.v.Verify(context.Background(), strings.NewReader(f.sign(t, forged)), clientIP, "mail.example.com", "bounce@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r.DMARC.Status != "fail" || r.DMARC.Disposition != "reject" || r.DKIM[0].Status != dkim.StatusPass {
		t.Fatalf("dmarc=%s/%s (%s)", r.DMARC.Status, r.DMARC.Disposition, r.DMARC.Reason)
	}
	checkHeader(t, r.Header())
	// Unsigned, from an unauthorized IP.
	r, err = f.v.Verify(context.Background(), strings.NewReader(msg), netip.MustParseAddr("198.51.100.1"), "evil.test", "x@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r.SPF.Status.String() != "fail" || len(r.DKIM) != 0 || r.DMARC.Status != "fail" {
		t.Fatalf("spf=%s dmarc=%s", r.SPF.Status, r.DMARC.Status)
	}
	if h := r.Header(); !strings.Contains(h, "dkim=none") {
		t.Errorf("unsigned message: %s", h)
	}
}

// TestHeaderInjection: values from the SMTP session and the message never
// escape the Authentication-Results field.
func TestHeaderInjection(t *testing.T) {
	f := newFixture(t, Config{})
	evilSig := "DKIM-Signature: v=1; a=rsa-sha256; d=evil\\\"x.test; s=s\"el\\; h=from; bh=x; b=y\r\n"
	m := evilSig + "From: \"x\\\" <a@b>\" <alice@example.com>\r\n\r\nbody\r\n"
	for _, tc := range []struct{ helo, mailFrom string }{
		{"mail.example.com\r\nX-Injected: 1", "a\r\nX-Injected: 1@example.com"},
		{"h\\\"", "\"quoted\\\"local\"@example.com"},
		{"ok.test", "a@exa\x00mple.com"},
		{"ok.test", "a@bücher.example"},
	} {
		r, err := f.v.Verify(context.Background(), strings.NewReader(m), clientIP, tc.helo, tc.mailFrom)
		if err != nil {
			t.Fatal(err)
		}
		h := r.Header()
		checkHeader(t, h)
		if strings.Contains(h, "\r\nX-Injected") {
			t.Fatalf("injected: %q", h)
		}
	}
}

func TestVerifyHostile(t *testing.T) {
	f := newFixture(t, Config{MaxHeaderBytes: 4096, MaxHeaderFields: 50, MaxSignatures: 2})
	ctx := context.Background()
	huge := "From: a@example.com\r\nSubject: x\r\n" + strings.Repeat(" folded\r\n", 2000) + "\r\nbody\r\n"
	r, err := f.v.Verify(ctx, strings.NewReader(huge), clientIP, "mail.example.com", "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r.HeaderErr == nil || r.DMARC.Status != "permerror" {
		t.Fatalf("huge header: %v %s", r.HeaderErr, r.DMARC.Status)
	}
	if h := r.Header(); !strings.Contains(h, "dkim=permerror") {
		t.Errorf("huge header: %s", h)
	}
	checkHeader(t, r.Header())

	// Duplicated signatures beyond the cap are not verified.
	signed := f.sign(t, msg)
	sig := signed[:len(signed)-len(msg)]
	r, err = f.v.Verify(ctx, strings.NewReader(strings.Repeat(sig, 4)+msg), clientIP, "mail.example.com", "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.DKIM) != 4 || r.DKIM[0].Status != dkim.StatusPass || r.DKIM[3].Status != dkim.StatusPermError {
		t.Fatalf("dkim %+v", r.DKIM)
	}

	// Two From fields: no DMARC pass, even with an aligned signature.
	two := "From: alice@example.com\r\n" + msg
	r, err = f.v.Verify(ctx, strings.NewReader(f.sign(t, two)), clientIP, "mail.example.com", "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r.DMARC.Status == "pass" || r.DMARC.Disposition != "reject" {
		t.Fatalf("two From: %s/%s", r.DMARC.Status, r.DMARC.Disposition)
	}
	// "From :" with a space before the colon is ambiguous.
	spaced := strings.Replace(msg, "From:", "From :", 1)
	r, err = f.v.Verify(ctx, strings.NewReader(spaced), clientIP, "mail.example.com", "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r.DMARC.Status != "permerror" {
		t.Fatalf("From with space: %s (%s)", r.DMARC.Status, r.DMARC.Reason)
	}

	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.v.Verify(c, strings.NewReader(msg), clientIP, "h", "a@example.com"); err != context.Canceled {
		t.Fatalf("canceled: %v", err)
	}
}
