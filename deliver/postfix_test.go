package deliver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver/smtptest"
)

func TestPostfixInterop(t *testing.T) {
	ca := mustCA(t)
	pf := smtptest.StartPostfix(t, ca, "example.test")
	tr, err := NewStatic(StaticConfig{
		ClientConfig: ClientConfig{Hostname: testHost, RootCAs: ca.Pool},
		Routes:       []StaticRoute{{Domain: "*", Host: pf.Addr, TLS: TLSRequired}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	body1 := "From: <a@sender.test>\r\nTo: <box@example.test>\r\nSubject: interop 1\r\nMessage-ID: <pf1@sender.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n" +
		".leading dot\r\nbare\nLF and caf\xc3\xa9\r\n" + strings.Repeat("long line ", 50) + "\r\n"
	body2 := strings.Replace(body1, "interop 1", "interop 2", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	env := envelope("box@example.test", "someone@elsewhere.test")
	res := tr.Deliver(ctx, env, bodyOf(body1))
	if err := Check(env, res); err != nil {
		t.Fatal(err)
	}
	wantCode(t, res[0], 250, smtp.EnhancedCode{2, 0, 0})
	// Postfix refuses to relay for a client outside mynetworks.
	if res[1].Reply.Code/100 == 2 || res[1].Local {
		t.Fatalf("relay to elsewhere.test: %+v", res[1])
	}
	if ti := res[0].Route.TLS; ti == nil || !ti.Verified || ti.Policy != "tls" || !strings.HasPrefix(ti.Version, "TLS 1.") {
		t.Fatalf("TLS %+v", res[0].Route.TLS)
	}
	res = tr.Deliver(ctx, envelope("box@example.test"), bodyOf(body2))
	wantCode(t, res[0], 250, smtp.EnhancedCode{2, 0, 0})

	files := pf.WaitMaildir(t, 2)
	lf := func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
	for _, want := range []string{body1, body2} {
		found := false
		for _, f := range files {
			_, content, ok := strings.Cut(f, "Received: from "+testHost)
			if ok && strings.Contains(content, lf(want)) {
				found = true
			}
		}
		if !found {
			t.Errorf("message not delivered intact; want\n%q\nin one of\n%q", lf(want), files)
		}
	}
	if !strings.Contains(files[0], "with ESMTPS") {
		t.Errorf("Postfix did not record TLS in Received: %q", files[0])
	}
}
