package event

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkWebhook measures events per second from Emit (with the outbox's
// group-committed fsync) to acknowledgement by a loopback endpoint.
func BenchmarkWebhook(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{
		Dir:       b.TempDir(),
		Endpoints: []Endpoint{{Name: "bench", URL: srv.URL, Secret: []byte("k")}},
		BatchSize: 500,
	})
	if err != nil {
		b.Fatal(err)
	}
	e := full()
	e.ID, e.Time = "", time.Time{}
	b.SetParallelism(16) // 16 goroutines per CPU emit concurrently, as delivery goroutines do
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Emit(e)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if st := w.Stats(); st.Failed != 0 || st.Dropped != 0 {
		b.Fatalf("stats %+v", st)
	}
	_ = w.Close(ctx)
}

// BenchmarkFanoutEmit measures the caller's cost of Emit through a Fanout
// with two buffered sinks.
func BenchmarkFanoutEmit(b *testing.B) {
	f := NewFanout(FanoutConfig{Sinks: []Sink{SinkFunc(func(Event) {}), SinkFunc(func(Event) {})}, Buffer: 1 << 16})
	e := full()
	e.ID, e.Time = "", time.Time{}
	b.ReportAllocs()
	for b.Loop() {
		f.Emit(e)
	}
	b.StopTimer()
	_ = f.Close(context.Background())
}

func BenchmarkMarshal(b *testing.B) {
	e := full()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}
