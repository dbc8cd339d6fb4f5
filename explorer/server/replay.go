package server

import (
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"
)

// replaySet remembers the signatures of accepted requests until they are
// stale, in two generations of 2×skew each: a signature is kept at least
// 2×skew after it was first seen, which is as long as its timestamp can be
// accepted. The set is bounded three ways: per key and per remote address
// (one signer's or one address's flood is refused with 429 for itself
// alone, see ErrTooMany) and in total (ErrBusy, 503, for everyone: the
// last guard, which takes many addresses to reach). It never forgets a
// signature early.
type replaySet struct {
	mu      sync.Mutex
	period  time.Duration
	max     int
	perKey  int
	perAddr int
	start   time.Time
	cur     generation
	prev    generation
}

// generation is the signatures first seen in one period, with how many
// each key and each address has among them.
type generation struct {
	sigs  map[[ed25519.SignatureSize]byte]struct{}
	keys  map[string]int
	addrs map[string]int
}

func newGeneration() generation {
	return generation{sigs: map[[ed25519.SignatureSize]byte]struct{}{}, keys: map[string]int{}, addrs: map[string]int{}}
}

func newReplaySet(skew time.Duration, max, perKey, perAddr int) *replaySet {
	return &replaySet{period: 2 * skew, max: max, perKey: perKey, perAddr: perAddr, cur: newGeneration(), prev: newGeneration()}
}

// add records sig, made by key and sent from addr, at now; it fails with
// ErrReplay when the signature was seen before, ErrTooMany when key or addr
// has its share of the set and ErrBusy when the set is full.
func (s *replaySet) add(key, addr string, sig []byte, now time.Time) error {
	var k [ed25519.SignatureSize]byte
	if len(sig) != len(k) {
		return fmt.Errorf("%w: malformed signature", ErrReplay)
	}
	copy(k[:], sig)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start.IsZero() {
		s.start = now
	}
	if age := now.Sub(s.start); age >= s.period || age < 0 {
		if age >= 2*s.period || age < 0 {
			s.prev = newGeneration()
		} else {
			s.prev = s.cur
		}
		s.cur = newGeneration()
		s.start = now
	}
	if _, ok := s.cur.sigs[k]; ok {
		return ErrReplay
	}
	if _, ok := s.prev.sigs[k]; ok {
		return ErrReplay
	}
	// The generation in prev is dropped when cur is a period old: that
	// is when room comes back.
	wait := max(time.Second, s.start.Add(s.period).Sub(now))
	if s.cur.keys[key]+s.prev.keys[key] >= s.perKey {
		return tooMany(wait, "key %s has %d requests in the replay window, at most %d", key, s.perKey, s.perKey)
	}
	if s.cur.addrs[addr]+s.prev.addrs[addr] >= s.perAddr {
		return tooMany(wait, "address %s has %d requests in the replay window, at most %d", addr, s.perAddr, s.perAddr)
	}
	if len(s.cur.sigs)+len(s.prev.sigs) >= s.max {
		return &retryError{err: ErrBusy, after: wait}
	}
	s.cur.sigs[k] = struct{}{}
	s.cur.keys[key]++
	s.cur.addrs[addr]++
	return nil
}
