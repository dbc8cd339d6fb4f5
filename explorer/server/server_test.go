package server_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// raw is a request built by hand, so tests can sign it wrongly.
type raw struct {
	method, path string
	body         []byte
	key          ed25519.PrivateKey // signs
	keyID        string             // X-Provisiond-Key; empty: key's node ID
	at           time.Time          // timestamp; zero: now
	tamper       func(*http.Request)
	unsigned     bool
}

// reply is the status and error message of an answer.
type reply struct {
	status int
	msg    string
	body   []byte
}

func (r raw) build(t testing.TB, base string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(r.method, base+r.path, bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.unsigned {
		return req
	}
	keyID := r.keyID
	if keyID == "" {
		keyID = explorertest.NodeID(r.key)
	}
	at := r.at
	if at.IsZero() {
		at = time.Now()
	}
	if err := explorer.SignRequest(req, r.key, keyID, r.body, at); err != nil {
		t.Fatal(err)
	}
	if r.tamper != nil {
		r.tamper(req)
	}
	return req
}

func do(t testing.TB, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var er explorer.ErrorReply
	json.Unmarshal(b, &er)
	return reply{status: resp.StatusCode, msg: er.Error, body: b}
}

func TestRequestAuthentication(t *testing.T) {
	xs := explorertest.New(t)
	node, other, stranger := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	xs.RegisterNode(t, other)
	nodeID := explorertest.NodeID(node)
	statsPath := "/api/v1/nodes/" + nodeID + "/stats"
	stats := testutil.MustJSON(t, provision.Stats{Updated: time.Now().UTC()})

	tests := []struct {
		name   string
		req    raw
		status int
		msg    string
	}{
		{"signed", raw{method: "PUT", path: statsPath, body: stats, key: node}, http.StatusNoContent, ""},
		{"unsigned", raw{method: "PUT", path: statsPath, body: stats, unsigned: true}, http.StatusUnauthorized, "missing X-Provisiond-Key"},
		{"no-signature-header", raw{method: "PUT", path: statsPath, body: stats, key: node, tamper: func(r *http.Request) { r.Header.Del(explorer.HeaderSignature) }}, http.StatusUnauthorized, "missing X-Provisiond-Signature"},
		{"stale", raw{method: "PUT", path: statsPath, body: stats, key: node, at: time.Now().Add(-5 * time.Minute)}, http.StatusUnauthorized, "timestamp"},
		{"future", raw{method: "PUT", path: statsPath, body: stats, key: node, at: time.Now().Add(5 * time.Minute)}, http.StatusUnauthorized, "timestamp"},
		{"wrong-key", raw{method: "PUT", path: statsPath, body: stats, key: stranger, keyID: nodeID}, http.StatusUnauthorized, "does not verify"},
		{"tampered-body", raw{method: "PUT", path: statsPath, body: stats, key: node, tamper: func(r *http.Request) {
			b := bytes.Replace(stats, []byte(`"used"`), []byte(`"USED"`), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}}, http.StatusUnauthorized, "does not verify"},
		{"tampered-query", raw{method: "GET", path: "/api/v1/nodes/" + nodeID + "/events?from=0", key: node, tamper: func(r *http.Request) { r.URL.RawQuery = "from=7" }}, http.StatusUnauthorized, "does not verify"},
		{"tampered-timestamp", raw{method: "PUT", path: statsPath, body: stats, key: node, tamper: func(r *http.Request) {
			r.Header.Set(explorer.HeaderTimestamp, fmt.Sprint(time.Now().Unix()+1))
		}}, http.StatusUnauthorized, "does not verify"},
		{"malformed-key", raw{method: "PUT", path: statsPath, body: stats, key: node, keyID: "not-a-key"}, http.StatusUnauthorized, "malformed request key"},
		{"other-node", raw{method: "PUT", path: statsPath, body: stats, key: other}, http.StatusForbidden, "not by node"},
		{"unknown-node", raw{method: "PUT", path: "/api/v1/nodes/" + explorertest.NodeID(stranger) + "/stats", body: stats, key: stranger}, http.StatusForbidden, "not registered"},
		{"register-for-another", raw{method: "POST", path: "/api/v1/nodes", body: testutil.MustJSON(t, explorer.RegisterRequest{NodeID: nodeID}), key: stranger}, http.StatusForbidden, "registers itself"},
		{"no-such-endpoint", raw{method: "GET", path: "/api/v2/nodes", key: node}, http.StatusNotFound, "no endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := do(t, tt.req.build(t, xs.URL()))
			if got.status != tt.status || !strings.Contains(got.msg, tt.msg) {
				t.Fatalf("got %d %q, want %d with %q", got.status, got.msg, tt.status, tt.msg)
			}
			if got.status >= 400 && got.msg == "" {
				t.Fatalf("refusal without an error message: %s", got.body)
			}
		})
	}
}

func TestReplayRefused(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	body := testutil.MustJSON(t, provision.Stats{Updated: time.Now().UTC()})
	req := raw{method: "PUT", path: "/api/v1/nodes/" + explorertest.NodeID(node) + "/stats", body: body, key: node}.build(t, xs.URL())
	again := req.Clone(t.Context())
	again.Body = io.NopCloser(bytes.NewReader(body))
	if got := do(t, req); got.status != http.StatusNoContent {
		t.Fatalf("first: %d %s", got.status, got.msg)
	}
	got := do(t, again)
	if got.status != http.StatusUnauthorized || !strings.Contains(got.msg, "replayed") {
		t.Fatalf("replay: got %d %q, want 401 replayed", got.status, got.msg)
	}
	// A replay with the signature in upper case is still the same request.
	upper := req.Clone(t.Context())
	upper.Body = io.NopCloser(bytes.NewReader(body))
	upper.Header.Set(explorer.HeaderSignature, strings.ToUpper(req.Header.Get(explorer.HeaderSignature)))
	if got := do(t, upper); got.status != http.StatusUnauthorized {
		t.Fatalf("upper-case replay: got %d %q, want 401", got.status, got.msg)
	}
}

func TestReplaySetBounded(t *testing.T) {
	xs := explorertest.NewWithConfig(t, server.Config{MaxReplay: 3})
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node) // one signature remembered
	path := "/api/v1/nodes/" + explorertest.NodeID(node)
	for i := range 2 {
		if got := do(t, raw{method: "GET", path: path, key: node}.build(t, xs.URL())); got.status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, got.status, got.msg)
		}
	}
	resp, err := http.DefaultClient.Do(raw{method: "GET", path: path, key: node}.build(t, xs.URL()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("full replay set: got %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestCreateReservationRefusals(t *testing.T) {
	xs := explorertest.New(t)
	node, user, other := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)

	signed := func(mut func(*provision.Reservation)) *provision.Reservation {
		r := explorertest.Volume(nodeID, 1)
		r.Sign(user)
		if mut != nil {
			mut(r)
		}
		return r
	}
	dup := signed(nil)
	xs.Reserve(t, user, dup)

	tests := []struct {
		name   string
		r      *provision.Reservation
		signer ed25519.PrivateKey
		status int
		msg    string
	}{
		{"bad-user-signature", signed(func(r *provision.Reservation) { r.Data = json.RawMessage(`{"size":2,"type":"ssd"}`) }), user, http.StatusBadRequest, "bad reservation signature"},
		{"garbage-signature", signed(func(r *provision.Reservation) { r.Signature = "zz" }), user, http.StatusBadRequest, "bad reservation signature"},
		{"duplicate-digest", signed(func(r *provision.Reservation) { *r = *dup; r.ID = "" }), user, http.StatusConflict, "same digest"},
		{"not-the-owner", signed(nil), other, http.StatusForbidden, "not by the reservation's user"},
		{"unknown-node", func() *provision.Reservation {
			r := explorertest.Volume(explorertest.NodeID(other), 1)
			r.Sign(user)
			return r
		}(), user, http.StatusNotFound, "unknown node"},
		{"expired", func() *provision.Reservation {
			r := explorertest.Volume(nodeID, 1)
			r.Created = time.Now().Add(-2 * time.Hour).UTC()
			r.Sign(user)
			return r
		}(), user, http.StatusBadRequest, "expired"},
		{"marked-for-deletion", signed(func(r *provision.Reservation) { r.ToDelete = true }), user, http.StatusBadRequest, "deletion"},
		{"uppercase-user-id", func() *provision.Reservation {
			r := explorertest.Volume(nodeID, 1)
			r.Sign(user)
			r.UserID = strings.ToUpper(r.UserID) // every node refuses it
			return r
		}(), user, http.StatusBadRequest, "user_id"},
		{"reference-too-long", signed(func(r *provision.Reservation) {
			r.Reference = strings.Repeat("r", provision.MaxReferenceLength+1)
			r.Sign(user)
		}), user, http.StatusBadRequest, "reference longer"},
		{"bad-node-id", func() *provision.Reservation {
			r := explorertest.Volume("not/a/node", 1)
			r.Sign(user)
			return r
		}(), user, http.StatusBadRequest, "node_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := raw{method: "POST", path: "/api/v1/reservations", body: testutil.MustJSON(t, tt.r), key: tt.signer, keyID: explorertest.UserID(tt.signer)}
			got := do(t, req.build(t, xs.URL()))
			if got.status != tt.status || !strings.Contains(got.msg, tt.msg) {
				t.Fatalf("got %d %q, want %d with %q", got.status, got.msg, tt.status, tt.msg)
			}
		})
	}
	// Only the first reservation reached the node.
	evs, _, err := xs.NodeClient(node).Poll(t.Context(), 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("events: %d, %v; want exactly the one accepted reservation", len(evs), err)
	}
}

