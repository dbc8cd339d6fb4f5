package commit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var bucket = []byte("b")

// openTestDB opens a bbolt file with one bucket; it closes with the test.
func openTestDB(t testing.TB) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucket); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

// put returns a write function that stores key and records the
// transaction it ran in.
func put(key string, txid *int) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		if txid != nil {
			*txid = tx.ID()
		}
		return tx.Bucket(bucket).Put([]byte(key), []byte("ok"))
	}
}

// hold queues a write that blocks inside its transaction until release is
// called, so that the writes queued meanwhile share the next commit.
func hold(t testing.TB, g *Group) (release func()) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	w := g.Queue(func(*bolt.Tx) error {
		close(entered)
		<-gate
		return nil
	})
	<-entered
	return func() {
		close(gate)
		if err := w.Wait(); err != nil {
			t.Errorf("held write: %v", err)
		}
	}
}

// keys returns the keys of the test bucket.
func keys(t testing.TB, db *bolt.DB) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, _ []byte) error {
			got[string(k)] = true
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// Writes from many goroutines all commit, each once, and writes queued
// during a commit share the next transaction.
func TestGroupConcurrent(t *testing.T) {
	db := openTestDB(t)
	g := NewGroup(db)
	defer g.Close()
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := g.Update(put(fmt.Sprintf("%d-%d", w, i), nil)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := keys(t, db); len(got) != writers*each {
		t.Fatalf("%d keys, want %d", len(got), writers*each)
	}

	release := hold(t, g)
	txids := make([]int, 10)
	ws := make([]*Write, len(txids))
	for i := range ws {
		ws[i] = g.Queue(put(fmt.Sprint("g", i), &txids[i]))
	}
	release()
	for i, w := range ws {
		if err := w.Wait(); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if txids[i] != txids[0] {
			t.Errorf("write %d committed in tx %d, write 0 in tx %d: not grouped", i, txids[i], txids[0])
		}
	}
}

// A write whose function fails or panics among good ones of the same
// group leaves nothing of itself, gets its own outcome (the panic raised
// in its caller), and the others commit.
func TestGroupFailureIsIsolated(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name  string
		fails func(tx *bolt.Tx) error
		check func(t *testing.T, w *Write)
	}{
		{
			name: "error",
			fails: func(tx *bolt.Tx) error {
				if err := put("bad", nil)(tx); err != nil {
					return err
				}
				return errBoom
			},
			check: func(t *testing.T, w *Write) {
				if err := w.Wait(); !errors.Is(err, errBoom) {
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
			check: func(t *testing.T, w *Write) {
				defer func() {
					if p := recover(); p != errBoom {
						t.Errorf("panic %v raised in the caller, want %v", p, errBoom)
					}
				}()
				err := w.Wait()
				t.Errorf("Wait returned %v instead of panicking", err)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openTestDB(t)
			g := NewGroup(db)
			defer g.Close()
			release := hold(t, g)
			var txBefore, txAfter int
			before := g.Queue(put("before", &txBefore))
			bad := g.Queue(tt.fails)
			after := g.Queue(put("after", &txAfter))
			release()
			tt.check(t, bad)
			for _, w := range []*Write{before, after} {
				if err := w.Wait(); err != nil {
					t.Errorf("good write: %v", err)
				}
			}
			got := keys(t, db)
			if got["bad"] || !got["before"] || !got["after"] {
				t.Errorf("committed keys %v, want before and after only", got)
			}
			if txBefore != txAfter {
				t.Errorf("the good writes committed in tx %d and %d, want one", txBefore, txAfter)
			}
		})
	}
}

// Writes are applied in the order they were queued, across transactions
// of MaxGroup writes.
func TestGroupOrder(t *testing.T) {
	db := openTestDB(t)
	g := NewGroup(db)
	defer g.Close()
	const n = 3*MaxGroup + 7
	release := hold(t, g)
	ws := make([]*Write, n)
	for i := range ws {
		ws[i] = g.Queue(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			log := append([]byte(nil), b.Get([]byte("log"))...)
			return b.Put([]byte("log"), binary.BigEndian.AppendUint32(log, uint32(i)))
		})
	}
	release()
	for _, w := range ws {
		if err := w.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.View(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucket).Get([]byte("log"))
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

// Close commits what is queued, then refuses writes with ErrClosed
// without running them; a second Close returns at once.
func TestGroupClose(t *testing.T) {
	db := openTestDB(t)
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup(db)
		release := hold(t, g)
		queued := make([]*Write, 5)
		for i := range queued {
			queued[i] = g.Queue(put(fmt.Sprint("q", i), nil))
		}
		closed := make(chan struct{})
		go func() {
			g.Close()
			close(closed)
		}()
		synctest.Wait() // Close is waiting for the held commit
		ran := false
		late := g.Queue(func(*bolt.Tx) error { ran = true; return nil })
		if err := late.Wait(); !errors.Is(err, ErrClosed) {
			t.Errorf("write after Close returned %v, want ErrClosed", err)
		}
		release()
		<-closed
		for i, w := range queued {
			if err := w.Wait(); err != nil {
				t.Errorf("queued write %d: %v", i, err)
			}
		}
		if got := keys(t, db); len(got) != len(queued) {
			t.Errorf("%d keys committed by Close, want %d", len(got), len(queued))
		}
		if ran {
			t.Error("a write queued after Close ran")
		}
		g.Close()
	})
}

// A write to a closed database fails with bbolt's error and runs nothing.
func TestGroupDatabaseClosed(t *testing.T) {
	db := openTestDB(t)
	g := NewGroup(db)
	defer g.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ran := false
	err := g.Update(func(*bolt.Tx) error { ran = true; return nil })
	if !errors.Is(err, berrors.ErrDatabaseNotOpen) || ran {
		t.Fatalf("Update after the database closed = %v (ran %v), want ErrDatabaseNotOpen without running", err, ran)
	}
}

// No commit waits for company, in fake time: not the first write, not one
// after a commit of several writes, not one queued before Close.
func TestGroupNeverWaits(t *testing.T) {
	db := openTestDB(t)
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup(db)
		// update writes name alone and checks that it did not wait.
		update := func(name, what string) {
			start := time.Now()
			if err := g.Update(put(name, nil)); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("%s waited %v", what, d)
			}
		}
		update("first", "the first write")

		// a held commit of one write, then a and b share the next.
		release := hold(t, g)
		a, b := g.Queue(put("a", nil)), g.Queue(put("b", nil))
		release()
		if err := errors.Join(a.Wait(), b.Wait()); err != nil {
			t.Fatal(err)
		}
		update("lone", "the write after a commit of two")

		start := time.Now()
		last := g.Queue(put("last", nil))
		synctest.Wait()
		g.Close()
		if err := last.Wait(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Close waited %v for company", d)
		}
		if got, want := len(keys(t, db)), 5; got != want {
			t.Errorf("%d keys committed, want %d", got, want)
		}
	})
}

