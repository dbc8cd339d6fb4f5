package explorer

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// fuzzKey is a fixed key, so the corpus stays meaningful across runs.
var fuzzKey = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

// FuzzVerifyRequest checks the server's request signature check: whatever
// the method, URI, headers and body, VerifyRequest never panics, accepts
// only a timestamp within the skew and a signature that really verifies
// over exactly what was sent, and a validly signed request stops verifying
// when any signed part changes.
func FuzzVerifyRequest(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	node := identity.NodeID(fuzzKey.Public().(ed25519.PublicKey))
	nonce := "00112233445566778899aabbccddeeff"
	sign := func(method, uri, ts, body string) string {
		return hex.EncodeToString(ed25519.Sign(fuzzKey, RequestChallenge(method, uri, ts, nonce, []byte(body))))
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	f.Add("PUT", "/api/v1/nodes/"+node+"/stats", node, ts, nonce, sign("PUT", "/api/v1/nodes/"+node+"/stats", ts, `{}`), `{}`)
	f.Add("GET", "/api/v1/nodes/"+node+"/events?from=1&wait=30s", node, ts, nonce, sign("GET", "/api/v1/nodes/"+node+"/events?from=1&wait=30s", ts, ""), "")
	f.Add("GET", "/", hex.EncodeToString(fuzzKey.Public().(ed25519.PublicKey)), "-1", "", "zz", "")
	f.Add("POST", "/api/v1/reservations", "", "", "", "", "{")
	f.Fuzz(func(t *testing.T, method, uri, keyID, ts, nonce, sig, body string) {
		h := http.Header{}
		h.Set(HeaderKey, keyID)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderNonce, nonce)
		h.Set(HeaderSignature, sig)
		signed, err := VerifyRequest(method, uri, h, []byte(body), now, MaxSkew)
		if err != nil {
			if signed != nil {
				t.Fatal("a refused request returned a signer")
			}
			return
		}
		secs, perr := strconv.ParseInt(ts, 10, 64)
		if perr != nil || now.Sub(time.Unix(secs, 0)).Abs() > MaxSkew {
			t.Fatalf("accepted timestamp %q outside the skew", ts)
		}
		raw, _ := hex.DecodeString(sig)
		if !ed25519.Verify(signed.Key, RequestChallenge(method, uri, ts, nonce, []byte(body)), raw) {
			t.Fatal("accepted a signature that does not verify")
		}
		if verifies(method+"X", uri, h, body, now) || verifies(method, uri+"x", h, body, now) || verifies(method, uri, h, body+" ", now) {
			t.Fatal("a changed request still verifies")
		}
	})
}

// verifies reports whether VerifyRequest accepts the request.
func verifies(method, uri string, h http.Header, body string, now time.Time) bool {
	_, err := VerifyRequest(method, uri, h, []byte(body), now, MaxSkew)
	return err == nil
}

// FuzzDecodeEvents checks the client's decoding of an events reply: it
// never panics, never moves the cursor back, returns events in increasing
// order after the cursor, and gives every event a Reservation, with Err set
// when the reservation could not be decoded.
func FuzzDecodeEvents(f *testing.F) {
	f.Add([]byte(`{"events":[{"seq":1,"reservation":{"id":"a","type":"volume"}}],"next":1}`), uint64(0))
	f.Add([]byte(`{"events":[{"seq":3,"reservation":{"id":"b","created":"x"}},{"seq":4,"reservation":null}],"next":9}`), uint64(2))
	f.Add([]byte(`{"events":[],"next":5}`), uint64(5))
	f.Add([]byte(`{"events":[{"seq":1},{"seq":1}],"next":1}`), uint64(0))
	f.Add([]byte(`{"events":[{"seq":2,"reservation":{"id":7}}],"next":2}`), uint64(1))
	f.Add([]byte(`[`), uint64(0))
	f.Add([]byte(`{"events":[{"seq":1,"reservation":{"id":"big"},"oversized":900000}],"next":1}`), uint64(0))
	f.Fuzz(func(t *testing.T, raw []byte, from uint64) {
		evs, next, err := decodeEvents(raw, from)
		var reply EventsReply
		_ = json.Unmarshal(raw, &reply)
		if err != nil {
			if next != from || evs != nil {
				t.Fatalf("failed decode returned next %d and %d events", next, len(evs))
			}
			return
		}
		if next < from {
			t.Fatalf("next %d is before from %d", next, from)
		}
		last := from
		for _, ev := range evs {
			if ev.Seq <= last || ev.Seq > next {
				t.Fatalf("event %d out of order (after %d, next %d)", ev.Seq, last, next)
			}
			last = ev.Seq
			if ev.Reservation == nil {
				t.Fatal("event without a reservation")
			}
			for _, we := range reply.Events {
				if we.Seq == ev.Seq && we.Oversized > 0 && ev.Err == nil {
					t.Fatalf("an oversized event %d decoded without an error", ev.Seq)
				}
			}
			if ev.Err != nil && provision.IsTemporary(ev.Err) {
				t.Fatalf("a malformed event is temporary: %v", ev.Err)
			}
			if ev.Err == nil {
				if _, err := json.Marshal(ev.Reservation); err != nil {
					t.Fatalf("a decoded reservation does not encode: %v", err)
				}
			}
		}
	})
}

