package cache

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// unitsSize is the length of the units of a units entry, before its
// user ID and type; maxUnitsUser is the longest user ID an entry holds.
const (
	unitsSize    = 32
	maxUnitsUser = 255
)

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// timeBits orders times as unsigned big-endian keys: unix nanoseconds
// (clamped to the int64 range) with the sign bit flipped.
func timeBits(t time.Time) uint64 {
	var ns int64
	switch {
	case t.Before(minTime):
		ns = math.MinInt64
	case t.After(maxTime):
		ns = math.MaxInt64
	default:
		ns = t.UnixNano()
	}
	return uint64(ns) ^ (1 << 63)
}

// bitsTime is the inverse of timeBits, in UTC.
func bitsTime(b uint64) time.Time {
	return time.Unix(0, int64(b^(1<<63))).UTC()
}

// expiryKey returns the expiry index key of id expiring at t.
func expiryKey(t time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, timeBits(t))
	return append(k, id...)
}

// splitExpiryKey returns the time bits and id of an expiry index key.
func splitExpiryKey(k []byte) (uint64, string, error) {
	if len(k) <= 8 {
		return 0, "", fmt.Errorf("%w: expiry key of %d bytes", ErrCorrupt, len(k))
	}
	return binary.BigEndian.Uint64(k[:8]), string(k[8:]), nil
}

// encodeUnits returns the states bucket value of a record: its units,
// the length of its owner's user ID (one byte), that user ID and its
// type. A user ID longer than 255 bytes cannot be encoded (a valid one
// is 64 hex digits).
func encodeUnits(typ provision.ReservationType, user string, u provision.Units) ([]byte, error) {
	if len(user) > maxUnitsUser {
		return nil, fmt.Errorf("%w: user ID of %d bytes in a units entry (at most %d)", ErrCorrupt, len(user), maxUnitsUser)
	}
	v := make([]byte, unitsSize, unitsSize+1+len(user)+len(typ))
	binary.BigEndian.PutUint64(v[0:], u.CRU)
	binary.BigEndian.PutUint64(v[8:], math.Float64bits(u.MRU))
	binary.BigEndian.PutUint64(v[16:], math.Float64bits(u.SRU))
	binary.BigEndian.PutUint64(v[24:], math.Float64bits(u.HRU))
	v = append(v, byte(len(user)))
	v = append(v, user...)
	return append(v, typ...), nil
}

// decodeUnits is the inverse of encodeUnits.
func decodeUnits(v []byte) (provision.ReservationType, string, provision.Units, error) {
	if len(v) <= unitsSize || len(v) < unitsSize+1+int(v[unitsSize]) {
		return "", "", provision.Units{}, fmt.Errorf("%w: units entry of %d bytes", ErrCorrupt, len(v))
	}
	u := provision.Units{
		CRU: binary.BigEndian.Uint64(v[0:]),
		MRU: math.Float64frombits(binary.BigEndian.Uint64(v[8:])),
		SRU: math.Float64frombits(binary.BigEndian.Uint64(v[16:])),
		HRU: math.Float64frombits(binary.BigEndian.Uint64(v[24:])),
	}
	end := unitsSize + 1 + int(v[unitsSize])
	return provision.ReservationType(v[end:]), string(v[unitsSize+1 : end]), u, nil
}

// decodeUint64 decodes a big-endian counter value.
func decodeUint64(what string, v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: %s is %d bytes, want 8", ErrCorrupt, what, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// decodeRecord decodes a stored record and checks the fields the indexes
// rely on.
func decodeRecord(v []byte) (*provision.Record, error) {
	var rec provision.Record
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("%w: decoding record: %w", ErrCorrupt, err)
	}
	if rec.Reservation == nil || rec.Reservation.ID == "" {
		return nil, fmt.Errorf("%w: record without a reservation id", ErrCorrupt)
	}
	return &rec, nil
}

// decodeEntry decodes a stored outbox entry.
func decodeEntry(v []byte) (*provision.OutboxEntry, error) {
	var e provision.OutboxEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("%w: decoding outbox entry: %w", ErrCorrupt, err)
	}
	return &e, nil
}

// indexed is what the indexes hold of a record.
type indexed struct {
	id      string
	user    string
	typ     provision.ReservationType
	digest  string
	key     string
	state   provision.State
	expires time.Time
	units   provision.Units
}

func indexOf(rec *provision.Record) indexed {
	return indexed{
		id:      rec.Reservation.ID,
		user:    rec.Reservation.UserID,
		typ:     rec.Reservation.Type,
		digest:  rec.Digest,
		key:     rec.Key,
		state:   rec.State,
		expires: rec.Reservation.Expires(),
		units:   rec.Units,
	}
}

// live reports whether the record holds its key and sits in the expiry index.
func (x indexed) live() bool { return !x.state.Final() }

// holdsKey reports whether the record holds a key in the keys bucket.
func (x indexed) holdsKey() bool { return x.key != "" && x.live() }