// The after functions of committed writes run in commit order, before
// their Wait returns; a write that failed on its own, or whose transaction
// failed to commit, runs none.
func TestGroupQueueThen(t *testing.T) {
	db := openTestDB(t)
	g := NewGroup(db)
	defer g.Close()
	var mu sync.Mutex
	var ran []string
	after := func(name string) func() {
		return func() {
			mu.Lock()
			ran = append(ran, name)
			mu.Unlock()
		}
	}
	release := hold(t, g)
	a := g.QueueThen(put("a", nil), after("a"))
	bad := g.QueueThen(func(*bolt.Tx) error { return errors.New("refused") }, after("bad"))
	b := g.QueueThen(put("b", nil), after("b"))
	release()
	if err := a.Wait(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	afterA := slices.Clone(ran)
	mu.Unlock()
	if !slices.Contains(afterA, "a") {
		t.Errorf("a's Wait returned before its after function ran (ran %v)", afterA)
	}
	if err := bad.Wait(); err == nil {
		t.Fatal("the failing write succeeded")
	}
	if err := b.Wait(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b"}; !slices.Equal(ran, want) {
		t.Errorf("after functions ran %v, want %v", ran, want)
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ran = nil
	if err := g.QueueThen(put("c", nil), after("c")).Wait(); err == nil {
		t.Fatal("a write to a closed database succeeded")
	}
	if len(ran) != 0 {
		t.Errorf("after ran for a write that did not commit: %v", ran)
	}
}
