package deliver

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/mtakit/mta/deliver/mtasts"
	"github.com/mtakit/mta/deliver/smtptest"
	"github.com/mtakit/mta/resolver/dnstest"
)

func mustCA(t *testing.T) *smtptest.CA {
	t.Helper()
	ca, err := smtptest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustCert(t *testing.T, ca *smtptest.CA, names ...string) tls.Certificate {
	t.Helper()
	c, err := ca.Issue(names...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDANE(t *testing.T) {
	ca := mustCA(t)
	good := mustCert(t, ca, "mx1.example.test")
	other := mustCert(t, ca, "mx1.example.test")
	spki256 := func(c tls.Certificate) string {
		h := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
		return hex.EncodeToString(h[:])
	}
	cert512 := func(c tls.Certificate) string {
		h := sha512.Sum512(c.Leaf.Raw)
		return hex.EncodeToString(h[:])
	}
	caFull := hex.EncodeToString(ca.Cert.Raw)
	for _, tc := range []struct {
		name      string
		tlsa      string
		authentic bool // TLSA answer has the AD bit
		mxAuth    bool // MX answer has the AD bit
		noTLS     bool // server offers no STARTTLS
		code      int
		enh       smtp.EnhancedCode
		policy    string
		verified  bool
	}{
		{"DANE-EE SPKI SHA-256", "3 1 1 " + spki256(good), true, true, false, 250, smtp.EnhancedCode{}, "dane", true},
		{"DANE-EE cert SHA-512", "3 0 2 " + cert512(good), true, true, false, 250, smtp.EnhancedCode{}, "dane", true},
		{"DANE-TA full CA cert", "2 0 0 " + caFull, true, true, false, 250, smtp.EnhancedCode{}, "dane", true},
		{"DANE-EE mismatch", "3 1 1 " + spki256(other), true, true, false, 451, smtp.EnhancedCode{4, 7, 5}, "dane", false},
		{"TLSA not authentic is ignored", "3 1 1 " + spki256(other), false, true, false, 250, smtp.EnhancedCode{}, "opportunistic", false},
		{"MX not authentic: no DANE", "3 1 1 " + spki256(other), true, false, false, 250, smtp.EnhancedCode{}, "opportunistic", false},
		{"usable TLSA but no STARTTLS", "3 1 1 " + spki256(good), true, true, true, 451, smtp.EnhancedCode{4, 7, 4}, "dane", false},
		{"only PKIX-EE records: TLS required, not verified", "1 1 1 " + spki256(other), true, true, false, 250, smtp.EnhancedCode{}, "dane", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := smtptest.Config{Hostname: "mx1.example.test", TLS: &tls.Config{Certificates: []tls.Certificate{good}}}
			if tc.noTLS {
				cfg.TLS = nil
			}
			zone := labZone + "_25._tcp.mx1.example.test. 300 IN TLSA " + tc.tlsa + "\n"
			lab, srv := newLab(t, zone, map[string]smtptest.Config{"127.0.0.2": cfg})
			if tc.mxAuth {
				lab.dns.SetFault("example.test", dns.TypeMX, dnstest.Authentic)
			}
			if tc.authentic {
				lab.dns.SetFault("_25._tcp.mx1.example.test", dns.TypeTLSA, dnstest.Authentic)
			}
			mx := lab.transport(t, MXConfig{MaxHosts: 1})
			r := deliverOK(t, mx, envelope("a@example.test"), testMessage(""))[0]
			wantCode(t, r, tc.code, tc.enh)
			if r.Route.TLSPolicy != tc.policy {
				t.Fatalf("policy %q, want %q", r.Route.TLSPolicy, tc.policy)
			}
			if tc.code == 250 {
				if r.Route.TLS == nil || r.Route.TLS.Verified != tc.verified || r.Route.TLS.Policy != tc.policy {
					t.Fatalf("TLS %+v", r.Route.TLS)
				}
			} else if len(srv["127.0.0.2"].Messages()) != 0 || srv["127.0.0.2"].Sessions() != 1 {
				t.Fatalf("DANE failure must not fall back to plaintext (sessions %d)", srv["127.0.0.2"].Sessions())
			}
		})
	}
}

func TestMTASTS(t *testing.T) {
	ca := mustCA(t)
	var policy atomic.Value
	var fetches atomic.Int32
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, policy.Load().(string))
	}))
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{mustCert(t, ca, "mta-sts.example.test")}}
	hs.StartTLS()
	t.Cleanup(hs.Close)

	goodCert := mustCert(t, ca, "mx1.example.test")
	wrongCert := mustCert(t, ca, "wrong.example.test")
	for _, tc := range []struct {
		name     string
		policy   string
		cert     tls.Certificate
		optional bool
		code     int
		enh      smtp.EnhancedCode
		pol      string
		failure  string
	}{
		{"enforce, valid", "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 86400\n", goodCert, false, 250, smtp.EnhancedCode{}, "mta-sts", ""},
		{"enforce, wildcard", "version: STSv1\r\nmode: enforce\r\nmx: *.example.test\r\nmax_age: 86400\r\n", goodCert, false, 250, smtp.EnhancedCode{}, "mta-sts", ""},
		{"enforce, MX not in policy", "version: STSv1\nmode: enforce\nmx: other.example.test\nmax_age: 86400\n", goodCert, false, 451, smtp.EnhancedCode{4, 7, 5}, "mta-sts", "validation-failure"},
		{"enforce, wrong certificate", "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 86400\n", wrongCert, false, 451, smtp.EnhancedCode{4, 7, 5}, "mta-sts", "certificate-host-mismatch"},
		{"testing, wrong certificate: delivered, reported", "version: STSv1\nmode: testing\nmx: mx1.example.test\nmax_age: 86400\n", wrongCert, false, 250, smtp.EnhancedCode{}, "mta-sts-testing", "certificate-host-mismatch"},
		{"enforce, wrong certificate, TLS-Required: No", "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 86400\n", wrongCert, true, 250, smtp.EnhancedCode{}, "opportunistic", ""},
		{"mode none", "version: STSv1\nmode: none\nmax_age: 86400\n", wrongCert, false, 250, smtp.EnhancedCode{}, "opportunistic", ""},
		{"announced policy unreadable: delivered, reported", "this is not a policy\n", wrongCert, false, 250, smtp.EnhancedCode{}, "opportunistic", "sts-policy-fetch-error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			policy.Store(tc.policy)
			zone := labZone + `_mta-sts.example.test. 300 IN TXT "v=STSv1; id=` + fmt.Sprint(fetches.Load()) + `x;"` + "\n"
			lab, srv := newLab(t, zone, map[string]smtptest.Config{
				"127.0.0.2": {Hostname: "mx1.example.test", TLS: &tls.Config{Certificates: []tls.Certificate{tc.cert}}},
			})
			sts, err := mtasts.New(mtasts.Config{
				Resolver: lab.res,
				RootCAs:  ca.Pool,
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					if addr != "mta-sts.example.test:443" {
						return nil, fmt.Errorf("unexpected dial to %s", addr)
					}
					var d net.Dialer
					return d.DialContext(ctx, network, hs.Listener.Addr().String())
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			mx := lab.transport(t, MXConfig{STS: sts, MaxHosts: 1, ClientConfig: ClientConfig{RootCAs: ca.Pool}})
			env := envelope("a@example.test")
			env.TLSOptional = tc.optional
			r := deliverOK(t, mx, env, testMessage(""))[0]
			wantCode(t, r, tc.code, tc.enh)
			if r.Route.TLSPolicy != tc.pol || r.Route.TLSFailure != tc.failure {
				t.Fatalf("route %+v", r.Route)
			}
			if tc.code == 250 && !srv["127.0.0.2"].Messages()[0].TLS {
				t.Fatal("not sent over TLS")
			}
			if tc.code != 250 && len(srv["127.0.0.2"].Messages()) != 0 {
				t.Fatal("delivered despite enforce")
			}
		})
	}
}

