package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// RunFleet runs the conformance suite of server.FleetStore (heartbeats
// and owner log requests) against the stores open makes, which must
// implement it.
func RunFleet(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(*testing.T, server.Store, server.FleetStore)
	}{
		{"availability", testAvailability},
		{"availability-concurrent", testAvailabilityConcurrent},
		{"log-requests", testLogRequests},
		{"log-requests-per-user", testLogRequestsPerUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("closing the store: %v", err)
				}
			})
			fs, ok := s.(server.FleetStore)
			if !ok {
				t.Fatalf("%T is not a server.FleetStore", s)
			}
			tt.fn(t, s, fs)
		})
	}
}

// heartbeat returns f's node's signed heartbeat at at.
func (f *fixture) heartbeat(t *testing.T, boot string, booted, at time.Time, every time.Duration) *provision.Heartbeat {
	t.Helper()
	hb := &provision.Heartbeat{NodeID: f.node, BootID: boot, Booted: booted.UTC(), Created: at.UTC(), Interval: every}
	if err := hb.Sign(provision.KeySigner(f.nodeKey)); err != nil {
		t.Fatal(err)
	}
	return hb
}

func testAvailability(t *testing.T, s server.Store, fs server.FleetStore) {
	ctx := t.Context()
	f := newFixture(t, s)
	if err := fs.UpdateAvailability(ctx, "unknown-node", func(*server.Availability) error { return nil }); !errors.Is(err, server.ErrUnknownNode) {
		t.Fatalf("UpdateAvailability of an unknown node = %v, want ErrUnknownNode", err)
	}
	if m, err := fs.Availabilities(ctx, []string{f.node}); err != nil || len(m) != 0 {
		t.Fatalf("Availabilities before any heartbeat = %v, %v", m, err)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	every := time.Minute
	add := func(hb *provision.Heartbeat, now time.Time) bool {
		t.Helper()
		var reboot bool
		if err := fs.UpdateAvailability(ctx, f.node, func(a *server.Availability) error {
			reboot, _ = a.Add(hb, now)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return reboot
	}
	// Boot A at t0-10m, heartbeats every minute for an hour.
	for i := 0; i <= 60; i++ {
		at := t0.Add(time.Duration(i) * every)
		if add(f.heartbeat(t, "boot-a", t0.Add(-10*time.Minute), at, every), at) {
			t.Fatalf("heartbeat %d of one boot seen as a reboot", i)
		}
	}
	// Down for 30 minutes, then boot B: a reboot.
	booted := t0.Add(90 * time.Minute)
	at := booted.Add(30 * time.Second)
	if !add(f.heartbeat(t, "boot-b", booted, at, every), at) {
		t.Fatal("a new boot id was not seen as a reboot")
	}
	// An error of fn stores nothing.
	boom := errors.New("boom")
	if err := fs.UpdateAvailability(ctx, f.node, func(a *server.Availability) error { a.BootID = "lost"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("UpdateAvailability with a failing fn = %v", err)
	}
	m, err := fs.Availabilities(ctx, []string{f.node, "other"})
	if err != nil || len(m) != 1 || m[f.node] == nil {
		t.Fatalf("Availabilities = %v, %v", m, err)
	}
	a := m[f.node]
	if a.BootID != "boot-b" || len(a.Reboots) != 1 || !a.Reboots[0].Equal(booted) || len(a.Spans) != 2 {
		t.Fatalf("record %+v: want boot-b, one reboot at %s, two spans", a, booted)
	}
	// Covered: 61 min (t0-1m … t0+60m) + 30 s of boot B, over the window
	// from t0-1m to now = boot B's heartbeat + 1 min (within its interval).
	now := at.Add(time.Minute)
	sum := a.Summary(now)
	covered := 61*time.Minute + 30*time.Second + time.Minute
	want := 100 * float64(covered) / float64(now.Sub(t0.Add(-every)))
	if d := sum.Percent30d - want; d > 0.01 || d < -0.01 || sum.Reboots30d != 1 || sum.DownSince != nil {
		t.Fatalf("summary %+v, want %.2f %% and one reboot, up", sum, want)
	}
	// Three intervals without a heartbeat: down since then.
	late := at.Add(3*every + time.Second)
	if sum := a.Summary(late); sum.DownSince == nil || !sum.DownSince.Equal(at.Add(3*every)) {
		t.Fatalf("summary after three missed intervals: %+v", sum)
	}
}

// testAvailabilityConcurrent adds heartbeats from several goroutines: none
// is lost (the read-modify-write is one transaction).
func testAvailabilityConcurrent(t *testing.T, s server.Store, fs server.FleetStore) {
	f := newFixture(t, s)
	t0 := time.Now().UTC().Add(-time.Hour)
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		hb := f.heartbeat(t, "b", t0.Add(-time.Hour), t0.Add(time.Duration(i)*10*time.Minute/n*3), time.Second)
		wg.Go(func() {
			if err := fs.UpdateAvailability(t.Context(), f.node, func(a *server.Availability) error {
				a.Add(hb, time.Now())
				return nil
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	m, err := fs.Availabilities(t.Context(), []string{f.node})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(m[f.node].Spans); got != n {
		t.Fatalf("%d spans after %d separate heartbeats: a write was lost", got, n)
	}
}

// logRecord returns a signed request of user for reservation id on node.
func logRecord(t *testing.T, f *fixture, id string, created time.Time) *server.LogRecord {
	t.Helper()
	q := explorer.LogRequest{ID: id, NodeID: f.node, UserID: explorertest.UserID(f.user), Tail: 100}
	if err := q.Sign(f.user, created); err != nil {
		t.Fatal(err)
	}
	return &server.LogRecord{Name: q.Name(), Request: q, Expires: q.Created.Add(explorer.LogTTL)}
}

func testLogRequests(t *testing.T, s server.Store, fs server.FleetStore) {
	ctx := t.Context()
	f := newFixture(t, s)
	other := newFixture(t, s)
	now := time.Now().UTC()
	a := logRecord(t, f, "aaaa", now.Add(-time.Second))
	b := logRecord(t, f, "bbbb", now)
	old := logRecord(t, f, "cccc", now.Add(-explorer.LogRequestTTL-time.Second))
	for _, rec := range []*server.LogRecord{b, a, old} {
		if err := fs.PutLogRequest(ctx, rec, 0, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := fs.PutLogRequest(ctx, a, 0, now); !errors.Is(err, server.ErrDuplicate) {
		t.Fatalf("the same request again = %v, want ErrDuplicate", err)
	}
	pending, err := fs.PendingLogRequests(ctx, f.node, now, 10)
	if err != nil || len(pending) != 2 || pending[0].Name != a.Name || pending[1].Name != b.Name {
		t.Fatalf("pending = %v, %v: want a then b (the old one no longer honoured)", names(pending), err)
	}
	if p, _ := fs.PendingLogRequests(ctx, f.node, now, 1); len(p) != 1 {
		t.Fatalf("pending with limit 1 = %d", len(p))
	}
	if p, _ := fs.PendingLogRequests(ctx, other.node, now, 10); len(p) != 0 {
		t.Fatalf("another node sees %d requests", len(p))
	}
	reply := &explorer.LogReply{Request: a.Name, Sealed: "c2VhbGVk"}
	if err := fs.AnswerLogRequest(ctx, other.node, a.Name, reply, now); !errors.Is(err, server.ErrForbidden) {
		t.Fatalf("another node's answer = %v, want ErrForbidden", err)
	}
	if err := fs.AnswerLogRequest(ctx, f.node, "nope", reply, now); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("answer to an unknown request = %v, want ErrNotFound", err)
	}
	if err := fs.AnswerLogRequest(ctx, f.node, a.Name, reply, now); err != nil {
		t.Fatal(err)
	}
	// A second answer keeps the first.
	if err := fs.AnswerLogRequest(ctx, f.node, a.Name, &explorer.LogReply{Request: a.Name, Error: "later"}, now); err != nil {
		t.Fatal(err)
	}
	got, err := fs.LogRecord(ctx, a.Name, now)
	if err != nil || got.Answered == nil || got.Reply == nil || got.Reply.Sealed != "c2VhbGVk" || got.Request.Signature != a.Request.Signature {
		t.Fatalf("record after the answer = %+v, %v", got, err)
	}
	if pending, _ := fs.PendingLogRequests(ctx, f.node, now, 10); len(pending) != 1 || pending[0].Name != b.Name {
		t.Fatalf("pending after the answer = %v", names(pending))
	}
	// Expiry: after LogTTL the records are gone.
	later := now.Add(explorer.LogTTL + time.Second)
	if _, err := fs.LogRecord(ctx, a.Name, later); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("an expired record = %v, want ErrNotFound", err)
	}
	n, err := fs.ExpireLogs(ctx, later)
	if err != nil || n != 3 {
		t.Fatalf("ExpireLogs = %d, %v, want 3", n, err)
	}
	if _, err := fs.LogRecord(ctx, b.Name, now); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("an expired-away record = %v, want ErrNotFound", err)
	}
}

// testLogRequestsPerUser fills one user's count from many goroutines: the
// count and the insert are atomic, and another user keeps their own.
func testLogRequestsPerUser(t *testing.T, s server.Store, fs server.FleetStore) {
	f := newFixture(t, s)
	now := time.Now().UTC()
	const limit = 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored := 0
	for i := range 12 {
		rec := logRecord(t, f, fmt.Sprintf("id%02d", i), now)
		wg.Go(func() {
			err := fs.PutLogRequest(t.Context(), rec, limit, now)
			switch {
			case err == nil:
				mu.Lock()
				stored++
				mu.Unlock()
			case !errors.Is(err, server.ErrTooMany):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if stored != limit {
		t.Fatalf("%d requests stored, the limit is %d", stored, limit)
	}
	g := newFixture(t, s)
	if err := fs.PutLogRequest(t.Context(), logRecord(t, g, "mine", now), limit, now); err != nil {
		t.Fatalf("another user's request: %v", err)
	}
	// Once the first ones expire, the user may ask again.
	if err := fs.PutLogRequest(t.Context(), logRecord(t, f, "again", now), limit, now.Add(explorer.LogTTL+time.Second)); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

func names(recs []*server.LogRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Request.ID)
	}
	return out
}
