package deliver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mta/deliver/smtptest"
)

const postfixBin = "/usr/sbin/postfix"

// startPostfix runs a private Postfix instance on 127.0.0.1:port that
// accepts mail for example.test with STARTTLS and delivers it into a
// Maildir under its directory, which it returns with the port.
func startPostfix(t *testing.T, ca *smtptest.CA) (dir string, port int) {
	t.Helper()
	if _, err := os.Stat(postfixBin); err != nil {
		t.Skipf("postfix is not installed (%s missing): apt-get install postfix", postfixBin)
	}
	if os.Geteuid() != 0 {
		t.Skip("a private Postfix instance needs root")
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Skipf("no postfix user: %v", err)
	}
	dir, err = os.MkdirTemp("", "deliver-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(dir, "etc")
	for _, d := range []string{etc, filepath.Join(dir, "spool"), filepath.Join(dir, "data"), filepath.Join(dir, "mail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"data", "mail"} {
		if err := exec.Command("chown", "postfix", filepath.Join(dir, d)).Run(); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := ca.Issue("pf.deliver.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := smtptest.PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(etc, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("cert.pem", certPEM, 0o644)
	write("key.pem", keyPEM, 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	write("main.cf", []byte(fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
myhostname = pf.deliver.test
mydomain = deliver.test
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 192.0.2.1/32
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
virtual_mailbox_domains = example.test
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:%[2]s
virtual_gid_maps = static:%[3]s
smtpd_tls_cert_file = %[1]s/etc/cert.pem
smtpd_tls_key_file = %[1]s/etc/key.pem
smtpd_tls_security_level = may
message_size_limit = 10240000
`, dir, pf.Uid, pf.Gid)), 0o644)
	write("master.cf", []byte(fmt.Sprintf(`127.0.0.1:%d inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`, port)), 0o644)
	if out, err := exec.Command(postfixBin, "-c", etc, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
		if os.Getenv("DELIVER_KEEP_POSTFIX") == "" {
			os.RemoveAll(dir)
		}
		t.Fatalf("postfix start (dir %s): %v\n%s\n%s", dir, err, out, log)
	}
	t.Cleanup(func() {
		_ = exec.Command(postfixBin, "-c", etc, "stop").Run()
		for i := 0; i < 100; i++ {
			if exec.Command(postfixBin, "-c", etc, "status").Run() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		os.RemoveAll(dir)
	})
	// Wait (bounded) for the listener.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Fatalf("postfix did not listen: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return dir, port
}

// waitMaildir waits (bounded) for n files in the Maildir and returns them.
func waitMaildir(t *testing.T, dir string, n int) []string {
	t.Helper()
	newDir := filepath.Join(dir, "mail", "box", "new")
	deadline := time.Now().Add(60 * time.Second)
	for {
		ents, _ := os.ReadDir(newDir)
		if len(ents) >= n {
			var out []string
			for _, e := range ents {
				data, err := os.ReadFile(filepath.Join(newDir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, string(data))
			}
			return out
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Fatalf("%d of %d messages delivered by Postfix\n%s", len(ents), n, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPostfixInterop(t *testing.T) {
	ca := mustCA(t)
	dir, port := startPostfix(t, ca)
	tr, err := NewStatic(StaticConfig{
		ClientConfig: ClientConfig{Hostname: testHost, RootCAs: ca.Pool},
		Routes:       []StaticRoute{{Domain: "*", Host: fmt.Sprintf("127.0.0.1:%d", port), TLS: TLSRequired}},
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

	files := waitMaildir(t, dir, 2)
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
