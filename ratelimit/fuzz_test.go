package ratelimit_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
)

// FuzzParsePolicy checks that the parser never panics, that whatever it
// accepts New accepts too, and that String writes text that parses back to
// the same policy.
func FuzzParsePolicy(f *testing.F) {
	f.Add(samplePolicy)
	f.Add("limit site=gmail.com per=source rate=3000/min burst=100 connections=20 messages-per-connection=50")
	f.Add("backoff off")
	f.Add("backoff name=y text=\"[TSS04]\" suspend=15m\nwarmup")
	f.Add("limit name=\"a\\tb\" tenant=\"x y\" rate=1/1h30m # c\r\n")
	f.Add("options backoff-per=tenant min-factor=1e-2\nwarmup schedule=default sources=\"\"")
	f.Add("backoff category=\"\" code=421 enhanced=4.7 regexp=\"^4\" connections=1")
	f.Fuzz(func(t *testing.T, text string) {
		p, err := ratelimit.ParsePolicy(text)
		if err != nil {
			return
		}
		l, err := ratelimit.New(ratelimit.Config{Policy: p})
		if err != nil {
			t.Fatalf("parsed policy rejected by New: %v\n%q", err, text)
		}
		l.Close()
		out := p.String()
		back, err := ratelimit.ParsePolicy(out)
		if err != nil {
			t.Fatalf("String output does not parse: %v\n%q\n%q", err, text, out)
		}
		if !reflect.DeepEqual(p, back) {
			t.Fatalf("round trip differs\nin:  %q\nout: %q\n%#v\n%#v", text, out, p, back)
		}
	})
}

// FuzzFileWarmupStore feeds arbitrary file contents to OpenFileWarmupStore:
// it must never panic, and a file it accepts must keep its counts through a
// close and reopen.
func FuzzFileWarmupStore(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("a1b2c3d4 S\t\"192.0.2.1\"\t1767225600000000000\n"))
	// A real file written by the store.
	dir := f.TempDir()
	s, err := ratelimit.OpenFileWarmupStore(filepath.Join(dir, "seed"))
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	s.Start(ctx, "192.0.2.1", time.Unix(1767225600, 0))
	for i := 0; i < 3; i++ {
		s.TryAdd(ctx, ratelimit.Counter{Source: "192.0.2.1", Site: "gmail.com", Day: i}, 5, 10)
	}
	s.TryAdd(ctx, ratelimit.Counter{Source: "pool \"b\"", Site: "yahoo.com", Day: 0}, 1, 10)
	s.Close()
	seed, err := os.ReadFile(filepath.Join(dir, "seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "w.log")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := ratelimit.OpenFileWarmupStore(path)
		if err != nil {
			return
		}
		c := ratelimit.Counter{Source: "192.0.2.1", Site: "gmail.com", Day: 0}
		n1, _ := s.Count(ctx, c)
		if n1 < 0 {
			t.Fatalf("negative count %d", n1)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = ratelimit.OpenFileWarmupStore(path)
		if err != nil {
			t.Fatalf("reopen of an accepted file: %v", err)
		}
		defer s.Close()
		if n2, _ := s.Count(ctx, c); n2 != n1 {
			t.Fatalf("count %d became %d after reopen", n1, n2)
		}
	})
}
