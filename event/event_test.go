package event

import (
	"encoding/json"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// full returns an event with every field set.
func full() Event {
	t := time.Date(2026, 11, 23, 16, 38, 14, 123456789, time.FixedZone("x", 3600))
	return Event{
		ID: "01JDQ3V4G0000000000000000A", Type: Bounced, Time: t,
		MessageID: "m1", Recipient: "bob@example.test", Domain: "example.test", Attempt: 3,
		Tenant: "acme", Tags: []string{"newsletter", "eu"}, Metadata: map[string]string{"campaign": "c7"},
		Site: "mx.example.test", MXHost: "mx1.example.test",
		MXAddr:    netip.MustParseAddrPort("[2001:db8::25]:25"),
		SourceIP:  netip.MustParseAddr("192.0.2.7"),
		TLS:       &TLS{Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", Verified: true},
		TLSPolicy: "mta-sts", TLSFailure: "certificate-host-mismatch",
		Reply:     &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
		Permanent: true, Category: "bad_mailbox", BadAddress: true,
		NextAttempt: t.Add(time.Hour), Latency: 1234567 * time.Microsecond,
		DSN: "m2", FeedbackType: "abuse", Reporter: "fbl.example.test",
	}
}

// truncated is e as it reads back from JSON: UTC, milliseconds.
func truncated(e Event) Event {
	e.Time = e.Time.UTC().Truncate(time.Millisecond)
	if !e.NextAttempt.IsZero() {
		e.NextAttempt = e.NextAttempt.UTC().Truncate(time.Millisecond)
	}
	e.Latency = e.Latency.Truncate(time.Millisecond)
	return e
}

func TestJSONRoundTrip(t *testing.T) {
	noEnh := full()
	noEnh.Reply = &smtp.SMTPError{Code: 421, Message: "try later"}
	for name, e := range map[string]Event{
		"full":           full(),
		"minimal":        {ID: "01JDQ3V4G0000000000000000B", Type: Queued, Time: time.Unix(1700000000, 0)},
		"no enhanced":    noEnh,
		"ipv4 no tls":    {ID: "x", Type: Delivered, Time: time.Unix(1, 5e6), MXAddr: netip.MustParseAddrPort("192.0.2.1:25")},
		"unverified tls": {ID: "y", Type: Delivered, Time: time.Unix(2, 0), TLS: &TLS{Version: "TLS 1.2"}},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var got Event
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("unmarshal %s: %v", b, err)
			}
			if want := truncated(e); !reflect.DeepEqual(got, want) {
				t.Errorf("round trip of %s:\n got %+v\nwant %+v", b, got, want)
			}
		})
	}
}

