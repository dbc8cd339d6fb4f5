package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// metricsNamespace prefixes explorerd's metric names.
const metricsNamespace = "explorerd"

// routeUnmatched labels the requests no API route matched.
const routeUnmatched = "unmatched"

// metrics are explorerd's Prometheus collectors, in a registry of the
// server's own.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	longpolls prometheus.Gauge
	events    prometheus.Counter
	store     *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "requests_total",
			Help: "Requests answered, by route pattern (\"unmatched\" when none matched) and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "request_duration_seconds",
			Help:    "Time to answer a request, by route pattern; a long-poll's includes its hold.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 15, 30, 60},
		}, []string{"route"}),
		longpolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "longpolls_open",
			Help: "Long-polls of nodes held right now, waiting for an event.",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "events_appended_total",
			Help: "Events appended to the nodes' streams (new reservations, owner-signed deletes) through this process.",
		}),
		store: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "store_duration_seconds",
			Help:    "Latency of the database operations, by operation and outcome (ok, error).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}, []string{"op", "outcome"}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.longpolls, m.events, m.store,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Metrics returns the handler of explorerd's Prometheus metrics:
// explorerd_requests_total{route,code},
// explorerd_request_duration_seconds{route}, explorerd_longpolls_open,
// explorerd_events_appended_total,
// explorerd_store_duration_seconds{op,outcome}, and the Go runtime's and
// process's collectors. explorerd serves it on a listener of its own
// (--metrics-listen), not on the API's.
func (s *Server) Metrics() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

