package provision

import (
	"unicode/utf8"
)

// Bounds on what the node stores and signs of items a stranger (a user, or
// a compromised explorer) sends.
const (
	// MaxMessageLength bounds a result's message and a transition's
	// message, in bytes: an error quoting a huge field is cut there.
	MaxMessageLength = 1024
	// MaxRefusedField bounds each string field of a refused reservation
	// kept in its Failed record, in bytes: nothing of what was refused
	// is stored larger than a valid reservation's field could be.
	MaxRefusedField = 256
	// resendScan is how many pending outbox entries a repeated event's
	// result is looked for among before it is enqueued again.
	resendScan = 512
)

// Truncate returns s cut to at most n bytes on a rune boundary, ending in
// "…" when it was cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "…"
	cut := max(n-len(more), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

// boundedRefusal returns the copy of a refused reservation that its
// Failed record keeps: every string field cut to MaxRefusedField, Data
// dropped unless it is at most MaxDataSize, no explorer result.
func boundedRefusal(r *Reservation) *Reservation {
	c := stripped(r)
	c.NodeID = Truncate(c.NodeID, MaxRefusedField)
	c.UserID = Truncate(c.UserID, MaxRefusedField)
	c.Type = ReservationType(Truncate(string(c.Type), MaxRefusedField))
	c.Signature = Truncate(c.Signature, MaxRefusedField)
	c.DeleteSignature = Truncate(c.DeleteSignature, MaxRefusedField)
	c.Reference = Truncate(c.Reference, MaxRefusedField)
	if len(c.Data) > MaxDataSize {
		c.Data = nil // do not keep what was refused for its size
	}
	return c
}

// pendingResult reports whether res (the same reservation, digest,
// version and state) already waits in the outbox among its first
// resendScan entries, so that a repeated event does not enqueue it twice.
func (e *Engine) pendingResult(res *Result) (bool, error) {
	entries, err := e.store.Pending(resendScan)
	if err != nil {
		return false, err
	}
	for _, en := range entries {
		if p := en.Result; en.Kind == OutboxResult && p != nil && p.ID == res.ID && p.Digest == res.Digest &&
			p.Version == res.Version && p.State == res.State && p.Message == res.Message {
			return true, nil
		}
	}
	return false, nil
}
