package explorer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/provision"
)

// stream writes chunks of b to w until n bytes went out or the client
// left; it allocates nothing per chunk.
func stream(w http.ResponseWriter, r *http.Request, b []byte, n int64) {
	f, _ := w.(http.Flusher)
	for sent := int64(0); sent < n; sent += int64(len(b)) {
		if _, err := w.Write(b); err != nil || r.Context().Err() != nil {
			return
		}
		if f != nil {
			f.Flush()
		}
	}
}

// badExplorer answers polls as an explorer gone wrong, by mode, and as a
// good one with mode "good".
func badExplorer(mode *atomic.Value) http.HandlerFunc {
	chunk := []byte(strings.Repeat("a", 32<<10))
	return func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load().(string) {
		case "endless-stream":
			w.WriteHeader(http.StatusOK)
			stream(w, r, chunk, 1<<40)
		case "huge-json-string": // 200 MB in one JSON string
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, `{"events":[{"seq":1,"reservation":"`)
			stream(w, r, chunk, 200<<20)
			fmt.Fprint(w, `"}],"next":1}`)
		case "announced-too-large":
			w.Header().Set("Content-Length", fmt.Sprint(200<<20))
			w.WriteHeader(http.StatusOK)
			stream(w, r, chunk, 200<<20)
		case "headers-then-nothing":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "slow-drip":
			w.WriteHeader(http.StatusOK)
			for r.Context().Err() == nil {
				if _, err := w.Write([]byte(" ")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(20 * time.Millisecond)
			}
		case "endless-error-body":
			w.WriteHeader(http.StatusBadGateway)
			stream(w, r, chunk, 1<<40)
		case "huge-headers":
			w.Header().Set("X-Junk", strings.Repeat("j", 1<<20))
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, `{"events":[],"next":0}`)
		default:
			fmt.Fprintf(w, `{"events":[],"next":%s}`, r.URL.Query().Get("from"))
		}
	}
}

// TestBoundedReads polls explorers that answer too much or too slowly:
// each poll fails with a temporary error within its deadline, having
// allocated a few MiB at most, and the same client polls again once the
// explorer is good.
func TestBoundedReads(t *testing.T) {
	var mode atomic.Value
	mode.Store("good")
	srv := httptest.NewServer(badExplorer(&mode))
	t.Cleanup(srv.Close)
	opts := explorertest.ClientOptions()
	opts.PollWait, opts.Timeout = 300*time.Millisecond, 700*time.Millisecond
	opts.MaxAttempts = 1
	c := explorer.NewClient(srv.URL, explorertest.NewKey(t), opts)
	deadline := opts.PollWait + opts.Timeout
	tests := []struct {
		mode     string
		sentinel error // nil: any error
		slow     bool  // ends at the deadline
	}{
		{"endless-stream", explorer.ErrReplyTooLarge, false},
		{"huge-json-string", explorer.ErrReplyTooLarge, false},
		{"announced-too-large", explorer.ErrReplyTooLarge, false},
		{"headers-then-nothing", context.DeadlineExceeded, true},
		{"slow-drip", context.DeadlineExceeded, true},
		{"endless-error-body", nil, false},
		{"huge-headers", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			mode.Store(tt.mode)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, next, err := c.Poll(t.Context(), 7)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil || next != 7 {
				t.Fatalf("poll: next %d, err %v: want a failure that keeps the cursor", next, err)
			}
			if !provision.IsTemporary(err) {
				t.Fatalf("poll: %v is permanent", err)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Fatalf("poll: %v, want %v", err, tt.sentinel)
			}
			if took > deadline+2*time.Second || (tt.slow && took < deadline-100*time.Millisecond) {
				t.Fatalf("poll took %s, deadline %s", took, deadline)
			}
			// The reply is read up to MaxPageSize; reading and failing must
			// not allocate more than a few times that.
			t.Logf("allocated %.1f MiB", float64(after.TotalAlloc-before.TotalAlloc)/(1<<20))
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4*explorer.MaxPageSize {
				t.Fatalf("poll allocated %d MiB", alloc>>20)
			}
		})
	}
	mode.Store("good")
	if _, next, err := c.Poll(t.Context(), 7); err != nil || next != 7 {
		t.Fatalf("poll of a good explorer afterwards: next %d, err %v", next, err)
	}
}