// FuzzDecodeResultsReply checks the client's decoding of the reply to a
// batch of results (ids is the comma-separated list of IDs sent): it never
// panics, accepts only one status per result naming its ID, and gives each
// result nil for a 2xx code or an *APIError that is temporary exactly for
// 429 and 5xx.
func FuzzDecodeResultsReply(f *testing.F) {
	f.Add([]byte(`{"results":[{"id":"a","code":200},{"id":"b","code":403,"error":"forged"}]}`), "a,b")
	f.Add([]byte(`{"results":[{"id":"a","code":503}]}`), "a")
	f.Add([]byte(`{"results":[{"id":"a","code":401},{"id":"b","code":409}]}`), "a,b")
	f.Add([]byte(`{"results":[{"id":"a","code":200}]}`), "b")
	f.Add([]byte(`{"results":[{"id":"a","code":99}]}`), "a")
	f.Add([]byte(`{"results":[]}`), "a")
	f.Add([]byte(`{`), "")
	f.Fuzz(func(t *testing.T, raw []byte, idList string) {
		ids := strings.Split(idList, ",")
		errs, err := decodeResultsReply(raw, ids, "POST /x")
		if err != nil {
			if errs != nil {
				t.Fatal("a refused reply returned outcomes")
			}
			return
		}
		if len(errs) != len(ids) {
			t.Fatalf("%d outcomes for %d results", len(errs), len(ids))
		}
		var reply ResultsReply
		if err := json.Unmarshal(raw, &reply); err != nil {
			t.Fatalf("accepted a reply that does not decode: %v", err)
		}
		for i, e := range errs {
			st := reply.Results[i]
			if st.ID != ids[i] {
				t.Fatalf("status %d names %q for result %q", i, st.ID, ids[i])
			}
			if (e == nil) != (st.Code/100 == 2) {
				t.Fatalf("code %d gave outcome %v", st.Code, e)
			}
			if e == nil {
				continue
			}
			var apiErr *APIError
			if !errors.As(e, &apiErr) || apiErr.Status != st.Code {
				t.Fatalf("outcome %v does not carry status %d", e, st.Code)
			}
			// Final only for a verdict on the result itself, and then a Refusal.
			final := slices.Contains([]int{400, 403, 404, 409, 410, 413, 422}, st.Code)
			var refusal *provision.Refusal
			if provision.IsTemporary(e) == final || errors.As(e, &refusal) != final {
				t.Fatalf("code %d: outcome %v, want final %v", st.Code, e, final)
			}
			if final && refusal.Reason == "" {
				t.Fatalf("code %d: a refusal without a reason", st.Code)
			}
		}
	})
}

func FuzzRefusal(f *testing.F) {
	f.Add(403, []byte(`{"error":"server: forbidden: node not registered","code":"not_registered"}`), "application/json")
	f.Add(401, []byte(`<html><body>401 Authorization Required</body></html>`), "text/html")
	f.Add(502, []byte(``), "")
	f.Add(400, []byte(`{"error":""}`), "application/json")
	f.Fuzz(func(t *testing.T, status int, body []byte, contentType string) {
		if status < 100 || status > 999 {
			return
		}
		resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		resp.Header.Set("Content-Type", contentType)
		e := refusal(resp, "GET /x")
		if e.Status != status || e.Message == "" {
			t.Fatalf("refusal %+v of status %d", e, status)
		}
		var er ErrorReply
		ours := json.Unmarshal(body[:min(len(body), MaxErrorSize)], &er) == nil && er.Error != "" // the client reads no more
		if e.Foreign == ours {
			t.Fatalf("body %q: foreign %v", body, e.Foreign)
		}
		if len(e.Message) > MaxErrorSize+200 {
			t.Fatalf("a message of %d bytes", len(e.Message))
		}
		if errors.Is(e, ErrNotRegistered) != (ours && er.Code == CodeNotRegistered) {
			t.Fatalf("body %q: not registered %v", body, errors.Is(e, ErrNotRegistered))
		}
		if err := classify(e); e.Foreign && !provision.IsTemporary(err) {
			t.Fatalf("a foreign refusal %d is permanent", status)
		}
	})
}
