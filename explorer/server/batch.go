package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/edgeprov/provisiond/provision"
)

// resultItem is one element of a batch of results, as decoded.
type resultItem struct {
	// id is the result's reservation ID, as far as it could be read.
	id string
	// res is the decoded result; nil when err is set.
	res *provision.Result
	// err is why the element is refused before any check (ErrBadRequest).
	err error
}

// decodeResults decodes the body of POST /api/v1/nodes/{node}/results:
// {"results": [result, …]} with at most limit elements. It reads the body
// as a stream of tokens and stops at the element past limit, so a body of
// many tiny elements costs no more than one of limit elements. The body as
// a whole fails with ErrBadRequest when it is not such an object (under
// the strict rule of decode: UTF-8, the one exact field name, once) and
// ErrTooLarge when it holds more than limit results. An element that does
// not decode into a result, or has no id, is refused alone: its item
// carries an ErrBadRequest and whatever id could be read of it, so that
// one bad result does not fail the others.
func decodeResults(body []byte, limit int) ([]resultItem, error) {
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: decoding body: not valid UTF-8", ErrBadRequest)
	}
	bad := func(what string, args ...any) error {
		return fmt.Errorf("%w: decoding body: %s", ErrBadRequest, fmt.Sprintf(what, args...))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, bad("not a JSON object")
	}
	var items []resultItem
	seen := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, bad("%v", err)
		}
		switch key := t.(string); {
		case key != "results" && strings.EqualFold(key, "results"):
			return nil, bad("field %q: use \"results\" (field names are case-sensitive)", key)
		case key != "results":
			return nil, bad("unknown field %q", key)
		case seen:
			return nil, bad("duplicate key \"results\"")
		}
		seen = true
		if t, err = dec.Token(); err != nil {
			return nil, bad("%v", err)
		}
		if t == nil {
			continue // null: no list, refused below
		}
		if t != json.Delim('[') {
			return nil, bad("\"results\" is not a list")
		}
		items = []resultItem{}
		for i := 0; dec.More(); i++ {
			if i == limit {
				return nil, fmt.Errorf("%w: more than %d results, at most %d in one request", ErrTooLarge, limit, limit)
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, bad("result %d: %v", i, err)
			}
			items = append(items, decodeResult(i, raw))
		}
		if _, err := dec.Token(); err != nil { // ]
			return nil, bad("%v", err)
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return nil, bad("%v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, bad("trailing data after the JSON object")
	}
	if items == nil {
		return nil, fmt.Errorf("%w: the body has no \"results\" list", ErrBadRequest)
	}
	return items, nil
}

// decodeResult decodes element i of a batch.
func decodeResult(i int, raw json.RawMessage) resultItem {
	var res provision.Result
	if err := provision.DecodeData(raw, &res); err != nil {
		var partial struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(raw, &partial) // best effort: the ID tells the node which result
		return resultItem{id: partial.ID, err: fmt.Errorf("%w: result %d: %v", ErrBadRequest, i, err)}
	}
	if res.ID == "" {
		return resultItem{err: fmt.Errorf("%w: result %d has no id", ErrBadRequest, i)}
	}
	return resultItem{id: res.ID, res: &res}
}
