package prom

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mtakit/mta/event"
)

// scrape serves reg over HTTP on loopback, fetches it in the text format
// and parses it.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// find returns the metric of family name whose labels include want.
func find(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("%s has no series %v", name, want)
	return nil
}

func TestScrape(t *testing.T) {
	m := New(Config{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	m.Emit(event.Event{Type: event.Queued})
	m.Emit(event.Event{Type: event.Attempt, Domain: "example.test", Attempt: 1})
	for range 3 {
		m.Emit(event.Event{Type: event.Delivered, Domain: "example.test", Site: "mx.example.test", Attempt: 1, Latency: 2 * time.Second})
	}
	m.Emit(event.Event{Type: event.Deferred, Domain: "slow.test", Category: "mailbox_full", Attempt: 1, Latency: 300 * time.Millisecond})
	m.Emit(event.Event{Type: event.Bounced, Domain: "example.test", Site: "mx.example.test", Category: "bad_mailbox", Attempt: 4, Latency: time.Second})
	m.Emit(event.Event{Type: event.Complaint, FeedbackType: "abuse"})
	m.SetDepth("ready", "default", 7)
	m.SetDepth("deferred", "bulk", 3)
	m.SetDepth("ready", "default", 5)

	fams := scrape(t, reg)
	counter := func(name string, l map[string]string) float64 {
		return find(t, fams, name, l).GetCounter().GetValue()
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mta_events_total", map[string]string{"type": "delivered"}, 3},
		{"mta_events_total", map[string]string{"type": "queued"}, 1},
		{"mta_events_total", map[string]string{"type": "complaint"}, 1},
		{"mta_deliveries_total", map[string]string{"outcome": "delivered", "site": "mx.example.test", "category": ""}, 3},
		{"mta_deliveries_total", map[string]string{"outcome": "deferred", "site": "slow.test", "category": "mailbox_full"}, 1},
		{"mta_deliveries_total", map[string]string{"outcome": "bounced", "site": "mx.example.test", "category": "bad_mailbox"}, 1},
	} {
		if got := counter(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if g := find(t, fams, "mta_queue_depth", map[string]string{"state": "ready", "lane": "default"}).GetGauge().GetValue(); g != 5 {
		t.Errorf("depth ready/default = %v", g)
	}
	if g := find(t, fams, "mta_queue_depth", map[string]string{"state": "deferred", "lane": "bulk"}).GetGauge().GetValue(); g != 3 {
		t.Errorf("depth deferred/bulk = %v", g)
	}
	h := find(t, fams, "mta_delivery_latency_seconds", nil).GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 6 {
		t.Errorf("latency histogram count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	a := find(t, fams, "mta_delivery_attempts", map[string]string{"outcome": "bounced"}).GetHistogram()
	if a.GetSampleCount() != 1 || a.GetSampleSum() != 4 {
		t.Errorf("attempts histogram %v", a)
	}
	d := find(t, fams, "mta_attempt_duration_seconds", map[string]string{"outcome": "deferred"}).GetHistogram()
	if d.GetSampleCount() != 1 || d.GetSampleSum() != 0.3 {
		t.Errorf("attempt duration histogram %v", d)
	}
	if fams["mta_events_total"].GetType() != dto.MetricType_COUNTER || fams["mta_queue_depth"].GetType() != dto.MetricType_GAUGE {
		t.Error("metric types")
	}
}

func TestConfig(t *testing.T) {
	m := New(Config{Namespace: "x", Site: func(event.Event) string { return "" }})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	m.Emit(event.Event{Type: event.Delivered, Domain: "example.test"})
	fams := scrape(t, reg)
	if find(t, fams, "x_deliveries_total", map[string]string{"site": ""}).GetCounter().GetValue() != 1 {
		t.Error("site override")
	}
	if _, ok := fams["mta_events_total"]; ok {
		t.Error("namespace ignored")
	}
}

func ExampleMetrics() {
	m := New(Config{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	// In a program: event.NewFanout(event.FanoutConfig{Sinks: []event.Sink{m, ...}})
	// and http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})).
	m.Emit(event.Event{Type: event.Delivered, Domain: "example.test"})
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() == "mta_events_total" {
			fmt.Println(f.GetName(), f.Metric[0].GetLabel()[0].GetValue(), f.Metric[0].GetCounter().GetValue())
		}
	}
	// Output: mta_events_total delivered 1
}

// TestSinkHealth wires the metrics as the README shows: a Fanout feeding
// a Webhook (endpoint down) and the metrics, scraped with the sinks' own
// health.
func TestSinkHealth(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	wh, err := event.NewWebhook(event.WebhookConfig{Dir: t.TempDir(),
		Endpoints:  []event.Endpoint{{Name: "crm", URL: down.URL, Secret: []byte("k")}},
		MinBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Close(context.Background())
	blocked := make(chan struct{})
	stuck := event.SinkFunc(func(event.Event) { <-blocked })
	m := New(Config{Webhook: wh})
	f := event.NewFanout(event.FanoutConfig{Sinks: []event.Sink{wh, m, stuck}, Buffer: 2})
	m.fanout, m.fanoutNames = f, []string{"webhook", "metrics"}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	for range 10 {
		f.Emit(event.Event{Type: event.Queued})
	}
	fams := scrape(t, reg)
	if v := find(t, fams, "mta_webhook_pending_events", map[string]string{"endpoint": "crm"}).GetGauge().GetValue(); v != 10 {
		t.Errorf("pending = %v", v)
	}
	if v := find(t, fams, "mta_webhook_outbox_bytes", nil).GetGauge().GetValue(); v <= 0 {
		t.Errorf("outbox bytes = %v", v)
	}
	// The stuck sink (index 2, no name) holds one event and buffers two.
	if v := find(t, fams, "mta_event_sink_dropped_total", map[string]string{"sink": "2"}).GetCounter().GetValue(); v != 7 && v != 8 {
		t.Errorf("stuck sink drops = %v", v)
	}
	if v := find(t, fams, "mta_event_sink_dropped_total", map[string]string{"sink": "webhook"}).GetCounter().GetValue(); v != 0 {
		t.Errorf("webhook drops = %v", v)
	}
	close(blocked)
	if err := f.Close(context.Background()); err != nil {
		t.Error(err)
	}
}
