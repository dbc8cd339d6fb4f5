// Package commit group-commits bbolt write transactions: concurrent
// writers share one transaction and one fsync instead of queueing for
// bbolt's single writer one fsync at a time. The node's store (package
// cache) and the reference explorer's store both write through a Group.
package commit

import (
	"sync"

	bolt "go.etcd.io/bbolt"
)

// MaxGroup bounds how many writes one transaction applies.
const MaxGroup = 256

// write is one queued write function and its outcome.
type write struct {
	fn    func(tx *bolt.Tx) error
	err   error
	final bool          // fn failed on its own: err is its outcome
	panic any           // what fn panicked with, raised again in its caller
	done  chan struct{} // closed when err is the outcome
	lead  chan struct{} // closed when this write's caller is to commit next
}

// Group is the group commit of one bbolt database. Writes that queue
// while a commit (and its fsync) runs are applied together, in queue
// order, in the next transaction; a lone write is committed at once:
// nothing waits for a batch to fill. (bbolt's own DB.Batch waits up to
// MaxBatchDelay for company and runs a failed function again on its own.)
//
// There is no goroutine to own: the caller whose write finds no commit in
// progress leads; it commits the queue, its own write among it, and hands
// the lead to the caller at the head of what queued meanwhile, so that no
// caller commits for others longer than one transaction.
//
// Each write keeps its own outcome. When a write's function fails or
// panics, the transaction is rolled back and the others are applied again
// without it, so a failed write leaves nothing and the committed writes
// are those that succeeded, in queue order, as if each had been its own
// transaction. A function may therefore run more than once; it must set
// (not append to) what it reports outside the transaction.
//
// A Group is safe for concurrent use. Its zero value is not usable: use
// NewGroup.
type Group struct {
	db *bolt.DB

	mu      sync.Mutex // guards queue and leading
	queue   []*write
	leading bool // a caller is committing; the queue waits for it
}

// NewGroup returns the group commit of db.
func NewGroup(db *bolt.DB) *Group {
	if db == nil {
		panic("commit: NewGroup needs a database")
	}
	return &Group{db: db}
}

// Update runs fn in a write transaction shared with the writes queued
// beside it and returns once that transaction is durable, with fn's error
// or the commit's. Writes are applied in the order Update was called. A
// panic of fn is raised again here, in its caller. After the database is
// closed, Update returns bbolt's ErrDatabaseNotOpen.
func (g *Group) Update(fn func(tx *bolt.Tx) error) error {
	w := &write{fn: fn, done: make(chan struct{}), lead: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead {
		select {
		case <-w.done:
		case <-w.lead:
			g.commitNext()
			<-w.done
		}
	} else {
		g.commitNext()
		<-w.done
	}
	if w.panic != nil {
		panic(w.panic)
	}
	return w.err
}

// commitNext commits the head of the queue and passes the lead on.
func (g *Group) commitNext() {
	g.mu.Lock()
	n := min(len(g.queue), MaxGroup)
	group := make([]*write, n)
	copy(group, g.queue)
	g.queue = append(g.queue[:0:0], g.queue[n:]...)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.leading = false
		} else {
			close(g.queue[0].lead)
		}
		g.mu.Unlock()
	}()
	g.commit(group)
}

// commit applies group in one transaction and settles every outcome.
func (g *Group) commit(group []*write) {
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

// errPanicked marks a write whose function panicked; its caller gets the
// panic, never this error.
type errPanicked struct{}

func (errPanicked) Error() string { return "commit: write function panicked" }

// apply runs the function of w in tx; a panic becomes the failure of w
// alone, raised again in its caller by Update (a bug in one writer must
// not leave the others waiting or roll their writes back).
func apply(w *write, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			w.panic = p
			err = errPanicked{}
		}
	}()
	return w.fn(tx)
}