// TestWireFieldNames pins the wire format: the names below are the
// documented ones (doc.go); renaming a field must fail here.
func TestWireFieldNames(t *testing.T) {
	documented := []string{"id", "type", "time", "message_id", "recipient", "domain", "attempt",
		"tenant", "tags", "metadata", "site", "mx_host", "mx_addr", "source_ip", "tls", "tls_policy",
		"tls_failure", "reply", "permanent", "category", "bad_address", "next_attempt", "latency_ms",
		"dsn_id", "feedback_type", "reporter"}
	keys := func(e Event) []string {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var k []string
		for n := range m {
			k = append(k, n)
		}
		sort.Strings(k)
		return k
	}
	want := slices.Clone(documented)
	sort.Strings(want)
	if got := keys(full()); !slices.Equal(got, want) {
		t.Errorf("fields of a full event:\n got %v\nwant %v", got, want)
	}
	if got := keys(Event{Type: Queued, Time: time.Unix(1, 0)}); !slices.Equal(got, []string{"id", "time", "type"}) {
		t.Errorf("fields of a minimal event: %v", got)
	}

	// Nested objects.
	b, _ := json.Marshal(full())
	var m struct {
		TLS   map[string]any `json:"tls"`
		Reply map[string]any `json:"reply"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "cipher", "verified"} {
		if _, ok := m.TLS[k]; !ok {
			t.Errorf("tls lacks %q: %v", k, m.TLS)
		}
	}
	for _, k := range []string{"code", "enhanced", "text"} {
		if _, ok := m.Reply[k]; !ok {
			t.Errorf("reply lacks %q: %v", k, m.Reply)
		}
	}
	// Every field has a row in doc.go's table.
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	docTable := string(doc)
	for _, n := range documented {
		if !strings.Contains(docTable, "\n//\t"+n+" ") {
			t.Errorf("field %q missing from the documentation table", n)
		}
	}
}

func TestWireValues(t *testing.T) {
	b, err := json.Marshal(full())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	// 16:38:14.123456789+01:00 is 15:38:14.123Z.
	checks := map[string]any{
		"time":         "2026-11-23T15:38:14.123Z",
		"next_attempt": "2026-11-23T16:38:14.123Z",
		"latency_ms":   float64(1234),
		"mx_addr":      "[2001:db8::25]:25",
		"source_ip":    "192.0.2.7",
		"type":         "bounced",
	}
	for k, v := range checks {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if r := m["reply"].(map[string]any); r["enhanced"] != "5.1.1" || r["code"] != float64(550) {
		t.Errorf("reply = %v", r)
	}
	// A reply without enhanced code omits it, for both go-smtp spellings.
	for _, c := range []smtp.EnhancedCode{smtp.EnhancedCodeNotSet, smtp.NoEnhancedCode} {
		b, _ := json.Marshal(Event{Type: Deferred, Reply: &smtp.SMTPError{Code: 421, EnhancedCode: c}})
		if strings.Contains(string(b), "enhanced") {
			t.Errorf("%v: %s", c, b)
		}
	}
}

func TestUnmarshalErrors(t *testing.T) {
	for _, s := range []string{
		`{"type":"queued","time":"yesterday"}`,
		`{"type":"queued","next_attempt":"2026-13-01T00:00:00Z"}`,
		`{"type":"queued","mx_addr":"192.0.2.1"}`,
		`{"type":"queued","source_ip":"not-an-ip"}`,
		`{"type":"queued","reply":{"code":550,"enhanced":"5.1"}}`,
		`{"type":"queued","reply":{"code":550,"enhanced":"5.x.1"}}`,
		`{"type":3}`,
	} {
		var e Event
		if err := json.Unmarshal([]byte(s), &e); err == nil {
			t.Errorf("%s: no error, got %+v", s, e)
		}
	}
	// Unknown fields are ignored.
	var e Event
	if err := json.Unmarshal([]byte(`{"id":"a","type":"queued","future_field":1}`), &e); err != nil || e.ID != "a" {
		t.Errorf("unknown field: %v %+v", err, e)
	}
}

func TestIDSource(t *testing.T) {
	var s IDSource
	t0 := time.UnixMilli(1700000000000)
	var ids []string
	for _, tm := range []time.Time{t0, t0, t0, t0.Add(-time.Second), t0.Add(time.Millisecond), t0.Add(time.Hour)} {
		ids = append(ids, s.New(tm))
	}
	for i, id := range ids {
		if len(id) != 26 || strings.Trim(id, crockford) != "" {
			t.Errorf("bad ID %q", id)
		}
		if i > 0 && id <= ids[i-1] {
			t.Errorf("ID %d %q not after %q", i, id, ids[i-1])
		}
	}
	// The time prefix sorts across sources.
	var other IDSource
	if a, b := other.New(t0.Add(2*time.Hour)), s.New(t0.Add(90*time.Minute)); a <= b {
		t.Errorf("later time sorts first: %q <= %q", a, b)
	}
	// The leading 10 digits are the milliseconds.
	if got, want := ids[0][:10], encodeID(uint64(t0.UnixMilli()), 0, 0)[:10]; got != want {
		t.Errorf("time prefix %q, want %q", got, want)
	}

	// Concurrent use: unique.
	var mu sync.Mutex
	seen := make(map[string]bool)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				id := s.New(t0)
				mu.Lock()
				if seen[id] {
					t.Errorf("duplicate %q", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestEncodeIDCarry(t *testing.T) {
	// Incrementing across the 64-bit boundary of the random part keeps
	// order.
	a := encodeID(5, 1, ^uint64(0))
	b := encodeID(5, 2, 0)
	if a >= b {
		t.Errorf("%q >= %q", a, b)
	}
	if got := encodeID(0, 0, 0); got != strings.Repeat("0", 26) {
		t.Errorf("zero = %q", got)
	}
	if got := encodeID(1<<48-1, 0xffff, ^uint64(0)); got != "7"+strings.Repeat("Z", 25) {
		t.Errorf("max = %q", got)
	}
}

func TestTypes(t *testing.T) {
	seen := map[Type]bool{}
	for _, ty := range Types() {
		if seen[ty] || ty == "" || strings.ToLower(string(ty)) != string(ty) {
			t.Errorf("bad or duplicate type %q", ty)
		}
		seen[ty] = true
	}
	if len(seen) != 13 {
		t.Errorf("%d types", len(seen))
	}
}

func FuzzEventJSON(f *testing.F) {
	b, _ := json.Marshal(full())
	f.Add(b)
	f.Add([]byte(`{"id":"a","type":"queued","time":"2026-11-23T16:38:14.123Z"}`))
	f.Add([]byte(`{"type":"deferred","reply":{"code":421},"next_attempt":"2026-11-23T16:38:14+02:00","latency_ms":-5}`))
	f.Add([]byte(`{"mx_addr":"[::1]:25","source_ip":"::ffff:192.0.2.1","tls":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if json.Unmarshal(b, &e) != nil {
			return
		}
		// What decodes re-encodes, and the re-encoding is a fixed point.
		b1, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("marshal %+v: %v", e, err)
		}
		var e2 Event
		if err := json.Unmarshal(b1, &e2); err != nil {
			t.Fatalf("unmarshal own %s: %v", b1, err)
		}
		b2, _ := json.Marshal(e2)
		if string(b1) != string(b2) {
			t.Fatalf("not stable:\n%s\n%s", b1, b2)
		}
	})
}
