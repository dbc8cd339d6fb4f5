package server_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/ui"
	"github.com/edgeprov/provisiond/provision"
)

// fleet is an explorer with three nodes (one up with workloads, one that
// registered without reporting, one silent for ten minutes: down) and the
// reservations of one user on the first, in every state.
type fleet struct {
	xs      *explorertest.Server
	up, old string
	upKey   ed25519.PrivateKey
	user    ed25519.PrivateKey
	ids     map[string]string // what the reservation shows → ID
}

func newFleet(t *testing.T, cfg server.Config) *fleet {
	t.Helper()
	var offset atomic.Int64 // the server's clock, from the real one
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	cfg.MaxSkew = time.Hour
	cfg.NoSync = true
	f := &fleet{xs: explorertest.NewWithConfig(t, cfg), user: explorertest.NewKey(t), ids: map[string]string{}}
	ctx := t.Context()

	oldKey := explorertest.NewKey(t)
	offset.Store(int64(-10 * time.Minute))
	oc := f.xs.RegisterNode(t, oldKey)
	if err := oc.ReportCapacity(ctx, provision.Capacity{Total: provision.Units{CRU: 4, MRU: 15.5, SRU: 240}}, "v0.9.0"); err != nil {
		t.Fatal(err)
	}
	offset.Store(0)
	f.old = explorertest.NodeID(oldKey)
	f.xs.RegisterNode(t, explorertest.NewKey(t)) // registered, nothing reported

	f.upKey = explorertest.NewKey(t)
	f.up = explorertest.NodeID(f.upKey)
	nc := f.xs.RegisterNode(t, f.upKey)
	capacity := provision.Capacity{Total: provision.Units{CRU: 8, MRU: 31.25, SRU: 465.5, HRU: 1800}, Reserved: provision.Units{CRU: 1, MRU: 2, SRU: 20}}
	if err := nc.ReportCapacity(ctx, capacity, "v1.0.0"); err != nil {
		t.Fatal(err)
	}
	stats := &provision.Stats{Used: provision.Units{CRU: 2, MRU: 4.5, SRU: 61, HRU: 100}, Capacity: capacity,
		Workloads: map[provision.ReservationType]uint64{provision.VolumeReservation: 3, provision.ContainerReservation: 1}, Updated: time.Now().UTC()}
	if err := nc.UpdateStats(ctx, f.up, stats); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"ok", "error", "delivered", "deleting"} {
		r := explorertest.Volume(f.up, int64(i+1))
		r.Created = time.Now().Add(-time.Duration(40-10*i) * time.Minute).UTC()
		f.ids[name] = f.xs.Reserve(t, f.user, r)
	}
	evs, next, err := nc.Poll(ctx, 0)
	if err != nil || len(evs) != 4 {
		t.Fatalf("poll: %v, %d", err, len(evs))
	}
	pctx, cancel := context.WithCancel(ctx)
	go nc.Poll(pctx, next) // past the events: delivered
	f.awaitDelivered(t, f.ids["delivered"])
	cancel()
	f.answer(t, nc, f.ids["ok"], provision.StateOk, "", time.Now())
	f.answer(t, nc, f.ids["error"], provision.StateError, "image digest mismatch", time.Now())
	f.answer(t, nc, f.ids["deleting"], provision.StateOk, "", time.Now())
	f.xs.Delete(t, f.user, f.ids["deleting"])
	f.ids["pending"] = f.xs.Reserve(t, f.user, explorertest.Volume(f.up, 9))
	return f
}

