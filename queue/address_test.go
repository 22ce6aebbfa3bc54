package queue

import (
	"strings"
	"testing"
)

func TestCheckAddress(t *testing.T) {
	good := map[string]string{
		"user@example.test":              "example.test",
		"User.Name+tag@Sub.EXAMPLE.test": "sub.example.test",
		`"with space"@a.test`:            "a.test",
		"r@[192.0.2.1]":                  "[192.0.2.1]",
		"r@[IPv6:2001:db8::1]":           "[IPv6:2001:db8::1]",
		"x@xn--bcher-kva.test":           "xn--bcher-kva.test",
	}
	for addr, domain := range good {
		got, err := checkAddress(addr, false)
		if err != nil || got != domain {
			t.Errorf("checkAddress(%q) = %q, %v; want %q", addr, got, err, domain)
		}
	}
	bad := []string{"", "@a.test", "user@", "user", "a b@c.test", "a@b@", "user@a..test", "user@-a.test", "user@a-.test",
		"user@a.test.", ".user@a.test", "us..er@a.test", "user@[1.2.3]", "user@[IPv6:1.2.3.4]", "user@[192.0.2.1",
		"u\r\n@a.test", "u@a.test\x00", "u@a_b.test", strings.Repeat("a", 65) + "@a.test", "u@" + strings.Repeat("a.", 130) + "test",
		"jörg@a.test", `"unterminated@a.test`}
	for _, addr := range bad {
		if d, err := checkAddress(addr, false); err == nil {
			t.Errorf("checkAddress(%q) accepted it (domain %q)", addr, d)
		}
	}
	if d, err := checkAddress("jörg@bücher.test", true); err != nil || d != "bücher.test" {
		t.Errorf("SMTPUTF8 address: %q %v", d, err)
	}
}

func FuzzCheckAddress(f *testing.F) {
	for _, s := range []string{"user@example.test", `"q"@a.test`, "r@[192.0.2.1]", "r@[IPv6:::1]", "jörg@bücher.test", "a@b", "@", "a@@b", "x@[", "\"@a"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, addr string, utf8 bool) {
		domain, err := checkAddress(addr, utf8)
		if err != nil {
			return
		}
		if len(addr) > 254 || !strings.HasSuffix(strings.ToLower(addr), strings.ToLower(domain)) || domain == "" {
			t.Fatalf("accepted %q with domain %q", addr, domain)
		}
		for _, c := range addr {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("accepted a control character in %q", addr)
			}
		}
		if !strings.HasPrefix(domain, "[") && domain != strings.ToLower(domain) {
			t.Fatalf("domain %q not lower case", domain)
		}
		if !utf8 {
			if _, err := checkAddress(addr, true); err != nil {
				t.Fatalf("%q accepted without SMTPUTF8 but refused with it: %v", addr, err)
			}
		}
	})
}
