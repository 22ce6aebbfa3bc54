package submit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzLineFilter feeds DATA to the line filter in two chunks split at an
// arbitrary point: the outcome must not depend on the split, and what it
// lets through has only CRLF line endings, no NUL and no line over the
// limit; without normalization, accepted data passes unchanged.
func FuzzLineFilter(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody\r\n.\r\n"), uint16(3), false, uint16(1000))
	f.Add([]byte("a\nb\rc\r\n"), uint16(2), true, uint16(0))
	f.Add([]byte("x\r"), uint16(1), false, uint16(5))
	f.Add([]byte("\x00"), uint16(0), true, uint16(10))
	f.Fuzz(func(t *testing.T, data []byte, split uint16, normalize bool, maxLine uint16) {
		if maxLine > 0 && maxLine < 3 {
			maxLine = 3 // room for CRLF: smaller limits are not meaningful
		}
		run := func(chunks ...[]byte) ([]byte, error) {
			var out bytes.Buffer
			lf := &lineFilter{w: &out, maxLine: int(maxLine), normalize: normalize}
			for _, c := range chunks {
				if err := lf.feed(c); err != nil {
					return out.Bytes(), err
				}
			}
			return out.Bytes(), lf.finish()
		}
		at := int(split) % (len(data) + 1)
		whole, errWhole := run(data)
		_, errSplit := run(data[:at], data[at:])
		if !errors.Is(errSplit, errWhole) && (errWhole != nil || errSplit != nil) {
			t.Fatalf("whole: %v, split at %d: %v", errWhole, at, errSplit)
		}
		if errWhole != nil {
			return
		}
		if bytes.IndexByte(whole, 0) >= 0 {
			t.Fatalf("NUL let through")
		}
		for i, c := range whole {
			if c == '\n' && (i == 0 || whole[i-1] != '\r') || c == '\r' && (i+1 == len(whole) || whole[i+1] != '\n') {
				t.Fatalf("bare line ending at %d in %q", i, whole)
			}
		}
		if maxLine > 0 {
			for _, line := range strings.SplitAfter(string(whole), "\r\n") {
				if len(line) > int(maxLine) {
					t.Fatalf("line of %d octets passed a limit of %d", len(line), maxLine)
				}
			}
		}
		if !normalize && !bytes.Equal(whole, data) {
			t.Fatalf("accepted data was changed: %q -> %q", data, whole)
		}
	})
}

// FuzzParseHeader: no panic, the limits hold, and every field name is a
// valid lower-case name.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("From: a@example.com\r\nSubject: hi\r\n folded\r\n\r\nbody\r\n"), uint16(1000), uint8(10))
	f.Add([]byte(" leading fold\r\n"), uint16(100), uint8(5))
	f.Add([]byte("NoColon\r\n"), uint16(100), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, maxBytes uint16, maxFields uint8) {
		h, err := parseHeader(bytes.NewReader(data), int(maxBytes), int(maxFields))
		if err != nil {
			if !errors.Is(err, ErrHeaderTooLarge) && !errors.Is(err, ErrBadHeader) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(h.names) > int(maxFields) || len(h.names) != len(h.vals) {
			t.Fatalf("%d names, %d values, limit %d", len(h.names), len(h.vals), maxFields)
		}
		for _, n := range h.names {
			if n != strings.ToLower(n) || !validFieldName(n) {
				t.Fatalf("bad field name %q", n)
			}
		}
	})
}
