package logstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mta/queue"
)

// TestTornSegmentHeader reopens a store whose newest segment was created
// just before a crash, with none or part of its header written: the store
// must repair it and keep every message of the older segments.
func TestTornSegmentHeader(t *testing.T) {
	for _, torn := range []string{"", "ml", segMagic[:len(segMagic)-1]} {
		dir := t.TempDir()
		s, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		now := time.Now()
		m := &queue.Message{ID: "torn-1", From: "a@example.test", Created: now, Deliveries: []queue.Delivery{{
			Domain: "example.test", NextAttempt: now, Recipients: []queue.Recipient{{Address: "b@example.test"}},
		}}}
		if err := s.Enqueue(ctx, m, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		next := filepath.Join(dir, segName(uint32(len(names)+1)))
		if err := os.WriteFile(next, []byte(torn), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err = Open(dir, nil)
		if err != nil {
			t.Fatalf("reopen with a %d-byte newest segment: %v", len(torn), err)
		}
		if _, err := s.Get(ctx, "torn-1"); err != nil {
			t.Errorf("message lost after repair: %v", err)
		}
		m2 := *m
		m2.ID = "torn-2"
		if err := s.Enqueue(ctx, &m2, strings.NewReader("Subject: y\r\n\r\nbody\r\n")); err != nil {
			t.Errorf("enqueue after repair: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
