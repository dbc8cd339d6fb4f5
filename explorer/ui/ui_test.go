package ui

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

func TestBarGeometry(t *testing.T) {
	bar := funcs["bar"].(func(UnitFigures) bar)
	tests := []struct {
		name              string
		fig               UnitFigures
		sysW, resW, freeW float64
	}{
		{"empty-node", UnitFigures{}, 0, 0, 0},
		{"proportional", UnitFigures{Total: 8, System: 1, Reserved: 2, Free: 5}, barWidth / 8.0, 2 * barWidth / 8.0, 5 * barWidth / 8.0},
		{"all-reserved", UnitFigures{Total: 4, Reserved: 4}, 0, barWidth, 0},
		{"over-reserved-clipped", UnitFigures{Total: 4, System: 1, Reserved: 9}, barWidth / 4.0, 3 * barWidth / 4.0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bar(tt.fig)
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
			if !near(b.SysW, tt.sysW) || !near(b.ResW, tt.resW) || !near(b.FreeW, tt.freeW) {
				t.Fatalf("widths %v %v %v, want %v %v %v", b.SysW, b.ResW, b.FreeW, tt.sysW, tt.resW, tt.freeW)
			}
			if b.SysW+b.ResW+b.FreeW > barWidth+1e-9 || !near(b.ResX, b.SysW) || !near(b.FreeX, b.SysW+b.ResW) {
				t.Fatalf("segments overlap or overflow: %+v", b)
			}
		})
	}
}

func TestTimelinePlacesResultsInTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	v := timeline([]ResultPoint{
		{ID: "a", State: provision.StateOk, At: t0},
		{ID: "b", State: provision.StateError, At: t0.Add(time.Minute)},
		{ID: "c", State: provision.StateDeleted, At: t0.Add(2 * time.Minute)},
	}, t0.Add(2*time.Minute))
	if len(v.Dots) != 3 {
		t.Fatalf("%d dots", len(v.Dots))
	}
	if !(v.Dots[0].X < v.Dots[1].X && v.Dots[1].X < v.Dots[2].X) || v.Dots[0].Y == v.Dots[1].Y {
		t.Fatalf("dots not in time order or not on their state's row: %+v", v.Dots)
	}
	if mid := (v.Dots[0].X + v.Dots[2].X) / 2; math.Abs(v.Dots[1].X-mid) > 1e-9 {
		t.Fatalf("the middle result is at %v, want %v", v.Dots[1].X, mid)
	}
	if empty := timeline(nil, t0); len(empty.Dots) != 0 || empty.From != "" {
		t.Fatalf("no results: %+v", empty)
	}
}

// fakeSource serves fixed pages, or err.
type fakeSource struct{ err error }

func (f fakeSource) Fleet(context.Context, string) (*FleetPage, error) {
	return &FleetPage{Nodes: []NodeSummary{{NodeID: "n1", Status: StatusUp}}}, f.err
}

func (f fakeSource) Node(_ context.Context, id string) (*NodePage, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &NodePage{Node: NodeSummary{NodeID: id}}, nil
}

func (f fakeSource) Reservation(_ context.Context, id string) (*ReservationPage, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &ReservationPage{Reservation: &provision.Reservation{ID: id}, State: StatePending}, nil
}

func TestHandlerAnswers(t *testing.T) {
	get := func(h http.Handler, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, path, nil)
		h.ServeHTTP(w, r)
		return w
	}
	ok := New(fakeSource{}, Options{Burst: 100})
	tests := []struct {
		name   string
		h      http.Handler
		path   string
		status int
		ctype  string
		body   string
	}{
		{"fleet-html", ok, "/ui/", 200, "text/html; charset=utf-8", `data-node="n1"`},
		{"fleet-json", ok, "/ui/?format=json", 200, "application/json", `"node_id": "n1"`},
		{"node-json", ok, "/ui/nodes/x1?format=json", 200, "application/json", `"node_id": "x1"`},
		{"reservation-html", ok, "/ui/reservations/r1", 200, "text/html; charset=utf-8", "Reservation <span class=\"id\">r1"},
		{"style", ok, "/ui/style.css", 200, "text/css; charset=utf-8", "--free"},
		{"no-page", ok, "/ui/other", 404, "text/html; charset=utf-8", "no page"},
		{"long-cursor", ok, "/ui/?after=" + strings.Repeat("x", 200), 400, "text/html; charset=utf-8", "longer"},
		{"not-found", New(fakeSource{err: ErrNotFound}, Options{}), "/ui/nodes/x?format=json", 404, "application/json", `"status":404`},
		{"store-failure-hidden", New(fakeSource{err: errors.New("db secret path")}, Options{}), "/ui/reservations/x", 500, "text/html; charset=utf-8", "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := get(tt.h, tt.path)
			if w.Code != tt.status || w.Header().Get("Content-Type") != tt.ctype || !strings.Contains(w.Body.String(), tt.body) {
				t.Fatalf("%d %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body.String())
			}
			if strings.Contains(w.Body.String(), "secret") {
				t.Fatal("an internal error leaked to the page")
			}
			if w.Header().Get("Content-Security-Policy") == "" {
				t.Fatal("no CSP")
			}
		})
	}
}

func TestRateLimitPerClientAndBounded(t *testing.T) {
	h := New(fakeSource{}, Options{Rate: 0.001, Burst: 2, MaxClients: 2})
	status := func(addr string) int {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/ui/?format=json", nil)
		r.RemoteAddr = addr
		h.ServeHTTP(w, r)
		return w.Code
	}
	for i, want := range []int{200, 200, 429} {
		if got := status("10.0.0.1:1000"); got != want {
			t.Fatalf("request %d of a: %d, want %d", i, got, want)
		}
	}
	if got := status("10.0.0.2:2000"); got != 200 {
		t.Fatalf("another address was refused: %d", got)
	}
	if got := status("10.0.0.1:1001"); got != 429 {
		t.Fatalf("a new port of the same address got a fresh budget: %d", got)
	}
	status("10.0.0.3:3000") // the third address: the table forgets the first two
	if len(h.clients) > 2 {
		t.Fatalf("%d clients remembered, at most 2", len(h.clients))
	}
}

func TestWorkloadCounts(t *testing.T) {
	workloads := funcs["workloads"].(func(map[provision.ReservationType]uint64) string)
	for _, tt := range []struct {
		in   map[provision.ReservationType]uint64
		want string
	}{
		{nil, "—"},
		{map[provision.ReservationType]uint64{provision.VolumeReservation: 3, provision.ContainerReservation: 1}, "1 container, 3 volumes"},
		{map[provision.ReservationType]uint64{provision.NetworkReservation: 12, provision.ContainerReservation: 2}, "2 containers, 12 networks"},
	} {
		if got := workloads(tt.in); got != tt.want {
			t.Errorf("workloads(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
