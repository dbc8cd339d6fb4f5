package cache

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

const (
	// fixtureRecords is the size of the large fixture.
	fixtureRecords = 1_000_000
	// fixtureExpired is how many live fixture records have expired at fixtureNow.
	fixtureExpired = 1000
	// fixtureBatch is how many records one fixture transaction writes.
	fixtureBatch = 50_000
)

// fixtureNow is the "now" of the fixture: fixtureExpired live records
// expired before it, every other live record expires after it.
var fixtureNow = provisiontest.SuiteEpoch.Add(1000 * time.Hour)

// fixture is the 1M-record database, built once per test binary run and
// removed by TestMain.
var fixture struct {
	once  sync.Once
	dir   string
	path  string
	err   error
	build time.Duration
	size  int64
}

func cleanupFixture() {
	if fixture.dir != "" {
		_ = os.RemoveAll(fixture.dir)
	}
}

// largeFixture returns the path of the 1M-record database, building it on
// first use with NoSync and large transactions written directly.
func largeFixture(b *testing.B) string {
	b.Helper()
	fixture.once.Do(func() {
		fixture.dir, fixture.err = os.MkdirTemp("", "cache-bench-")
		if fixture.err != nil {
			return
		}
		fixture.path = filepath.Join(fixture.dir, "cache.db")
		start := time.Now()
		fixture.err = buildFixture(fixture.path, fixtureRecords)
		fixture.build = time.Since(start)
		if fixture.err != nil {
			return
		}
		var fi os.FileInfo
		if fi, fixture.err = os.Stat(fixture.path); fi != nil {
			fixture.size = fi.Size()
		}
	})
	if fixture.err != nil {
		b.Fatalf("building the fixture: %v", fixture.err)
	}
	return fixture.path
}

// reportFixture reports the size and build time of the large fixture; call
// it after the benchmark loop (b.Loop's reset drops earlier metrics).
func reportFixture(b *testing.B) {
	b.Helper()
	b.Logf("fixture: %d records, %.1f MiB, built in %s", fixtureRecords, float64(fixture.size)/(1<<20), fixture.build.Round(time.Millisecond))
	b.ReportMetric(float64(fixture.size)/(1<<20)*1e6/fixtureRecords, "MiB/1M-records")
	b.ReportMetric(fixture.build.Seconds(), "fixture-build-s")
}

// benchRecord returns record i of the fixture: a realistic reservation
// (hex keys and signatures, a signed result) whose state, type and expiry
// follow i.
func benchRecord(i int, expiredSoFar *int) *provision.Record {
	id := fmt.Sprintf("r%08d", i)
	typ := provision.Types[i%len(provision.Types)]
	var data string
	switch typ {
	case provision.NetworkReservation:
		data = fmt.Sprintf(`{"name":"net-%d","ip_range":"10.%d.0.0/16","subnet":"10.%d.1.0/24"}`, i, i%250, i%250)
	case provision.VolumeReservation:
		data = `{"size":10,"type":"ssd"}`
	default:
		data = `{"image":"https://images.example.com/alpine.tar.gz","image_digest":"6f1e5b1f0c1f0e2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1",` +
			`"entrypoint":"/bin/sh -c 'sleep infinity'","env":{"A":"1"},"capacity":{"cpu":1,"memory":512,"disk_size":1024}}`
	}
	user := fmt.Sprintf("%064x", i%5000)
	var st provision.State
	switch p := i % 100; {
	case p < 60:
		st = provision.Deployed
	case p < 70:
		st = provision.Deleted
	case p < 80:
		st = provision.Failed
	case p < 90:
		st = provision.Accepted
	case p < 95:
		st = provision.Provisioning
	default:
		st = provision.Deleting
	}
	created := provisiontest.SuiteEpoch.Add(time.Duration(i) * time.Second)
	life := 2000*time.Hour + time.Duration(i%977)*time.Minute
	if st.Final() || (i%800 == 0 && *expiredSoFar < fixtureExpired) {
		life = time.Duration(i%500) * time.Minute
		if !st.Final() {
			*expiredSoFar++
		}
	}
	r := &provision.Reservation{
		ID:        id,
		NodeID:    "9nCiUvSJ5aYVt7NwqPjkWbbA8YHzWnH1g4d6xKLPoQsR",
		UserID:    user,
		Type:      typ,
		Data:      json.RawMessage(data),
		Created:   created,
		Duration:  life,
		Signature: hex.EncodeToString(make([]byte, 64)),
		Version:   1,
	}
	digest := r.Digest()
	rec := &provision.Record{
		Reservation: r,
		Digest:      digest,
		State:       st,
		Units:       provision.Units{CRU: 1, MRU: 0.5, SRU: 1},
		Result: &provision.Result{
			Type: typ, ID: id, NodeID: r.NodeID, Digest: digest, Version: 1, Created: created,
			State: provision.StateOk, Signature: hex.EncodeToString(make([]byte, 64)),
		},
		History: []provision.Transition{
			{State: provision.Accepted, At: created},
			{State: provision.Provisioning, At: created},
			{State: st, At: created},
		},
		Updated: created,
	}
	if typ == provision.NetworkReservation {
		rec.Key = provision.NetworkID(user, fmt.Sprintf("net-%d", i))
	}
	return rec
}

