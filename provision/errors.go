package provision

import (
	"errors"
	"fmt"
)

// Sentinel errors of the provision package. Validation failures each have
// their own, so callers and tests can tell them apart with errors.Is.
var (
	ErrWrongNode          = errors.New("provision: reservation is for another node")
	ErrBadSignature       = errors.New("provision: bad reservation signature")
	ErrBadDeleteSignature = errors.New("provision: bad delete signature")
	ErrBadResultSignature = errors.New("provision: bad result signature")
	ErrDataTooLarge       = errors.New("provision: reservation data too large")
	ErrBadName            = errors.New("provision: bad name")
	ErrUnknownType        = errors.New("provision: unknown reservation type")
	ErrBadSize            = errors.New("provision: bad size")
	ErrExpired            = errors.New("provision: reservation expired")
	ErrBadField           = errors.New("provision: field out of range")
	ErrBadData            = errors.New("provision: malformed reservation data")
	ErrAmbiguousJSON      = errors.New("provision: ambiguous JSON")
	ErrNotFound           = errors.New("provision: not found")
	ErrExists             = errors.New("provision: already exists")
	ErrReplay             = errors.New("provision: replay of a known reservation under another id")
	ErrConflict           = errors.New("provision: conflicting state")
	ErrBadUpdate          = errors.New("provision: update refused")
	ErrNoCapacity         = errors.New("provision: not enough capacity")
	ErrQuota              = errors.New("provision: quota")
	ErrBadQuota           = errors.New("provision: bad quota")
	ErrPollEOS            = errors.New("provision: end of poll stream")
	ErrCursorGone         = errors.New("provision: the source no longer has the events after the cursor")
	ErrVanished           = errors.New("provision: workload vanished")
)

// Error carries the retry class of a failure. Temporary failures are retried
// with backoff; permanent ones fail the operation at once. An error that
// carries no class is treated as temporary (see IsTemporary).
type Error struct {
	// Temporary is true when retrying may succeed.
	Temporary bool
	// Err is the underlying failure.
	Err error
}

// Error returns the underlying error's text.
func (e *Error) Error() string {
	if e.Err == nil {
		return "provision: unspecified error"
	}
	return e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Temporary marks err as worth retrying. It returns nil for a nil err.
func Temporary(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Temporary: true, Err: err}
}

// Permanent marks err as final: retrying cannot help. It returns nil for a nil err.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Temporary: false, Err: err}
}

// Permanentf formats a permanent error; %w wraps as in fmt.Errorf.
func Permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}

// IsTemporary reports whether err should be retried: true for a nil-free err
// whose outermost *Error says Temporary, or that carries no class at all.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Temporary
	}
	return true
}

// Refusal is a receiver's final verdict on one outbox entry: the explorer
// judged the entry itself (not the request that carried it) and will never
// take it — a bad signature, a digest conflict, an unknown reservation. A
// Feedbacker returns it wrapped in a permanent Error; the outbox records
// it on the reservation's record (Record.Refused), counts it by Reason and
// moves on. Anything else (an authentication failure, a timeout, a 5xx, a
// proxy's error page) is about the request and stays temporary.
type Refusal struct {
	// Reason is a short kebab-case label for metrics ("bad-signature",
	// "digest-conflict", "unknown-reservation", "malformed", …).
	Reason string
	// Err is the receiver's answer.
	Err error
}

// Error returns the reason and the receiver's answer.
func (r *Refusal) Error() string {
	if r.Err == nil {
		return "refused: " + r.Reason
	}
	return "refused (" + r.Reason + "): " + r.Err.Error()
}

// Unwrap returns the receiver's answer.
func (r *Refusal) Unwrap() error { return r.Err }
