package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/provision"
)

// gateway stands between a node and explorerd as a misbehaving proxy or
// explorer would. In "pass" it forwards everything and counts, per
// result, how often explorerd took it (a 2xx per-result status or PUT
// answer). The delivery modes fail only the node's deliveries (results
// and stats): "401" and "503" answer so, "close" closes the connection
// without an answer. The poll modes fail only the long-poll:
// "endless-stream" (200 and bytes without end), "huge-json-string" (200
// and one 200 MB JSON string), "headers-then-nothing" (200, then silence).
// "skewed-date" forwards everything with a Date an hour ahead.
type gateway struct {
	srv   *httptest.Server
	proxy *httputil.ReverseProxy

	mode   atomic.Value // string
	failed sync.Map     // mode → *atomic.Int64: requests it failed

	mu    sync.Mutex
	taken map[string]int // result ID → times explorerd took it
}

func newGateway(t testing.TB, target string) *gateway {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{proxy: httputil.NewSingleHostReverseProxy(u), taken: map[string]int{}}
	g.proxy.ErrorLog = log.New(io.Discard, "", 0)
	g.proxy.ModifyResponse = g.observe
	g.mode.Store("pass")
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) URL() string { return g.srv.URL }

func (g *gateway) set(mode string) { g.mode.Store(mode) }

