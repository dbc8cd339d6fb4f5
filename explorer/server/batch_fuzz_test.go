package server

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeResults checks the decoder of a batch of results: it never
// panics; a body it refuses as a whole is a bad request or too large;
// otherwise it returns at most the limit of items, each either a result
// with an id or a refusal of its own (a bad request), and an item's id is
// its result's.
func FuzzDecodeResults(f *testing.F) {
	f.Add([]byte(`{"results":[{"id":"a","node_id":"n","created":"2026-01-01T00:00:00Z","state":"ok","signature":"00"}]}`))
	f.Add([]byte(`{"results":[{"id":"b","created":"yesterday"},null,{},{"id":7},[],"x"]}`))
	f.Add([]byte(`{"results":[]}`))
	f.Add([]byte(`{"results":null}`))
	f.Add([]byte(`{"results":[1,2,3,4,5]}`))
	f.Add([]byte(`{"results":[{"id":"\ud800"}]}`))
	f.Add([]byte(`[`))
	f.Add([]byte(`{"results":[],"results":[]}`))
	f.Add([]byte(`{"Results":[]}`))
	f.Add([]byte("{\"results\":[\"\xff\"]}"))
	f.Add([]byte(`{"results":[` + strings.Repeat(`{},`, 1000) + `{}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		const limit = 4
		items, err := decodeResults(body, limit)
		if err != nil {
			if items != nil {
				t.Fatal("a refused body returned items")
			}
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("refusal %v is neither a bad request nor too large", err)
			}
			return
		}
		if !json.Valid(body) || !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not valid JSON in UTF-8: %q", body)
		}
		if len(items) > limit {
			t.Fatalf("%d items, at most %d allowed", len(items), limit)
		}
		for i, it := range items {
			switch {
			case (it.res == nil) == (it.err == nil):
				t.Fatalf("item %d: result %v and error %v: want exactly one", i, it.res, it.err)
			case it.err != nil && !errors.Is(it.err, ErrBadRequest):
				t.Fatalf("item %d: refusal %v is not a bad request", i, it.err)
			case it.res != nil && (it.res.ID == "" || it.id != it.res.ID):
				t.Fatalf("item %d: id %q, result id %q", i, it.id, it.res.ID)
			}
		}
	})
}

// FuzzParseCursor checks the decoder of ?cursor=: it never panics, refuses
// with a bad request, and what it accepts prints back as given.
func FuzzParseCursor(f *testing.F) {
	f.Add("")
	f.Add("1767225600000000.0123456789abcdef")
	f.Add("-5.ab")
	f.Add("01.ab")
	f.Add("1.")
	f.Add("1.AB")
	f.Add("99999999999999999999.ab")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("refusal %v is not a bad request", err)
			}
			return
		}
		if c.String() != s {
			t.Fatalf("ParseCursor(%q) prints back as %q", s, c.String())
		}
	})
}
