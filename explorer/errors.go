package explorer

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// Errors of the explorer package.
var (
	ErrUnsigned     = errors.New("explorer: request is not signed")
	ErrBadKey       = errors.New("explorer: malformed request key")
	ErrBadSignature = errors.New("explorer: bad request signature")
	ErrStale        = errors.New("explorer: request timestamp outside the allowed skew")
	ErrBadReply     = errors.New("explorer: malformed reply")
	ErrBadEvent     = errors.New("explorer: malformed event")
	// ErrCursorGone is what Poll wraps a 410 Gone in: the explorer pruned
	// the events after the cursor, and the node reconciles from State.
	ErrCursorGone = provision.ErrCursorGone
	ErrTruncated  = errors.New("explorer: list truncated")
)

// APIError is a refusal the explorer answered with a status code and a
// message ({"error": "..."}). The client wraps it in a provision.Error that
// says whether retrying may help.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the explorer's explanation.
	Message string
	// Op names the call that was refused ("PUT /api/v1/nodes/x/stats").
	Op string
	// RetryAfter is the server's Retry-After, if it sent one.
	RetryAfter time.Duration
}

// Error returns the operation, the status and the message.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s: explorer answered %d: %s", e.Op, e.Status, e.Message)
}
