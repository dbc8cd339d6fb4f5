package provctl_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/provctl"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// syncBuffer is a bytes.Buffer safe for the progress ticker and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeNode takes node's next reservation from the explorer like a node
// does: it polls the event, then polls past it (the delivery), waits a
// little (the work) and answers with state.
func fakeNode(t *testing.T, xs *explorertest.Server, key ed25519.PrivateKey, state provision.ResultState) {
	t.Helper()
	nc := xs.RegisterNode(t, key)
	node := explorertest.NodeID(key)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		evs, next, err := nc.Poll(ctx, 0)
		if err != nil || len(evs) != 1 {
			if ctx.Err() == nil {
				t.Errorf("fake node: poll: %v, %d events", err, len(evs))
			}
			return
		}
		r := evs[0].Reservation
		pctx, pcancel := context.WithCancel(ctx)
		defer pcancel()
		go nc.Poll(pctx, next) // the delivery: the node asks past the event
		time.Sleep(50 * time.Millisecond)
		res := &provision.Result{Type: r.Type, ID: r.ID, NodeID: node, Digest: r.Digest(), Created: time.Now().UTC(), State: state}
		if err := res.Sign(provision.KeySigner(key)); err != nil {
			t.Error(err)
			return
		}
		if err := nc.Feedback(ctx, node, res); err != nil && ctx.Err() == nil {
			t.Errorf("fake node: feedback: %v", err)
		}
	}()
}

func reserveWait(t *testing.T, state provision.ResultState, progress string) (stdout, stderr string, err error) {
	t.Helper()
	cfg := explorertest.New(t)
	nodeKey := explorertest.NewKey(t)
	keyPath := filepath.Join(t.TempDir(), "key")
	if _, err := identity.Create(keyPath); err != nil {
		t.Fatal(err)
	}
	fakeNode(t, cfg, nodeKey, state)
	var out bytes.Buffer
	var errOut syncBuffer
	argv := []string{"provctl", "--explorer", cfg.URL(), "--key", keyPath, "reserve", "volume",
		"--node", explorertest.NodeID(nodeKey), "--size", "1", "--wait", "ok", "--timeout", "20s", "--progress", progress}
	err = provctl.Run(t.Context(), argv, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestReserveWaitShowsSteps(t *testing.T) {
	out, steps, err := reserveWait(t, provision.StateOk, "plain")
	if err != nil {
		t.Fatalf("%v\n%s", err, steps)
	}
	t.Logf("stderr:\n%s", steps)
	id := strings.TrimSpace(out)
	if provision.ValidName("id", id) != nil || strings.Contains(id, "\n") {
		t.Fatalf("stdout is %q, want the ID alone", out)
	}
	lines := strings.Split(strings.TrimRight(steps, "\n"), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^ +\d+\.\d{3}s submitted volume ` + id + ` to the explorer$`),
		regexp.MustCompile(`^ +\d+\.\d{3}s delivered to node \w+$`),
		regexp.MustCompile(`^ +\d+\.\d{3}s ok: signature of node \w+ verified$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), steps)
	}
	var last float64 = -1
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Fatalf("line %d %q does not match %s", i, lines[i], re)
		}
		if strings.Contains(lines[i], "\033") || strings.Contains(lines[i], "\r") {
			t.Fatalf("plain line %d has terminal codes: %q", i, lines[i])
		}
		var sec float64
		if _, err := fmtSscan(lines[i], &sec); err != nil || sec < last {
			t.Fatalf("line %d: elapsed %v after %v (%v)", i, sec, last, err)
		}
		last = sec
	}
}

func TestReserveWaitErrorResult(t *testing.T) {
	out, steps, err := reserveWait(t, provision.StateError, "plain")
	if err == nil || !strings.Contains(err.Error(), "is error, not ok") {
		t.Fatalf("err %v, want the error result\n%s", err, steps)
	}
	if strings.TrimSpace(out) == "" || !strings.Contains(steps, "error") {
		t.Fatalf("stdout %q stderr %q", out, steps)
	}
}

func TestReserveWaitTerminalStatusLine(t *testing.T) {
	_, steps, err := reserveWait(t, provision.StateOk, "tty")
	if err != nil {
		t.Fatalf("%v\n%q", err, steps)
	}
	// The status line is drawn (it waits 50 ms for the result: at least
	// one redraw) and erased before each step and at the end.
	if !strings.Contains(steps, "\r\033[K  …") || !strings.Contains(steps, "waiting for the node's result") {
		t.Fatalf("no status line in %q", steps)
	}
	if !strings.HasSuffix(steps, "verified\n") && !strings.HasSuffix(steps, "\r\033[K") {
		t.Fatalf("the status line is left on screen: %q", steps)
	}
	for _, step := range []string{"✓", "submitted volume", "delivered to node", "ok: signature of node"} {
		if !strings.Contains(steps, step) {
			t.Fatalf("no %q in %q", step, steps)
		}
	}
}

func TestReserveWaitBadState(t *testing.T) {
	keyPath := filepath.Join(t.TempDir(), "key")
	if _, err := identity.Create(keyPath); err != nil {
		t.Fatal(err)
	}
	err := provctl.Run(t.Context(), []string{"provctl", "--explorer", "http://127.0.0.1:1", "--key", keyPath, "reserve", "volume",
		"--node", explorertest.NodeID(explorertest.NewKey(t)), "--size", "1", "--wait", "done"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "--wait") {
		t.Fatalf("err %v, want a usage error naming --wait", err)
	}
}

// fmtSscan reads the elapsed seconds at the start of a plain step line.
func fmtSscan(line string, sec *float64) (int, error) {
	return fmt.Sscanf(strings.TrimSpace(line), "%fs", sec)
}

// TestWatchAgainstExplorerWithoutLongPoll: an explorer that ignores after=
// and wait= answers at once; the watch then looks once a second, not in a
// busy loop, and still sees the result.
func TestWatchAgainstExplorerWithoutLongPoll(t *testing.T) {
	userKey, nodeKey := explorertest.NewKey(t), explorertest.NewKey(t)
	r := explorertest.Volume(explorertest.NodeID(nodeKey), 1)
	r.ID = "0123456789abcdef"
	r.Sign(userKey)
	cp := *r
	done := &cp
	done.Result = signedResult(t, r, nodeKey)
	var asked atomic.Int64
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := asked.Add(1)
		if n >= 3 { // the result is there from the third look
			json.NewEncoder(w).Encode(done)
			return
		}
		json.NewEncoder(w).Encode(r)
	}))
	t.Cleanup(fake.Close)
	c := cli{t: t, explorer: fake.URL, key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	start := time.Now()
	out := c.must("watch", r.ID, "--timeout", "10s", "--progress", "none")
	if !strings.Contains(out, "ok (signature verified)") {
		t.Fatalf("watch: %s", out)
	}
	if n, took := asked.Load(), time.Since(start); n != 3 || took < time.Second {
		t.Fatalf("%d requests in %s: want 3, the last a second after the second", n, took)
	}
}
