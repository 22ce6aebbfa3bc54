package dkim

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/mtakit/mta/internal/sharedtest"
)

// FuzzParseTags: no panics; every parsed tag list has unique, valid names
// and values free of ";".
func FuzzParseTags(f *testing.F) {
	f.Add("v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel;\r\n h=from:to; bh=abc=; b=de\r\n f=")
	f.Add("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	f.Add(";;a=;")
	f.Add("a=b=c")
	f.Fuzz(func(t *testing.T, s string) {
		tags, err := ParseTags(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, tg := range tags {
			if !validTagName(tg.Name) || seen[tg.Name] || strings.Contains(tg.Value, ";") {
				t.Fatalf("bad tag %+v from %q", tg, s)
			}
			seen[tg.Name] = true
		}
	})
}

// FuzzParseKeyRecord: no panics; a record that parses either is revoked
// or carries a key of its k= type, and a record made from that key parses
// back to it.
func FuzzParseKeyRecord(f *testing.F) {
	dir, _ := sharedtest.Path("corpus", "dkim") // seeds only when present
	for _, p := range []string{"rfc8463/keys/brisbane._domainkey.football.example.com.txt", "rfc8463/keys/test._domainkey.football.example.com.txt", "rfc6376/keys/brisbane._domainkey.example.com.txt"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err == nil {
			f.Add(strings.TrimSpace(string(b)))
		}
	}
	f.Add("v=DKIM1; p=")
	f.Add("k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=; t=s")
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := ParseKeyRecord(s)
		if err != nil {
			return
		}
		if rec.Revoked {
			if rec.PublicKey != nil {
				t.Fatal("revoked record with a key")
			}
			return
		}
		again, err := KeyRecord(rec.PublicKey)
		if err != nil {
			t.Fatalf("parsed key cannot be published: %v", err)
		}
		back, err := ParseKeyRecord(again)
		if err != nil || back.KeyType != rec.KeyType {
			t.Fatalf("round trip of %q: %v", again, err)
		}
	})
}

// FuzzDescribe: reporting fields of any DKIM-Signature never panics and
// never yields a negative l= other than -1.
func FuzzDescribe(f *testing.F) {
	f.Add("DKIM-Signature: v=1; a=ed25519-sha256; d=example.com; s=s; l=12; t=1; x=2; b=abc; bh=x; h=from")
	f.Add("DKIM-Signature: l=-5; l=6")
	f.Fuzz(func(t *testing.T, s string) {
		r := describe(s)
		if r.BodyLength < -1 || len(r.SignatureB) > 12 {
			t.Fatalf("bad result %+v", r)
		}
	})
}

// FuzzReadHeader: no panics; the header and the body octets read ahead
// are exactly the input's prefix, every field lies inside the header, and
// signing never fails on a header that reads.
func FuzzReadHeader(f *testing.F) {
	f.Add([]byte(testMessage))
	f.Add([]byte("From: a@a.test\nSubject: x\n folded\n\nbody\n"))
	f.Add([]byte("From: a@a.test\r\nSubject: no body"))
	f.Add([]byte(" continuation first\r\n\r\n"))
	f.Add([]byte("From : spaced\r\n\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := readHeader(iotest.HalfReader(bytes.NewReader(msg)), limits{bytes: 4096, fields: 50}, nil)
		if err != nil {
			return
		}
		n := len(h.raw) + len(h.rest)
		got := append(append([]byte(nil), h.raw...), h.rest...)
		if h.complete && !bytes.Equal(got, msg[:n]) {
			t.Fatalf("raw+rest is not the input prefix")
		}
		for i, sp := range h.spans {
			if sp.start > sp.name || sp.name > sp.end || sp.end > len(h.raw) {
				t.Fatalf("span %d %+v outside header of %d", i, sp, len(h.raw))
			}
			_ = h.field(i)
		}
	})
}
