package provision

import (
	"fmt"
	"time"
)

// Limits on reservation fields.
const (
	// MaxDuration is the longest a reservation may live (10 years).
	MaxDuration = 10 * 365 * 24 * time.Hour
	// MaxClockSkew is how far in the future Created may lie.
	MaxClockSkew = 5 * time.Minute
	// MaxReferenceLength is the longest Reference.
	MaxReferenceLength = 256
)

// Validate checks a reservation before anything is touched: it is for
// nodeID, its fields are in range, its ID is a safe name, its Data is at most
// MaxDataSize and decodes into a valid workload of a known type, it is signed
// by its owner and, at now, it has not expired. A delete request must carry a
// valid delete signature; it may arrive after expiry. Every failure wraps its
// own sentinel error and is permanent.
func Validate(r *Reservation, nodeID string, now time.Time) error {
	if err := validate(r, nodeID, now); err != nil {
		return Permanent(err)
	}
	return nil
}

func validate(r *Reservation, nodeID string, now time.Time) error {
	if r == nil {
		return fmt.Errorf("%w: no reservation", ErrBadData)
	}
	if err := ValidName("reservation id", r.ID); err != nil {
		return err
	}
	if r.NodeID != nodeID {
		return fmt.Errorf("%w: node_id %q is not %q", ErrWrongNode, r.NodeID, nodeID)
	}
	return check(r, now, true)
}

// CheckSubmitted checks a reservation as its node will, before it has an ID
// and a node to judge it: its fields are in range, its Data is at most
// MaxDataSize, it is signed by its owner, it is not marked for deletion
// without a valid delete signature and, at now, it has not expired. Its
// type and workload are left to the node, which answers them in a signed
// result. The explorer calls it on every reservation a user submits, so
// that it refuses exactly what every node would. Every failure wraps its
// own sentinel error.
func CheckSubmitted(r *Reservation, now time.Time) error {
	if r == nil {
		return fmt.Errorf("%w: no reservation", ErrBadData)
	}
	return check(r, now, false)
}

// check is the part of validate that does not depend on the node: with
// workload set, the type must be known and the Data a valid workload of it.
func check(r *Reservation, now time.Time, workload bool) error {
	if !isHex(r.UserID, 64) {
		return fmt.Errorf("%w: user_id is not a 64-character lowercase hex public key", ErrBadField)
	}
	if len(r.Data) > MaxDataSize {
		return fmt.Errorf("%w: data is %d bytes, at most %d", ErrDataTooLarge, len(r.Data), MaxDataSize)
	}
	if workload && !r.Type.Known() {
		return fmt.Errorf("%w: %q", ErrUnknownType, r.Type)
	}
	if r.Duration <= 0 || r.Duration > MaxDuration {
		return fmt.Errorf("%w: duration %s is not between 0 and %s", ErrBadField, r.Duration, MaxDuration)
	}
	if r.Created.IsZero() || r.Created.After(now.Add(MaxClockSkew)) {
		return fmt.Errorf("%w: created %s is unset or in the future", ErrBadField, formatTime(r.Created))
	}
	if len(r.Reference) > MaxReferenceLength {
		return fmt.Errorf("%w: reference longer than %d bytes", ErrBadField, MaxReferenceLength)
	}
	if r.Previous != "" && (!isHex(r.Previous, 64) || r.Version == 0) {
		return fmt.Errorf("%w: previous is not a 64-character lowercase hex digest of a version before %d", ErrBadField, r.Version)
	}
	if workload {
		if _, err := r.Workload(); err != nil {
			return err
		}
	}
	if err := r.Verify(); err != nil {
		return err
	}
	if r.ToDelete {
		return r.VerifyDelete()
	}
	if r.Expired(now) {
		return fmt.Errorf("%w: at %s", ErrExpired, formatTime(r.Expires()))
	}
	return nil
}
