package deliver

import (
	"bytes"
	"net/textproto"
	"strings"
	"testing"
)

// normalise is the reference: bare CR and bare LF become CRLF.
func normalise(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\r' && i+1 < len(s) && s[i+1] == '\n':
			b.WriteString("\r\n")
			i++
		case c == '\r' || c == '\n':
			b.WriteString("\r\n")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func FuzzCRLFWriter(f *testing.F) {
	for _, s := range []string{"a\r\nb\r\n", "a\r.\r\nb", "a\n.\nb", "\r\r\n\n\r", ".\r\n", "x\r", "caf\xc3\xa9\n"} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, s string, split uint8) {
		var out bytes.Buffer
		w := &crlfWriter{w: &out}
		// Write in chunks to exercise the held CR.
		n := int(split)%7 + 1
		for i := 0; i < len(s); i += n {
			end := min(i+n, len(s))
			if k, err := w.Write([]byte(s[i:end])); err != nil || k != end-i {
				t.Fatalf("write %d %v", k, err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		if want := normalise(s); got != want {
			t.Fatalf("%q: got %q want %q", s, got, want)
		}
		// Through textproto's DotWriter no line ending ever stands alone,
		// and the only "." line is the final one.
		var wire bytes.Buffer
		tw := textproto.NewWriter(bufioWriter(&wire))
		dw := tw.DotWriter()
		dw.Write([]byte(got))
		dw.Close()
		lines := strings.Split(strings.TrimSuffix(wire.String(), "\r\n"), "\r\n")
		for i, l := range lines {
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("bare line ending on the wire: %q", wire.String())
			}
			if l == "." && i != len(lines)-1 {
				t.Fatalf("early end of data: %q", wire.String())
			}
		}
	})
}

func FuzzReplyFrom(f *testing.F) {
	for _, s := range []string{"2.0.0 Ok: queued as 4F2", "5.1.1 <x@y>: Recipient address rejected\n5.1.1 more", "4.7.1 greylisted", "9.9.9 weird", "5.1", "", "\x00\r\n"} {
		f.Add(250, s)
	}
	f.Fuzz(func(t *testing.T, code int, msg string) {
		r := replyFrom(code, msg)
		if r.Code != code || strings.ContainsAny(r.Message, "\r\n\x00") || len(r.Message) > maxReplyText {
			t.Fatalf("%+v", r)
		}
		if r.EnhancedCode[0] != -1 && r.EnhancedCode[0] != code/100 {
			t.Fatalf("enhanced class %v for %d", r.EnhancedCode, code)
		}
	})
}
