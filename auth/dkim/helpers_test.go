package dkim

import (
	"bytes"
	"crypto"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mtakit/mta/internal/sharedtest"
)

// corpusDir returns ../shared/<sub>, or skips when it is absent.
func corpusDir(t testing.TB, sub string) string {
	t.Helper()
	return sharedtest.Require(t, sub)
}

// interopTool returns the path of dkim-interop.py, skipping when Debian's
// /usr/bin/python3 cannot import dkimpy.
func interopTool(t testing.TB) string {
	t.Helper()
	tool := filepath.Join(corpusDir(t, "tools"), "dkim-interop.py")
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim, nacl").Run(); err != nil {
		t.Skipf("/usr/bin/python3 cannot import dkim (python3-dkim) and nacl: %v", err)
	}
	return tool
}

type pyResult struct {
	A      string  `json:"a"`
	D      string  `json:"d"`
	S      string  `json:"s"`
	Result string  `json:"result"`
	Reason *string `json:"reason"`
}

// pyVerify runs dkim-interop.py verify on msg with key records in keyDir.
func pyVerify(t *testing.T, keyDir string, msg []byte) []pyResult {
	t.Helper()
	tool := interopTool(t)
	cmd := exec.Command("/usr/bin/python3", tool, "verify", "--key-dir", keyDir, "-")
	cmd.Stdin = bytes.NewReader(msg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 2 {
		t.Fatalf("dkim-interop.py: %v: %s", err, stderr.String())
	}
	var res []pyResult
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var r pyResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("bad JSON %q: %v", line, err)
		}
		res = append(res, r)
	}
	return res
}

// writeKeyFile publishes pub for selector/domain in keyDir, the layout
// dkim-interop.py reads.
func writeKeyFile(t *testing.T, keyDir, selector, domain string, pub crypto.PublicKey) string {
	t.Helper()
	rec, err := KeyRecord(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, selector+"._domainkey."+domain+".txt"), []byte(rec+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return rec
}

const testMessage = "From: Alice <alice@example.test>\r\n" +
	"To: Bob <bob@example.test>\r\n" +
	"Subject: Interop test\r\n" +
	"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n" +
	"Message-ID: <1@example.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"  this line has  double   spaces \t and trailing whitespace  \r\n" +
	"\r\n" +
	"\r\n"

// testKeys returns an RSA-2048 and an Ed25519 key, generated once per
// test binary (RSA generation is slow under -race).
var testKeys = func() func(testing.TB) (crypto.Signer, crypto.Signer) {
	var once sync.Once
	var rsaKey, edKey crypto.Signer
	var err error
	return func(t testing.TB) (crypto.Signer, crypto.Signer) {
		t.Helper()
		once.Do(func() {
			if rsaKey, err = GenerateKey(RSA, nil); err != nil {
				return
			}
			edKey, err = GenerateKey(Ed25519, nil)
		})
		if err != nil {
			t.Fatal(err)
		}
		return rsaKey, edKey
	}
}()
