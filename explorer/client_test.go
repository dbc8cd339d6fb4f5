package explorer_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

func TestNodeClientAgainstExplorer(t *testing.T) {
	xs := explorertest.New(t)
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	nc := xs.RegisterNode(t, node)
	if err := nc.Register(t.Context()); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	capacity := provision.Capacity{Total: provision.Units{CRU: 4, MRU: 8, SRU: 100}, Reserved: provision.Units{MRU: 1}}
	if err := nc.PutCapacity(t.Context(), capacity); err != nil {
		t.Fatal(err)
	}
	stats := &provision.Stats{Used: provision.Units{SRU: 1}, Capacity: capacity, Workloads: map[provision.ReservationType]uint64{provision.VolumeReservation: 1}, Updated: time.Now().UTC()}
	if err := nc.UpdateStats(t.Context(), nodeID, stats); err != nil {
		t.Fatal(err)
	}
	info, err := nc.Node(t.Context(), nodeID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Capacity == nil || *info.Capacity != capacity || info.Stats == nil || info.Stats.Workloads[provision.VolumeReservation] != 1 || info.LastSeen.IsZero() {
		t.Fatalf("node info %+v does not show what the node reported", info)
	}

	good := explorertest.Volume(nodeID, 1)
	xs.Reserve(t, user, good)
	xs.Inject(t, nodeID, `{"id":"bad-1","created":"yesterday"}`)
	xs.Inject(t, nodeID, `{"id":5}`)
	xs.Inject(t, nodeID, `null`)
	evs, next, err := nc.Poll(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || next != 4 {
		t.Fatalf("got %d events next %d, want 4 and 4", len(evs), next)
	}
	tests := []struct {
		name   string
		ev     provision.Event
		id     string
		broken bool
	}{
		{"decodes", evs[0], good.ID, false},
		{"bad-field-keeps-id", evs[1], "bad-1", true},
		{"bad-id", evs[2], "", true},
		{"null", evs[3], "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ev.Reservation == nil || tt.ev.Reservation.ID != tt.id {
				t.Fatalf("reservation %+v, want id %q", tt.ev.Reservation, tt.id)
			}
			if (tt.ev.Err != nil) != tt.broken {
				t.Fatalf("Err = %v, want broken %v", tt.ev.Err, tt.broken)
			}
			if tt.broken && (!errors.Is(tt.ev.Err, explorer.ErrBadEvent) || provision.IsTemporary(tt.ev.Err)) {
				t.Fatalf("Err = %v, want a permanent ErrBadEvent", tt.ev.Err)
			}
		})
	}
	if err := provision.Validate(evs[0].Reservation, nodeID, time.Now()); err != nil {
		t.Fatalf("the polled reservation does not validate on the node: %v", err)
	}

	res := &provision.Result{Type: good.Type, ID: good.ID, NodeID: nodeID, Digest: good.Digest(), Created: time.Now().UTC(), State: provision.StateOk, Data: json.RawMessage(`{"path":"/x"}`)}
	if err := res.Sign(provision.KeySigner(node)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Feedback(t.Context(), nodeID, res); err != nil {
		t.Fatal(err)
	}
	if err := nc.Feedback(t.Context(), nodeID, res); err != nil {
		t.Fatalf("repeated feedback: %v", err)
	}
	got, err := xs.UserClient(user).GetReservation(t.Context(), good.ID)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := identity.PublicKey(got.NodeID)
	if got.Result == nil || got.Result.Verify(pub) != nil {
		t.Fatalf("stored result %+v does not verify", got.Result)
	}

	forged := *res
	forged.State = provision.StateError
	err = nc.Feedback(t.Context(), nodeID, &forged)
	var apiErr *explorer.APIError
	// A request of its own cannot tell a verdict on the result from a
	// refusal of the request: it stays temporary; only a batch reply's
	// per-result status (TestFeedbackBatchAgainstExplorer) is final.
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || !provision.IsTemporary(err) {
		t.Fatalf("forged feedback: %v; want a temporary 403", err)
	}
}

func TestUserClientAgainstExplorer(t *testing.T) {
	xs := explorertest.New(t)
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	xs.RegisterNode(t, node)
	uc := xs.UserClient(user)
	if uc.KeyID() != explorertest.UserID(user) {
		t.Fatalf("user client key id %s", uc.KeyID())
	}
	r := explorertest.Volume(nodeID, 2)
	r.Sign(user)
	id, err := uc.CreateReservation(t.Context(), r)
	if err != nil || id == "" || r.ID != id {
		t.Fatalf("create: %q, %v", id, err)
	}
	if err := provision.ValidName("reservation id", id); err != nil {
		t.Fatalf("explorer assigned an id the node refuses: %v", err)
	}
	list, err := uc.ListReservations(t.Context(), "")
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("list: %+v, %v", list, err)
	}
	del, err := uc.DeleteReservation(t.Context(), id)
	if err != nil || !del.ToDelete || del.VerifyDelete() != nil {
		t.Fatalf("delete: %+v, %v", del, err)
	}
	_, err = uc.GetReservation(t.Context(), "missing")
	var apiErr *explorer.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("missing reservation: %v, want 404", err)
	}
}

