package smtptest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PostfixBin is where Debian's postfix package installs the postfix
// command.
const PostfixBin = "/usr/sbin/postfix"

// Postfix is a private Postfix instance on loopback, a real peer for
// interoperability tests: it accepts mail for its domains on Addr, offers
// STARTTLS with a certificate from the test CA, and delivers everything
// into one Maildir. It never touches /etc/postfix or the system's spool.
type Postfix struct {
	// Dir holds the instance's configuration, queue, log and Maildir.
	Dir string
	// Addr is the SMTP listener, 127.0.0.1:Port.
	Addr string
	Port int
	etc  string
}

// StartPostfix starts a private Postfix that accepts mail for domains
// (virtual mailbox domains) and stops it when the test ends. It skips the
// test, saying why, when postfix is not installed or the test does not run
// as root (Postfix drops privileges to its own user). With
// DELIVER_KEEP_POSTFIX set, a directory that failed to start is kept.
func StartPostfix(t testing.TB, ca *CA, domains ...string) *Postfix {
	t.Helper()
	if _, err := os.Stat(PostfixBin); err != nil {
		t.Skipf("postfix is not installed (%s missing): apt-get install postfix", PostfixBin)
	}
	if os.Geteuid() != 0 {
		t.Skip("a private Postfix instance needs root")
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Skipf("no postfix user: %v", err)
	}
	dir, err := os.MkdirTemp("", "smtptest-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Postfix{Dir: dir, etc: filepath.Join(dir, "etc")}
	for _, d := range []string{p.etc, filepath.Join(dir, "spool"), filepath.Join(dir, "data"), filepath.Join(dir, "mail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"data", "mail"} {
		if out, err := exec.Command("chown", "postfix", filepath.Join(dir, d)).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
	}
	cert, err := ca.Issue("pf.smtptest.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(p.etc, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("cert.pem", certPEM, 0o644)
	write("key.pem", keyPEM, 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Port = ln.Addr().(*net.TCPAddr).Port
	p.Addr = ln.Addr().String()
	ln.Close()
	if len(domains) == 0 {
		domains = []string{"example.test"}
	}
	// Local delivery, DNS and relaying are off: the instance only
	// receives, for its virtual domains, into Dir/mail/box/.
	write("main.cf", fmt.Appendf(nil, `compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
myhostname = pf.smtptest.test
mydomain = smtptest.test
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
virtual_mailbox_domains = %[4]s
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:%[2]s
virtual_gid_maps = static:%[3]s
smtpd_tls_cert_file = %[1]s/etc/cert.pem
smtpd_tls_key_file = %[1]s/etc/key.pem
smtpd_tls_security_level = may
message_size_limit = 10240000
`, dir, pf.Uid, pf.Gid, strings.Join(domains, ", ")), 0o644)
	write("master.cf", fmt.Appendf(nil, `127.0.0.1:%d inet n - n - - smtpd
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
`, p.Port), 0o644)
	if out, err := exec.Command(PostfixBin, "-c", p.etc, "start").CombinedOutput(); err != nil {
		log := p.Log()
		if os.Getenv("DELIVER_KEEP_POSTFIX") == "" {
			os.RemoveAll(dir)
		}
		t.Fatalf("postfix start (dir %s): %v\n%s\n%s", dir, err, out, log)
	}
	t.Cleanup(func() {
		_ = exec.Command(PostfixBin, "-c", p.etc, "stop").Run()
		for range 100 {
			if exec.Command(PostfixBin, "-c", p.etc, "status").Run() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix did not listen: %v\n%s", err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// Log returns the instance's mail log.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "maillog"))
	return string(b)
}

// WaitMaildir waits, up to a minute, until the Maildir holds at least n
// messages and returns them all, as Postfix stored them (LF line ends).
func (p *Postfix) WaitMaildir(t testing.TB, n int) []string {
	t.Helper()
	newDir := filepath.Join(p.Dir, "mail", "box", "new")
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
			t.Fatalf("%d of %d messages delivered by Postfix\n%s", len(ents), n, p.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
