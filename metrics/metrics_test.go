package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

type fakeSource struct {
	recs  map[provision.State]map[provision.ReservationType]int
	depth int
	err   error
	stats provision.Stats
}

func (f *fakeSource) Records() (map[provision.State]map[provision.ReservationType]int, error) {
	return f.recs, f.err
}
func (f *fakeSource) OutboxDepth() (int, error) { return f.depth, f.err }
func (f *fakeSource) Stats() provision.Stats    { return f.stats }

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestScrape(t *testing.T) {
	src := &fakeSource{
		recs: map[provision.State]map[provision.ReservationType]int{
			provision.Deployed: {provision.VolumeReservation: 2, provision.ContainerReservation: 1},
			provision.Failed:   {provision.NetworkReservation: 1},
		},
		depth: 3,
		stats: provision.Stats{
			Used:     provision.Units{CRU: 1, MRU: 0.25, SRU: 3},
			Capacity: provision.Capacity{Total: provision.Units{CRU: 2, MRU: 24}, Reserved: provision.Units{MRU: 2.4}},
		},
	}
	m := New(src)
	m.Transition(provision.VolumeReservation, provision.Deployed)
	m.Transition(provision.VolumeReservation, provision.Deployed)
	m.Operation(provision.VolumeReservation, "provision", 20*time.Millisecond, nil)
	m.Operation(provision.ContainerReservation, "provision", time.Second, errors.New("boom"))
	m.PollError(errors.New("down"))
	m.OutboxError(provision.OutboxResult, provision.Temporary(errors.New("503")))
	m.Delivered(provision.OutboxStats)
	m.Refused(provision.OutboxResult, "digest-conflict")
	out := scrape(t, m)
	for _, want := range []string{
		`provisiond_reservations{state="deployed",type="volume"} 2`,
		`provisiond_reservations{state="deployed",type="container"} 1`,
		`provisiond_reservations{state="error",type="network"} 1`,
		`provisiond_reservations{state="accepted",type="volume"} 0`,
		`provisiond_outbox_depth 3`,
		`provisiond_used_units{unit="cru"} 1`,
		`provisiond_used_units{unit="mru"} 0.25`,
		`provisiond_used_units{unit="sru"} 3`,
		`provisiond_capacity_units{kind="total",unit="mru"} 24`,
		`provisiond_capacity_units{kind="reserved",unit="mru"} 2.4`,
		`provisiond_transitions_total{state="deployed",type="volume"} 2`,
		`provisiond_operation_duration_seconds_count{op="provision",outcome="ok",type="volume"} 1`,
		`provisiond_operation_duration_seconds_count{op="provision",outcome="error",type="container"} 1`,
		`provisiond_poll_errors_total 1`,
		`provisiond_outbox_errors_total{class="temporary",kind="result"} 1`,
		`provisiond_outbox_delivered_total{kind="stats"} 1`,
		`provisiond_outbox_refused_total{kind="result",reason="digest-conflict"} 1`,
		`provisiond_scrape_error 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(out, want+"\n") && !strings.Contains(out, want+" ") {
			t.Errorf("scrape lacks %s", want)
		}
	}
}

func TestScrapeReportsSourceFailure(t *testing.T) {
	out := scrape(t, New(&fakeSource{err: errors.New("store closed")}))
	if !strings.Contains(out, "provisiond_scrape_error 1\n") {
		t.Fatalf("a failing source was not reported:\n%s", out)
	}
}