// stub answers a client in memory, checks every request's signature, and
// records when each attempt came (in synctest's fake time).
type stub struct {
	t       testing.TB
	mu      sync.Mutex
	at      []time.Time
	answers func(n int, w http.ResponseWriter)
	// handle, when set, answers instead of answers, seeing the request.
	handle func(n int, req *http.Request, body []byte, w http.ResponseWriter)
	fail   error
}

func (s *stub) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	n := len(s.at)
	s.at = append(s.at, time.Now())
	s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
	}
	if _, err := explorer.VerifyRequest(req.Method, req.URL.RequestURI(), req.Header, body, time.Now(), explorer.MaxSkew); err != nil {
		s.t.Errorf("client sent a badly signed request: %v", err)
	}
	rec := httptest.NewRecorder()
	if s.handle != nil {
		s.handle(n, req, body, rec)
	} else {
		s.answers(n, rec)
	}
	return rec.Result(), nil
}

func refuse(status int, retryAfter string) func(int, http.ResponseWriter) {
	return func(_ int, w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":"refused with %d"}`, status)
	}
}

func stubClient(t testing.TB, s *stub, attempts int) *explorer.Client {
	opts := explorertest.ClientOptions()
	opts.Transport = s
	opts.MaxAttempts = attempts
	opts.MinBackoff, opts.MaxBackoff = 100*time.Millisecond, 10*time.Second
	opts.ReadLimit, opts.WriteLimit = rate.Inf, rate.Inf
	return explorer.NewClient("http://explorer.invalid", explorertest.NewKey(t), opts)
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		answers    func(int, http.ResponseWriter)
		wantCalls  int
		wantErr    bool
		minGap     time.Duration // between the first two attempts
		retryAfter time.Duration // carried by the final error
	}{
		{"503-then-ok", func(n int, w http.ResponseWriter) {
			if n == 0 {
				refuse(http.StatusServiceUnavailable, "2")(n, w)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}, 2, false, 2 * time.Second, 0},
		{"429-then-ok", func(n int, w http.ResponseWriter) {
			if n == 0 {
				refuse(http.StatusTooManyRequests, "3")(n, w)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}, 2, false, 3 * time.Second, 0},
		{"retry-after-beyond-max-backoff", refuse(http.StatusTooManyRequests, "60"), 1, true, 0, 60 * time.Second},
		{"500-exhausts-attempts", refuse(http.StatusInternalServerError, ""), 3, true, 50 * time.Millisecond, 0},
		{"400-not-retried", refuse(http.StatusBadRequest, ""), 1, true, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &stub{t: t, answers: tt.answers}
				c := stubClient(t, s, 3)
				err := c.PutCapacity(t.Context(), provision.Capacity{})
				if (err != nil) != tt.wantErr {
					t.Fatalf("err = %v, want error %v", err, tt.wantErr)
				}
				if len(s.at) != tt.wantCalls {
					t.Fatalf("%d attempts, want %d", len(s.at), tt.wantCalls)
				}
				if len(s.at) > 1 && s.at[1].Sub(s.at[0]) < tt.minGap {
					t.Fatalf("retried after %s, want at least %s", s.at[1].Sub(s.at[0]), tt.minGap)
				}
				var apiErr *explorer.APIError
				if tt.retryAfter > 0 && (!errors.As(err, &apiErr) || apiErr.RetryAfter != tt.retryAfter) {
					t.Fatalf("err = %v, want RetryAfter %s", err, tt.retryAfter)
				}
			})
		})
	}
}

