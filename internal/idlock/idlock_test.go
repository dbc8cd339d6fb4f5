package idlock

import (
	"runtime"
	"testing"
)

// The lock of one ID excludes its other holders and no other ID; an ID
// nobody holds or awaits is forgotten. (A goroutine blocked on a mutex is
// not durably blocked for testing/synctest, so this test polls the
// waiter count instead.)
func TestLocks(t *testing.T) {
	var set Set
	a := set.Of("a")
	a.Lock()

	b := set.Of("b")
	b.Lock() // would hang the test if b shared a's mutex
	held := len(set.m)
	b.Unlock()
	if held != 2 {
		t.Fatalf("%d ids held, want a and b", held)
	}

	same, done := make(chan struct{}), make(chan struct{})
	go func() {
		a2 := set.Of("a")
		a2.Lock()
		close(same)
		a2.Unlock()
		close(done)
	}()
	for refs := 0; refs < 2; runtime.Gosched() {
		set.mu.Lock()
		refs = set.m["a"].refs
		set.mu.Unlock()
	}
	select {
	case <-same:
		t.Fatal("a second holder took the lock of a while it was held")
	default:
	}
	a.Unlock()
	<-done
	if n := len(set.m); n != 0 {
		t.Fatalf("%d ids remembered after every lock was released", n)
	}
}
