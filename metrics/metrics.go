// Package metrics exposes provisiond's Prometheus metrics: reservations by
// state and type, operation durations, poll and outbox errors, outbox depth,
// and used and capacity units. Gauges are read from the daemon at scrape
// time (Source); events are counted as the engine reports them.
package metrics

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeprov/provisiond/internal/httpserve"
	"github.com/edgeprov/provisiond/provision"
)

const namespace = "provisiond"

// Source is what the gauges are read from at scrape time.
type Source interface {
	// Records counts records per state and type.
	Records() (map[provision.State]map[provision.ReservationType]int, error)
	// OutboxDepth is the number of entries waiting for the explorer.
	OutboxDepth() (int, error)
	// Stats is the latest used and capacity figures.
	Stats() provision.Stats
}

// Metrics holds the collectors and records engine events.
type Metrics struct {
	reg          *prometheus.Registry
	transitions  *prometheus.CounterVec
	operations   *prometheus.HistogramVec
	pollErrors   prometheus.Counter
	outboxErrors *prometheus.CounterVec
	delivered    *prometheus.CounterVec
	refused      *prometheus.CounterVec
}

// New registers the collectors in a fresh registry (with the Go and
// process collectors) and returns the Metrics.
func New(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "transitions_total",
			Help: "State transitions of reservations, by type and new state.",
		}, []string{"type", "state"}),
		operations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "operation_duration_seconds",
			Help:    "Duration of provision, decommission and inspect operations, by type, operation and outcome.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"type", "op", "outcome"}),
		pollErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "poll_errors_total",
			Help: "Failed polls of the explorer.",
		}),
		outboxErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "outbox_errors_total",
			Help: "Failed deliveries of outbox entries, by kind and class (temporary, permanent).",
		}, []string{"kind", "class"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "outbox_delivered_total",
			Help: "Outbox entries the explorer acknowledged, by kind.",
		}, []string{"kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "outbox_refused_total",
			Help: "Outbox entries the explorer refused for good and the node dropped, by kind and reason (see provisiond cache show).",
		}, []string{"kind", "reason"}),
	}
	m.reg.MustRegister(m.transitions, m.operations, m.pollErrors, m.outboxErrors, m.delivered, m.refused,
		&gauges{src: src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry the collectors are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Transition counts a reservation entering state to.
func (m *Metrics) Transition(typ provision.ReservationType, to provision.State) {
	m.transitions.WithLabelValues(string(typ), string(to)).Inc()
}

// Operation observes the duration of an operation (provision,
// decommission, inspect) and whether it failed.
func (m *Metrics) Operation(typ provision.ReservationType, op string, d time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.operations.WithLabelValues(string(typ), op, outcome).Observe(d.Seconds())
}

// PollError counts a failed poll of the explorer.
func (m *Metrics) PollError(error) { m.pollErrors.Inc() }

// OutboxError counts a failed delivery.
func (m *Metrics) OutboxError(kind provision.OutboxKind, err error) {
	class := "permanent"
	if provision.IsTemporary(err) {
		class = "temporary"
	}
	m.outboxErrors.WithLabelValues(string(kind), class).Inc()
}

// Delivered counts an acknowledged outbox entry.
func (m *Metrics) Delivered(kind provision.OutboxKind) {
	m.delivered.WithLabelValues(string(kind)).Inc()
}

// Refused counts an outbox entry the explorer refused for good.
func (m *Metrics) Refused(kind provision.OutboxKind, reason string) {
	m.refused.WithLabelValues(string(kind), reason).Inc()
}

// Serve serves /metrics on ln until ctx ends.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return httpserve.Serve(ctx, ln, mux)
}

var (
	recordsDesc = prometheus.NewDesc(namespace+"_reservations", "Reservations on this node, by state and type.", []string{"state", "type"}, nil)
	depthDesc   = prometheus.NewDesc(namespace+"_outbox_depth", "Results and stats waiting for the explorer.", nil, nil)
	usedDesc    = prometheus.NewDesc(namespace+"_used_units", "Resource units held by active reservations (cru in cores, others in GiB).", []string{"unit"}, nil)
	capDesc     = prometheus.NewDesc(namespace+"_capacity_units", "Resource units of the node (total and system reserve).", []string{"unit", "kind"}, nil)
	scrapeDesc  = prometheus.NewDesc(namespace+"_scrape_error", "1 when reading the daemon's state for this scrape failed.", nil, nil)
)

// gauges reads the daemon's figures at scrape time.
type gauges struct{ src Source }

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{recordsDesc, depthDesc, usedDesc, capDesc, scrapeDesc} {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	failed := 0.0
	if recs, err := g.src.Records(); err == nil {
		for _, st := range provision.States {
			for _, t := range provision.Types {
				ch <- prometheus.MustNewConstMetric(recordsDesc, prometheus.GaugeValue, float64(recs[st][t]), string(st), string(t))
			}
		}
	} else {
		failed = 1
	}
	if d, err := g.src.OutboxDepth(); err == nil {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(d))
	} else {
		failed = 1
	}
	s := g.src.Stats()
	for _, u := range []struct {
		name                  string
		used, total, reserved float64
	}{
		{"cru", float64(s.Used.CRU), float64(s.Capacity.Total.CRU), float64(s.Capacity.Reserved.CRU)},
		{"mru", s.Used.MRU, s.Capacity.Total.MRU, s.Capacity.Reserved.MRU},
		{"sru", s.Used.SRU, s.Capacity.Total.SRU, s.Capacity.Reserved.SRU},
		{"hru", s.Used.HRU, s.Capacity.Total.HRU, s.Capacity.Reserved.HRU},
	} {
		ch <- prometheus.MustNewConstMetric(usedDesc, prometheus.GaugeValue, u.used, u.name)
		ch <- prometheus.MustNewConstMetric(capDesc, prometheus.GaugeValue, u.total, u.name, "total")
		ch <- prometheus.MustNewConstMetric(capDesc, prometheus.GaugeValue, u.reserved, u.name, "reserved")
	}
	ch <- prometheus.MustNewConstMetric(scrapeDesc, prometheus.GaugeValue, failed)
}
