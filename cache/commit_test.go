package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

var bucketTest = []byte("test")

// newTestCommitter opens a bbolt file with one bucket and starts its
// committer; both end with the test.
func newTestCommitter(t testing.TB) (*committer, *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "commit.db"), fileMode, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(bucketTest)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := newCommitter(db)
	t.Cleanup(func() {
		c.stop()
		_ = db.Close()
	})
	return c, db
}

// put returns a write function that stores key=value and records the
// transaction it ran in.
func put(key string, txid *int) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		if txid != nil {
			*txid = tx.ID()
		}
		return tx.Bucket(bucketTest).Put([]byte(key), []byte(key))
	}
}

// hold submits a write that blocks inside its transaction until the
// returned function is called, so that the writes submitted meanwhile
// queue up and share the next commit.
func hold(t testing.TB, c *committer) (release func()) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	w := c.submit(func(tx *bolt.Tx) error {
		close(entered)
		<-gate
		return nil
	})
	<-entered
	return func() {
		close(gate)
		if err := w.wait(); err != nil {
			t.Errorf("held write: %v", err)
		}
	}
}

// keys returns the keys of the test bucket.
func keys(t testing.TB, db *bolt.DB) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTest).ForEach(func(k, _ []byte) error {
			got[string(k)] = true
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// Writes from many goroutines are all committed, each reporting its own
// outcome, and writes that queued during a commit share the next one.
func TestCommitterConcurrent(t *testing.T) {
	c, db := newTestCommitter(t)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := c.submit(put(fmt.Sprint("k", i), nil)).wait(); err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if got := keys(t, db); len(got) != n {
		t.Fatalf("%d keys committed, want %d", len(got), n)
	}

	release := hold(t, c)
	txids := make([]int, 10)
	ws := make([]*write, len(txids))
	for i := range ws {
		ws[i] = c.submit(put(fmt.Sprint("g", i), &txids[i]))
	}
	release()
	for i, w := range ws {
		if err := w.wait(); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if txids[i] != txids[0] {
			t.Errorf("write %d committed in tx %d, write 0 in tx %d: not grouped", i, txids[i], txids[0])
		}
	}
}

// A write whose function fails (or panics) among successful ones of the
// same group leaves nothing of itself, gets its own error (or its panic,
// raised in the caller), and the others are committed.
func TestCommitterFailureIsIsolated(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name  string
		fails func(tx *bolt.Tx) error
		check func(t *testing.T, w *write)
	}{
		{
			name: "error",
			fails: func(tx *bolt.Tx) error {
				if err := put("bad", nil)(tx); err != nil {
					return err
				}
				return errBoom
			},
			check: func(t *testing.T, w *write) {
				if err := w.wait(); !errors.Is(err, errBoom) {
					t.Errorf("failing write returned %v, want %v", err, errBoom)
				}
			},
		},
		{
			name: "panic",
			fails: func(tx *bolt.Tx) error {
				if err := put("bad", nil)(tx); err != nil {
					return err
				}
				panic(errBoom)
			},
			check: func(t *testing.T, w *write) {
				defer func() {
					if p := recover(); p != errBoom {
						t.Errorf("panic %v raised in the caller, want %v", p, errBoom)
					}
				}()
				err := w.wait()
				t.Errorf("wait returned %v instead of panicking", err)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, db := newTestCommitter(t)
			release := hold(t, c)
			before := c.submit(put("before", nil))
			bad := c.submit(tt.fails)
			after := c.submit(put("after", nil))
			release()
			tt.check(t, bad)
			for _, w := range []*write{before, after} {
				if err := w.wait(); err != nil {
					t.Errorf("good write: %v", err)
				}
			}
			got := keys(t, db)
			if got["bad"] || !got["before"] || !got["after"] {
				t.Errorf("committed keys %v, want before and after only", got)
			}
		})
	}
}

// Writes are applied in the order they were submitted, across groups.
func TestCommitterOrder(t *testing.T) {
	c, db := newTestCommitter(t)
	const n = 3*maxGroup + 7
	release := hold(t, c)
	ws := make([]*write, n)
	for i := range ws {
		ws[i] = c.submit(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketTest)
			log := append([]byte(nil), b.Get([]byte("log"))...)
			return b.Put([]byte("log"), binary.BigEndian.AppendUint32(log, uint32(i)))
		})
	}
	release()
	for _, w := range ws {
		if err := w.wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.View(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucketTest).Get([]byte("log"))
		if len(log) != 4*n {
			return fmt.Errorf("log holds %d writes, want %d", len(log)/4, n)
		}
		for i := range n {
			if got := binary.BigEndian.Uint32(log[4*i:]); got != uint32(i) {
				return fmt.Errorf("write %d applied at position %d", got, i)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// stop commits what is queued, then refuses writes with ErrClosed without
// running them.
func TestCommitterStop(t *testing.T) {
	c, db := newTestCommitter(t)
	release := hold(t, c)
	queued := make([]*write, 5)
	for i := range queued {
		queued[i] = c.submit(put(fmt.Sprint("q", i), nil))
	}
	stopped := make(chan struct{})
	go func() {
		c.stop()
		close(stopped)
	}()
	for {
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			break
		}
		runtime.Gosched()
	}
	ran := false
	late := c.submit(func(*bolt.Tx) error { ran = true; return nil })
	if err := late.wait(); !errors.Is(err, ErrClosed) {
		t.Errorf("write after stop returned %v, want ErrClosed", err)
	}
	release()
	<-stopped
	for i, w := range queued {
		if err := w.wait(); err != nil {
			t.Errorf("queued write %d: %v", i, err)
		}
	}
	if got := keys(t, db); len(got) != len(queued) {
		t.Errorf("%d keys committed by stop, want %d", len(got), len(queued))
	}
	if ran {
		t.Error("a write submitted after stop ran")
	}
	c.stop() // a second stop returns at once
}
