package bounce

import (
	"strings"
	"testing"
	"time"
)

func TestAdvX(t *testing.T) {
	for name, in := range map[string]string{
		"addrs":    "From: MAILER-DAEMON@x.example\nSubject: Undelivered\n\n" + strings.Repeat("<a@b.example>: 550 5.1.1 user unknown x@y.example z@w.example\n", 200000),
		"ats":      "From: MAILER-DAEMON@x.example\nSubject: Undelivered\n\n" + strings.Repeat("@", 15<<20),
		"parts":    "Content-Type: multipart/mixed; boundary=x\n\n" + strings.Repeat("--x\nContent-Type: text/plain\n\n"+strings.Repeat("failed a@b.example\n", 1500)+"\n", 490) + "--x--\n",
		"longline": "From: MAILER-DAEMON@x.example\nSubject: Undelivered\n\n" + strings.Repeat("a.", 8<<20),
	} {
		start := time.Now()
		rep, err := Parse(strings.NewReader(in))
		n := 0
		if rep != nil {
			n = len(rep.Recipients)
		}
		t.Logf("%s: %d bytes, %v, %d recipients, err %v", name, len(in), time.Since(start), n, err)
	}
}
