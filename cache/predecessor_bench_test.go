package cache

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

// baselineRecords is the size of the side-by-side comparison with the
// predecessor's cache.
const baselineRecords = 100_000

// writePredecessorCache mimics the predecessor's cache: one JSON file per
// reservation in a directory, written without fsync.
func writePredecessorCache(b *testing.B, dir string) {
	b.Helper()
	expired := 0
	for i := range baselineRecords {
		rec := benchRecord(i, &expired)
		v, err := json.Marshal(rec)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rec.ID()+".json"), v, 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

// predecessorExpired is the predecessor's way to find expirations: list
// the directory, read and decode every file, keep the expired live ones.
func predecessorExpired(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var rec provision.Record
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, err
		}
		if !rec.State.Final() && !rec.Reservation.Expires().After(fixtureNow) {
			ids = append(ids, rec.ID())
		}
	}
	return ids, nil
}

// BenchmarkExpired100k finds the expired reservations among 100k records
// the predecessor's way (a JSON file per reservation, all decoded) and
// through the expiry index, in the same run, so the ratio is visible.
func BenchmarkExpired100k(b *testing.B) {
	dir := b.TempDir()
	files := filepath.Join(dir, "reservations")
	if err := os.Mkdir(files, 0o700); err != nil {
		b.Fatal(err)
	}
	writePredecessorCache(b, files)
	db := filepath.Join(dir, "cache.db")
	if err := buildFixture(db, baselineRecords); err != nil {
		b.Fatal(err)
	}
	s, err := Open(db, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	want, err := s.Expired(fixtureNow)
	if err != nil {
		b.Fatal(err)
	}
	got, err := predecessorExpired(files)
	if err != nil {
		b.Fatal(err)
	}
	if len(got) != len(want) {
		b.Fatalf("predecessor found %d expired, the index %d", len(got), len(want))
	}
	b.Run("predecessor-json-files", func(b *testing.B) {
		for b.Loop() {
			if _, err := predecessorExpired(files); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(want)), "expired")
	})
	b.Run("expiry-index", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Expired(fixtureNow); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(want)), "expired")
	})
}