// signedResult returns a result for r signed by key, naming node.
func signedResult(t testing.TB, r *provision.Reservation, node string, key ed25519.PrivateKey, at time.Time) *provision.Result {
	t.Helper()
	res := &provision.Result{Type: r.Type, ID: r.ID, NodeID: node, Digest: r.Digest(), Version: r.Version, Created: at.UTC(), State: provision.StateOk}
	if err := res.Sign(provision.KeySigner(key)); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestResults(t *testing.T) {
	xs := explorertest.New(t)
	nodeA, nodeB, user := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, nodeA)
	xs.RegisterNode(t, nodeB)
	a, b := explorertest.NodeID(nodeA), explorertest.NodeID(nodeB)
	rv := explorertest.Volume(a, 1)
	xs.Reserve(t, user, rv)
	now := time.Now()

	put := func(key ed25519.PrivateKey, node, id string, res *provision.Result) raw {
		return raw{method: "PUT", path: "/api/v1/nodes/" + node + "/results/" + id, body: testutil.MustJSON(t, res), key: key}
	}
	first := signedResult(t, rv, a, nodeA, now)
	newer := signedResult(t, rv, a, nodeA, now.Add(time.Minute))
	older := signedResult(t, rv, a, nodeA, now.Add(-time.Minute))
	wrongDigest := &provision.Result{ID: rv.ID, NodeID: a, Digest: strings.Repeat("0", 64), Created: now, State: provision.StateOk}
	wrongDigest.Sign(provision.KeySigner(nodeA))
	forged := signedResult(t, rv, a, nodeB, now) // names node A, signed by B

	tests := []struct {
		name   string
		req    raw
		status int
		msg    string
		stored *provision.Result // what the explorer holds afterwards
	}{
		{"ok", put(nodeA, a, rv.ID, first), http.StatusNoContent, "", first},
		{"repeat-is-idempotent", put(nodeA, a, rv.ID, first), http.StatusNoContent, "", first},
		{"newer-replaces", put(nodeA, a, rv.ID, newer), http.StatusNoContent, "", newer},
		{"older-is-acknowledged-and-ignored", put(nodeA, a, rv.ID, older), http.StatusNoContent, "", newer},
		{"signed-by-another-node", put(nodeA, a, rv.ID, forged), http.StatusForbidden, "does not verify", newer},
		{"another-nodes-reservation", put(nodeB, b, rv.ID, signedResult(t, rv, b, nodeB, now.Add(time.Hour))), http.StatusForbidden, "belongs to another node", newer},
		{"names-another-node", put(nodeB, b, rv.ID, newer), http.StatusForbidden, "names node", newer},
		{"wrong-digest", put(nodeA, a, rv.ID, wrongDigest), http.StatusConflict, "digest", newer},
		{"id-mismatch", put(nodeA, a, "other", first), http.StatusBadRequest, "not the path", newer},
		{"unknown-reservation", put(nodeA, a, "nope", func() *provision.Result {
			r := *rv
			r.ID = "nope"
			return signedResult(t, &r, a, nodeA, now)
		}()), http.StatusNotFound, "not found", newer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := do(t, tt.req.build(t, xs.URL()))
			if got.status != tt.status || !strings.Contains(got.msg, tt.msg) {
				t.Fatalf("got %d %q, want %d with %q", got.status, got.msg, tt.status, tt.msg)
			}
			stored := xs.Reservation(t, rv.ID).Result
			if stored == nil || stored.Signature != tt.stored.Signature {
				t.Fatalf("stored result %+v, want the one created %s", stored, tt.stored.Created)
			}
			if err := stored.Verify(nodeA.Public().(ed25519.PublicKey)); err != nil {
				t.Fatalf("stored result does not verify: %v", err)
			}
		})
	}
}

