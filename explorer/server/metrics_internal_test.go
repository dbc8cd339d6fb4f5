package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestStatusWriterKeepsTheResponseController checks that a handler behind
// the metrics still reaches the connection through http.ResponseController
// (the wrapper unwraps) and through http.Flusher, and that the status it
// answered is counted.
func TestStatusWriterKeepsTheResponseController(t *testing.T) {
	var deadlineErr error
	var flusher bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /teapot", func(w http.ResponseWriter, r *http.Request) {
		deadlineErr = http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Minute))
		f, ok := w.(http.Flusher)
		if flusher = ok; ok {
			f.Flush()
		}
		w.WriteHeader(http.StatusTeapot) // after the flush: 200 went out
	})
	m := newMetrics()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.observe(mux, w, r) }))
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/teapot")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if deadlineErr != nil || !flusher || resp.StatusCode != http.StatusOK {
		t.Fatalf("deadline %v, flusher %v, status %d", deadlineErr, flusher, resp.StatusCode)
	}
	// The flush sent the answer before the handler returned, and the
	// request is counted when it returns: wait for that, boundedly.
	deadline := time.Now().Add(10 * time.Second)
	for counted(t, m, "GET /teapot", "200") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("requests counted for GET /teapot 200: %v", counted(t, m, "GET /teapot", "200"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counted returns explorerd_requests_total{route,code} as gathered.
func counted(t *testing.T, m *metrics, route, code string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "explorerd_requests_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				return mt.GetCounter().GetValue()
			}
		}
	}
	return 0
}
