package event

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`[{"id":"01","type":"queued","time":"2026-11-23T16:00:00.000Z"}]`)
	now := time.Unix(1800000000, 0)
	h := Sign(secret, body, now)
	if !strings.HasPrefix(h, "t=1800000000,v1=") || len(h) != len("t=1800000000,v1=")+64 {
		t.Fatalf("header %q", h)
	}
	other := Sign([]byte("old"), body, now)
	_, oldV1, _ := strings.Cut(other, ",")
	for _, c := range []struct {
		name   string
		secret string
		header string
		body   string
		now    time.Time
		window time.Duration
		want   error
	}{
		{"ok", "s3cret", h, string(body), now, 0, nil},
		{"ok late within window", "s3cret", h, string(body), now.Add(4 * time.Minute), 0, nil},
		{"ok early within window", "s3cret", h, string(body), now.Add(-time.Minute), 0, nil},
		{"spaces", "s3cret", strings.ReplaceAll(h, ",", " , "), string(body), now, 0, nil},
		{"rotation: two v1", "s3cret", h + "," + oldV1, string(body), now, 0, nil},
		{"rotation: old first", "s3cret", "t=1800000000," + oldV1 + "," + strings.Split(h, ",")[1], string(body), now, 0, nil},
		{"unknown key ignored", "s3cret", h + ",v2=zzz", string(body), now, 0, nil},
		{"tampered body", "s3cret", h, string(body) + " ", now, 0, ErrSignatureMismatch},
		{"wrong secret", "other", h, string(body), now, 0, ErrSignatureMismatch},
		{"changed timestamp", "s3cret", strings.Replace(h, "t=1800000000", "t=1800000001", 1), string(body), now, 0, ErrSignatureMismatch},
		{"replayed late", "s3cret", h, string(body), now.Add(6 * time.Minute), 0, ErrSignatureExpired},
		{"from the future", "s3cret", h, string(body), now.Add(-6 * time.Minute), 0, ErrSignatureExpired},
		{"narrow window", "s3cret", h, string(body), now.Add(2 * time.Second), time.Second, ErrSignatureExpired},
		{"empty", "s3cret", "", string(body), now, 0, ErrSignatureMalformed},
		{"no v1", "s3cret", "t=1800000000", string(body), now, 0, ErrSignatureMalformed},
		{"no t", "s3cret", strings.Split(h, ",")[1], string(body), now, 0, ErrSignatureMalformed},
		{"two t", "s3cret", "t=1," + h, string(body), now, 0, ErrSignatureMalformed},
		{"bad hex", "s3cret", "t=1800000000,v1=xyz", string(body), now, 0, ErrSignatureMalformed},
		{"short mac", "s3cret", "t=1800000000,v1=abcd", string(body), now, 0, ErrSignatureMalformed},
		{"negative t", "s3cret", strings.Replace(h, "t=", "t=-", 1), string(body), now, 0, ErrSignatureMalformed},
		{"huge t", "s3cret", strings.Replace(h, "t=", "t=99999999999999999999", 1), string(body), now, 0, ErrSignatureMalformed},
		{"no equals", "s3cret", h + ",junk", string(body), now, 0, ErrSignatureMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Verify([]byte(c.secret), c.header, []byte(c.body), c.now, c.window)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	secret := []byte("fuzz")
	now := time.Unix(1800000000, 0)
	body := []byte(`[{"id":"a","type":"delivered"}]`)
	f.Add(Sign(secret, body, now), body)
	f.Add("t=1800000000,v1=00", body)
	f.Add("t=,v1=", []byte{})
	f.Add(",,,", []byte("x"))
	f.Add("t=1800000000,v1="+strings.Repeat("ab", 32)+",v1="+strings.Repeat("cd", 32), body)
	f.Fuzz(func(t *testing.T, header string, b []byte) {
		err := Verify(secret, header, b, now, 0)
		if err == nil {
			// Accepted: re-signing b at the header's timestamp must give
			// one of its v1 values.
			var sec int64 = -1
			var v1s []string
			for part := range strings.SplitSeq(header, ",") {
				k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
				switch k {
				case "t":
					sec, _ = strconv.ParseInt(v, 10, 64)
				case "v1":
					v1s = append(v1s, strings.ToLower(v))
				}
			}
			_, want, _ := strings.Cut(Sign(secret, b, time.Unix(sec, 0)), "v1=")
			if !slices.Contains(v1s, want) {
				t.Errorf("accepted %q for %q", header, b)
			}
			return
		}
		if !errors.Is(err, ErrSignatureMalformed) && !errors.Is(err, ErrSignatureExpired) && !errors.Is(err, ErrSignatureMismatch) {
			t.Errorf("unclassified error %v", err)
		}
	})
}
