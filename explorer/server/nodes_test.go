package server_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// clock is a settable clock shared by the server and its clients, so
// that request timestamps move with it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestListNodes(t *testing.T) {
	ctx := t.Context()
	clk := &clock{t: time.Now().UTC().Truncate(time.Millisecond)}
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, Now: clk.now})
	opts := explorertest.ClientOptions()
	opts.Now = clk.now
	u := func(cru uint64, mru, sru, hru float64) provision.Units {
		return provision.Units{CRU: cru, MRU: mru, SRU: sru, HRU: hru}
	}
	register := func() (*explorer.Client, string) {
		key := explorertest.NewKey(t)
		c := explorer.NewClient(xs.URL(), key, opts)
		if err := c.Register(ctx); err != nil {
			t.Fatal(err)
		}
		return c, explorertest.NodeID(key)
	}
	a, aID := register()
	capA := provision.Capacity{Total: u(8, 32, 500, 0), Reserved: u(0, 4, 0, 0)}
	if err := a.ReportCapacity(ctx, capA, "v1.2.3-4-gabcdef"); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateStats(ctx, aID, &provision.Stats{Used: u(2, 8, 100, 0), Capacity: capA,
		Workloads: map[provision.ReservationType]uint64{provision.ContainerReservation: 2}, Updated: clk.now()}); err != nil {
		t.Fatal(err)
	}
	b, _ := register()
	if err := b.ReportCapacity(ctx, provision.Capacity{Total: u(4, 16, 100, 1000), Reserved: u(1, 2, 0, 0)}, ""); err != nil {
		t.Fatal(err)
	}
	_, cID := register()

	userKey := explorertest.NewKey(t)
	user := explorer.NewUserClient(xs.URL(), userKey, opts)
	list := func(f explorer.NodeFilter) *explorer.NodesReply {
		t.Helper()
		reply, err := user.ListNodes(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return reply
	}
	statuses := func(r *explorer.NodesReply) map[string]string {
		m := map[string]string{}
		for _, n := range r.Nodes {
			m[n.NodeID] = n.Status
		}
		return m
	}

	all := list(explorer.NodeFilter{})
	if len(all.Nodes) != 3 || !all.AsOf.Equal(clk.now()) || all.DownAfterSeconds != server.DefaultDownAfter.Seconds() || all.Next != "" {
		t.Fatalf("all nodes: %+v", all)
	}
	for i := 1; i < len(all.Nodes); i++ {
		if all.Nodes[i-1].NodeID >= all.Nodes[i].NodeID {
			t.Fatalf("nodes not ordered by ID: %s before %s", all.Nodes[i-1].NodeID, all.Nodes[i].NodeID)
		}
	}
	var na explorer.NodeSummary
	for _, n := range all.Nodes {
		if n.NodeID == aID {
			na = n
		}
	}
	wantA := explorer.NodeUnitFigures{
		CRU: explorer.UnitFigures{Total: 8, System: 0, Reserved: 2, Free: 6},
		MRU: explorer.UnitFigures{Total: 32, System: 4, Reserved: 8, Free: 20},
		SRU: explorer.UnitFigures{Total: 500, System: 0, Reserved: 100, Free: 400},
	}
	if na.Status != explorer.NodeUp || na.Version != "v1.2.3-4-gabcdef" || na.Units != wantA || !na.AsOf.Equal(clk.now()) ||
		!na.LastSeen.Equal(clk.now()) || na.Workloads[provision.ContainerReservation] != 2 || na.StatsUpdated == nil {
		t.Fatalf("node a: %+v", na)
	}
	if got := statuses(all)[cID]; got != explorer.NodeUnreported {
		t.Fatalf("a node that reported no capacity is %q, want %q", got, explorer.NodeUnreported)
	}

	filters := []struct {
		name string
		f    explorer.NodeFilter
		want int
	}{
		{"cru-5", explorer.NodeFilter{MinFree: u(5, 0, 0, 0)}, 1},
		{"cru-3", explorer.NodeFilter{MinFree: u(3, 0, 0, 0)}, 2},
		{"mru-14.5", explorer.NodeFilter{MinFree: u(0, 14.5, 0, 0)}, 1},
		{"hru-1", explorer.NodeFilter{MinFree: u(0, 0, 0, 1)}, 1},
		{"too-much", explorer.NodeFilter{MinFree: u(0, 0, 100000, 0)}, 0},
		{"status-unreported", explorer.NodeFilter{Status: explorer.NodeUnreported}, 1},
		{"status-up", explorer.NodeFilter{Status: explorer.NodeUp}, 2},
	}
	for _, tt := range filters {
		if got := list(tt.f); len(got.Nodes) != tt.want {
			t.Fatalf("%s: %d nodes, want %d: %+v", tt.name, len(got.Nodes), tt.want, got.Nodes)
		}
	}

	// Pages of one node: follow next to the end.
	var paged []string
	f := explorer.NodeFilter{Limit: 1}
	for range 5 {
		page := list(f)
		for _, n := range page.Nodes {
			paged = append(paged, n.NodeID)
		}
		if page.Next == "" {
			break
		}
		f.After = page.Next
	}
	if len(paged) != 3 || paged[0] != all.Nodes[0].NodeID || paged[2] != all.Nodes[2].NodeID {
		t.Fatalf("paged: %v, want %v", paged, statuses(all))
	}

	// Four minutes later only a that polls is up. Its poll is seen only
	// in memory until the flush, which a restart does: after it, a is
	// still up.
	r := explorertest.Volume(aID, 1)
	xs.Reserve(t, userKey, r)
	clk.add(4 * time.Minute)
	if _, _, err := a.Poll(ctx, 0); err != nil {
		t.Fatal(err)
	}
	xs.Restart()
	got := statuses(list(explorer.NodeFilter{}))
	if got[aID] != explorer.NodeUp || got[cID] != explorer.NodeDown || len(got) != 3 {
		t.Fatalf("after 4 minutes and a poll of a: %v", got)
	}
	if up := list(explorer.NodeFilter{Status: explorer.NodeUp}); len(up.Nodes) != 1 || up.Nodes[0].NodeID != aID {
		t.Fatalf("status=up: %+v", up.Nodes)
	}
	if down := list(explorer.NodeFilter{Status: explorer.NodeDown}); len(down.Nodes) != 2 {
		t.Fatalf("status=down: %+v", down.Nodes)
	}
}