func (f *fleet) awaitDelivered(t *testing.T, id string) {
	t.Helper()
	uc := f.xs.UserClient(f.user)
	r, err := uc.WaitReservation(t.Context(), id, "", 0)
	for err == nil && r.Delivered == nil {
		r, err = uc.WaitReservation(t.Context(), id, explorer.ChangeToken(r), 10*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fleet) answer(t *testing.T, nc *explorer.Client, id string, state provision.ResultState, msg string, at time.Time) {
	t.Helper()
	r := f.xs.Reservation(t, id)
	res := &provision.Result{Type: r.Type, ID: id, NodeID: f.up, Digest: r.Digest(), Created: at.UTC(), State: state, Message: msg}
	if err := res.Sign(provision.KeySigner(f.upKey)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Feedback(t.Context(), f.up, res); err != nil {
		t.Fatal(err)
	}
}

// get fetches a page of the explorer with a plain browser-like request.
func (f *fleet) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(f.xs.URL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func (f *fleet) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, body := f.get(t, path)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%s: %s %s: %s", path, resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// figures is how a page writes a unit: total / system / reserved / free.
func figures(u ui.UnitFigures) string {
	n := func(v float64) string { return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".") }
	return n(u.Total) + " / " + n(u.System) + " / " + n(u.Reserved) + " / " + n(u.Free)
}

// apiUnits returns node's figures as the API shows them (GET
// /api/v1/nodes/{node}): capacity and reserve from the stats, used as
// reserved.
func apiUnits(t *testing.T, f *fleet, node string) ui.NodeUnits {
	t.Helper()
	info, err := f.xs.UserClient(f.user).Node(t.Context(), node)
	if err != nil {
		t.Fatal(err)
	}
	if info.Stats == nil {
		t.Fatalf("node %s has no stats", node)
	}
	return ui.FromUnits(info.Stats.Capacity.Total, info.Stats.Capacity.Reserved, info.Stats.Used)
}

func TestUIJSONTwinsShowTheAPIFigures(t *testing.T) {
	f := newFleet(t, server.Config{})
	var fp ui.FleetPage
	f.getJSON(t, "/ui/?format=json", &fp)
	if len(fp.Nodes) != 3 || fp.Up != 1 || fp.Down != 1 || fp.Unreported != 1 {
		t.Fatalf("fleet: %d nodes, %d up, %d down, %d unreported; want 3, 1, 1, 1", len(fp.Nodes), fp.Up, fp.Down, fp.Unreported)
	}
	want := apiUnits(t, f, f.up)
	for _, n := range fp.Nodes {
		switch n.NodeID {
		case f.up:
			if n.Status != ui.StatusUp || n.Units != want {
				t.Fatalf("up node: %s %+v, want up %+v", n.Status, n.Units, want)
			}
			if n.Units.CRU.Free != 5 || n.Units.MRU.Free != 24.75 {
				t.Fatalf("free CRU %v MRU %v, want 5 and 24.75", n.Units.CRU.Free, n.Units.MRU.Free)
			}
		case f.old:
			if n.Status != ui.StatusDown || n.Units.CRU.Total != 4 {
				t.Fatalf("silent node: %s %+v", n.Status, n.Units)
			}
		default:
			if n.Status != ui.StatusUnreported {
				t.Fatalf("registered-only node: %s", n.Status)
			}
		}
	}
	if fp.Totals.CRU.Total != 12 {
		t.Fatalf("total CRU %v, want 12", fp.Totals.CRU.Total)
	}

	var np ui.NodePage
	f.getJSON(t, "/ui/nodes/"+f.up+"?format=json", &np)
	states := map[string]string{}
	for _, r := range np.Reservations {
		states[r.ID] = r.State
	}
	for what, want := range map[string]string{"ok": "ok", "error": "error", "delivered": ui.StateDelivered, "deleting": ui.StateDeleting, "pending": ui.StatePending} {
		if got := states[f.ids[what]]; got != want {
			t.Fatalf("reservation %q is %q on the node page, want %q", what, got, want)
		}
	}
	if len(np.Results) != 3 || !np.Results[0].At.Before(np.Results[2].At) {
		t.Fatalf("results over time: %+v", np.Results)
	}
	if np.Reservations[0].ID != f.ids["pending"] {
		t.Fatalf("first listed %s, want the last submitted", np.Reservations[0].ID)
	}

	var rp ui.ReservationPage
	f.getJSON(t, "/ui/reservations/"+f.ids["error"]+"?format=json", &rp)
	api := f.xs.Reservation(t, f.ids["error"])
	if !rp.Verified || rp.State != "error" || rp.Reservation.Result.Signature != api.Result.Signature || len(rp.History) != 3 {
		t.Fatalf("reservation page: verified %v (%s), state %s, %d steps", rp.Verified, rp.Problem, rp.State, len(rp.History))
	}
}

func TestUIPagesRefuseAndLimit(t *testing.T) {
	f := newFleet(t, server.Config{UI: ui.Options{Rate: 1, Burst: 5}})
	resp, body := f.get(t, "/ui/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, f.up) {
		t.Fatalf("fleet page: %s", resp.Status)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Fatalf("CSP %q", csp)
	}
	if strings.Contains(body, "<script") {
		t.Fatal("a page carries a script")
	}
	for _, path := range []string{"/ui/nodes/nope", "/ui/reservations/nope", "/ui/nothing"} {
		if resp, _ := f.get(t, path); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: %s, want 404", path, resp.Status)
		}
	}
	// Four pages of the burst of five are spent: the fifth passes, the
	// next ones are refused (one token a second comes back).
	for i, want := range []int{http.StatusOK, http.StatusTooManyRequests, http.StatusTooManyRequests} {
		resp, _ = f.get(t, "/ui/")
		if resp.StatusCode != want || (want == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "") {
			t.Fatalf("page %d of a burst of 5: %s, want %d", 5+i, resp.Status, want)
		}
	}
}

func TestUIOff(t *testing.T) {
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, NoUI: true})
	resp, err := http.Get(xs.URL() + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/ui/ with NoUI: %s", resp.Status)
	}
}
