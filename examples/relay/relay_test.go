package main

import (
	"bufio"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/deliver/smtptest"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/internal/sharedtest"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
	"github.com/mtakit/mta/submit"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	// buildFlags and rsaSigner change when the tests run with -tags
	// openssl (signkey_openssl_test.go): the relay under test is built
	// the same way, and must say that OpenSSL signs.
	buildFlags []string
	rsaSigner  = "Go crypto"
)

// relayBinary builds the relay once per test run.
func relayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "relay-test-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "relay")
		out, err := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-o", binPath, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// proc is a running relay.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addrs  map[string]string // scheme -> address, first of each
	stderr *lockedBuffer
	stdout *lockedBuffer
	done   chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var (
	listenLine  = regexp.MustCompile(`^relay: listening on (\w+)://(\S+) `)
	metricsLine = regexp.MustCompile(`^relay: metrics on http://(\S+)/metrics`)
)

// startRelay runs the relay with args and waits until every listener is
// up.
func startRelay(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(relayBinary(t), args...)
	p := &proc{t: t, cmd: cmd, addrs: map[string]string{}, stderr: &lockedBuffer{}, stdout: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.stdout, line)
			if m := listenLine.FindStringSubmatch(line); m != nil {
				if _, ok := p.addrs[m[1]]; !ok {
					p.addrs[m[1]] = m[2]
				}
			}
			if m := metricsLine.FindStringSubmatch(line); m != nil {
				p.addrs["metrics"] = m[1]
			}
			if strings.HasPrefix(line, "relay: queue ") && !signalled {
				signalled = true
				close(ready)
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("relay exited at start: %v\n%s", err, p.stderr)
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("relay did not start\n%s", p.stderr)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("relay log:\n%s", p.stderr)
		}
	})
	return p
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Fatalf("relay exit after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		p.t.Fatal("relay did not exit after SIGTERM")
	}
}

func (p *proc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatal(err)
	}
	<-p.done
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeKey(t *testing.T, dir string) (string, crypto.Signer) {
	t.Helper()
	key, err := dkim.GenerateKey(dkim.RSA, nil)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := dkim.MarshalPrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "dkim.pem")
	if err := os.WriteFile(file, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return file, key
}

func findMessage(s *smtptest.Server, pred func(smtptest.Message) bool) (smtptest.Message, bool) {
	for _, m := range s.Messages() {
		if pred(m) {
			return m, true
		}
	}
	return smtptest.Message{}, false
}

func hasRcpt(addr string) func(smtptest.Message) bool {
	return func(m smtptest.Message) bool {
		for _, to := range m.To {
			if strings.EqualFold(to, addr) {
				return true
			}
		}
		return false
	}
}