func TestErrorClassification(t *testing.T) {
	ok := func(body string) func(int, http.ResponseWriter) {
		return func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusOK); fmt.Fprint(w, body) }
	}
	tests := []struct {
		name      string
		answers   func(int, http.ResponseWriter)
		fail      error
		temporary bool
		sentinel  error
	}{
		{"400-permanent", refuse(http.StatusBadRequest, ""), nil, false, nil},
		{"401-permanent", refuse(http.StatusUnauthorized, ""), nil, false, nil},
		{"403-permanent", refuse(http.StatusForbidden, ""), nil, false, nil},
		{"404-permanent", refuse(http.StatusNotFound, ""), nil, false, nil},
		{"409-permanent", refuse(http.StatusConflict, ""), nil, false, nil},
		{"413-permanent", refuse(http.StatusRequestEntityTooLarge, ""), nil, false, nil},
		{"408-temporary", refuse(http.StatusRequestTimeout, ""), nil, true, nil},
		{"not-registered-temporary", notRegistered, nil, true, explorer.ErrNotRegistered},
		{"proxy-html-401-temporary", htmlPage(http.StatusUnauthorized), nil, true, nil},
		{"proxy-html-404-temporary", htmlPage(http.StatusNotFound), nil, true, nil},
		{"proxy-empty-400-temporary", func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusBadRequest) }, nil, true, nil},
		{"empty-200-temporary", ok(""), nil, true, explorer.ErrBadReply},
		{"html-200-temporary", ok("<html>hello</html>"), nil, true, explorer.ErrBadReply},
		{"429-temporary", refuse(http.StatusTooManyRequests, ""), nil, true, nil},
		{"500-temporary", refuse(http.StatusInternalServerError, ""), nil, true, nil},
		{"502-temporary", refuse(http.StatusBadGateway, ""), nil, true, nil},
		{"503-temporary", refuse(http.StatusServiceUnavailable, ""), nil, true, nil},
		{"network-temporary", nil, errors.New("connection refused"), true, nil},
		{"malformed-reply-temporary", ok(`{"events":[`), nil, true, explorer.ErrBadReply},
		{"sequence-goes-back-temporary", ok(`{"events":[{"seq":2,"reservation":{}},{"seq":1,"reservation":{}}],"next":2}`), nil, true, explorer.ErrBadReply},
		{"next-before-events-temporary", ok(`{"events":[{"seq":2,"reservation":{}}],"next":1}`), nil, true, explorer.ErrBadReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &stub{t: t, answers: tt.answers, fail: tt.fail}
			c := stubClient(t, s, 1)
			_, next, err := c.Poll(t.Context(), 0)
			if err == nil {
				t.Fatal("no error")
			}
			if next != 0 {
				t.Fatalf("a failed poll moved the cursor to %d", next)
			}
			if provision.IsTemporary(err) != tt.temporary {
				t.Fatalf("IsTemporary(%v) = %v, want %v", err, !tt.temporary, tt.temporary)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %v, want %v", err, tt.sentinel)
			}
			var apiErr *explorer.APIError
			if tt.answers != nil && tt.sentinel == nil && (!errors.As(err, &apiErr) || apiErr.Message == "") {
				t.Fatalf("err = %v, want an *APIError with the server's message", err)
			}
		})
	}
}

// notRegistered answers as an explorer that does not know the node.
func notRegistered(_ int, w http.ResponseWriter) {
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintf(w, `{"error":"server: forbidden: node not registered","code":%q}`, explorer.CodeNotRegistered)
}

// htmlPage answers as a proxy does: an HTML page with status.
func htmlPage(status int) func(int, http.ResponseWriter) {
	return func(_ int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>", status, http.StatusText(status))
	}
}

func TestRateLimitSeparatesReadsAndWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &stub{t: t, answers: func(_ int, w http.ResponseWriter) { fmt.Fprint(w, `{"node_id":"x"}`) }}
		opts := explorertest.ClientOptions()
		opts.Transport = s
		opts.ReadLimit, opts.ReadBurst = 1, 1
		opts.WriteLimit, opts.WriteBurst = 1000, 10
		c := explorer.NewClient("http://explorer.invalid", explorertest.NewKey(t), opts)
		start := time.Now()
		for range 3 {
			if _, err := c.Node(t.Context(), "x"); err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d < 2*time.Second {
			t.Fatalf("3 reads at 1/s took %s, want at least 2s", d)
		}
		start = time.Now()
		for range 3 {
			if err := c.PutCapacity(t.Context(), provision.Capacity{}); err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("writes waited %s for the read limiter", d)
		}
	})
}

