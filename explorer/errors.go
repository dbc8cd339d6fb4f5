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
	// ErrTruncated ends a list longer than the client follows.
	ErrTruncated = errors.New("explorer: list truncated")
	// ErrReplyTooLarge is a reply body beyond the limit of its call
	// (MaxPageSize for events, MaxReplySize for the node's other calls).
	ErrReplyTooLarge = errors.New("explorer: reply too large")
	// ErrNotRegistered is a refusal of a node endpoint because the explorer
	// does not know the node: an *APIError with Code CodeNotRegistered
	// matches it (errors.Is).
	ErrNotRegistered = errors.New("explorer: node not registered")
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
	// Code is the explorer's ErrorReply.Code, if any.
	Code string
	// Foreign is true when the body was not the explorer's JSON refusal
	// (a proxy's HTML page, nothing, garbage): the status may not be the
	// explorer's verdict, so the refusal is temporary.
	Foreign bool
}

// Is reports whether e matches target: ErrNotRegistered matches an
// explorer's CodeNotRegistered refusal.
func (e *APIError) Is(target error) bool {
	return target == ErrNotRegistered && e.Code == CodeNotRegistered
}

// Error returns the operation, the status and the message.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s: explorer answered %d: %s", e.Op, e.Status, e.Message)
}
