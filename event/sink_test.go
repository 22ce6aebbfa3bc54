package event

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// collector is a Sink that records events.
type collector struct {
	mu sync.Mutex
	ev []Event
}

func (c *collector) Emit(e Event) {
	c.mu.Lock()
	c.ev = append(c.ev, e)
	c.mu.Unlock()
}

func (c *collector) events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.ev...)
}

// durableCollector is a collector that claims durability, so the Fanout
// calls it inline.
type durableCollector struct{ collector }

func (*durableCollector) Durable() bool { return true }

func TestFanoutSlowSinkDoesNotBlock(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := SinkFunc(func(Event) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	})
	durable := &durableCollector{}
	f := NewFanout(FanoutConfig{Sinks: []Sink{slow, durable}, Buffer: 4})

	f.Emit(Event{Type: Queued, MessageID: "first"})
	<-entered // the slow sink now holds the first event and blocks
	const n = 50
	for i := range n {
		f.Emit(Event{Type: Queued, MessageID: "m", Attempt: i})
	}
	// Emit returned n times while the slow sink was blocked: the caller is
	// not slowed. The slow sink's buffer (4) overflowed.
	if d := f.Dropped(); d[0] != n-4 || d[1] != 0 {
		t.Errorf("dropped = %v, want [%d 0]", d, n-4)
	}
	// The durable sink got every event synchronously.
	if got := len(durable.events()); got != n+1 {
		t.Errorf("durable sink has %d events, want %d", got, n+1)
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f.Emit(Event{Type: Queued})
	if d := f.Dropped(); d[1] != 1 {
		t.Errorf("after close: dropped = %v", d)
	}
	if err := f.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestFanoutBufferedInOrder(t *testing.T) {
	// A buffer large enough for the burst: nothing dropped, order kept,
	// every sink sees the same stamped event.
	a, b, d := &collector{}, &collector{}, &durableCollector{}
	f := NewFanout(FanoutConfig{Sinks: []Sink{a, b, d}, Buffer: 1000})
	const n = 500
	for i := range n {
		f.Emit(Event{Type: Attempt, Attempt: i})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if dr := f.Dropped(); dr[0]+dr[1]+dr[2] != 0 {
		t.Errorf("dropped %v", dr)
	}
	ea, eb, ed := a.events(), b.events(), d.events()
	if len(ea) != n || len(eb) != n || len(ed) != n {
		t.Fatalf("got %d %d %d events", len(ea), len(eb), len(ed))
	}
	for i := range n {
		if ea[i].Attempt != i || ea[i].ID == "" || ea[i].ID != eb[i].ID || ea[i].ID != ed[i].ID || ea[i].Time.IsZero() {
			t.Fatalf("event %d: %+v %+v %+v", i, ea[i], eb[i], ed[i])
		}
		if i > 0 && ea[i].ID <= ea[i-1].ID {
			t.Fatalf("IDs not increasing at %d", i)
		}
	}
}

func TestFanoutKeepsIDAndTime(t *testing.T) {
	c := &durableCollector{}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := NewFanout(FanoutConfig{Sinks: []Sink{c}, Now: func() time.Time { return now }})
	f.Emit(Event{Type: Held, ID: "given", Time: now.Add(-time.Hour)})
	f.Emit(Event{Type: Held})
	f.Emit(Event{Type: Held})
	ev := c.events()
	if ev[0].ID != "given" || !ev[0].Time.Equal(now.Add(-time.Hour)) {
		t.Errorf("overwrote ID/Time: %+v", ev[0])
	}
	if !ev[1].Time.Equal(now) || ev[1].ID == "" || ev[2].ID <= ev[1].ID {
		t.Errorf("stamping: %+v %+v", ev[1], ev[2])
	}
	_ = f.Close(context.Background())
}

func TestLogSink(t *testing.T) {
	var buf bytes.Buffer
	s := LogSink{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	e := full()
	s.Emit(e)
	s.Emit(Event{ID: "b", Type: Queued, MessageID: "m9"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["msg"] != "event" || m["type"] != "bounced" || m["recipient"] != "bob@example.test" ||
		m["mx_addr"] != "[2001:db8::25]:25" || m["category"] != "bad_mailbox" || m["id"] != e.ID {
		t.Errorf("line: %s", lines[0])
	}
	if r, _ := m["reply"].(map[string]any); r["enhanced"] != "5.1.1" {
		t.Errorf("reply: %v", m["reply"])
	}
	if md, _ := m["metadata"].(map[string]any); md["campaign"] != "c7" {
		t.Errorf("metadata: %v", m["metadata"])
	}
	m = nil
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["recipient"]; ok {
		t.Errorf("empty field logged: %s", lines[1])
	}
	// Level filtering and nil logger.
	buf.Reset()
	LogSink{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}.Emit(e)
	LogSink{}.Emit(e)
	if buf.Len() != 0 {
		t.Errorf("logged below level: %s", buf.String())
	}
	_ = smtp.SMTPError{}
}