// fails returns how many requests mode failed.
func (g *gateway) fails(mode string) int64 {
	v, _ := g.failed.LoadOrStore(mode, new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

func (g *gateway) fail(mode string) {
	v, _ := g.failed.LoadOrStore(mode, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// takenCounts returns a copy of the per-result counts.
func (g *gateway) takenCounts() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]int, len(g.taken))
	for k, v := range g.taken {
		out[k] = v
	}
	return out
}

func isDelivery(r *http.Request) bool {
	return r.Method != http.MethodGet && (strings.Contains(r.URL.Path, "/results") || strings.HasSuffix(r.URL.Path, "/stats"))
}

func (g *gateway) serve(w http.ResponseWriter, r *http.Request) {
	mode := g.mode.Load().(string)
	events := r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/events")
	chunk := bytes.Repeat([]byte("a"), 32<<10)
	switch {
	case (mode == "401" || mode == "503" || mode == "close") && isDelivery(r):
		g.fail(mode)
		switch mode {
		case "401":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"error":"server: bad request signature"}`)
		case "503":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `<html><body><h1>503 Service Unavailable</h1></body></html>`)
		case "close":
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		}
	case mode == "endless-stream" && events:
		g.fail(mode)
		w.WriteHeader(http.StatusOK)
		streamTo(w, r, chunk, 1<<40)
	case mode == "huge-json-string" && events:
		g.fail(mode)
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, `{"events":[{"seq":1,"reservation":"`)
		streamTo(w, r, chunk, 200<<20)
		fmt.Fprint(w, `"}],"next":1}`)
	case mode == "headers-then-nothing" && events:
		g.fail(mode)
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	default:
		g.proxy.ServeHTTP(w, r)
	}
}

// streamTo writes b to w until n bytes went out or the client left.
func streamTo(w http.ResponseWriter, r *http.Request, b []byte, n int64) {
	for sent := int64(0); sent < n && r.Context().Err() == nil; sent += int64(len(b)) {
		if _, err := w.Write(b); err != nil {
			return
		}
	}
}

// observe counts the results explorerd took, and sets the Date of
// "skewed-date".
func (g *gateway) observe(resp *http.Response) error {
	if g.mode.Load().(string) == "skewed-date" {
		resp.Header.Set("Date", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
	}
	r := resp.Request
	if r.Method == http.MethodGet || !strings.Contains(r.URL.Path, "/results") {
		return nil
	}
	if r.Method == http.MethodPut && resp.StatusCode/100 == 2 {
		id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		g.mu.Lock()
		g.taken[id]++
		g.mu.Unlock()
		return nil
	}
	if r.Method != http.MethodPost || resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var reply explorer.ResultsReply
	if err := json.Unmarshal(body, &reply); err != nil {
		return nil
	}
	g.mu.Lock()
	for _, st := range reply.Results {
		if st.Code/100 == 2 {
			g.taken[st.ID]++
		}
	}
	g.mu.Unlock()
	return nil
}

// TestNoResultDropped puts a gateway in front of explorerd that fails
// every delivery of the node with 401, then with a proxy's 503 page, then
// by closing the connection, each for a while, while the node deploys
// reservations: afterwards every result is at explorerd, verified, each
// taken exactly once, nothing was refused or left in the outbox.
func TestNoResultDropped(t *testing.T) {
	var gw *gateway
	s := harness.Start(t, harness.SetupOptions{Via: func(ex string) string { gw = newGateway(t, ex); return gw.URL() }})
	node, user, nodeID := s.Node, s.User, s.NodeID
	purgeOnCleanup(t, node)

	warm := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--type", "ssd", "--duration", "1h")
	user.WaitResult(t, warm, provision.StateOk, converge)

	gw.set("401")
	var ids []string
	for i := range 3 {
		ids = append(ids, user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--type", "ssd", "--duration", "1h", "--reference", fmt.Sprintf("gateway-%d", i)))
	}
	harness.Eventually(t, converge, "the reservations deployed behind the gateway", func() error {
		recs := records(t, node)
		for _, id := range ids {
			if rec, ok := recs[id]; !ok || rec.State != provision.Deployed {
				return fmt.Errorf("%s not deployed yet", id)
			}
		}
		return nil
	})
	for _, mode := range []string{"401", "503", "close"} {
		gw.set(mode)
		start, before := time.Now(), gw.fails(mode)
		harness.Eventually(t, converge, "deliveries failed by "+mode, func() error {
			if st, err := statusOf(t, node); err == nil && st.OutboxDepth == 0 {
				return harness.Permanent(fmt.Errorf("the outbox is empty while the gateway fails every delivery (%s): the node dropped its results", mode))
			}
			if gw.fails(mode) == before || time.Since(start) < 3*time.Second {
				return fmt.Errorf("%d deliveries failed by %s in %s", gw.fails(mode)-before, mode, time.Since(start).Round(time.Second))
			}
			return nil
		})
		t.Logf("%s: %d deliveries failed in %s", mode, gw.fails(mode)-before, time.Since(start).Round(time.Second))
	}
	if st, err := statusOf(t, node); err != nil || st.OutboxDepth == 0 {
		t.Fatalf("before the gateway passes again: outbox depth %d, %v; want the results waiting", st.OutboxDepth, err)
	}
	gw.set("pass")
	back := time.Now()
	for _, id := range ids {
		user.WaitResult(t, id, provision.StateOk, converge)
	}
	t.Logf("every result at explorerd %s after the gateway passed again", time.Since(back).Round(time.Second))
	settled(t, node, converge)

	taken := gw.takenCounts()
	recs := records(t, node)
	for _, id := range ids {
		if taken[id] != 1 {
			t.Errorf("explorerd took the result of %s %d times, want exactly once", id, taken[id])
		}
		r, verified := user.Get(t, id)
		if !verified || r.Result.Signature != recs[id].Result.Signature {
			t.Errorf("explorerd holds %+v for %s, not the node's result", r.Result, id)
		}
		if recs[id].Refused != nil {
			t.Errorf("%s: the node recorded a refusal: %+v", id, recs[id].Refused)
		}
	}
	if m := scrapeMetrics(t, node); strings.Contains(m, "provisiond_outbox_refused_total{") {
		t.Errorf("the node counted refusals:\n%s", grepLines(m, "refused"))
	}
}

// TestBadExplorerBoundedMemory points the plain (as shipped) daemon at an
// explorer whose long-poll answers stream bytes without end, one 200 MB
// JSON string, or headers and then nothing: each is a poll error, the
// daemon's peak RSS (VmHWM) stays under 64 MB, and once the explorer is
// good it delivers and polls again. Then a Date an hour ahead shows as
// clock skew in `provisiond status`.
func TestBadExplorerBoundedMemory(t *testing.T) {
	var gw *gateway
	s := harness.Start(t, harness.SetupOptions{
		Node: harness.NodeOptions{Plain: true, Args: []string{"--poll-wait", "1s", "--explorer-timeout", "3s"}},
		Via:  func(ex string) string { gw = newGateway(t, ex); return gw.URL() },
	})
	node, user, nodeID := s.Node, s.User, s.NodeID
	purgeOnCleanup(t, node)
	reserve := func(ref string) {
		t.Helper()
		id := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--type", "ssd", "--duration", "1h", "--reference", ref)
		user.WaitResult(t, id, provision.StateOk, converge)
	}
	reserve("before")
	const maxRSS = 64 << 20
	for _, mode := range []string{"endless-stream", "huge-json-string", "headers-then-nothing"} {
		t.Run(mode, func(t *testing.T) {
			gw.set(mode)
			before := gw.fails(mode)
			harness.Eventually(t, converge, "polls failed by "+mode, func() error {
				if n := gw.fails(mode) - before; n < 3 {
					return fmt.Errorf("%d polls failed by %s", n, mode)
				}
				return nil
			})
			hwm, rss := memOf(t, node.PID())
			t.Logf("%s: %d polls failed; VmHWM %d MiB, VmRSS %d MiB", mode, gw.fails(mode)-before, hwm>>20, rss>>20)
			if hwm >= maxRSS {
				t.Errorf("peak RSS %d MiB, want under %d MiB", hwm>>20, maxRSS>>20)
			}
			if st, err := statusOf(t, node); err != nil || st.LastPollError == "" {
				t.Errorf("status: %v, last poll error %q; want the error shown", err, st.LastPollError)
			}
			gw.set("pass")
			reserve("after-" + mode)
		})
	}

	gw.set("skewed-date")
	harness.Eventually(t, converge, "clock skew in status", func() error {
		st, err := statusOf(t, node)
		switch {
		case err != nil:
			return err
		case st.ClockSkew == nil || st.ClockSkew.Seconds < 3590 || st.ClockSkew.Seconds > 3610:
			return fmt.Errorf("clock skew %+v", st.ClockSkew)
		}
		return nil
	})
	out, err := node.CLI(t, "status")
	if err != nil || !strings.Contains(out, "clock skew:") || !strings.Contains(out, "behind the explorer's") {
		t.Errorf("status text lacks the skew: %v\n%s", err, out)
	}
	gw.set("pass")
}

// memOf returns the peak and current RSS of process pid, in bytes.
func memOf(t testing.TB, pid int) (hwm, rss int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			hwm = kb << 10
		case "VmRSS:":
			rss = kb << 10
		}
	}
	if hwm == 0 {
		t.Fatalf("no VmHWM for %d", pid)
	}
	return hwm, rss
}

// scrapeMetrics returns the node's /metrics.
func scrapeMetrics(t testing.TB, n *harness.Node) string {
	t.Helper()
	resp, err := http.Get("http://" + n.Metrics + "/metrics")
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

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
