package server

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestKeyedBounded: the rate limiters remember at most max keys, the least
// recently used forgotten first, and a key's budget is its own.
func TestKeyedBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	k := newKeyed(1, 2, 3)
	for i := range 10 {
		if d := k.take(fmt.Sprint("k", i), now); d != 0 {
			t.Fatalf("a fresh key waits %v", d)
		}
	}
	if n := k.size(); n != 3 {
		t.Fatalf("%d keys remembered, at most 3", n)
	}
	// k9 has one token left of its burst of 2, then none.
	if d := k.take("k9", now); d != 0 {
		t.Fatalf("the second token of k9: wait %v", d)
	}
	if d := k.take("k9", now); d < 900*time.Millisecond || d > time.Second {
		t.Fatalf("k9 out of tokens: wait %v, want about 1 s", d)
	}
	if d := k.check("k8", now); d != 0 {
		t.Fatalf("k8 pays for k9: wait %v", d)
	}
	if d := k.take("k9", now.Add(time.Second)); d != 0 {
		t.Fatalf("k9 a second later: wait %v", d)
	}
	// Refusals take nothing: a byte budget of 10, asked for 8 twice.
	b := newKeyed(10, 10, 3)
	if d := b.takeN("a", now, 8); d != 0 {
		t.Fatal(d)
	}
	if d := b.takeN("a", now, 8); d < 500*time.Millisecond || d > time.Second {
		t.Fatalf("8 of 2 left: wait %v, want 0.6 s", d)
	}
	if d := b.takeN("a", now, 11); d != time.Hour {
		t.Fatalf("more than the burst: wait %v, want never (an hour)", d)
	}
	var off *keyed
	if off.take("x", now) != 0 || off.check("x", now) != 0 {
		t.Fatal("a nil limiter refused")
	}
}

// TestCounterBounded: per key and in total; keys that hold nothing leave.
func TestCounterBounded(t *testing.T) {
	c := newCounter(2, 3)
	if !c.acquire("a", 2) || c.acquire("a", 1) {
		t.Fatal("a: want 2 then no more")
	}
	if !c.acquire("b", 1) || c.acquire("b", 1) {
		t.Fatal("b: want 1 then the total of 3 reached")
	}
	c.release("a", 2)
	c.release("b", 1)
	if len(c.held) != 0 || c.sum != 0 {
		t.Fatalf("after release: %v, sum %d", c.held, c.sum)
	}
}

// TestReplayShares: a key, then an address, that has its share of the set
// is refused with ErrTooMany for itself; others go on; the set as a whole
// refuses with ErrBusy; a replay is a replay first.
func TestReplayShares(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := newReplaySet(time.Minute, 10, 3, 5)
	sig := func(i int) []byte {
		b := make([]byte, 64)
		b[0], b[1] = byte(i), byte(i>>8)
		return b
	}
	n := 0
	add := func(key, addr string) error { n++; return s.add(key, addr, sig(n), now) }
	for range 3 {
		if err := add("k1", "a1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := add("k1", "a1"); !errors.Is(err, ErrTooMany) || retryAfter(err) == 0 {
		t.Fatalf("k1's fourth: %v, want ErrTooMany with a Retry-After", err)
	}
	if err := s.add("k1", "a1", sig(1), now); !errors.Is(err, ErrReplay) {
		t.Fatalf("a replay of k1's first: %v, want ErrReplay", err)
	}
	for range 2 {
		if err := add("k2", "a1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := add("k3", "a1"); !errors.Is(err, ErrTooMany) {
		t.Fatalf("a1's sixth: %v, want ErrTooMany", err)
	}
	for i := range 5 {
		if err := add(fmt.Sprint("k", 10+i), fmt.Sprint("a", 10+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := add("k99", "a99"); !errors.Is(err, ErrBusy) {
		t.Fatalf("the eleventh in a set of 10: %v, want ErrBusy", err)
	}
	// Two periods later everything is stale and gone.
	now = now.Add(5 * time.Minute)
	if err := add("k1", "a1"); err != nil {
		t.Fatalf("k1 after the window: %v", err)
	}
}
