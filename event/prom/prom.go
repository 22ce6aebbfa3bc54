// Package prom exposes the event stream as Prometheus metrics: a
// [Metrics] value is an event.Sink that counts events and a
// prometheus.Collector to register wherever the application serves its
// metrics. It lives apart from package event so that only users who want
// Prometheus depend on client_golang.
//
// # Metrics
//
// With the default namespace "mta":
//
//	mta_events_total{type}                           counter    every event, by type
//	mta_deliveries_total{outcome,site,category}      counter    delivered, deferred, bounced, expired, throttled,
//	                                                            suppressed and async_bounce recipients, by
//	                                                            destination site (the recipient domain when
//	                                                            the site is unknown) and bounce category
//	mta_delivery_latency_seconds                     histogram  time from queued to delivered
//	mta_attempt_duration_seconds{outcome}            histogram  duration of attempts that ended in
//	                                                            delivered, deferred or bounced
//	mta_delivery_attempts{outcome}                   histogram  attempts used by final outcomes
//	                                                            (delivered, bounced, expired)
//	mta_queue_depth{state,lane}                      gauge      fed by SetDepth
//
// With Config.Webhook and Config.Fanout set, the sinks' own health too:
//
//	mta_webhook_pending_events{endpoint}             gauge      stored events not yet acknowledged
//	mta_webhook_outbox_bytes                         gauge      size of the outbox on disk
//	mta_webhook_dropped_events_total                 counter    events removed unsent because of MaxBytes
//	mta_webhook_failed_events_total                  counter    events that could not be stored
//	mta_event_sink_dropped_total{sink}               counter    events a Fanout dropped for a full sink buffer
//
// The site label has one value per destination; set Config.Site to
// coarsen or drop it when that is too many.
package prom

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mtakit/mta/event"
)

// Config configures [New]. The zero value is ready to use.
type Config struct {
	// Namespace prefixes every metric name. Empty means "mta".
	Namespace string
	// LatencyBuckets are the buckets, in seconds, of
	// delivery_latency_seconds. Nil means 0.1 s to about 2 days.
	LatencyBuckets []float64
	// AttemptDurationBuckets are the buckets, in seconds, of
	// attempt_duration_seconds. Nil means 10 ms to about 5 minutes.
	AttemptDurationBuckets []float64
	// AttemptBuckets are the buckets of delivery_attempts. Nil means
	// 1, 2, 3, 5, 8, 13, 21, 34.
	AttemptBuckets []float64
	// Site returns the site label of a delivery event. Nil means e.Site,
	// or e.Domain when the site is unknown. Return "" to drop the
	// dimension.
	Site func(e event.Event) string
	// Webhook, when not nil, is exported through its Stats at each scrape.
	Webhook *event.Webhook
	// Fanout, when not nil, has its drops exported at each scrape, with
	// the sink label taken from FanoutNames (by position; the index when
	// missing).
	Fanout      *event.Fanout
	FanoutNames []string
}

// Metrics counts events. Emit and SetDepth are safe for concurrent use and
// do not block (they update in-memory counters), so Metrics may sit behind
// an event.Fanout or be called directly.
type Metrics struct {
	site     func(event.Event) string
	events   *prometheus.CounterVec
	outcomes *prometheus.CounterVec
	latency  prometheus.Histogram
	attemptD *prometheus.HistogramVec
	attempts *prometheus.HistogramVec
	depth    *prometheus.GaugeVec

	webhook     *event.Webhook
	fanout      *event.Fanout
	fanoutNames []string
	descPending *prometheus.Desc
	descBytes   *prometheus.Desc
	descDropped *prometheus.Desc
	descFailed  *prometheus.Desc
	descSink    *prometheus.Desc
}

var (
	_ event.Sink           = (*Metrics)(nil)
	_ prometheus.Collector = (*Metrics)(nil)
)

