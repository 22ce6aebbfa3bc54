package bounce

import (
	"errors"
	"strings"
	"testing"
)

// TestParseAdversarial feeds Parse inputs built to make a careless parser
// quadratic or unbounded: the same recipient line 200,000 times (its text
// once grew by concatenation without a cap and took minutes), 15 MB of
// '@', 490 parts of 1,500 address lines, and one line over the size
// limit. Each must parse to a bounded report or a clear error.
func TestParseAdversarial(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string
		recipients int // -1: any number within the limit
		tooLarge   bool
	}{
		{"addrs", "From: MAILER-DAEMON@x.example\nSubject: Undelivered\n\n" + strings.Repeat("<a@b.example>: 550 5.1.1 user unknown x@y.example z@w.example\n", 200000), 1, false},
		{"ats", "From: MAILER-DAEMON@x.example\nSubject: Undelivered\n\n" + strings.Repeat("@", 15<<20), 0, false},
		{"parts", "Content-Type: multipart/mixed; boundary=x\n\n" + strings.Repeat("--x\nContent-Type: text/plain\n\n"+strings.Repeat("failed a@b.example\n", 1500)+"\n", 490) + "--x--\n", -1, false},
		{"longline", "From: MAILER-DAEMON@x.example\nSubject: Undelivered\n\n" + strings.Repeat("a.", 8<<20), 0, true},
	} {
		rep, err := Parse(strings.NewReader(tc.in))
		if tc.tooLarge {
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("%s: err %v, want ErrTooLarge", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tc.recipients >= 0 && len(rep.Recipients) != tc.recipients || len(rep.Recipients) > 1000 {
			t.Errorf("%s: %d recipients, want %d", tc.name, len(rep.Recipients), tc.recipients)
		}
		for _, r := range rep.Recipients {
			if len(r.Diagnostic) > 8192 {
				t.Errorf("%s: diagnostic of %d bytes: not capped", tc.name, len(r.Diagnostic))
			}
		}
	}
}

// TestTextBlockCapped: the text gathered for one recipient stays capped
// however often its line repeats.
func TestTextBlockCapped(t *testing.T) {
	line := "<a@b.example>: 550 5.1.1 user unknown"
	blocks := textBlocks(strings.Repeat(line+"\n", 50000), nil)
	if len(blocks) != 1 {
		t.Fatalf("%d blocks, want 1", len(blocks))
	}
	if n := len(blocks[0].text); n > 8000+len(line)+1 {
		t.Errorf("a repeated recipient line gathered %d bytes of text; the cap is 8000", n)
	}
}