// signedResultOf returns an ok result of r signed by key.
func signedResultOf(t testing.TB, r *provision.Reservation, key ed25519.PrivateKey) *provision.Result {
	t.Helper()
	res := &provision.Result{Type: r.Type, ID: r.ID, NodeID: explorertest.NodeID(key), Digest: r.Digest(), Created: time.Now().UTC(), State: provision.StateOk}
	if err := res.Sign(provision.KeySigner(key)); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestFeedbackBatchAgainstExplorer(t *testing.T) {
	xs := explorertest.New(t)
	node, other, user := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	nc := xs.RegisterNode(t, node)
	var rvs []*provision.Reservation
	for i := range 3 {
		rv := explorertest.Volume(nodeID, int64(i+1))
		xs.Reserve(t, user, rv)
		rvs = append(rvs, rv)
	}
	unknown := *rvs[0]
	unknown.ID = "unknown"
	good0, good2 := signedResultOf(t, rvs[0], node), signedResultOf(t, rvs[2], node)
	forged := signedResultOf(t, rvs[1], other)
	forged.NodeID = nodeID // names the node, signed by another key
	rs := []*provision.Result{good0, forged, signedResultOf(t, &unknown, node), good2}

	errs, err := nc.FeedbackBatch(t.Context(), nodeID, rs)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		err    error
		status int // 0: delivered
	}{
		{"stored", errs[0], 0},
		{"forged-refused", errs[1], http.StatusForbidden},
		{"unknown-refused", errs[2], http.StatusNotFound},
		{"stored-after-refusals", errs[3], 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.status == 0 {
				if tt.err != nil {
					t.Fatal(tt.err)
				}
				return
			}
			var apiErr *explorer.APIError
			var refusal *provision.Refusal
			if !errors.As(tt.err, &apiErr) || apiErr.Status != tt.status || apiErr.Message == "" || provision.IsTemporary(tt.err) || !errors.As(tt.err, &refusal) {
				t.Fatalf("err = %v, want a permanent refusal %d with the explorer's message", tt.err, tt.status)
			}
		})
	}
	for _, want := range []*provision.Result{good0, good2} {
		got := xs.Reservation(t, want.ID).Result
		if got == nil || got.Signature != want.Signature {
			t.Fatalf("the explorer holds %+v for %s", got, want.ID)
		}
	}
	// Again, as an outbox retry would: the stored ones are acknowledged.
	errs, err = nc.FeedbackBatch(t.Context(), nodeID, []*provision.Result{good2, good0})
	if err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("repeat: %v, %v", errs, err)
	}
	if errs, err := nc.FeedbackBatch(t.Context(), nodeID, nil); err != nil || len(errs) != 0 {
		t.Fatalf("empty batch: %v, %v", errs, err)
	}
}

// answerBatch answers a batch of results with the given code for each
// result (200 when codes is short), echoing the IDs sent.
func answerBatch(t testing.TB, body []byte, w http.ResponseWriter, codes ...int) {
	t.Helper()
	var req explorer.ResultsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		t.Errorf("client sent a bad batch: %v", err)
	}
	var reply explorer.ResultsReply
	for i, r := range req.Results {
		st := explorer.ResultStatus{ID: r.ID, Code: http.StatusOK}
		if i < len(codes) && codes[i] != http.StatusOK {
			st.Code, st.Error = codes[i], fmt.Sprintf("refused with %d", codes[i])
		}
		reply.Results = append(reply.Results, st)
	}
	json.NewEncoder(w).Encode(reply)
}

func results(n int) []*provision.Result {
	rs := make([]*provision.Result, n)
	for i := range rs {
		rs[i] = &provision.Result{ID: fmt.Sprintf("r%d", i), State: provision.StateOk, Created: time.Unix(0, 0).UTC()}
	}
	return rs
}

