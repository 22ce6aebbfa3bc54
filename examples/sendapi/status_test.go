package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/event"
)

// TestStatusFile: the status file is read back on open; messages older
// than the retention and a line cut short by a crash are dropped from it,
// and new lines still append cleanly after that.
func TestStatusFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.jsonl")
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	log := slog.New(slog.DiscardHandler)

	s, err := openStatus(path, 7*24*time.Hour, clock, log)
	if err != nil {
		t.Fatal(err)
	}
	old, recent := now.Add(-8*24*time.Hour), now.Add(-time.Hour)
	s.submit(&submission{ID: "OLD", MessageID: "<old@api.test>", Recipients: []string{"a@example.net"}, Time: old})
	s.Emit(event.Event{ID: "1", Type: event.Delivered, Time: old, MessageID: "OLD", Recipient: "a@example.net", Attempt: 1})
	s.submit(&submission{ID: "NEW", MessageID: "<new@api.test>", Recipients: []string{"b@example.net", "c@example.net"}, Time: recent})
	s.Emit(event.Event{ID: "2", Type: event.Queued, Time: recent, MessageID: "NEW", Tags: []string{"t"}})
	s.Emit(event.Event{ID: "3", Type: event.Deferred, Time: recent, MessageID: "NEW", Recipient: "b@example.net", Attempt: 1,
		Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"}, NextAttempt: recent.Add(time.Minute)})
	s.Emit(event.Event{ID: "4", Type: event.Delivered, Time: recent.Add(time.Minute), MessageID: "NEW", Recipient: "b@example.net", Attempt: 2,
		Reply: &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "ok"}})
	s.Emit(event.Event{ID: "5", Type: event.Bounced, Time: recent.Add(time.Minute), MessageID: "NEW", Recipient: "c@example.net", Attempt: 2,
		Reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}})
	// A repeated submission of the same ID gets the first one back.
	if prev := s.submit(&submission{ID: "NEW", MessageID: "<other@api.test>", Time: recent}); prev == nil || prev.MessageID != "<new@api.test>" || len(prev.Recipients) != 2 {
		t.Errorf("second submission: %+v", prev)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of a line.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":"6","type":"deliv`)
	f.Close()

	s, err = openStatus(path, 7*24*time.Hour, clock, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.view("OLD"); ok {
		t.Error("a message past the retention is still known")
	}
	v, ok := s.view("NEW")
	if !ok {
		t.Fatal("the recent message is forgotten")
	}
	st := describe("NEW", nil, v, now)
	if st.State != "partially_delivered" || st.MessageID != "<new@api.test>" || len(st.Events) != 4 || len(st.Tags) != 1 {
		t.Errorf("status %+v", st)
	}
	b, c := rcptByAddr(st, "b@example.net"), rcptByAddr(st, "c@example.net")
	if b.State != "delivered" || b.Attempts != 2 || b.Reply.Code != 250 || c.State != "bounced" || *c.Reply != (replyJSON{550, "5.1.1", "no such user"}) {
		t.Errorf("recipients %+v %+v", b, c)
	}
	s.Emit(event.Event{ID: "7", Type: event.Queued, Time: now, MessageID: "NEXT"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 6 || bytes.Contains(data, []byte("OLD")) || bytes.Contains(data, []byte(`"deliv"`)) || !strings.Contains(lines[5], `"NEXT"`) {
		t.Errorf("file after compaction:\n%s", data)
	}
	for _, l := range lines {
		if _, _, ok := parseLine([]byte(l)); !ok {
			t.Errorf("unreadable line %q", l)
		}
	}
}

func TestMessageState(t *testing.T) {
	for _, c := range []struct {
		states []string
		want   string
	}{
		{nil, "unknown"},
		{[]string{"delivered", "delivered"}, "delivered"},
		{[]string{"bounced", "expired", "suppressed"}, "bounced"},
		{[]string{"delivered", "bounced"}, "partially_delivered"},
		{[]string{"delivered", "deferred"}, "deferred"},
		{[]string{"queued", "sending"}, "sending"},
		{[]string{"scheduled"}, "scheduled"},
		{[]string{"held", "deferred"}, "held"},
		{[]string{"delivered", "deleted"}, "deleted"},
	} {
		var rs []rcptReply
		for _, s := range c.states {
			rs = append(rs, rcptReply{State: s})
		}
		if got := messageState(rs); got != c.want {
			t.Errorf("%q: %s, want %s", c.states, got, c.want)
		}
	}
}
