// Package commit group-commits bbolt write transactions: concurrent
// writers share one transaction and one fsync instead of queueing for
// bbolt's single writer one fsync at a time. The node's store (package
// cache) and the reference explorer's store both write through a Group.
package commit

import (
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// ErrClosed is the outcome of a write queued after Close.
var ErrClosed = errors.New("commit: group closed")

// MaxGroup bounds how many writes one transaction applies.
const MaxGroup = 256

// Write is one queued write function; Wait reports its outcome.
type Write struct {
	fn    func(tx *bolt.Tx) error
	after func() // run once fn's transaction committed, before Wait returns
	err   error
	final bool // fn failed (or panicked) on its own: err is its outcome
	panic any  // what fn panicked with, raised again by Wait
	done  chan struct{}
}

// Wait blocks until the write is durable (or failed) and returns its
// error. A panic of its function is raised again here, in the caller.
func (w *Write) Wait() error {
	<-w.done
	if w.panic != nil {
		panic(w.panic)
	}
	return w.err
}

// Group is the group commit of one bbolt database. Writes queue while a
// commit (and its fsync) runs, and the next commit applies every queued
// write, in queue order, in one transaction with one fsync. No commit
// waits for company: a write queued while nothing commits is committed at
// once. (bbolt's own DB.Batch always waits up to MaxBatchDelay, 10 ms by
// default, and runs a failed function again in a transaction of its own.)
//
// Each write keeps its own outcome. When a write's function fails or
// panics, the transaction is rolled back and the others are applied again
// without it, so a failed write leaves nothing and the committed writes
// are those that succeeded, in queue order, as if each had been its own
// transaction. A function may therefore run more than once; it must set
// (not append to) what it reports outside the transaction.
//
// A Group runs one goroutine, from NewGroup to Close. It is safe for
// concurrent use.
type Group struct {
	db *bolt.DB

	mu     sync.Mutex // guards queue and closed
	queue  []*Write
	closed bool

	kick    chan struct{} // a write was queued, or Close was called
	stopped chan struct{} // closed when run returned
}

// NewGroup starts the group commit of db; Close ends it.
func NewGroup(db *bolt.DB) *Group {
	if db == nil {
		panic("commit: NewGroup needs a database")
	}
	g := &Group{db: db, kick: make(chan struct{}, 1), stopped: make(chan struct{})}
	go g.run()
	return g
}

// Queue queues fn for the next commit and returns its Write at once: the
// write's place in line is fixed when Queue returns, so a caller can queue
// under a lock and wait outside it. Writes are applied in the order they
// were queued, whoever queued them. After Close, the write fails with
// ErrClosed without running fn.
func (g *Group) Queue(fn func(tx *bolt.Tx) error) *Write {
	return g.QueueThen(fn, nil)
}

// QueueThen is Queue with a function after, which the group's goroutine
// calls once the transaction that applied fn committed, before the
// write's Wait returns. The after functions of committed writes run in
// commit order (queue order within a transaction), so they may publish
// what each write stored, such as a cache entry, in the order the
// database holds it. after must be quick and must not queue writes; it is
// not called for a write that failed.
func (g *Group) QueueThen(fn func(tx *bolt.Tx) error, after func()) *Write {
	w := &Write{fn: fn, after: after, done: make(chan struct{})}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		w.err, w.final = ErrClosed, true
		close(w.done)
		return w
	}
	g.queue = append(g.queue, w)
	g.mu.Unlock()
	g.wake()
	return w
}

// Update queues fn and waits for its outcome: Queue(fn).Wait().
func (g *Group) Update(fn func(tx *bolt.Tx) error) error {
	return g.Queue(fn).Wait()
}

func (g *Group) wake() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// Close commits what is queued, refuses later writes with ErrClosed and
// waits for the group's goroutine to end. It may be called more than once.
// Close the Group before its database.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wake()
	<-g.stopped
}

// run commits queued writes, a group at a time, until Close was called
// and the queue is empty.
func (g *Group) run() {
	defer close(g.stopped)
	for range g.kick {
		for {
			g.mu.Lock()
			group := g.queue
			if len(group) > MaxGroup {
				group, g.queue = group[:MaxGroup:MaxGroup], group[MaxGroup:]
			} else {
				g.queue = nil
			}
			last := g.closed && len(g.queue) == 0
			g.mu.Unlock()
			if len(group) > 0 {
				g.commit(group)
			}
			if last {
				return
			}
			if len(group) == 0 {
				break
			}
		}
	}
}

// commit applies group in one transaction and settles every outcome.
func (g *Group) commit(group []*Write) {
	defer func() {
		for _, w := range group {
			close(w.done)
		}
	}()
	for {
		tx, err := g.db.Begin(true)
		if err != nil {
			settle(group, err)
			return
		}
		live, failed := 0, false
		for _, w := range group {
			if w.final {
				continue
			}
			if err := apply(w, tx); err != nil {
				w.err, w.final, failed = err, true, true
				break
			}
			live++
		}
		if failed || live == 0 {
			_ = tx.Rollback()
			if failed {
				continue // apply the others again, without it
			}
			return
		}
		err = tx.Commit()
		settle(group, err)
		if err == nil {
			for _, w := range group {
				if !w.final && w.after != nil {
					w.after()
				}
			}
		}
		return
	}
}

// settle sets err as the outcome of every write of group that did not
// fail on its own.
func settle(group []*Write, err error) {
	for _, w := range group {
		if !w.final {
			w.err = err
		}
	}
}

// errPanicked marks a write whose function panicked; its caller gets the
// panic from Wait, never this error.
var errPanicked = errors.New("commit: write function panicked")

// apply runs the function of w in tx; a panic becomes the failure of w
// alone, raised again in its caller by Wait (a bug in one writer must not
// leave the others waiting or roll their writes back).
func apply(w *Write, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			w.panic = p
			err = errPanicked
		}
	}()
	return w.fn(tx)
}