func TestFeedbackBatchClasses(t *testing.T) {
	tests := []struct {
		name      string
		handle    func(t testing.TB, n int, req *http.Request, body []byte, w http.ResponseWriter)
		attempts  int  // requests the stub saw
		whole     bool // err set, errs nil
		temporary bool // of err, or of errs[1]
		errs      []bool
	}{
		{"per-result-codes", func(t testing.TB, _ int, _ *http.Request, body []byte, w http.ResponseWriter) {
			answerBatch(t, body, w, 200, 403, 429, 503, 409)
		}, 1, false, false, []bool{false, true, true, true, true}},
		{"503-then-ok-retried", func(t testing.TB, n int, _ *http.Request, body []byte, w http.ResponseWriter) {
			if n == 0 {
				refuse(http.StatusServiceUnavailable, "")(n, w)
				return
			}
			answerBatch(t, body, w)
		}, 2, false, false, []bool{false, false, false, false, false}},
		{"500-exhausts-attempts", func(_ testing.TB, n int, _ *http.Request, _ []byte, w http.ResponseWriter) {
			refuse(http.StatusInternalServerError, "")(n, w)
		}, 3, true, true, nil},
		{"400-not-retried-but-temporary", func(_ testing.TB, n int, _ *http.Request, _ []byte, w http.ResponseWriter) {
			refuse(http.StatusBadRequest, "")(n, w)
		}, 1, true, true, nil},
		{"401-temporary", func(_ testing.TB, n int, _ *http.Request, _ []byte, w http.ResponseWriter) {
			refuse(http.StatusUnauthorized, "")(n, w)
		}, 1, true, true, nil},
		{"empty-200-temporary", func(_ testing.TB, _ int, _ *http.Request, _ []byte, w http.ResponseWriter) {
			w.WriteHeader(http.StatusOK)
		}, 3, true, true, nil},
		{"wrong-count-temporary", func(_ testing.TB, _ int, _ *http.Request, _ []byte, w http.ResponseWriter) {
			fmt.Fprint(w, `{"results":[{"id":"r0","code":200}]}`)
		}, 3, true, true, nil},
		{"reordered-temporary", func(_ testing.TB, _ int, _ *http.Request, _ []byte, w http.ResponseWriter) {
			fmt.Fprint(w, `{"results":[{"id":"r1","code":200},{"id":"r0","code":200},{"id":"r2","code":200},{"id":"r3","code":200},{"id":"r4","code":200}]}`)
		}, 3, true, true, nil},
		{"no-batch-endpoint-falls-back", func(_ testing.TB, n int, req *http.Request, _ []byte, w http.ResponseWriter) {
			if req.Method == http.MethodPost {
				refuse(http.StatusNotFound, "")(n, w)
				return
			}
			if strings.HasSuffix(req.URL.Path, "/r1") {
				refuse(http.StatusForbidden, "")(n, w)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}, 6, false, false, []bool{false, true, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &stub{t: t}
				s.handle = func(n int, req *http.Request, body []byte, w http.ResponseWriter) { tt.handle(t, n, req, body, w) }
				c := stubClient(t, s, 3)
				errs, err := c.FeedbackBatch(t.Context(), c.KeyID(), results(5))
				if len(s.at) != tt.attempts {
					t.Errorf("%d requests, want %d", len(s.at), tt.attempts)
				}
				if tt.whole {
					if err == nil || errs != nil {
						t.Fatalf("errs %v, err %v: want a failure of the request", errs, err)
					}
					if provision.IsTemporary(err) != tt.temporary {
						t.Fatalf("IsTemporary(%v) = %v, want %v", err, !tt.temporary, tt.temporary)
					}
					return
				}
				if err != nil || len(errs) != len(tt.errs) {
					t.Fatalf("errs %v, err %v", errs, err)
				}
				for i, e := range errs {
					if (e != nil) != tt.errs[i] {
						t.Errorf("result %d: %v, want refused %v", i, e, tt.errs[i])
					}
					var apiErr *explorer.APIError
					if e != nil && !errors.As(e, &apiErr) {
						t.Errorf("result %d: %v carries no *APIError", i, e)
					}
					final := apiErr != nil && apiErr.Status != 429 && apiErr.Status < 500
					if tt.name == "no-batch-endpoint-falls-back" {
						final = false // a request of its own judges no result
					}
					var refusal *provision.Refusal
					if e != nil && (provision.IsTemporary(e) == final || errors.As(e, &refusal) != final) {
						t.Errorf("result %d: %v has the wrong class (want final %v)", i, e, final)
					}
				}
			})
		})
	}
}

func TestFeedbackBatchSplitsRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sizes []int
		s := &stub{t: t}
		s.handle = func(n int, _ *http.Request, body []byte, w http.ResponseWriter) {
			var req explorer.ResultsRequest
			json.Unmarshal(body, &req)
			sizes = append(sizes, len(req.Results))
			if len(body) > explorer.MaxBatchBodySize {
				t.Errorf("request %d: %d bytes", n, len(body))
			}
			if n == 1 {
				refuse(http.StatusBadRequest, "")(n, w) // the second request fails as a whole
				return
			}
			answerBatch(t, body, w)
		}
		opts := explorertest.ClientOptions()
		opts.Transport = s
		opts.MaxAttempts = 1
		opts.WriteLimit, opts.WriteBurst = 1, 1 // one token per request, not per result
		c := explorer.NewClient("http://explorer.invalid", explorertest.NewKey(t), opts)
		rs := results(2*explorer.MaxBatchResults + 10)
		rs[3].Data = json.RawMessage(`"` + strings.Repeat("x", explorer.MaxBatchBodySize) + `"`) // fits no request
		start := time.Now()
		errs, err := c.FeedbackBatch(t.Context(), c.KeyID(), rs)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("2 requests at 1/s took %s: the limiter counted results", d)
		}
		if want := []int{explorer.MaxBatchResults, explorer.MaxBatchResults}; !slices.Equal(sizes, want) {
			t.Fatalf("requests of %v results, want %v and then none after the failed one", sizes, want)
		}
		for i, e := range errs {
			switch {
			case i == 3:
				if e == nil || provision.IsTemporary(e) {
					t.Errorf("the oversized result: %v, want a permanent error", e)
				}
			case i <= explorer.MaxBatchResults: // the first request, one result skipped
				if e != nil {
					t.Errorf("result %d: %v", i, e)
				}
			default: // the failed request and the one never sent
				if e == nil || !provision.IsTemporary(e) {
					t.Errorf("result %d: %v, want a temporary error", i, e)
				}
			}
		}
	})
}

// TestListReservationsFollowsPages: the explorer answers pages of 3; the
// client follows them to the end, in order, and reads one page on asking.
func TestListReservationsFollowsPages(t *testing.T) {
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, Limits: server.Limits{ListLimit: 3}})
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	var ids []string
	for i := range 8 {
		r := explorertest.Volume(explorertest.NodeID(node), int64(i+1))
		r.Created = r.Created.Add(time.Duration(i-10) * time.Second)
		ids = append(ids, xs.Reserve(t, user, r))
	}
	uc := xs.UserClient(user)
	list, err := uc.ListReservations(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range list {
		got = append(got, r.ID)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("listed %v, want %v", got, ids)
	}
	page, err := uc.ListReservationsPage(t.Context(), "", "", 5)
	if err != nil || len(page.Reservations) != 5 || page.Next == "" {
		t.Fatalf("a page of 5: %d, next %q, %v", len(page.Reservations), page.Next, err)
	}
	rest, err := uc.ListReservationsPage(t.Context(), "", page.Next, 5)
	if err != nil || len(rest.Reservations) != 3 || rest.Next != "" || rest.Reservations[0].ID != ids[5] {
		t.Fatalf("the page after: %d, next %q, %v", len(rest.Reservations), rest.Next, err)
	}
	if _, err := uc.ListReservationsPage(t.Context(), "", "", 501); err == nil {
		t.Fatal("a page of 501 was served")
	}
}

// TestHeartbeatUnsupported: an explorer (or a proxy) that answers a
// heartbeat with 404, 405 or 501 takes no heartbeats, and the heartbeat is
// dropped for good; it must not be retried at the head of the outbox ahead
// of the results queued after it. An explorer's 400 judges the heartbeat
// itself; an outage stays temporary.
func TestHeartbeatUnsupported(t *testing.T) {
	plain := func(status int) func(int, http.ResponseWriter) {
		return func(_ int, w http.ResponseWriter) { http.Error(w, "404 page not found", status) }
	}
	tests := []struct {
		name      string
		answers   func(int, http.ResponseWriter)
		temporary bool
	}{
		{"old-explorer-404", plain(http.StatusNotFound), false},
		{"explorer-404", refuse(http.StatusNotFound, ""), false},
		{"405", plain(http.StatusMethodNotAllowed), false},
		{"501", refuse(http.StatusNotImplemented, ""), false},
		{"400-malformed", refuse(http.StatusBadRequest, ""), false},
		{"503", refuse(http.StatusServiceUnavailable, ""), true},
		{"proxy-html-502", htmlPage(http.StatusBadGateway), true},
	}
	hb := &provision.Heartbeat{NodeID: "node", BootID: "b", Created: time.Now(), Booted: time.Now().Add(-time.Hour), Interval: time.Minute}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := stubClient(t, &stub{t: t, answers: tt.answers}, 1)
			err := c.Heartbeat(t.Context(), "node", hb)
			if err == nil {
				t.Fatal("no error")
			}
			if provision.IsTemporary(err) != tt.temporary {
				t.Fatalf("IsTemporary(%v) = %v, want %v", err, !tt.temporary, tt.temporary)
			}
		})
	}
}