func TestDelete(t *testing.T) {
	xs := explorertest.New(t)
	node, owner, other := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	nc := xs.RegisterNode(t, node)
	rv := explorertest.Volume(explorertest.NodeID(node), 1)
	id := xs.Reserve(t, owner, rv)
	deleteBy := func(key ed25519.PrivateKey, sig string) raw {
		return raw{method: "POST", path: "/api/v1/reservations/" + id + "/delete", key: key, keyID: explorertest.UserID(key),
			body: testutil.MustJSON(t, explorer.DeleteRequest{ID: id, DeleteSignature: sig})}
	}
	sign := func(key ed25519.PrivateKey, id, digest string) string {
		return hex.EncodeToString(ed25519.Sign(key, provision.DeleteChallenge(id, digest)))
	}
	valid := sign(owner, id, rv.Digest())

	tests := []struct {
		name   string
		req    raw
		status int
		msg    string
	}{
		{"forged-by-another-user", deleteBy(other, sign(other, id, rv.Digest())), http.StatusForbidden, "only the owner"},
		{"owner-request-forged-signature", deleteBy(owner, sign(other, id, rv.Digest())), http.StatusForbidden, "bad delete signature"},
		{"signature-over-another-digest", deleteBy(owner, sign(owner, id, strings.Repeat("a", 64))), http.StatusForbidden, "bad delete signature"},
		{"garbage-signature", deleteBy(owner, "00"), http.StatusForbidden, "bad delete signature"},
		{"body-id-mismatch", raw{method: "POST", path: "/api/v1/reservations/" + id + "/delete", key: owner, keyID: explorertest.UserID(owner),
			body: testutil.MustJSON(t, explorer.DeleteRequest{ID: "x", DeleteSignature: valid})}, http.StatusBadRequest, "not the path"},
		{"valid", deleteBy(owner, valid), http.StatusAccepted, ""},
		{"repeat", deleteBy(owner, valid), http.StatusAccepted, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := do(t, tt.req.build(t, xs.URL()))
			if got.status != tt.status || !strings.Contains(got.msg, tt.msg) {
				t.Fatalf("got %d %q, want %d with %q", got.status, got.msg, tt.status, tt.msg)
			}
		})
	}
	// The node saw the reservation, then exactly one signed delete.
	evs, next, err := nc.Poll(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || next != 2 {
		t.Fatalf("got %d events, next %d; want the reservation and one delete", len(evs), next)
	}
	del := evs[1].Reservation
	if !del.ToDelete || del.ID != id {
		t.Fatalf("second event %+v is not the delete of %s", del, id)
	}
	if err := provision.Validate(del, explorertest.NodeID(node), time.Now()); err != nil {
		t.Fatalf("the node would refuse the relayed delete: %v", err)
	}
}

