package cache

import (
	"sync"

	bolt "go.etcd.io/bbolt"
)

// maxGroup bounds how many writes one group commit holds.
const maxGroup = 256

// write is one queued write transaction function and its outcome.
type write struct {
	fn    func(tx *bolt.Tx) error
	err   error
	final bool // fn failed (or panicked) on its own: err is its outcome
	panic any  // what fn panicked with, raised again in the caller
	done  chan struct{}
}

// committer is the group commit of a Store: writes queue up while a
// commit (and its fsync) runs, and the next commit applies every queued
// write, in queue order, in one bbolt transaction with one fsync. A lone
// write is committed at once: nothing waits for a batch to fill.
//
// Each write keeps its own outcome. When the function of a write fails,
// the transaction is rolled back and the others are applied again without
// it, so a failed write leaves nothing and the committed writes are those
// that succeeded, in queue order, as if each had been its own transaction.
// A function may therefore run more than once; it must set (not append to)
// what it reports.
type committer struct {
	db *bolt.DB

	mu     sync.Mutex // guards queue and closed
	queue  []*write
	closed bool

	kick    chan struct{} // a write was queued, or stop was called
	stopped chan struct{} // closed when run returned
}

// newCommitter starts the committer of db; stop ends it.
func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, kick: make(chan struct{}, 1), stopped: make(chan struct{})}
	go c.run()
	return c
}

// submit queues fn for the next group commit and returns its write, whose
// wait reports the outcome. Writes are applied in the order they were
// submitted, whoever submitted them. After stop, the write fails with
// ErrClosed without running fn.
func (c *committer) submit(fn func(tx *bolt.Tx) error) *write {
	w := &write{fn: fn, done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		w.err, w.final = ErrClosed, true
		close(w.done)
		return w
	}
	c.queue = append(c.queue, w)
	c.mu.Unlock()
	c.wake()
	return w
}

// wait blocks until w is durable (or failed) and returns its error. A
// panic of its function is raised again here, in the caller.
func (w *write) wait() error {
	<-w.done
	if w.panic != nil {
		panic(w.panic)
	}
	return w.err
}

func (c *committer) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// stop commits what is queued, refuses later writes and waits for the
// committer's goroutine to end. It may be called more than once.
func (c *committer) stop() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wake()
	<-c.stopped
}

// run commits queued writes, a group at a time, until stop was called
// and the queue is empty.
func (c *committer) run() {
	defer close(c.stopped)
	for range c.kick {
		for {
			c.mu.Lock()
			group := c.queue
			if len(group) > maxGroup {
				group, c.queue = group[:maxGroup:maxGroup], group[maxGroup:]
			} else {
				c.queue = nil
			}
			last := c.closed && len(c.queue) == 0
			c.mu.Unlock()
			if len(group) > 0 {
				c.commit(group)
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

// commit applies group in one transaction and reports every outcome.
func (c *committer) commit(group []*write) {
	defer func() {
		for _, w := range group {
			close(w.done)
		}
	}()
	for {
		tx, err := c.db.Begin(true)
		if err != nil {
			c.settle(group, err)
			return
		}
		live, failed := 0, false
		for _, w := range group {
			if w.final {
				continue
			}
			if err := apply(w, tx); err != nil {
				w.err, w.final = err, true
				failed = true
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
		c.settle(group, tx.Commit())
		return
	}
}

// settle sets err as the outcome of every write of group that did not
// fail on its own.
func (c *committer) settle(group []*write, err error) {
	for _, w := range group {
		if !w.final {
			w.err = err
		}
	}
}

// apply runs the function of w in tx, turning a panic into a failure of w
// (raised again in its caller by wait).
func apply(w *write, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			w.panic = p
			err = errPanicked
		}
	}()
	return w.fn(tx)
}