// Registry returns the registry of the server's metrics.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the wrapped writer, for http.ResponseController
// (deadlines, flushes) of handlers behind the metrics.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends what is buffered (http.Flusher), when the wrapped writer can.
func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// observe serves r through the mux and counts it by the pattern the mux
// matched (r.Pattern, set by the mux) and the status answered.
func (m *metrics) observe(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	mux.ServeHTTP(sw, r)
	route := r.Pattern
	if route == "" || route == "/" {
		route = routeUnmatched
	}
	code := sw.code
	if code == 0 {
		code = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

// timedStore is the server's Store with each operation's latency measured
// and the appended events counted.
type timedStore struct {
	Store
	m *metrics
}

// time records the latency of op since start.
func (t *timedStore) time(op string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	t.m.store.WithLabelValues(op, outcome).Observe(time.Since(start).Seconds())
}

func (t *timedStore) RegisterNode(ctx context.Context, id string, now time.Time) (created bool, err error) {
	defer func(start time.Time) { t.time("register_node", start, err) }(time.Now())
	return t.Store.RegisterNode(ctx, id, now)
}

func (t *timedStore) Node(ctx context.Context, id string) (rec *NodeRecord, seq uint64, err error) {
	defer func(start time.Time) { t.time("node", start, err) }(time.Now())
	return t.Store.Node(ctx, id)
}

func (t *timedStore) UpdateNode(ctx context.Context, id string, fn func(*NodeRecord)) (err error) {
	defer func(start time.Time) { t.time("update_node", start, err) }(time.Now())
	return t.Store.UpdateNode(ctx, id, fn)
}

func (t *timedStore) CreateReservation(ctx context.Context, r *provision.Reservation) (seq uint64, err error) {
	defer func(start time.Time) { t.time("create_reservation", start, err) }(time.Now())
	seq, err = t.Store.CreateReservation(ctx, r)
	if err == nil {
		t.m.events.Inc()
	}
	return seq, err
}

func (t *timedStore) CreateReservationWithin(ctx context.Context, r *provision.Reservation, now time.Time, q Quota) (seq uint64, err error) {
	defer func(start time.Time) { t.time("create_reservation", start, err) }(time.Now())
	seq, err = t.Store.CreateReservationWithin(ctx, r, now, q)
	if err == nil {
		t.m.events.Inc()
	}
	return seq, err
}

func (t *timedStore) ReservationsPage(ctx context.Context, user string, p Page) (list []*provision.Reservation, next Cursor, err error) {
	defer func(start time.Time) { t.time("reservations_page", start, err) }(time.Now())
	return t.Store.ReservationsPage(ctx, user, p)
}

func (t *timedStore) MarkDelivered(ctx context.Context, node string, upTo uint64, now time.Time) (ds []Delivery, err error) {
	defer func(start time.Time) { t.time("mark_delivered", start, err) }(time.Now())
	return t.Store.MarkDelivered(ctx, node, upTo, now)
}

func (t *timedStore) NodeReservations(ctx context.Context, node string, limit int) (list []*provision.Reservation, err error) {
	defer func(start time.Time) { t.time("node_reservations", start, err) }(time.Now())
	return t.Store.NodeReservations(ctx, node, limit)
}

func (t *timedStore) Reservation(ctx context.Context, id string) (r *provision.Reservation, err error) {
	defer func(start time.Time) { t.time("reservation", start, err) }(time.Now())
	return t.Store.Reservation(ctx, id)
}

func (t *timedStore) ReservationsOf(ctx context.Context, user string) (list []*provision.Reservation, err error) {
	defer func(start time.Time) { t.time("reservations_of", start, err) }(time.Now())
	return t.Store.ReservationsOf(ctx, user)
}

func (t *timedStore) MarkDelete(ctx context.Context, id string, check func(*provision.Reservation) error) (r *provision.Reservation, seq uint64, err error) {
	defer func(start time.Time) { t.time("mark_delete", start, err) }(time.Now())
	r, seq, err = t.Store.MarkDelete(ctx, id, check)
	if err == nil && seq > 0 {
		t.m.events.Inc()
	}
	return r, seq, err
}

func (t *timedStore) UpdateReservationWithin(ctx context.Context, id string, next *provision.Reservation, now time.Time, q Quota, check func(*provision.Reservation) error) (seq uint64, err error) {
	defer func(start time.Time) { t.time("update_reservation", start, err) }(time.Now())
	seq, err = t.Store.UpdateReservationWithin(ctx, id, next, now, q, check)
	if err == nil {
		t.m.events.Inc()
	}
	return seq, err
}

func (t *timedStore) UpdateReservation(ctx context.Context, id string, next *provision.Reservation, check func(*provision.Reservation) error) (seq uint64, err error) {
	defer func(start time.Time) { t.time("update_reservation", start, err) }(time.Now())
	seq, err = t.Store.UpdateReservation(ctx, id, next, check)
	if err == nil {
		t.m.events.Inc()
	}
	return seq, err
}

func (t *timedStore) PutResults(ctx context.Context, rs []*provision.Result, check func(i int, r *provision.Reservation) error) (stored []bool, errs []error, err error) {
	defer func(start time.Time) { t.time("put_results", start, err) }(time.Now())
	return t.Store.PutResults(ctx, rs, check)
}

func (t *timedStore) Events(ctx context.Context, node string, from uint64, limit int) (evs []explorer.WireEvent, next uint64, err error) {
	defer func(start time.Time) { t.time("events", start, err) }(time.Now())
	return t.Store.Events(ctx, node, from, limit)
}

func (t *timedStore) State(ctx context.Context, node string, now time.Time) (st *explorer.NodeState, err error) {
	defer func(start time.Time) { t.time("state", start, err) }(time.Now())
	return t.Store.State(ctx, node, now)
}

func (t *timedStore) Nodes(ctx context.Context, q NodeQuery) (list []*NodeRecord, err error) {
	defer func(start time.Time) { t.time("nodes", start, err) }(time.Now())
	return t.Store.Nodes(ctx, q)
}

func (t *timedStore) TouchNodes(ctx context.Context, seen map[string]time.Time) (err error) {
	defer func(start time.Time) { t.time("touch_nodes", start, err) }(time.Now())
	return t.Store.TouchNodes(ctx, seen)
}

func (t *timedStore) InjectEvent(ctx context.Context, node string, raw []byte) (seq uint64, err error) {
	defer func(start time.Time) { t.time("inject_event", start, err) }(time.Now())
	seq, err = t.Store.InjectEvent(ctx, node, raw)
	if err == nil {
		t.m.events.Inc()
	}
	return seq, err
}
