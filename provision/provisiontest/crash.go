package provisiontest

import (
	"fmt"
	"sync"

	"github.com/edgeprov/provisiond/provision"
)

// CrashStore wraps a provision.Store and "crashes" at a chosen write: the
// write number after (counting from 0) and every later write fail with
// ErrCrashed without reaching the inner store, and OnCrash is called once,
// inside the failing write. Reads pass through. Restarting an Engine over
// the inner store then shows what a real crash at that point leaves.
type CrashStore struct {
	provision.Store
	// OnCrash, when set, is called once when the crash happens (a test
	// cancels the Engine there: a dead process does nothing more).
	OnCrash func()

	mu      sync.Mutex
	after   int
	writes  int
	crashed bool
}

var (
	_ provision.Store       = (*CrashStore)(nil)
	_ provision.WriteQueuer = (*CrashStore)(nil)
)

// NewCrashStore returns inner crashing at write number after; a negative
// after never crashes (it only counts).
func NewCrashStore(inner provision.Store, after int) *CrashStore {
	return &CrashStore{Store: inner, after: after}
}

// Writes returns how many writes reached the inner store.
func (s *CrashStore) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// Crashed reports whether the crash happened.
func (s *CrashStore) Crashed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crashed
}

// write runs fn unless the store crashed or crashes now.
func (s *CrashStore) write(op string, fn func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.crashed && s.after >= 0 && s.writes >= s.after {
		s.crashed = true
		if s.OnCrash != nil {
			s.OnCrash()
		}
	}
	if s.crashed {
		return fmt.Errorf("%s: %w", op, ErrCrashed)
	}
	if err := fn(); err != nil {
		return err
	}
	s.writes++
	return nil
}

// Add passes to the inner store until the crash.
func (s *CrashStore) Add(rec *provision.Record, out ...*provision.OutboxEntry) error {
	return s.write("adding record", func() error { return s.Store.Add(rec, out...) })
}

// Save passes to the inner store until the crash.
func (s *CrashStore) Save(rec *provision.Record, out ...*provision.OutboxEntry) error {
	return s.write("saving record", func() error { return s.Store.Save(rec, out...) })
}

// QueueAdd adds at once (counting as one write, which may be the crash)
// and returns a wait that reports the outcome, so that the Engine's queued
// path meets the crash too.
func (s *CrashStore) QueueAdd(rec *provision.Record, out ...*provision.OutboxEntry) (wait func() error) {
	err := s.Add(rec, out...)
	return func() error { return err }
}

// QueueSave saves at once, as QueueAdd adds.
func (s *CrashStore) QueueSave(rec *provision.Record, out ...*provision.OutboxEntry) (wait func() error) {
	err := s.Save(rec, out...)
	return func() error { return err }
}

// Enqueue passes to the inner store until the crash.
func (s *CrashStore) Enqueue(out ...*provision.OutboxEntry) error {
	return s.write("enqueuing", func() error { return s.Store.Enqueue(out...) })
}

// Ack passes to the inner store until the crash (one write, however many
// entries it acknowledges).
func (s *CrashStore) Ack(seqs ...uint64) error {
	return s.write("acknowledging", func() error { return s.Store.Ack(seqs...) })
}

// SetCursor passes to the inner store until the crash.
func (s *CrashStore) SetCursor(name string, pos uint64) error {
	return s.write("setting cursor", func() error { return s.Store.SetCursor(name, pos) })
}