func TestRequireTLS(t *testing.T) {
	ca := mustCA(t)
	srvTLS, err := ca.ServerConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	req := func(optional bool) *Envelope {
		env := envelope("a@example.test")
		env.Mail.RequireTLS = true
		env.TLSOptional = optional
		return env
	}
	for _, tc := range []struct {
		name  string
		srv   smtptest.Config
		route StaticRoute
		roots bool
		env   *Envelope
		code  int
		enh   smtp.EnhancedCode
		param bool
	}{
		{"verified TLS, peer offers REQUIRETLS", smtptest.Config{TLS: srvTLS, RequireTLS: true}, StaticRoute{TLS: TLSRequired}, true, req(false), 250, smtp.EnhancedCode{}, true},
		{"verified TLS, peer lacks REQUIRETLS", smtptest.Config{TLS: srvTLS}, StaticRoute{TLS: TLSRequired}, true, req(false), 550, smtp.EnhancedCode{5, 7, 30}, false},
		{"unverified TLS", smtptest.Config{TLS: srvTLS, RequireTLS: true}, StaticRoute{}, false, req(false), 550, smtp.EnhancedCode{5, 7, 30}, false},
		{"plaintext", smtptest.Config{RequireTLS: true}, StaticRoute{}, false, req(false), 550, smtp.EnhancedCode{5, 7, 30}, false},
		{"TLS-Required: No", smtptest.Config{}, StaticRoute{}, false, req(true), 250, smtp.EnhancedCode{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.New(t, tc.srv)
			cc := ClientConfig{}
			if tc.roots {
				cc.RootCAs = ca.Pool
			}
			tr := newStatic(t, srv, tc.route, cc)
			r := deliverOK(t, tr, tc.env, testMessage(""))[0]
			wantCode(t, r, tc.code, tc.enh)
			if tc.code == 250 && srv.Messages()[0].MailOpts.RequireTLS != tc.param {
				t.Fatalf("REQUIRETLS parameter passed: %v", srv.Messages()[0].MailOpts.RequireTLS)
			}
		})
	}
}