func TestListNodesRefusesBadQueries(t *testing.T) {
	xs := explorertest.New(t)
	key := explorertest.NewKey(t)
	for _, q := range []string{"free_cru=-1", "free_cru=1.5", "free_mru=abc", "free_sru=NaN", "free_hru=-0.1", "free_mru=Inf",
		"limit=0", "limit=501", "limit=x", "status=sideways", "after=" + strings.Repeat("x", 200)} {
		t.Run(q, func(t *testing.T) {
			got := do(t, raw{method: http.MethodGet, path: "/api/v1/nodes?" + q, key: key, keyID: explorertest.UserID(key)}.build(t, xs.URL()))
			if got.status != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400", got.status, got.body)
			}
		})
	}
}

func TestReportCapacityVersion(t *testing.T) {
	ctx := t.Context()
	xs := explorertest.New(t)
	key := explorertest.NewKey(t)
	c := xs.RegisterNode(t, key)
	for _, bad := range []string{strings.Repeat("1", explorer.MaxVersionLength+1), "v1\t2", "v1\n", "v1\x00", "vé"} {
		if err := c.ReportCapacity(ctx, provision.Capacity{}, bad); err == nil || !strings.Contains(err.Error(), "version") {
			t.Fatalf("version %q: %v, want a refusal", bad, err)
		}
	}
	// What `provisiond version` reports for a build whose version and
	// commit differ (a space is printable).
	if err := c.ReportCapacity(ctx, provision.Capacity{Total: provision.Units{CRU: 1}}, "v0.9-dirty (488ec44)"); err != nil {
		t.Fatal(err)
	}
	// An old node's report (a bare provision.Capacity) is taken, with no version.
	if err := c.PutCapacity(ctx, provision.Capacity{Total: provision.Units{CRU: 2}}); err != nil {
		t.Fatal(err)
	}
	info, err := c.Node(ctx, explorertest.NodeID(key))
	if err != nil || info.Capacity == nil || info.Capacity.Total.CRU != 2 || info.Version != "" {
		t.Fatalf("after an old node's report: %+v, %v", info, err)
	}
}