// New makes the metrics. Register the result with a
// prometheus.Registerer to expose them.
func New(cfg Config) *Metrics {
	ns := cfg.Namespace
	if ns == "" {
		ns = "mta"
	}
	lb := cfg.LatencyBuckets
	if lb == nil {
		lb = prometheus.ExponentialBuckets(0.1, 4, 12) // 0.1 s .. ~4.9 days
	}
	ab := cfg.AttemptDurationBuckets
	if ab == nil {
		ab = prometheus.ExponentialBuckets(0.01, 3, 11) // 10 ms .. ~10 min
	}
	nb := cfg.AttemptBuckets
	if nb == nil {
		nb = []float64{1, 2, 3, 5, 8, 13, 21, 34}
	}
	m := &Metrics{site: cfg.Site, webhook: cfg.Webhook, fanout: cfg.Fanout, fanoutNames: cfg.FanoutNames}
	m.descPending = prometheus.NewDesc(ns+"_webhook_pending_events", "Stored events not yet acknowledged, by endpoint.", []string{"endpoint"}, nil)
	m.descBytes = prometheus.NewDesc(ns+"_webhook_outbox_bytes", "Size of the webhook outbox on disk.", nil, nil)
	m.descDropped = prometheus.NewDesc(ns+"_webhook_dropped_events_total", "Events removed from the outbox unsent because it was full.", nil, nil)
	m.descFailed = prometheus.NewDesc(ns+"_webhook_failed_events_total", "Events the webhook outbox could not store.", nil, nil)
	m.descSink = prometheus.NewDesc(ns+"_event_sink_dropped_total", "Events a fan-out dropped because a sink's buffer was full.", []string{"sink"}, nil)
	if m.site == nil {
		m.site = func(e event.Event) string {
			if e.Site != "" {
				return e.Site
			}
			return e.Domain
		}
	}
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_total",
		Help: "Events by type."}, []string{"type"})
	m.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "deliveries_total",
		Help: "Recipient outcomes by destination site and bounce category."}, []string{"outcome", "site", "category"})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "delivery_latency_seconds",
		Help: "Time from queued to delivered.", Buckets: lb})
	m.attemptD = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "attempt_duration_seconds",
		Help: "Duration of delivery attempts by outcome.", Buckets: ab}, []string{"outcome"})
	m.attempts = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "delivery_attempts",
		Help: "Attempts used by recipients that reached a final outcome.", Buckets: nb}, []string{"outcome"})
	m.depth = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "queue_depth",
		Help: "Messages or recipients in the queue by state and lane."}, []string{"state", "lane"})
	return m
}

// Emit counts e.
func (m *Metrics) Emit(e event.Event) {
	m.events.WithLabelValues(string(e.Type)).Inc()
	switch e.Type {
	case event.Delivered, event.Deferred, event.Bounced, event.Expired, event.Throttled,
		event.Suppressed, event.AsyncBounce:
		m.outcomes.WithLabelValues(string(e.Type), m.site(e), e.Category).Inc()
	}
	switch e.Type {
	case event.Delivered:
		if e.Latency > 0 {
			m.latency.Observe(e.Latency.Seconds())
		}
	case event.Deferred, event.Bounced:
		if e.Latency > 0 {
			m.attemptD.WithLabelValues(string(e.Type)).Observe(e.Latency.Seconds())
		}
	}
	switch e.Type {
	case event.Delivered, event.Bounced, event.Expired:
		if e.Attempt > 0 {
			m.attempts.WithLabelValues(string(e.Type)).Observe(float64(e.Attempt))
		}
	}
}

// SetDepth sets the queue depth gauge for a state (e.g. "ready",
// "deferred", "held") and lane (e.g. a priority or tenant). The queue does
// not call it: the application does, from a goroutine that polls the
// queue's inspection API (queue.Queue.List or the store) periodically.
func (m *Metrics) SetDepth(state, lane string, n int) {
	m.depth.WithLabelValues(state, lane).Set(float64(n))
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.events.Describe(ch)
	m.outcomes.Describe(ch)
	m.latency.Describe(ch)
	m.attemptD.Describe(ch)
	m.attempts.Describe(ch)
	m.depth.Describe(ch)
	if m.webhook != nil {
		ch <- m.descPending
		ch <- m.descBytes
		ch <- m.descDropped
		ch <- m.descFailed
	}
	if m.fanout != nil {
		ch <- m.descSink
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.events.Collect(ch)
	m.outcomes.Collect(ch)
	m.latency.Collect(ch)
	m.attemptD.Collect(ch)
	m.attempts.Collect(ch)
	m.depth.Collect(ch)
	if m.webhook != nil {
		st := m.webhook.Stats()
		for name, n := range st.Pending {
			ch <- prometheus.MustNewConstMetric(m.descPending, prometheus.GaugeValue, float64(n), name)
		}
		ch <- prometheus.MustNewConstMetric(m.descBytes, prometheus.GaugeValue, float64(st.Bytes))
		ch <- prometheus.MustNewConstMetric(m.descDropped, prometheus.CounterValue, float64(st.Dropped))
		ch <- prometheus.MustNewConstMetric(m.descFailed, prometheus.CounterValue, float64(st.Failed))
	}
	if m.fanout != nil {
		for i, n := range m.fanout.Dropped() {
			name := strconv.Itoa(i)
			if i < len(m.fanoutNames) {
				name = m.fanoutNames[i]
			}
			ch <- prometheus.MustNewConstMetric(m.descSink, prometheus.CounterValue, float64(n), name)
		}
	}
}
