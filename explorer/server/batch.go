package server

import (
	"encoding/json"
	"fmt"

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
// {"results": [result, …]} with at most limit elements. The body as a whole
// fails with ErrBadRequest when it is not such an object and ErrTooLarge
// when it holds more than limit results. An element that does not decode
// into a result, or has no id, is refused alone: its item carries an
// ErrBadRequest and whatever id could be read of it, so that one bad
// result does not fail the others.
func decodeResults(body []byte, limit int) ([]resultItem, error) {
	var req struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	if req.Results == nil {
		return nil, fmt.Errorf("%w: the body has no \"results\" list", ErrBadRequest)
	}
	if len(req.Results) > limit {
		return nil, fmt.Errorf("%w: %d results, at most %d in one request", ErrTooLarge, len(req.Results), limit)
	}
	items := make([]resultItem, len(req.Results))
	for i, raw := range req.Results {
		items[i] = decodeResult(i, raw)
	}
	return items, nil
}

// decodeResult decodes element i of a batch.
func decodeResult(i int, raw json.RawMessage) resultItem {
	var res provision.Result
	if err := json.Unmarshal(raw, &res); err != nil {
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