// TestEndToEndMX: swaks submits with STARTTLS and AUTH; the relay signs,
// queues and delivers by MX (dnstest) to a go-smtp sink; the signature
// verifies (Go verifier and dkimpy); a 550 recipient produces a DSN to the
// sender; a greylisted recipient arrives on retry; an unauthenticated
// client is refused.
func TestEndToEndMX(t *testing.T) {
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		t.Skip("swaks not installed")
	}
	dir := t.TempDir()
	keyFile, key := writeKey(t, dir)
	txt, err := dkim.KeyRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	grey := smtptest.Greylist()
	sink := smtptest.New(t, smtptest.Config{
		DSN: true,
		OnRcpt: func(to string, opts *smtp.RcptOptions) error {
			switch {
			case strings.HasPrefix(to, "nobody@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			case strings.HasPrefix(to, "grey@"):
				return grey(to, opts)
			}
			return nil
		},
	})
	dns := dnstest.New(t, `
example.net. 300 IN MX 10 mx.example.net.
example.test. 300 IN MX 10 mx.example.net.
mx.example.net. 300 IN A 127.0.0.1
`)
	dns.AddRR(dnstest.TXT("sel._domainkey.example.test.", 300, txt))

	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users")
	if err := os.WriteFile(usersFile, []byte("# test users\nalice:"+string(hash)+":@example.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startRelay(t,
		"-listen", "starttls://127.0.0.1:0?auth",
		"-listen", "smtp://127.0.0.1:0",
		"-trusted", "192.0.2.0/24", // loopback is not trusted here
		"-users", usersFile,
		"-queue-dir", filepath.Join(dir, "queue"),
		"-dns", dns.Addr, "-mx-port", fmt.Sprint(sink.Port()),
		"-hostname", "relay.test",
		"-retry-min", "1s", "-retry-max", "2s",
		"-dkim-domain", "example.test", "-dkim-selector", "sel", "-dkim-key", keyFile,
	)
	if want := "DKIM signing for example.test with " + rsaSigner; !strings.Contains(p.stdout.String(), want) {
		t.Errorf("relay output lacks %q:\n%s", want, p.stdout)
	}

	// An unauthenticated client is refused relaying.
	c, err := smtp.Dial(p.addrs["smtp"])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@example.test", nil); err == nil || !strings.HasPrefix(err.Error(), "smtp: 530 ") && !strings.Contains(err.Error(), "530") {
		t.Fatalf("unauthenticated MAIL: %v, want 530", err)
	}
	c.Close()

	// swaks: STARTTLS + AUTH PLAIN, three recipients.
	out, err := exec.Command(swaks, "--server", p.addrs["starttls"], "--tls", "--auth", "PLAIN",
		"--auth-user", "alice", "--auth-password", "s3cret",
		"--from", "alice@example.test", "--to", "bob@example.net,nobody@example.net,grey@example.net",
		"--header", "Subject: swaks e2e", "--body", "Hello via swaks.").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`<~  250 2\.0\.0 OK: queued as \S+`).Match(out) {
		t.Fatalf("swaks transcript has no queue ID:\n%s", out)
	}

	var got smtptest.Message
	waitFor(t, "delivery to bob", func() (ok bool) { got, ok = findMessage(sink, hasRcpt("bob@example.net")); return })
	if got.From != "alice@example.test" {
		t.Errorf("MAIL FROM %q", got.From)
	}
	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := dkim.NewVerifier(dkim.VerifierConfig{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	results, err := v.Verify(context.Background(), strings.NewReader(string(got.Data)))
	if err != nil || len(results) != 1 || results[0].Status != dkim.StatusPass {
		t.Fatalf("DKIM verify: %+v %v\n%s", results, err, got.Data)
	}
	if !strings.Contains(string(got.Data), "with ESMTPSA id ") {
		t.Errorf("Received field lacks ESMTPSA:\n%s", got.Data)
	}
	dkimpy(t, got.Data, "sel._domainkey.example.test", txt)

	// 550 for nobody@: a DSN to alice@example.test (MX is the same sink).
	var dsn smtptest.Message
	waitFor(t, "the DSN", func() (ok bool) { dsn, ok = findMessage(sink, hasRcpt("alice@example.test")); return })
	if dsn.From != "" || !strings.Contains(string(dsn.Data), "nobody@example.net") || !strings.Contains(string(dsn.Data), "5.1.1") {
		t.Errorf("DSN from <%s>:\n%s", dsn.From, dsn.Data)
	}
	// 451 for grey@ first, then delivered on retry.
	waitFor(t, "greylisted delivery", func() bool { _, ok := findMessage(sink, hasRcpt("grey@example.net")); return ok })

	// The 550 5.1.1 put nobody@ on the suppression list: a new message
	// to it is refused at RCPT.
	out, err = exec.Command(swaks, "--server", p.addrs["starttls"], "--tls", "--auth", "PLAIN",
		"--auth-user", "alice", "--auth-password", "s3cret",
		"--from", "alice@example.test", "--to", "nobody@example.net",
		"--header", "Subject: again", "--body", "Hello again.").CombinedOutput()
	if err == nil || !regexp.MustCompile(`<~?\*+ +550 5\.7\.1 `).Match(out) {
		t.Errorf("a suppressed recipient was not refused with 550 5.7.1 (%v):\n%s", err, out)
	}
	p.stop()
}

// TestEndToEndPostfix: the relay signs and delivers by MX (a dnstest zone)
// to a real Postfix on loopback, over STARTTLS; the message arrives intact
// in Postfix's Maildir and its signature verifies with our verifier and
// with dkimpy.
func TestEndToEndPostfix(t *testing.T) {
	ca, err := smtptest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	pf := smtptest.StartPostfix(t, ca, "example.org")
	dir := t.TempDir()
	keyFile, key := writeKey(t, dir)
	txt, err := dkim.KeyRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	dns := dnstest.New(t, `
example.org. 300 IN MX 10 mx.example.org.
mx.example.org. 300 IN A 127.0.0.1
`)
	dns.AddRR(dnstest.TXT("sel._domainkey.example.test.", 300, txt))
	p := startRelay(t, "-listen", "127.0.0.1:0", "-queue-dir", filepath.Join(dir, "queue"),
		"-dns", dns.Addr, "-mx-port", fmt.Sprint(pf.Port), "-hostname", "relay.test",
		"-dkim-domain", "example.test", "-dkim-selector", "sel", "-dkim-key", keyFile)
	body := "From: Alice <alice@example.test>\r\nTo: box@example.org\r\nSubject: to Postfix\r\n\r\n" +
		".a line starting with a dot\r\n" + strings.Repeat("0123456789 ", 30) + "\r\nend\r\n"
	c, err := smtp.Dial(p.addrs["smtp"])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@example.test", []string{"box@example.org"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	got := pf.WaitMaildir(t, 1)[0]
	p.stop()
	if !strings.Contains(got, "with ESMTPS") {
		t.Errorf("Postfix did not receive over TLS:\n%s", got)
	}
	if !strings.Contains(got, strings.ReplaceAll("\r\n.a line starting with a dot\r\n"+strings.Repeat("0123456789 ", 30)+"\r\nend\r\n", "\r\n", "\n")) {
		t.Errorf("body not delivered intact:\n%s", got)
	}
	// Maildir files have LF line ends; DKIM is computed over CRLF.
	msg := strings.ReplaceAll(got, "\n", "\r\n")
	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := dkim.NewVerifier(dkim.VerifierConfig{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	results, err := v.Verify(context.Background(), strings.NewReader(msg))
	if err != nil || len(results) != 1 || results[0].Status != dkim.StatusPass {
		t.Fatalf("DKIM verify after Postfix: %+v %v\n%s", results, err, msg)
	}
	dkimpy(t, []byte(msg), "sel._domainkey.example.test", txt)
}

// dkimpy verifies data with dkimpy through the shared interop script.
func dkimpy(t *testing.T, data []byte, name, txt string) {
	t.Helper()
	tools, err := sharedtest.Path("tools")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(tools, "dkim-interop.py")
	if _, err := os.Stat(script); err != nil {
		t.Logf("dkimpy check skipped: %s not found", script)
		return
	}
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import dkim").Run(); err != nil {
		t.Logf("dkimpy check skipped: %s cannot import dkim (install python3-dkim)", py)
		return
	}
	kd := t.TempDir()
	if err := os.WriteFile(filepath.Join(kd, name+".txt"), []byte(txt), 0o600); err != nil {
		t.Fatal(err)
	}
	msg := filepath.Join(kd, "msg.eml")
	if err := os.WriteFile(msg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, script, "verify", "--key-dir", kd, msg).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy verify: %v\n%s", err, out)
	}
}

// TestRestartSafety: 200 messages are acknowledged while the next hop
// tempfails everything, the relay is SIGKILLed, the next hop recovers, and
// after a restart every message is delivered.
func TestRestartSafety(t *testing.T) {
	const n = 200
	var mu sync.Mutex
	blocked := true
	sink := smtptest.New(t, smtptest.Config{
		OnRcpt: func(string, *smtp.RcptOptions) error {
			mu.Lock()
			defer mu.Unlock()
			if blocked {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not yet"}
			}
			return nil
		},
	})
	dir := t.TempDir()
	args := []string{"-listen", "127.0.0.1:0", "-queue-dir", filepath.Join(dir, "queue"),
		"-route", "*=" + sink.Addr(), "-retry-min", "1s", "-retry-max", "2s", "-hostname", "relay.test"}
	p := startRelay(t, args...)
	c, err := smtp.Dial(p.addrs["smtp"])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("From: a@sender.test\r\nTo: b@d%03d.test\r\nX-Seq: %d\r\nSubject: %d\r\n\r\nbody %d\r\n", i%10, i, i, i)
		if err := c.SendMail("a@sender.test", []string{fmt.Sprintf("b@d%03d.test", i%10)}, strings.NewReader(msg)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	c.Close()
	p.kill() // SIGKILL: no chance to flush anything
	if len(sink.Messages()) != 0 {
		t.Fatal("the sink accepted mail while blocked")
	}
	mu.Lock()
	blocked = false
	mu.Unlock()
	p = startRelay(t, args...)
	seqs := map[string]bool{}
	waitFor(t, fmt.Sprintf("%d messages after the restart", n), func() bool {
		for _, m := range sink.Messages() {
			if s := regexp.MustCompile(`X-Seq: (\d+)`).FindSubmatch(m.Data); s != nil {
				seqs[string(s[1])] = true
			}
		}
		return len(seqs) == n
	})
	p.stop()

	// The queue is empty now, and the inspection subcommand says so.
	var out strings.Builder
	if err := queueCmd(context.Background(), []string{"-queue-dir", filepath.Join(dir, "queue"), "list"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "0 message(s)") {
		t.Fatalf("queue list after delivery:\n%s", out.String())
	}
}

// TestQueueSubcommands: hold, show, release, delete on a stopped relay's
// queue, and a clear error while the relay runs.
func TestQueueSubcommands(t *testing.T) {
	dir := t.TempDir()
	qdir := filepath.Join(dir, "queue")
	// A route to a closed port: the message stays queued.
	args := []string{"-listen", "127.0.0.1:0", "-queue-dir", qdir, "-route", "*=127.0.0.1:1", "-retry-min", "1h", "-retry-max", "2h"}
	p := startRelay(t, args...)
	c, err := smtp.Dial(p.addrs["smtp"])
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: a@sender.test\r\nSubject: x\r\n\r\nbody\r\n"
	if err := c.SendMail("a@sender.test", []string{"b@example.test"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	var out strings.Builder
	err = queueCmd(context.Background(), []string{"-queue-dir", qdir, "list"}, &out)
	if err == nil || !strings.Contains(err.Error(), "stop the relay first") {
		t.Fatalf("list while running: %v", err)
	}
	p.stop()

	out.Reset()
	if err := queueCmd(context.Background(), []string{"-queue-dir", qdir, "list"}, &out); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^(\S+)\s+\d{4}-`).FindStringSubmatch(out.String())
	if m == nil || !strings.Contains(out.String(), "1 message(s)") {
		t.Fatalf("list:\n%s", out.String())
	}
	id := m[1]
	for _, verb := range []string{"hold", "show"} {
		out.Reset()
		if err := queueCmd(context.Background(), []string{"-queue-dir", qdir, verb, id}, &out); err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
	}
	if !strings.Contains(out.String(), "example.test, held") || !strings.Contains(out.String(), "<b@example.test> pending") {
		t.Fatalf("show after hold:\n%s", out.String())
	}
	out.Reset()
	if err := queueCmd(context.Background(), []string{"-queue-dir", qdir, "-state", "held", "list"}, &out); err != nil || !strings.Contains(out.String(), id) {
		t.Fatalf("list -state held: %v\n%s", err, out.String())
	}
	out.Reset() // flags after the verb, as the usage shows them
	if err := queueCmd(context.Background(), []string{"-queue-dir", qdir, "list", "-domain", "other.test"}, &out); err != nil || !strings.Contains(out.String(), "0 message(s)") {
		t.Fatalf("list -domain other.test: %v\n%s", err, out.String())
	}
	for _, verb := range []string{"release", "retry", "delete"} {
		if err := queueCmd(context.Background(), []string{"-queue-dir", qdir, verb, id}, io.Discard); err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
	}
	out.Reset()
	if err := queueCmd(context.Background(), []string{"-queue-dir", qdir, "list"}, &out); err != nil || !strings.Contains(out.String(), "0 message(s)") {
		t.Fatalf("list after delete: %v\n%s", err, out.String())
	}
}

// TestSandboxQuickstart runs the README's two commands: a sandbox relay
// with a generated DKIM key, and the send subcommand.
func TestSandboxQuickstart(t *testing.T) {
	dir := t.TempDir()
	sb := filepath.Join(dir, "sandbox")
	p := startRelay(t, "-sandbox", sb, "-listen", "127.0.0.1:0", "-queue-dir", filepath.Join(dir, "queue"),
		"-dkim-domain", "example.test", "-dkim-selector", "demo")
	var out strings.Builder
	if err := sendCmd(context.Background(), []string{"-server", p.addrs["smtp"], "-from", "me@example.test", "-to", "you@example.test"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "250 2.0.0 OK: queued as ") {
		t.Fatalf("send printed %q", out.String())
	}
	var files []string
	waitFor(t, "the sandbox file", func() bool {
		files, _ = filepath.Glob(filepath.Join(sb, "*.eml"))
		return len(files) == 1
	})
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "DKIM-Signature: ") || !strings.Contains(string(data), "d=example.test") || !strings.Contains(string(data), "s=demo") {
		t.Fatalf("sandbox message not signed:\n%s", data)
	}
	p.stop()
	// The generated key is reused on the next start.
	if _, err := os.Stat(filepath.Join(dir, "queue", "dkim", "demo._domainkey.example.test.pem")); err != nil {
		t.Fatal(err)
	}
}

// TestEventsLogAndWebhook: with -webhook the relay POSTs every event of a
// message, signed, to the endpoint; the events are logged as well.
func TestEventsLogAndWebhook(t *testing.T) {
	secret := []byte("relay-test-secret")
	var mu sync.Mutex
	var types []event.Type
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := event.Verify(secret, r.Header.Get(event.SignatureHeader), body, time.Now(), time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var evs []event.Event
		if err := json.Unmarshal(body, &evs); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		for _, e := range evs {
			types = append(types, e.Type)
		}
		mu.Unlock()
	}))
	defer hook.Close()
	dir := t.TempDir()
	p := startRelay(t, "-sandbox", filepath.Join(dir, "sandbox"), "-listen", "127.0.0.1:0", "-queue-dir", filepath.Join(dir, "queue"),
		"-webhook", hook.URL, "-webhook-secret", string(secret), "-metrics", "127.0.0.1:0", "-metrics-depth-interval", "1s")
	var out strings.Builder
	if err := sendCmd(context.Background(), []string{"-server", p.addrs["smtp"], "-from", "me@example.test", "-to", "you@example.test"}, &out); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivered event at the webhook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(types, event.Delivered)
	})
	// The metrics endpoint, parsed with Prometheus's text parser.
	var fams map[string]*dto.MetricFamily
	waitFor(t, "the delivered counter and the depth gauges", func() bool {
		resp, err := http.Get("http://" + p.addrs["metrics"] + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		if fams, err = parser.TextToMetricFamilies(resp.Body); err != nil {
			t.Fatalf("metrics do not parse: %v", err)
		}
		return fams["mta_events_total"] != nil && fams["mta_queue_depth"] != nil
	})
	delivered := 0.0
	for _, m := range fams["mta_events_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "type" && l.GetValue() == "delivered" {
				delivered = m.GetCounter().GetValue()
			}
		}
	}
	if delivered != 1 {
		t.Errorf("mta_events_total{type=delivered} = %v, want 1", delivered)
	}
	p.stop()
	mu.Lock()
	defer mu.Unlock()
	if want := []event.Type{event.Queued, event.Attempt, event.Delivered}; !slices.Equal(types, want) {
		t.Errorf("webhook received %v, want %v", types, want)
	}
	if log := p.stderr.String(); !regexp.MustCompile(`msg=event .*type=delivered`).MatchString(log) {
		t.Errorf("no delivered event in the log:\n%s", log)
	}
}

func TestParseListen(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want submit.ListenerConfig
		bad  bool
	}{
		{in: "127.0.0.1:2525", want: submit.ListenerConfig{Addr: "127.0.0.1:2525"}},
		{in: "starttls://:587?auth", want: submit.ListenerConfig{Addr: ":587", Mode: submit.StartTLS, ListenerPolicy: submit.ListenerPolicy{RequireAuth: true}}},
		{in: "tls://[::1]:465?auth&insecure-auth", want: submit.ListenerConfig{Addr: "[::1]:465", Mode: submit.ImplicitTLS, ListenerPolicy: submit.ListenerPolicy{RequireAuth: true, AllowInsecureAuth: true}}},
		{in: "smtp://127.0.0.1:25?insecure-auth", want: submit.ListenerConfig{Addr: "127.0.0.1:25", ListenerPolicy: submit.ListenerPolicy{AllowInsecureAuth: true}}},
		{in: "ftp://127.0.0.1:21", bad: true},
		{in: "127.0.0.1", bad: true},
		{in: "127.0.0.1:99999", bad: true},
		{in: "smtp://127.0.0.1:25?open-relay", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseListen(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestUsersFile(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	if err := hashPassword(strings.NewReader("pw\n"), &out); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "users")
	if err := os.WriteFile(file, []byte("bob:"+strings.TrimSpace(out.String())+":@example.test,carol@example.org\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := loadUsers(file)
	if err != nil {
		t.Fatal(err)
	}
	u, err := db.Authenticate(context.Background(), "bob", "pw")
	if err != nil || u.Name != "bob" || !u.MaySend("x@example.test") || !u.MaySend("carol@example.org") || u.MaySend("x@example.org") {
		t.Fatalf("%+v %v", u, err)
	}
	for _, bad := range [][2]string{{"bob", "wrong"}, {"eve", "pw"}} {
		if _, err := db.Authenticate(context.Background(), bad[0], bad[1]); !errors.Is(err, submit.ErrBadCredentials) {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if err := os.WriteFile(file, []byte("bob:plaintext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadUsers(file); err == nil {
		t.Fatal("plaintext password accepted")
	}
	_ = sasl.Plain
}