// FuzzListNodesQuery sends signed GET /api/v1/nodes requests with
// arbitrary queries. The server never answers 5xx, refuses with a message,
// and an answer holds at most the page's limit of nodes, each of a known
// status and with at least the free units asked for.
func FuzzListNodesQuery(f *testing.F) {
	// Room for every request of a long run in the replay set (not 503).
	srv, err := server.New(server.Config{DataDir: f.TempDir(), NoSync: true, MaxReplay: 1 << 23})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	user := explorertest.NewKey(f)
	send := func(t testing.TB, method, target string, key ed25519.PrivateKey, keyID string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://explorer"+target, bytes.NewReader(body))
		if err := explorer.SignRequest(req, key, keyID, body, time.Now()); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	for i, capacity := range []string{`{"total":{"cru":8,"mru":32,"sru":500},"reserved":{"mru":2},"version":"v1"}`, `{"total":{"cru":2,"mru":2.5,"hru":100}}`, ``} {
		key := explorertest.NewKey(f)
		id := explorertest.NodeID(key)
		if rec := send(f, "POST", "/api/v1/nodes", key, id, []byte(`{"node_id":"`+id+`"}`)); rec.Code != http.StatusCreated {
			f.Fatalf("register %d: %d %s", i, rec.Code, rec.Body)
		}
		if capacity != "" {
			if rec := send(f, "PUT", "/api/v1/nodes/"+id+"/capacity", key, id, []byte(capacity)); rec.Code != http.StatusNoContent {
				f.Fatalf("capacity %d: %d %s", i, rec.Code, rec.Body)
			}
		}
	}
	for _, q := range []string{"", "free_cru=2", "free_mru=2.5&free_hru=1", "limit=1", "limit=1&after=A", "status=up", "status=unreported", "free_sru=1e308", "free_cru=1e300", "limit=500", "free_mru=-0"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		target := "/api/v1/nodes?" + query
		if _, err := http.NewRequest("GET", "http://explorer"+target, nil); err != nil || strings.ContainsFunc(query, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }) {
			return
		}
		rec := send(t, "GET", target, user, explorertest.UserID(user), nil)
		switch {
		case rec.Code >= 500:
			t.Fatalf("%s answered %d: %s", target, rec.Code, rec.Body)
		case rec.Code != http.StatusOK:
			var er explorer.ErrorReply
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.Error == "" {
				t.Fatalf("refusal %d without an error message: %q", rec.Code, rec.Body)
			}
			return
		}
		var reply explorer.NodesReply
		if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil {
			t.Fatalf("%s: %v: %s", target, err, rec.Body)
		}
		v, _ := url.ParseQuery(query)
		limit := explorer.NodesPageDefault
		if n, err := strconv.Atoi(v.Get("limit")); err == nil {
			limit = n
		}
		if len(reply.Nodes) > limit || len(reply.Nodes) > explorer.NodesPageMax {
			t.Fatalf("%s: %d nodes, limit %d", target, len(reply.Nodes), limit)
		}
		for _, n := range reply.Nodes {
			switch n.Status {
			case explorer.NodeUp, explorer.NodeDown, explorer.NodeUnreported:
			default:
				t.Fatalf("%s: status %q", target, n.Status)
			}
			if s := v.Get("status"); s != "" && n.Status != s {
				t.Fatalf("%s: a node of status %q", target, n.Status)
			}
			for name, free := range map[string]float64{"free_cru": n.Units.CRU.Free, "free_mru": n.Units.MRU.Free, "free_sru": n.Units.SRU.Free, "free_hru": n.Units.HRU.Free} {
				if want, err := strconv.ParseFloat(v.Get(name), 64); err == nil && free < want {
					t.Fatalf("%s: node %s has %s %v", target, n.NodeID, name, free)
				}
			}
		}
	})
}
