package bounce

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func testVERP(now *time.Time) *VERP {
	return &VERP{
		Keys:   [][]byte{[]byte("0123456789abcdef-new"), []byte("0123456789abcdef-old")},
		Domain: "bounce.example.com",
		Now:    func() time.Time { return *now },
	}
}

func TestVERPRoundTrip(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	v := testVERP(&now)
	for _, tc := range []struct {
		name, id, rcpt string
		index          int
		form           byte
	}{
		{"full", "01hq3k9", "Bob@Example.ORG", 3, 'r'},
		{"index", "01hqz3k9xw8d7m2v5e4rt6y7u8", "a.very.long.recipient.name@subdomain.example.org", 7, 'i'},
		{"hash", "01hqz3k9xw8d7m2v5e4rt6y7u8", "a.very.long.recipient.name@subdomain.example.org", -1, 'h'},
		{"escapes", "Id_With+Odd/Chars", "x+y@example.org", 0, 'i'},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, err := v.Encode(tc.id, tc.rcpt, tc.index)
			if err != nil {
				t.Fatal(err)
			}
			local, _, _ := strings.Cut(addr, "@")
			if len(local) > 64 {
				t.Fatalf("local part %q is %d octets", local, len(local))
			}
			if local != strings.ToLower(local) {
				t.Errorf("local part %q not lower case", local)
			}
			rp, err := v.Decode(addr)
			if err != nil {
				t.Fatal(err)
			}
			if rp.MessageID != tc.id || !rp.Issued.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("decoded %+v", rp)
			}
			switch tc.form {
			case 'r':
				if rp.Recipient != strings.ToLower(tc.rcpt) || rp.RecipientIndex != -1 || !rp.Matches(tc.rcpt) {
					t.Errorf("full form: %+v", rp)
				}
			case 'i':
				if rp.Recipient != "" || rp.RecipientIndex != tc.index {
					t.Errorf("index form: %+v", rp)
				}
			case 'h':
				if rp.RecipientHash == "" || !rp.Matches(strings.ToUpper(tc.rcpt)) || rp.Matches("other@example.org") {
					t.Errorf("hash form: %+v", rp)
				}
			}
			// Upper-casing by a relay does not break verification.
			if _, err := v.Decode(strings.ToUpper(local) + "@BOUNCE.example.com"); err != nil {
				t.Errorf("upper-cased: %v", err)
			}
		})
	}
}

func TestVERPRejects(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	v := testVERP(&now)
	addr, err := v.Encode("msg1", "bob@example.org", 0)
	if err != nil {
		t.Fatal(err)
	}
	local, _, _ := strings.Cut(addr, "@")
	parts := strings.Split(local, "+")

	t.Run("altered recipient", func(t *testing.T) {
		p := append([]string(nil), parts...)
		p[3] = "reve=example.org"
		if _, err := v.Decode(strings.Join(p, "+") + "@bounce.example.com"); !errors.Is(err, ErrVERPForged) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("altered mac", func(t *testing.T) {
		p := append([]string(nil), parts...)
		b := []byte(p[4])
		b[0] ^= 1
		p[4] = string(b)
		if _, err := v.Decode(strings.Join(p, "+")); !errors.Is(err, ErrVERPForged) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		other := &VERP{Keys: [][]byte{[]byte("another-key-of-16+bytes")}, Domain: v.Domain, Now: v.Now}
		if _, err := other.Decode(addr); !errors.Is(err, ErrVERPForged) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("key rotation", func(t *testing.T) {
		old := &VERP{Keys: [][]byte{v.Keys[1]}, Domain: v.Domain, Now: v.Now}
		oldAddr, err := old.Encode("msg1", "bob@example.org", 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Decode(oldAddr); err != nil {
			t.Fatalf("old key no longer verifies: %v", err)
		}
	})
	t.Run("other domain", func(t *testing.T) {
		if _, err := v.Decode(local + "@evil.example.net"); !errors.Is(err, ErrVERPMalformed) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		later := now.Add(32 * 24 * time.Hour)
		v2 := testVERP(&later)
		if _, err := v2.Decode(addr); !errors.Is(err, ErrVERPExpired) {
			t.Fatalf("err = %v", err)
		}
		within := now.Add(29 * 24 * time.Hour)
		v3 := testVERP(&within)
		if _, err := v3.Decode(addr); err != nil {
			t.Fatalf("within MaxAge: %v", err)
		}
	})
	t.Run("future", func(t *testing.T) {
		earlier := now.Add(-5 * 24 * time.Hour)
		if _, err := testVERP(&earlier).Decode(addr); !errors.Is(err, ErrVERPExpired) {
			t.Fatalf("err = %v", err)
		}
	})
	for _, bad := range []string{"", "b", "b+1+2+3", "x+a+b+c+d", "b+zz+id+rbob+aaaaaaaaaaaaa", strings.Repeat("b", 65)} {
		if _, err := v.Decode(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
	if _, err := v.Encode(strings.Repeat("x", 60), "bob@example.org", 0); !errors.Is(err, ErrVERPTooLong) {
		t.Errorf("long ID: err = %v", err)
	}
	if _, err := (&VERP{Domain: "x.example"}).Encode("a", "b@c", 0); !errors.Is(err, ErrVERPConfig) {
		t.Errorf("no keys: err = %v", err)
	}
	if _, err := (&VERP{Keys: [][]byte{[]byte("short")}, Domain: "x.example"}).Encode("a", "b@c", 0); !errors.Is(err, ErrVERPConfig) {
		t.Errorf("short key: err = %v", err)
	}
}