// buildFixture writes n records to a new database at path, fixtureBatch
// per transaction, through the same index code as Add.
func buildFixture(path string, n int) error {
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		return err
	}
	expiredSoFar := 0
	for start := 0; start < n; start += fixtureBatch {
		err := s.db.Update(func(tx *bolt.Tx) error {
			recs := tx.Bucket(bucketRecords)
			recs.FillPercent = 1 // ids arrive in order
			for i := start; i < min(start+fixtureBatch, n); i++ {
				rec := benchRecord(i, &expiredSoFar)
				v, err := encodeRecord(rec)
				if err != nil {
					return err
				}
				if err := recs.Put([]byte(rec.ID()), v); err != nil {
					return err
				}
				if err := putIndexes(tx, indexOf(rec)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			_ = s.Close()
			return fmt.Errorf("writing records %d…: %w", start, err)
		}
	}
	if n >= fixtureRecords && expiredSoFar != fixtureExpired {
		_ = s.Close()
		return fmt.Errorf("fixture has %d expired live records, want %d", expiredSoFar, fixtureExpired)
	}
	return s.Close()
}

func BenchmarkAdd(b *testing.B) {
	for _, fsync := range []bool{false, true} {
		b.Run(fmt.Sprintf("fsync=%t", fsync), func(b *testing.B) {
			s := openStore(b, filepath.Join(b.TempDir(), "cache.db"), Options{NoSync: !fsync})
			expired := 0
			i := 0
			for b.Loop() {
				out := &provision.OutboxEntry{Kind: provision.OutboxResult, Result: &provision.Result{ID: "x"}}
				if err := s.Add(benchRecord(i, &expired), out); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkGet(b *testing.B) {
	const n = 10_000
	path := filepath.Join(b.TempDir(), "cache.db")
	if err := buildFixture(path, n); err != nil {
		b.Fatal(err)
	}
	s := openStore(b, path, Options{ReadOnly: true})
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("r%08d", (i*7919)%n)
		if _, err := s.Get(id); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkExpired1kOf1M(b *testing.B) {
	s := openStore(b, largeFixture(b), Options{ReadOnly: true})
	for b.Loop() {
		ids, err := s.Expired(fixtureNow)
		if err != nil {
			b.Fatal(err)
		}
		if len(ids) != fixtureExpired {
			b.Fatalf("Expired returned %d ids, want %d", len(ids), fixtureExpired)
		}
	}
	reportFixture(b)
}

func BenchmarkReopenRebuild1M(b *testing.B) {
	path := largeFixture(b)
	active := []provision.State{provision.Provisioning, provision.Deployed, provision.Deleting}
	tests := []struct {
		name string
		sum  func(s *Store) (provision.Units, int, error)
	}{
		{"units", func(s *Store) (provision.Units, int, error) {
			var used provision.Units
			n := 0
			err := s.ScanUnits(func(_, _ string, _ provision.ReservationType, u provision.Units) error {
				used = used.Add(u)
				n++
				return nil
			}, active...)
			return used, n, err
		}},
		{"records", func(s *Store) (provision.Units, int, error) {
			var used provision.Units
			n := 0
			err := s.Scan(func(r *provision.Record) error {
				used = used.Add(r.Units)
				n++
				return nil
			}, active...)
			return used, n, err
		}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			for b.Loop() {
				s, err := Open(path, Options{ReadOnly: true})
				if err != nil {
					b.Fatal(err)
				}
				used, n, err := tt.sum(s)
				if err != nil {
					b.Fatal(err)
				}
				if want := fixtureRecords * 70 / 100; n != want || used.CRU != uint64(want) {
					b.Fatalf("rebuilt %d active records using %d cru, want %d", n, used.CRU, want)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			reportFixture(b)
		})
	}
}
