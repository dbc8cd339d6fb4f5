package commit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
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

// put returns a write function that stores key=value and records the
// transaction it ran in.
func put(key string, txid *int) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		if txid != nil {
			*txid = tx.ID()
		}
		return tx.Bucket(bucket).Put([]byte(key), []byte("ok"))
	}
}

// hold starts a write that blocks inside its transaction until release is
// called, so that the writes started meanwhile queue behind it. It runs in
// a synctest bubble.
func hold(t *testing.T, g *Group) (release func()) {
	t.Helper()
	gate := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- g.Update(func(*bolt.Tx) error { <-gate; return nil })
	}()
	synctest.Wait()
	return func() {
		close(gate)
		if err := <-done; err != nil {
			t.Errorf("held write: %v", err)
		}
	}
}

// queued returns how many writes wait for the next commit.
func queued(g *Group) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
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

// Writes that queue behind a running commit share the next transaction;
// one that fails and one that panics among them leave nothing of
// themselves and get their own outcome; the others commit.
func TestGroupSharesTransaction(t *testing.T) {
	db := openTestDB(t)
	g := NewGroup(db)
	errBoom := errors.New("boom")
	synctest.Test(t, func(t *testing.T) {
		release := hold(t, g)
		const n = 20
		txids := make([]int, n)
		errs := make([]error, n)
		panics := make([]any, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				defer func() { panics[i] = recover() }()
				errs[i] = g.Update(func(tx *bolt.Tx) error {
					txids[i] = tx.ID()
					key := fmt.Sprint(i)
					if err := tx.Bucket(bucket).Put([]byte(key), []byte("partial")); err != nil {
						return err
					}
					switch i {
					case 3:
						return errBoom
					case 7:
						panic(errBoom)
					}
					return tx.Bucket(bucket).Put([]byte(key), []byte("ok"))
				})
			})
		}
		synctest.Wait()
		if q := queued(g); q != n {
			t.Fatalf("%d writes queued behind the held commit, want %d", q, n)
		}
		release()
		wg.Wait()
		for i := range n {
			switch {
			case i == 3 && !errors.Is(errs[i], errBoom):
				t.Errorf("failing write returned %v, want %v", errs[i], errBoom)
			case i == 7 && panics[i] != errBoom:
				t.Errorf("panicking write: panic %v in its caller, want %v", panics[i], errBoom)
			case i != 3 && i != 7 && (errs[i] != nil || panics[i] != nil):
				t.Errorf("write %d: %v, panic %v", i, errs[i], panics[i])
			case i != 3 && i != 7 && txids[i] != txids[0]:
				t.Errorf("write %d committed in tx %d, write 0 in tx %d: not grouped", i, txids[i], txids[0])
			}
		}
		got := keys(t, db)
		if len(got) != n-2 || got["3"] || got["7"] {
			t.Errorf("committed keys %v, want all but 3 and 7", got)
		}
		if g.leading || queued(g) != 0 {
			t.Errorf("group left leading=%v with %d queued", g.leading, queued(g))
		}
	})
}

// Writes are applied in the order Update was called, across transactions
// of MaxGroup writes.
func TestGroupOrder(t *testing.T) {
	db := openTestDB(t)
	g := NewGroup(db)
	synctest.Test(t, func(t *testing.T) {
		release := hold(t, g)
		const n = 3*MaxGroup + 7
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				err := g.Update(func(tx *bolt.Tx) error {
					b := tx.Bucket(bucket)
					log := append([]byte(nil), b.Get([]byte("log"))...)
					return b.Put([]byte("log"), binary.BigEndian.AppendUint32(log, uint32(i)))
				})
				if err != nil {
					t.Error(err)
				}
			})
			synctest.Wait() // queued before the next one starts
		}
		release()
		wg.Wait()
	})
	if err := db.View(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucket).Get([]byte("log"))
		if len(log) != 4*(3*MaxGroup+7) {
			return fmt.Errorf("log holds %d writes", len(log)/4)
		}
		for i := range len(log) / 4 {
			if got := binary.BigEndian.Uint32(log[4*i:]); got != uint32(i) {
				return fmt.Errorf("write %d applied at position %d", got, i)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Many goroutines writing at once all commit, each once, and the group
// ends idle.
func TestGroupConcurrentWriters(t *testing.T) {
	db := openTestDB(t)
	g := NewGroup(db)
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
		t.Errorf("%d keys, want %d", len(got), writers*each)
	}
	if g.leading || queued(g) != 0 {
		t.Fatalf("group left leading=%v with %d queued", g.leading, queued(g))
	}
}

// After the database is closed, a write fails with bbolt's error and runs
// nothing.
func TestGroupClosed(t *testing.T) {
	db := openTestDB(t)
	g := NewGroup(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ran := false
	err := g.Update(func(*bolt.Tx) error { ran = true; return nil })
	if !errors.Is(err, bolt.ErrDatabaseNotOpen) || ran {
		t.Fatalf("Update after Close = %v (ran %v), want ErrDatabaseNotOpen without running", err, ran)
	}
}
