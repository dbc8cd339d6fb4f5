package server

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTestDB(t testing.TB) (*bolt.DB, *committer) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db, &committer{db: db}
}

func TestCommitterGroupsQueuedWrites(t *testing.T) {
	db, c := openTestDB(t)
	synctest.Test(t, func(t *testing.T) { groupQueuedWrites(t, db, c) })
}

// groupQueuedWrites holds a commit while 20 writes queue behind it, two of
// which fail (one by panicking); the 18 others commit in one transaction
// and the two leave nothing.
func groupQueuedWrites(t *testing.T, db *bolt.DB, c *committer) {
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- c.do(func(tx *bolt.Tx) error {
			<-release // holds the commit: the others queue behind it
			return tx.Bucket([]byte("b")).Put([]byte("first"), []byte("1"))
		})
	}()
	synctest.Wait()
	const n = 20
	txids := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = c.do(func(tx *bolt.Tx) error {
				txids[i] = tx.ID()
				key := fmt.Sprint(i)
				switch i {
				case 3:
					tx.Bucket([]byte("b")).Put([]byte(key), []byte("refused"))
					return errors.New("refused")
				case 7:
					tx.Bucket([]byte("b")).Put([]byte(key), []byte("panicked"))
					panic("boom")
				}
				return tx.Bucket([]byte("b")).Put([]byte(key), []byte("ok"))
			})
		})
	}
	synctest.Wait()
	c.mu.Lock()
	waiting := len(c.queue)
	c.mu.Unlock()
	if waiting != n {
		t.Fatalf("%d writes queued behind the held commit, want %d", waiting, n)
	}
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		switch {
		case i == 3 && (err == nil || err.Error() != "refused"):
			t.Errorf("write 3: %v, want its own error", err)
		case i == 7 && (err == nil || !strings.Contains(err.Error(), "panicked")):
			t.Errorf("write 7: %v, want the panic as its error", err)
		case i != 3 && i != 7 && err != nil:
			t.Errorf("write %d: %v", i, err)
		}
	}
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range n {
			v, want := string(b.Get([]byte(fmt.Sprint(i)))), "ok"
			if i == 3 || i == 7 {
				want = ""
			}
			if v != want {
				t.Errorf("key %d = %q, want %q", i, v, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range txids {
		if i != 3 && i != 7 && id != txids[0] {
			t.Fatalf("the queued writes committed in transactions %v, want one", txids)
		}
	}
}

func TestCommitterConcurrentWriters(t *testing.T) {
	db, c := openTestDB(t)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				err := c.do(func(tx *bolt.Tx) error {
					return tx.Bucket([]byte("b")).Put([]byte(fmt.Sprintf("%d-%d", w, i)), nil)
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket([]byte("b")).Stats().KeyN; n != writers*each {
			t.Errorf("%d keys, want %d", n, writers*each)
		}
		return nil
	})
	if c.leading || len(c.queue) != 0 {
		t.Fatalf("committer left leading=%v with %d queued", c.leading, len(c.queue))
	}
}
