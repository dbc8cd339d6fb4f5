// Package sched is the Engine's Scheduler: it serialises operations per
// reservation ID, hands them to a bounded pool of workers, urgent ones
// first, and holds waiting IDs (backoff, dependencies) on timers, not on
// workers.
package sched

import (
	"context"
	"sync"
	"time"
)

// Op is a set of operations requested for one reservation.
type Op uint8

const (
	// Drive advances the record by its state: accepted → provisioning →
	// deployed, deleting → deleted.
	Drive Op = 1 << iota
	// Inspect checks a deployed workload (reconcile).
	Inspect
	// Purge removes the leftovers of a failed workload (best effort).
	Purge
)

type slotState uint8

const (
	slotQueued slotState = iota
	slotRunning
	slotWaiting
)

// slot is the Scheduler's entry for one reservation ID. At most one
// operation runs per ID; requests that arrive meanwhile are merged into
// again and run after it.
type slot struct {
	state  slotState
	ops    Op // what to run when the slot is taken
	urgent bool
	again  Op // requested while running
	agUrg  bool
	timer  *time.Timer
	// deps is set while the slot waits for dependencies: a change of
	// another record wakes it early.
	deps bool
	// gen is the Scheduler's depGen when the slot was taken: a record
	// change while it ran (depGen moved on) may have been a dependency it
	// had just found missing, so a wait for dependencies ends at once.
	gen uint64
}

// Scheduler serialises operations per reservation ID and hands them to a
// bounded pool of workers. Deletes and expiries go to the urgent queue,
// which workers always take from first, so they never starve behind new
// work. A slot that waits (backoff, dependencies) holds no worker: a timer
// queues it again.
type Scheduler struct {
	mu      sync.Mutex
	slots   map[string]*slot
	urgent  fifo
	normal  fifo
	queued  int
	running int
	deps    int    // waiting slots with deps set
	depGen  uint64 // counts wakeDeps calls
	stopped bool
	signal  chan struct{}
}

// New returns an empty Scheduler.
func New() *Scheduler {
	return &Scheduler{slots: make(map[string]*slot), signal: make(chan struct{}, 1)}
}

// fifo is a queue of IDs. An ID may appear twice (normal, then promoted to
// urgent); take skips entries whose slot is no longer queued.
type fifo struct {
	items []string
	head  int
}

func (f *fifo) push(id string) { f.items = append(f.items, id) }

func (f *fifo) pop() (string, bool) {
	if f.head == len(f.items) {
		return "", false
	}
	id := f.items[f.head]
	f.items[f.head] = ""
	f.head++
	if f.head == len(f.items) {
		f.items, f.head = f.items[:0], 0
	} else if f.head > 1024 && f.head*2 > len(f.items) {
		f.items = append(f.items[:0:0], f.items[f.head:]...)
		f.head = 0
	}
	return id, true
}

// Request asks for ops on id. A waiting slot is queued at once; a running
// one runs them again when it is done.
func (s *Scheduler) Request(id string, ops Op, urgent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	sl, ok := s.slots[id]
	if !ok {
		sl = &slot{ops: ops, urgent: urgent}
		s.slots[id] = sl
		s.enqueue(id, sl)
		return
	}
	switch sl.state {
	case slotRunning:
		sl.again |= ops
		sl.agUrg = sl.agUrg || urgent
	case slotQueued:
		sl.ops |= ops
		if urgent && !sl.urgent {
			sl.urgent = true
			s.urgent.push(id)
			s.notify()
		}
	case slotWaiting:
		sl.timer.Stop()
		sl.timer = nil
		s.clearDeps(sl)
		sl.ops |= ops
		sl.urgent = sl.urgent || urgent
		s.enqueue(id, sl)
	}
}

// enqueue puts a slot on its queue. s.mu is held.
func (s *Scheduler) enqueue(id string, sl *slot) {
	sl.state = slotQueued
	s.queued++
	if sl.urgent {
		s.urgent.push(id)
	} else {
		s.normal.push(id)
	}
	s.notify()
}

