package cache

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

func openStore(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func tempPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "cache.db")
}

func TestStoreSuite(t *testing.T) {
	provisiontest.RunStoreSuite(t, func(t testing.TB) provision.Store {
		s := openStore(t, tempPath(t), Options{NoSync: true})
		t.Cleanup(func() {
			if err := s.Check(); err != nil {
				t.Errorf("Check after the test: %v", err)
			}
		})
		return s
	})
}

func TestReopenKeepsEverything(t *testing.T) {
	path := tempPath(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Hour
	recs := []*provision.Record{
		provisiontest.NewRecord("a", provision.Deployed, hour, "net-a"),
		provisiontest.NewRecord("b", provision.Deleted, 2*hour, "net-b"),
		provisiontest.NewRecord("c", provision.Accepted, 3*hour, ""),
	}
	recs[0].Units = provision.Units{CRU: 2, MRU: 1.5}
	r1 := &provision.OutboxEntry{Kind: provision.OutboxResult, Result: &provision.Result{ID: "a", State: provision.StateOk}}
	st := &provision.OutboxEntry{Kind: provision.OutboxStats, Stats: &provision.Stats{Used: provision.Units{CRU: 2}}}
	for i, r := range recs {
		var out []*provision.OutboxEntry
		if i == 0 {
			out = []*provision.OutboxEntry{r1, st}
		}
		if err := s.Add(r, out...); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetCursor("poll", 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path, Options{})
	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"records", func(t *testing.T) {
			got, err := s.Get("a")
			if err != nil || got.State != provision.Deployed || got.Units != recs[0].Units || got.Digest != recs[0].Digest {
				t.Errorf("Get(a) = %+v, %v", got, err)
			}
		}},
		{"states", func(t *testing.T) {
			counts, err := s.Counts()
			want := map[provision.State]int{provision.Deployed: 1, provision.Deleted: 1, provision.Accepted: 1}
			for _, st := range provision.States {
				if err != nil || counts[st] != want[st] {
					t.Errorf("Counts()[%s] = %d, %v; want %d", st, counts[st], err, want[st])
				}
			}
		}},
		{"expiry", func(t *testing.T) {
			ids, err := s.Expired(provisiontest.SuiteEpoch.Add(100 * hour))
			if err != nil || !slices.Equal(ids, []string{"a", "c"}) {
				t.Errorf("Expired = %v, %v; want [a c]", ids, err)
			}
			next, ok, err := s.NextExpiry()
			if err != nil || !ok || !next.Equal(provisiontest.SuiteEpoch.Add(hour)) {
				t.Errorf("NextExpiry = %v, %v, %v", next, ok, err)
			}
		}},
		{"keys", func(t *testing.T) {
			if id, err := s.Owner("net-a"); err != nil || id != "a" {
				t.Errorf("Owner(net-a) = %q, %v", id, err)
			}
			if _, err := s.Owner("net-b"); !errors.Is(err, provision.ErrNotFound) {
				t.Errorf("Owner(net-b): %v, want ErrNotFound", err)
			}
		}},
		{"digests", func(t *testing.T) {
			replay := provisiontest.NewRecord("z", provision.Accepted, hour, "")
			replay.Digest = recs[1].Digest
			if err := s.Add(replay); !errors.Is(err, provision.ErrReplay) {
				t.Errorf("Add of a replay after reopen: %v, want ErrReplay", err)
			}
		}},
		{"outbox", func(t *testing.T) {
			entries, err := s.Pending(0)
			if err != nil || len(entries) != 2 || entries[0].Seq != r1.Seq || entries[1].Seq != st.Seq {
				t.Fatalf("Pending = %+v, %v", entries, err)
			}
			st2 := &provision.OutboxEntry{Kind: provision.OutboxStats, Stats: &provision.Stats{}}
			if err := s.Enqueue(st2); err != nil {
				t.Fatal(err)
			}
			if st2.Seq <= st.Seq {
				t.Errorf("seq after reopen %d, want above %d", st2.Seq, st.Seq)
			}
			if n, err := s.Depth(); err != nil || n != 2 {
				t.Errorf("Depth = %d, %v; want 2 (the older stats entry dropped)", n, err)
			}
		}},
		{"cursors", func(t *testing.T) {
			if pos, err := s.Cursor("poll"); err != nil || pos != 42 {
				t.Errorf("Cursor(poll) = %d, %v; want 42", pos, err)
			}
		}},
		{"check", func(t *testing.T) {
			if err := s.Check(); err != nil {
				t.Error(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.check)
	}
}

func TestOpenLocked(t *testing.T) {
	path := tempPath(t)
	openStore(t, path, Options{NoSync: true})
	const timeout = 100 * time.Millisecond
	tests := []struct {
		name string
		opts Options
	}{
		{"second-writer", Options{Timeout: timeout}},
		{"reader-while-writer", Options{Timeout: timeout, ReadOnly: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				s, err := Open(path, tt.opts)
				if err == nil {
					err = s.Close()
					if err == nil {
						err = errors.New("opened a locked file")
					}
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrLocked) {
					t.Fatalf("Open of a locked file: %v, want ErrLocked", err)
				}
				t.Logf("error: %v", err)
			case <-ctx.Done():
				t.Fatal("Open of a locked file did not give up")
			}
		})
	}
}

func TestOpenReadOnly(t *testing.T) {
	path := tempPath(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(provisiontest.NewRecord("a", provision.Deployed, time.Hour, "")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r1 := openStore(t, path, Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	r2 := openStore(t, path, Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	tests := []struct {
		name string
		run  func(s *Store) error
		want error
	}{
		{"get", func(s *Store) error { _, err := s.Get("a"); return err }, nil},
		{"counts", func(s *Store) error { _, err := s.Counts(); return err }, nil},
		{"check", func(s *Store) error { return s.Check() }, nil},
		{"add", func(s *Store) error {
			return s.Add(provisiontest.NewRecord("b", provision.Accepted, time.Hour, ""))
		}, ErrReadOnly},
		{"set-cursor", func(s *Store) error { return s.SetCursor("poll", 1) }, ErrReadOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, s := range []*Store{r1, r2} {
				if err := tt.run(s); !errors.Is(err, tt.want) {
					t.Errorf("got %v, want %v", err, tt.want)
				}
			}
		})
	}
	t.Run("writer-while-readers", func(t *testing.T) {
		if _, err := Open(path, Options{Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
			t.Errorf("Open for writing while readers hold the file: %v, want ErrLocked", err)
		}
	})
	t.Run("missing-file", func(t *testing.T) {
		if _, err := Open(filepath.Join(t.TempDir(), "none.db"), Options{ReadOnly: true}); err == nil {
			t.Error("ReadOnly Open of a missing file succeeded")
		}
	})
}

func TestOpenCorrupt(t *testing.T) {
	tests := []struct {
		name  string
		write func(t *testing.T, path string)
	}{
		{"random-bytes", func(t *testing.T, path string) {
			b := make([]byte, 64<<10)
			if _, err := rand.Read(b); err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, b)
		}},
		{"text", func(t *testing.T, path string) {
			writeFile(t, path, []byte("this is not a bbolt database\n"))
		}},
		{"zeroes", func(t *testing.T, path string) {
			writeFile(t, path, make([]byte, 32<<10))
		}},
		{"missing-bucket", func(t *testing.T, path string) {
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			rawUpdate(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketExpiry) })
		}},
		{"bad-version", func(t *testing.T, path string) {
			rawUpdate(t, path, func(tx *bolt.Tx) error {
				meta, err := tx.CreateBucket(bucketMeta)
				if err != nil {
					return err
				}
				return meta.Put(keyVersion, []byte{1})
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempPath(t)
			tt.write(t, path)
			s, err := Open(path, Options{Timeout: 100 * time.Millisecond})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open of a corrupt file succeeded")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open: %v, want ErrCorrupt", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestCheckFindsBrokenIndexes(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(tx *bolt.Tx) error
	}{
		{"missing-state-entry", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketStates).Bucket([]byte(provision.Deployed)).Delete([]byte("a"))
		}},
		{"extra-state-entry", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketStates).Bucket([]byte(provision.Failed)).Put([]byte("a"), mustUnits(t, "volume", "", provision.Units{}))
		}},
		{"wrong-owner-in-state-entry", func(tx *bolt.Tx) error {
			sb := tx.Bucket(bucketStates).Bucket([]byte(provision.Deployed))
			typ, _, u, err := decodeUnits(sb.Get([]byte("a")))
			if err != nil {
				return err
			}
			return sb.Put([]byte("a"), mustUnits(t, typ, "someone-else", u))
		}},
		{"missing-expiry", func(tx *bolt.Tx) error {
			k, _ := tx.Bucket(bucketExpiry).Cursor().First()
			return tx.Bucket(bucketExpiry).Delete(k)
		}},
		{"stale-key", func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Put([]byte("other"), []byte("b")) }},
		{"wrong-digest-owner", func(tx *bolt.Tx) error {
			k, _ := tx.Bucket(bucketDigests).Cursor().First()
			return tx.Bucket(bucketDigests).Put(k, []byte("zz"))
		}},
		{"undecodable-record", func(tx *bolt.Tx) error { return tx.Bucket(bucketRecords).Put([]byte("a"), []byte("{")) }},
		{"stats-seq-dangling", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyStatsSeq, be64(99)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempPath(t)
			s, err := Open(path, Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Add(provisiontest.NewRecord("a", provision.Deployed, time.Hour, "net")); err != nil {
				t.Fatal(err)
			}
			if err := s.Add(provisiontest.NewRecord("b", provision.Deleted, time.Hour, "")); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); err != nil {
				t.Fatalf("Check of a sound file: %v", err)
			}
			if err := s.db.Update(tt.corrupt); err != nil {
				t.Fatal(err)
			}
			err = s.Check()
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Check: %v, want ErrCorrupt", err)
			}
			t.Logf("error: %v", err)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExpiredAmongMany(t *testing.T) {
	s := openStore(t, tempPath(t), Options{NoSync: true})
	now := provisiontest.SuiteEpoch.Add(time.Hour)
	var want []string
	for i := range 300 {
		id := string(rune('a'+i%26)) + "-" + time.Duration(i).String()
		life := time.Duration(i) * time.Minute / 2 // 0 … 149.5 min
		st := provision.States[i%len(provision.States)]
		if err := s.Add(provisiontest.NewRecord(id, st, life, "")); err != nil {
			t.Fatal(err)
		}
		if !st.Final() && !provisiontest.SuiteEpoch.Add(life).After(now) {
			want = append(want, id)
		}
	}
	got, err := s.Expired(now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Expired = %v\nwant %v", got, want)
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(tempPath(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("a"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if err := s.SetCursor("poll", 1); !errors.Is(err, ErrClosed) {
		t.Errorf("SetCursor after Close: %v, want ErrClosed", err)
	}
}

func TestOpenCreatesDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "var", "lib", "provisiond", "cache.db")
	s := openStore(t, path, Options{})
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != fileMode {
		t.Errorf("file mode %v, want %v", fi.Mode().Perm(), os.FileMode(fileMode))
	}
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rawUpdate changes the file with bbolt directly, bypassing Open.
func rawUpdate(t testing.TB, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}
