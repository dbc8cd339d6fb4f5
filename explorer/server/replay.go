package server

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// replaySet remembers the signatures of accepted requests until they are
// stale, in two generations of 2×skew each: a signature is kept at least
// 2×skew after it was first seen, which is as long as its timestamp can be
// accepted. The set is bounded: when full, new requests are refused with
// ErrBusy (retry later) rather than forgetting anything early.
type replaySet struct {
	mu     sync.Mutex
	period time.Duration
	max    int
	start  time.Time
	cur    map[[ed25519.SignatureSize]byte]struct{}
	prev   map[[ed25519.SignatureSize]byte]struct{}
}

func newReplaySet(skew time.Duration, max int) *replaySet {
	return &replaySet{
		period: 2 * skew,
		max:    max,
		cur:    map[[ed25519.SignatureSize]byte]struct{}{},
		prev:   map[[ed25519.SignatureSize]byte]struct{}{},
	}
}

// add records sigHex at now; it fails with ErrReplay when the signature was
// seen before and ErrBusy when the set is full.
func (s *replaySet) add(sigHex string, now time.Time) error {
	var sig [ed25519.SignatureSize]byte
	if n, err := hex.Decode(sig[:], []byte(sigHex)); err != nil || n != len(sig) {
		return fmt.Errorf("%w: malformed signature", ErrReplay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start.IsZero() {
		s.start = now
	}
	if age := now.Sub(s.start); age >= s.period || age < 0 {
		if age >= 2*s.period || age < 0 {
			clear(s.prev)
		} else {
			s.prev = s.cur
		}
		s.cur = make(map[[ed25519.SignatureSize]byte]struct{}, len(s.prev))
		s.start = now
	}
	if _, ok := s.cur[sig]; ok {
		return ErrReplay
	}
	if _, ok := s.prev[sig]; ok {
		return ErrReplay
	}
	if len(s.cur)+len(s.prev) >= s.max {
		return ErrBusy
	}
	s.cur[sig] = struct{}{}
	return nil
}
