package bounce

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/internal/sharedtest"
)

// addCorpusSeeds adds up to n corpus files as seeds (when the corpus is
// present; testdata/fuzz holds seeds that work without it).
func addCorpusSeeds(f *testing.F, n int, match string) {
	dir, err := sharedtest.Path("corpus", "bounce", "eml")
	if err != nil {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if n == 0 {
			return
		}
		if !strings.Contains(e.Name(), match) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			f.Add(b)
			n--
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(testOriginal))
	var buf bytes.Buffer
	if err := NewDSN(&buf, testDSN()); err == nil {
		f.Add(buf.Bytes())
	}
	addCorpusSeeds(f, 40, "")
	p := &Parser{MaxBytes: 1 << 20, MaxParts: 50, MaxDepth: 8}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := p.Parse(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, r := range rep.Recipients {
			if strings.ContainsAny(r.Recipient+r.Diagnostic+r.RemoteMTA, "\r\n\x00") {
				t.Fatalf("control characters in %+v", r)
			}
			if len(r.Diagnostic) > maxTextLen {
				t.Fatalf("diagnostic of %d bytes", len(r.Diagnostic))
			}
		}
	})
}

func FuzzParseARF(f *testing.F) {
	if b, err := os.ReadFile("testdata/arf-example.eml"); err == nil {
		f.Add(b)
	}
	addCorpusSeeds(f, 10, "arf-")
	p := &Parser{MaxBytes: 1 << 20, MaxParts: 50, MaxDepth: 8}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := p.ParseARF(bytes.NewReader(b))
		if err != nil {
			return
		}
		if strings.ContainsAny(c.FeedbackType+c.OriginalMailFrom+c.SourceIP, "\r\n") {
			t.Fatalf("control characters in %+v", c)
		}
	})
}

func FuzzClassify(f *testing.F) {
	for _, tc := range classifyCases {
		f.Add(tc.code, tc.status[0], tc.status[1], tc.status[2], tc.text)
	}
	c := DefaultClassifier()
	f.Fuzz(func(t *testing.T, code, a, b, d int, text string) {
		cl := c.Classify(&smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{a, b, d}, Message: text})
		if cl.BadAddress && !cl.Permanent {
			t.Fatalf("bad address on a transient verdict: %+v", cl)
		}
		if cl.Category == "" {
			t.Fatal("empty category")
		}
	})
}

func FuzzVERPDecode(f *testing.F) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	v := testVERP(&now)
	for _, s := range [][2]string{{"m1", "bob@example.org"}, {"01hqz3k9xw8d7m2v5e4rt6y7u8", "a.long.name@sub.example.org"}} {
		if a, err := v.Encode(s[0], s[1], 2); err == nil {
			f.Add(a)
		}
		if a, err := v.Encode(s[0], s[1], -1); err == nil {
			f.Add(a)
		}
	}
	f.Add("b+fq7+x_zz+r=+aaaa@bounce.example.com")
	f.Fuzz(func(t *testing.T, addr string) {
		rp, err := v.Decode(addr)
		if err != nil {
			return
		}
		// Anything that verifies must re-encode to a verifying address.
		if rp.Recipient != "" {
			again, err := v.Encode(rp.MessageID, rp.Recipient, -1)
			if err != nil {
				return
			}
			if _, err := v.Decode(again); err != nil {
				t.Fatalf("re-encoded %q does not decode: %v", again, err)
			}
		}
	})
}
