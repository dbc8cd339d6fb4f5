package server_test

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
)

// scrape reads the server's metrics in the text format and returns the
// value of each sample line, keyed by name{labels} as printed.
func scrape(t *testing.T, s *server.Server) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Metrics().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetrics(t *testing.T) {
	ctx := t.Context()
	held := make(chan string, 1)
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, OnHold: func(node string) { held <- node }})
	srv := xs.Explorer()
	nodeKey, userKey := explorertest.NewKey(t), explorertest.NewKey(t)
	nc := xs.RegisterNode(t, nodeKey)
	node := explorertest.NodeID(nodeKey)

	// A long-poll held: the gauge counts it while it waits.
	polled := make(chan error, 1)
	go func() {
		_, _, err := nc.Poll(ctx, 0)
		polled <- err
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the poll was not held")
	}
	if got := scrape(t, srv)["explorerd_longpolls_open"]; got != 1 {
		t.Fatalf("longpolls_open while one is held: %v", got)
	}
	id := xs.Reserve(t, userKey, explorertest.Volume(node, 1))
	if err := <-polled; err != nil {
		t.Fatal(err)
	}
	xs.Delete(t, userKey, id)
	xs.Delete(t, userKey, id) // a repeat appends nothing
	unmatched := do(t, raw{method: http.MethodGet, path: "/api/v2/nothing", key: userKey}.build(t, xs.URL()))
	unsigned := do(t, raw{method: http.MethodGet, path: "/api/v1/nodes", unsigned: true}.build(t, xs.URL()))
	if unmatched.status != http.StatusNotFound || unsigned.status != http.StatusUnauthorized {
		t.Fatalf("statuses %d %d, want 404 401", unmatched.status, unsigned.status)
	}

	m := scrape(t, srv)
	want := map[string]float64{
		`explorerd_longpolls_open`:                                                           0,
		`explorerd_events_appended_total`:                                                    2, // the reservation and its delete
		`explorerd_requests_total{code="201",route="POST /api/v1/nodes"}`:                    1,
		`explorerd_requests_total{code="200",route="GET /api/v1/nodes/{node}/events"}`:       1,
		`explorerd_requests_total{code="201",route="POST /api/v1/reservations"}`:             1,
		`explorerd_requests_total{code="202",route="POST /api/v1/reservations/{id}/delete"}`: 2,
		`explorerd_requests_total{code="404",route="unmatched"}`:                             1,
		`explorerd_requests_total{code="401",route="GET /api/v1/nodes"}`:                     1,
		`explorerd_store_duration_seconds_count{op="create_reservation",outcome="ok"}`:       1,
		`explorerd_store_duration_seconds_count{op="register_node",outcome="ok"}`:            1,
		`explorerd_request_duration_seconds_count{route="GET /api/v1/nodes/{node}/events"}`:  1,
	}
	for k, v := range want {
		got, ok := m[k]
		if !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if m[`explorerd_store_duration_seconds_count{op="events",outcome="ok"}`] < 2 {
		t.Errorf("events reads timed: %v, want at least 2", m[`explorerd_store_duration_seconds_count{op="events",outcome="ok"}`])
	}
}