func (s *Scheduler) notify() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// take returns the next queued ID and its operations, urgent ones first,
// and marks it running; false when nothing is queued.
func (s *Scheduler) take() (string, Op, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range []*fifo{&s.urgent, &s.normal} {
		for {
			id, ok := q.pop()
			if !ok {
				break
			}
			sl := s.slots[id]
			if sl == nil || sl.state != slotQueued {
				continue // stale duplicate
			}
			if q == &s.normal && sl.urgent {
				continue // promoted: taken from the urgent queue
			}
			sl.state = slotRunning
			sl.gen = s.depGen
			ops := sl.ops
			sl.ops = 0
			s.queued--
			s.running++
			if s.queued > 0 {
				s.notify()
			}
			return id, ops, true
		}
	}
	return "", 0, false
}

// Next blocks until an ID is queued or ctx ends.
func (s *Scheduler) Next(ctx context.Context) (string, Op, bool) {
	for {
		if id, ops, ok := s.take(); ok {
			return id, ops, true
		}
		select {
		case <-ctx.Done():
			return "", 0, false
		case <-s.signal:
		}
	}
}

// Done ends the running operation of id. With retry > 0 and no new
// request, the slot waits that long and then runs ops again; deps marks a
// wait for dependencies that any record change ends early, including one
// that happened while the operation ran (it may have missed it). It
// reports whether that left no operation running or queued.
func (s *Scheduler) Done(id string, retry time.Duration, ops Op, urgent, deps bool) (idle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	sl := s.slots[id]
	switch {
	case s.stopped:
		delete(s.slots, id)
	case sl.again != 0:
		sl.ops, sl.urgent = sl.again|ops, sl.agUrg || urgent
		sl.again, sl.agUrg = 0, false
		s.enqueue(id, sl)
	case retry > 0 && deps && sl.gen != s.depGen:
		sl.ops, sl.urgent = ops, urgent
		s.enqueue(id, sl)
	case retry > 0:
		sl.state, sl.ops, sl.urgent, sl.deps = slotWaiting, ops, urgent, deps
		if deps {
			s.deps++
		}
		sl.timer = time.AfterFunc(retry, func() { s.wake(id, sl) })
	default:
		delete(s.slots, id)
	}
	return s.queued == 0 && s.running == 0 && !s.stopped
}

// wake queues a waiting slot when its timer fires.
func (s *Scheduler) wake(id string, sl *slot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.slots[id] != sl || sl.state != slotWaiting {
		return
	}
	sl.timer = nil
	s.clearDeps(sl)
	s.enqueue(id, sl)
}

// clearDeps ends a slot's wait for dependencies. s.mu is held.
func (s *Scheduler) clearDeps(sl *slot) {
	if sl.deps {
		sl.deps = false
		s.deps--
	}
}

// WakeDeps queues every slot that waits for dependencies.
func (s *Scheduler) WakeDeps() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.depGen++
	if s.deps == 0 {
		return
	}
	for id, sl := range s.slots {
		if sl.state == slotWaiting && sl.deps {
			sl.timer.Stop()
			sl.timer = nil
			s.clearDeps(sl)
			s.enqueue(id, sl)
		}
	}
}

// Stop cancels every timer and refuses further requests.
func (s *Scheduler) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	for id, sl := range s.slots {
		if sl.timer != nil {
			sl.timer.Stop()
		}
		if sl.state != slotRunning {
			delete(s.slots, id)
		}
	}
}

// Counts returns how many IDs are queued and how many wait. (How many
// run is the Engine's busy count: an operation waiting for its last write
// holds its ID but no worker.)
func (s *Scheduler) Counts() (queued, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.slots {
		if sl.state == slotWaiting {
			waiting++
		}
	}
	return s.queued, waiting
}
