package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// FuzzServeSigned sends validly signed requests with arbitrary bodies,
// paths and an optionally corrupted header to the server's handler. The
// server never panics, never answers 5xx, accepts nothing whose request
// signature was corrupted, and creates a reservation only when its owner's
// signature verifies.
func FuzzServeSigned(f *testing.F) {
	dir := f.TempDir()
	srv, err := server.New(server.Config{DataDir: dir, NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	node, user := explorertest.NewKey(f), explorertest.NewKey(f)
	nodeID := explorertest.NodeID(node)
	send := func(t testing.TB, method, target string, body []byte, asUser bool, corrupt uint8) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://explorer"+target, bytes.NewReader(body))
		key, keyID := node, nodeID
		if asUser {
			key, keyID = user, explorertest.UserID(user)
		}
		if err := explorer.SignRequest(req, key, keyID, body, time.Now()); err != nil {
			t.Fatal(err)
		}
		switch corrupt % 3 {
		case 1:
			req.Header.Set(explorer.HeaderNonce, "00000000000000000000000000000000")
		case 2:
			req.Header.Del(explorer.HeaderTimestamp)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	if rec := send(f, "POST", "/api/v1/nodes", []byte(`{"node_id":"`+nodeID+`"}`), false, 0); rec.Code != http.StatusCreated {
		f.Fatalf("register: %d %s", rec.Code, rec.Body)
	}
	good := explorertest.Volume(nodeID, 1)
	good.Sign(user)
	goodJSON, _ := json.Marshal(good)
	f.Add("POST", "/api/v1/reservations", goodJSON, true, uint8(0))
	f.Add("POST", "/api/v1/reservations", []byte(`{"node_id":"x","data":{}}`), true, uint8(1))
	f.Add("PUT", "/api/v1/nodes/"+nodeID+"/results/abc", []byte(`{"id":"abc","node_id":"`+nodeID+`","signature":"00"}`), false, uint8(0))
	f.Add("POST", "/api/v1/nodes/"+nodeID+"/results", []byte(`{"results":[{"id":"abc","node_id":"`+nodeID+`","signature":"00"},{"id":1},null]}`), false, uint8(0))
	f.Add("POST", "/api/v1/nodes/"+nodeID+"/results", []byte(`{"results":{}}`), false, uint8(1))
	f.Add("PUT", "/api/v1/nodes/"+nodeID+"/stats", []byte(`{"used":{"cru":1}}`), false, uint8(2))
	f.Add("GET", "/api/v1/nodes/"+nodeID+"/events?from=18446744073709551615&wait=1ns", []byte(nil), false, uint8(0))
	f.Add("POST", "/api/v1/reservations/abc/delete", []byte(`{"id":"abc","delete_signature":""}`), true, uint8(0))
	f.Add("GET", "/api/v1/reservations?user=%zz", []byte(nil), true, uint8(0))
	f.Add("PUT", "/api/v1/nodes/"+nodeID+"/capacity", []byte(`{"total":{"cru":4,"mru":8},"reserved":{},"version":"v1"}`), false, uint8(0))
	f.Add("PUT", "/api/v1/nodes/"+nodeID+"/capacity", []byte(`{"total":{"cru":-1},"version":"v 1"}`), false, uint8(0))
	f.Add("GET", "/api/v1/nodes?free_cru=1&free_mru=0.5&status=up&limit=2&after=A", []byte(nil), true, uint8(0))
	f.Fuzz(func(t *testing.T, method, target string, body []byte, asUser bool, corrupt uint8) {
		if method != "GET" && method != "PUT" && method != "POST" {
			return
		}
		if len(target) == 0 || target[0] != '/' || strings.ContainsFunc(target, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return // not a request line httptest.NewRequest can build
		}
		if _, err := http.NewRequest(method, "http://explorer"+target, nil); err != nil {
			return
		}
		rec := send(t, method, target, body, asUser, corrupt)
		if rec.Code >= 500 {
			t.Fatalf("%s %s answered %d: %s", method, target, rec.Code, rec.Body)
		}
		if rec.Code/100 == 3 {
			return // ServeMux redirects an unclean path ("/a/../b") to its clean form
		}
		ok := rec.Code/100 == 2
		if ok && corrupt%3 != 0 {
			t.Fatalf("%s %s with a corrupted signature answered %d", method, target, rec.Code)
		}
		if !ok {
			var er explorer.ErrorReply
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.Error == "" {
				t.Fatalf("refusal %d without an error message: %q", rec.Code, rec.Body)
			}
		}
		if ok && method == "POST" && target == "/api/v1/nodes/"+nodeID+"/results" {
			var reply explorer.ResultsReply
			if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil {
				t.Fatalf("batch of results answered %s: %v", rec.Body, err)
			}
			for _, st := range reply.Results {
				if st.Code/100 == 2 {
					t.Fatalf("stored a result no node signed: %+v", st) // the fuzzer cannot forge the node's signature
				}
			}
		}
		if ok && method == "POST" && target == "/api/v1/reservations" {
			var r provision.Reservation
			if err := json.Unmarshal(body, &r); err != nil || r.Verify() != nil {
				t.Fatalf("created a reservation whose owner signature does not verify: %s", body)
			}
		}
	})
}
