// Package idlock is a lock per ID: the Engine holds the lock of a
// reservation's ID across every read-modify-write of its record, so that
// a record whose write waits never holds up another's.
package idlock

import "sync"

// Set holds a mutex per ID while it is held or awaited. The zero Set is
// ready to use.
type Set struct {
	mu sync.Mutex
	m  map[string]*mutex
}

// mutex is the mutex of one ID and how many hold or await it.
type mutex struct {
	sync.Mutex
	refs int
}

// Lock is the lock of one ID in a Set. Unlock may be called from another
// goroutine than Lock (a write's finisher).
type Lock struct {
	set *Set
	id  string
}

// Of returns the lock of id in s.
func (s *Set) Of(id string) Lock { return Lock{set: s, id: id} }

// Lock takes the lock of the ID.
func (l Lock) Lock() {
	l.set.mu.Lock()
	if l.set.m == nil {
		l.set.m = make(map[string]*mutex)
	}
	m := l.set.m[l.id]
	if m == nil {
		m = &mutex{}
		l.set.m[l.id] = m
	}
	m.refs++
	l.set.mu.Unlock()
	m.Lock()
}

// Unlock releases the lock of the ID, and forgets the ID when nobody else
// holds or awaits it.
func (l Lock) Unlock() {
	l.set.mu.Lock()
	m := l.set.m[l.id]
	m.refs--
	if m.refs == 0 {
		delete(l.set.m, l.id)
	}
	l.set.mu.Unlock()
	m.Unlock()
}
