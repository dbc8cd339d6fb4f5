package server

import (
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// maxGroup bounds how many writes one group commit applies.
const maxGroup = 256

// write is one queued write function and its outcome.
type write struct {
	fn    func(tx *bolt.Tx) error
	err   error
	final bool          // fn failed on its own: err is its outcome
	done  chan struct{} // closed when err is the outcome
	lead  chan struct{} // closed when this write's caller is to commit next
}

// committer is the group commit of the explorer's database: concurrent
// requests' writes queue up while a commit (and its fsync) runs, and the
// next commit applies every queued write, in queue order, in one bbolt
// transaction with one fsync. A lone write is committed at once: nothing
// waits for a batch to fill.
//
// There is no committer goroutine: the caller whose write finds no commit
// in progress leads; it commits the queue (its own write first) and then
// hands the lead to the caller at the head of what queued meanwhile, so
// that no caller commits for others longer than one transaction.
//
// Each write keeps its own outcome. When a write's function fails, the
// transaction is rolled back and the others are applied again without it,
// so a refused write leaves nothing and the committed writes are those
// that succeeded, in queue order, as if each had been its own transaction.
// A function may therefore run more than once; it must set (not append to)
// what it reports.
type committer struct {
	db *bolt.DB

	mu      sync.Mutex // guards queue and leading
	queue   []*write
	leading bool // a caller is committing; the queue waits for it
}

// do runs fn in a write transaction, shared with the writes queued beside
// it, and returns its error once the transaction is durable (or fn
// failed). Writes are applied in the order do was called.
func (c *committer) do(fn func(tx *bolt.Tx) error) error {
	w := &write{fn: fn, done: make(chan struct{}), lead: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, w)
	lead := !c.leading
	c.leading = true
	c.mu.Unlock()
	if !lead {
		select {
		case <-w.done:
			return w.err
		case <-w.lead:
		}
	}
	c.commitNext()
	<-w.done
	return w.err
}

// commitNext commits the head of the queue (the leader's write among it)
// and passes the lead on.
func (c *committer) commitNext() {
	c.mu.Lock()
	n := min(len(c.queue), maxGroup)
	group := make([]*write, n)
	copy(group, c.queue)
	c.queue = append(c.queue[:0:0], c.queue[n:]...)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.leading = false
		} else {
			close(c.queue[0].lead)
		}
		c.mu.Unlock()
	}()
	c.commit(group)
}

// commit applies group in one transaction and settles every outcome.
func (c *committer) commit(group []*write) {
	defer func() {
		for _, w := range group {
			close(w.done)
		}
	}()
	for {
		tx, err := c.db.Begin(true)
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
		settle(group, tx.Commit())
		return
	}
}

// settle sets err as the outcome of every write of group that did not
// fail on its own.
func settle(group []*write, err error) {
	for _, w := range group {
		if !w.final {
			w.err = err
		}
	}
}

// apply runs the function of w in tx; a panic becomes the failure of w
// alone (a handler's bug must not leave the other callers waiting).
func apply(w *write, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write transaction panicked: %v", p)
		}
	}()
	return w.fn(tx)
}