func TestBatchResults(t *testing.T) {
	xs := explorertest.New(t)
	nodeA, nodeB, user, stranger := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, nodeA)
	xs.RegisterNode(t, nodeB)
	a, b := explorertest.NodeID(nodeA), explorertest.NodeID(nodeB)
	var rvs []*provision.Reservation
	for i := range 8 {
		rv := explorertest.Volume(a, int64(i+1))
		xs.Reserve(t, user, rv)
		rvs = append(rvs, rv)
	}
	ofB := explorertest.Volume(b, 1)
	xs.Reserve(t, user, ofB)
	now := time.Now()
	ok := func(i int) *provision.Result { return signedResult(t, rvs[i], a, nodeA, now) }
	path := "/api/v1/nodes/" + a + "/results"
	batch := func(rs ...*provision.Result) []byte {
		return testutil.MustJSON(t, explorer.ResultsRequest{Results: rs})
	}
	post := func(key ed25519.PrivateKey, body []byte) raw {
		return raw{method: "POST", path: path, body: body, key: key}
	}
	wrongDigest := &provision.Result{ID: rvs[3].ID, NodeID: a, Digest: strings.Repeat("0", 64), Created: now, State: provision.StateOk}
	wrongDigest.Sign(provision.KeySigner(nodeA))
	unknown := *rvs[0]
	unknown.ID = "nope"
	tooMany := make([]*provision.Result, explorer.MaxBatchResults+1)
	for i := range tooMany {
		tooMany[i] = ok(0)
	}
	huge := ok(1)
	huge.Data = json.RawMessage(`"` + strings.Repeat("x", explorer.MaxBatchBodySize) + `"`)

	tests := []struct {
		name   string
		req    raw
		status int
		msg    string // of the refusal of the request
		codes  []int  // per result, when the request was answered 200
		stored []*provision.Result
	}{
		{"unsigned", raw{method: "POST", path: path, body: batch(ok(0)), unsigned: true}, http.StatusUnauthorized, "missing", nil, nil},
		{"stale", raw{method: "POST", path: path, body: batch(ok(0)), key: nodeA, at: now.Add(-5 * time.Minute)}, http.StatusUnauthorized, "timestamp", nil, nil},
		{"signed-by-another-node", post(nodeB, batch(ok(0))), http.StatusForbidden, "not by node", nil, nil},
		{"wrong-node-key", raw{method: "POST", path: path, body: batch(ok(0)), key: stranger, keyID: a}, http.StatusUnauthorized, "does not verify", nil, nil},
		{"malformed-json", post(nodeA, []byte(`{"results":[`)), http.StatusBadRequest, "decoding body", nil, nil},
		{"no-results-list", post(nodeA, []byte(`{}`)), http.StatusBadRequest, "no \"results\" list", nil, nil},
		{"null-results-list", post(nodeA, []byte(`{"results":null}`)), http.StatusBadRequest, "no \"results\" list", nil, nil},
		{"misspelt-results", post(nodeA, []byte(`{"result":[]}`)), http.StatusBadRequest, "unknown field \"result\"", nil, nil},
		{"case-folded-results", post(nodeA, []byte(`{"Results":[]}`)), http.StatusBadRequest, "use \"results\"", nil, nil},
		{"duplicate-results", post(nodeA, []byte(`{"results":[],"results":[]}`)), http.StatusBadRequest, "duplicate key", nil, nil},
		{"invalid-utf8", post(nodeA, []byte("{\"results\":[\"\xff\"]}")), http.StatusBadRequest, "UTF-8", nil, nil},
		{"trailing-data", post(nodeA, []byte(`{"results":[]}{}`)), http.StatusBadRequest, "trailing data", nil, nil},
		{"too-many-results", post(nodeA, batch(tooMany...)), http.StatusRequestEntityTooLarge, "at most 256", nil, nil},
		{"body-too-large", post(nodeA, batch(ok(0), huge)), http.StatusRequestEntityTooLarge, "more than", nil, nil},
		{"empty", post(nodeA, []byte(`{"results":[]}`)), http.StatusOK, "", []int{}, nil},
		{"one-forged-among-good", post(nodeA, batch(ok(0), signedResult(t, rvs[1], a, nodeB, now), ok(2))),
			http.StatusOK, "", []int{200, 403, 200}, []*provision.Result{ok(0), nil, ok(2)}},
		{"each-refusal-alone", post(nodeA, batch(
			ok(3),
			wrongDigest,
			signedResult(t, &unknown, a, nodeA, now),
			signedResult(t, ofB, a, nodeA, now),
			signedResult(t, rvs[4], b, nodeB, now),
			ok(5),
		)), http.StatusOK, "", []int{200, 409, 404, 403, 403, 200}, []*provision.Result{ok(3), nil, nil, nil, nil, ok(5)}},
		{"malformed-element", post(nodeA, []byte(`{"results":[{"id":"`+rvs[6].ID+`","created":"yesterday"},`+string(testutil.MustJSON(t, ok(7)))+`,null]}`)),
			http.StatusOK, "", []int{400, 200, 400}, nil},
		{"duplicates-idempotent", post(nodeA, batch(ok(0), ok(0), ok(2))), http.StatusOK, "", []int{200, 200, 200}, []*provision.Result{ok(0), ok(0), ok(2)}},
		{"repeat-of-a-batch", post(nodeA, batch(ok(0), ok(2), ok(3), ok(5))), http.StatusOK, "", []int{200, 200, 200, 200}, []*provision.Result{ok(0), ok(2), ok(3), ok(5)}},
		{"older-acknowledged-newer-replaces", post(nodeA, batch(signedResult(t, rvs[0], a, nodeA, now.Add(-time.Minute)), signedResult(t, rvs[2], a, nodeA, now.Add(time.Minute)))),
			http.StatusOK, "", []int{200, 200}, []*provision.Result{ok(0), signedResult(t, rvs[2], a, nodeA, now.Add(time.Minute))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := do(t, tt.req.build(t, xs.URL()))
			if got.status != tt.status || !strings.Contains(got.msg, tt.msg) {
				t.Fatalf("got %d %q, want %d with %q", got.status, got.msg, tt.status, tt.msg)
			}
			if got.status != http.StatusOK {
				if got.msg == "" {
					t.Fatalf("refusal without an error message: %s", got.body)
				}
				return
			}
			var reply explorer.ResultsReply
			if err := json.Unmarshal(got.body, &reply); err != nil {
				t.Fatalf("reply %s: %v", got.body, err)
			}
			if len(reply.Results) != len(tt.codes) {
				t.Fatalf("%d statuses, want %d: %s", len(reply.Results), len(tt.codes), got.body)
			}
			for i, st := range reply.Results {
				if st.Code != tt.codes[i] || (st.Code == 200) != (st.Error == "") {
					t.Errorf("result %d: %+v, want code %d (and a message unless 200)", i, st, tt.codes[i])
				}
			}
			for i, want := range tt.stored {
				if want == nil {
					continue
				}
				stored := xs.Reservation(t, want.ID).Result
				if stored == nil || stored.Signature != want.Signature {
					t.Errorf("result %d: the explorer holds %+v, want the one created %s", i, stored, want.Created)
				}
			}
		})
	}
	// Refused results left nothing behind.
	for _, id := range []string{rvs[1].ID, rvs[4].ID, ofB.ID} {
		if res := xs.Reservation(t, id).Result; res != nil {
			t.Errorf("reservation %s holds a result it should not: %+v", id, res)
		}
	}
}

// TestAbsentDataStaysAbsent: a reservation signed without data is served
// without a data member, not as "data":null, which would be other signed
// bytes: its owner signature still verifies after the explorer relays it.
func TestAbsentDataStaysAbsent(t *testing.T) {
	xs := explorertest.New(t)
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	r := explorertest.Volume(explorertest.NodeID(node), 1)
	r.Data = nil
	r.Sign(user)
	id := xs.Reserve(t, user, r)
	got := do(t, raw{method: http.MethodGet, path: "/api/v1/reservations/" + id, key: user, keyID: explorertest.UserID(user)}.build(t, xs.URL()))
	if got.status != http.StatusOK || bytes.Contains(got.body, []byte(`"data"`)) {
		t.Fatalf("GET: %d %s", got.status, got.body)
	}
	var back provision.Reservation
	if err := json.Unmarshal(got.body, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Verify(); err != nil || back.Digest() != r.Digest() {
		t.Fatalf("relayed reservation: %v, digest %s, want %s", err, back.Digest(), r.Digest())
	}
}