// TestErrorBodyIsCut reads a refusal with a long JSON message: the client
// keeps at most MaxErrorSize of it and the refusal is then not the
// explorer's (temporary).
func TestErrorBodyIsCut(t *testing.T) {
	s := &stub{t: t, answers: func(_ int, w http.ResponseWriter) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"%s"}`, strings.Repeat("e", 1<<20))
	}}
	c := stubClient(t, s, 1)
	_, _, err := c.Poll(t.Context(), 0)
	var apiErr *explorer.APIError
	if !errors.As(err, &apiErr) || !apiErr.Foreign || len(apiErr.Message) > explorer.MaxErrorSize || !provision.IsTemporary(err) {
		t.Fatalf("err = %v, want a temporary, foreign refusal with a short message", err)
	}
}

// TestDeliveryRequestFailuresAreTemporary sends results and stats through
// every failure of a request: none is final, whatever the status, so the
// outbox retries them until they are delivered.
func TestDeliveryRequestFailuresAreTemporary(t *testing.T) {
	tests := []struct {
		name    string
		answers func(int, http.ResponseWriter)
		fail    error
	}{
		{"401", refuse(http.StatusUnauthorized, ""), nil},
		{"403", refuse(http.StatusForbidden, ""), nil},
		{"403-not-registered", notRegistered, nil},
		{"400", refuse(http.StatusBadRequest, ""), nil},
		{"404", refuse(http.StatusNotFound, ""), nil},
		{"408", refuse(http.StatusRequestTimeout, ""), nil},
		{"409", refuse(http.StatusConflict, ""), nil},
		{"413", refuse(http.StatusRequestEntityTooLarge, ""), nil},
		{"429", refuse(http.StatusTooManyRequests, ""), nil},
		{"500", refuse(http.StatusInternalServerError, ""), nil},
		{"503", refuse(http.StatusServiceUnavailable, ""), nil},
		{"proxy-html-502", htmlPage(http.StatusBadGateway), nil},
		{"proxy-html-200", func(_ int, w http.ResponseWriter) { fmt.Fprint(w, "<html>maintenance</html>") }, nil},
		{"empty-200", func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusOK) }, nil},
		{"reset", nil, errors.New("connection reset by peer")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &stub{t: t, answers: tt.answers, fail: tt.fail}
				c := stubClient(t, s, 2)
				rs := results(3)
				errs, err := c.FeedbackBatch(t.Context(), c.KeyID(), rs)
				var refusal *provision.Refusal
				if tt.name == "404" { // no batch endpoint: one request per result
					for i, e := range errs {
						if e == nil || !provision.IsTemporary(e) || errors.As(e, &refusal) {
							t.Fatalf("batch, one by one: result %d: %v, want a temporary failure", i, e)
						}
					}
				} else if err == nil || errs != nil || !provision.IsTemporary(err) || errors.As(err, &refusal) {
					t.Fatalf("batch: errs %v, err %v: want a temporary failure of the request", errs, err)
				}
				// One result at a time (an explorer without the batch endpoint).
				if err := c.Feedback(t.Context(), c.KeyID(), rs[0]); tt.name != "proxy-html-200" && tt.name != "empty-200" &&
					(err == nil || !provision.IsTemporary(err) || errors.As(err, &refusal)) {
					t.Fatalf("feedback: %v, want a temporary failure", err)
				}
				if err := c.UpdateStats(t.Context(), c.KeyID(), &provision.Stats{}); tt.name != "proxy-html-200" && tt.name != "empty-200" &&
					(err == nil || !provision.IsTemporary(err)) {
					t.Fatalf("stats: %v, want a temporary failure", err)
				}
			})
		})
	}
}

// TestFeedbackUnsendable refuses, without a request, a result no request
// can carry: it would otherwise be retried for ever.
func TestFeedbackUnsendable(t *testing.T) {
	s := &stub{t: t, answers: func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }}
	c := stubClient(t, s, 1)
	tests := []struct {
		name   string
		data   json.RawMessage
		reason string
	}{
		{"unencodable", json.RawMessage(`{"broken`), "unencodable"},
		{"too-large", json.RawMessage(`"` + strings.Repeat("x", explorer.MaxBodySize) + `"`), "too-large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := results(1)[0]
			r.Data = tt.data
			err := c.Feedback(t.Context(), c.KeyID(), r)
			var refusal *provision.Refusal
			if !errors.As(err, &refusal) || refusal.Reason != tt.reason || provision.IsTemporary(err) {
				t.Fatalf("err = %v, want a permanent refusal %q", err, tt.reason)
			}
		})
	}
	if len(s.at) != 0 {
		t.Fatalf("%d requests sent", len(s.at))
	}
}

// TestClockSkew reads the explorer's Date header.
func TestClockSkew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ahead := time.Hour
		s := &stub{t: t, answers: func(_ int, w http.ResponseWriter) {
			w.Header().Set("Date", time.Now().Add(ahead).UTC().Format(http.TimeFormat))
			fmt.Fprint(w, `{"node_id":"x"}`)
		}}
		c := stubClient(t, s, 1)
		if _, ok := c.ClockSkew(); ok {
			t.Fatal("a skew before any reply")
		}
		if _, err := c.Node(t.Context(), "x"); err != nil {
			t.Fatal(err)
		}
		sk, ok := c.ClockSkew()
		if !ok || sk.Skew < ahead-time.Second || sk.Skew > ahead+time.Second || !sk.At.Equal(time.Now()) {
			t.Fatalf("skew %+v, %v; want about %s measured now", sk, ok, ahead)
		}
	})
}

// TestNotRegistered polls a real explorer as a node it does not know.
func TestNotRegistered(t *testing.T) {
	xs := explorertest.New(t)
	key := explorertest.NewKey(t)
	opts := explorertest.ClientOptions()
	opts.PollWait = 10 * time.Millisecond
	c := explorer.NewClient(xs.URL(), key, opts)
	_, _, err := c.Poll(t.Context(), 0)
	if !errors.Is(err, explorer.ErrNotRegistered) || !provision.IsTemporary(err) {
		t.Fatalf("poll of an unknown node: %v, want a temporary ErrNotRegistered", err)
	}
	err = c.UpdateStats(t.Context(), explorertest.NodeID(key), &provision.Stats{})
	if !errors.Is(err, explorer.ErrNotRegistered) {
		t.Fatalf("stats of an unknown node: %v, want ErrNotRegistered", err)
	}
	if err := c.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Poll(t.Context(), 0); err != nil {
		t.Fatalf("poll after registering: %v", err)
	}
	// Only the node refusal carries the code.
	other := explorertest.NewKey(t)
	_, err = explorer.NewClient(xs.URL(), other, explorertest.ClientOptions()).Node(t.Context(), "nope")
	if err == nil || errors.Is(err, explorer.ErrNotRegistered) {
		t.Fatalf("reading an unknown node: %v", err)
	}
}
