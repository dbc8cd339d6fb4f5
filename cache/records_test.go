package cache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// Saves that change the state, the expiry, the digest and the key of
// records in every combination, concurrent or not, leave indexes that
// agree with the records (Check), whether the commit found the record as
// it was read before the write was queued or changed since.
func TestSaveMovesIndexes(t *testing.T) {
	s := openStore(t, tempPath(t), Options{NoSync: true})
	rnd := rand.New(rand.NewPCG(1, 2))
	const n = 12
	for i := range n {
		mustAddRecord(t, s, provisiontest.NewRecord(fmt.Sprint("r", i), provision.Accepted, time.Hour, ""))
	}
	keys := []string{"", "", "net-a", "net-b"}
	lives := []time.Duration{time.Hour, 2 * time.Hour, 3 * time.Hour}
	for round := range 200 {
		var waits []func() error
		for range 1 + rnd.IntN(8) {
			id := fmt.Sprint("r", rnd.IntN(n))
			rec := provisiontest.NewRecord(id, provision.States[rnd.IntN(len(provision.States))], lives[rnd.IntN(len(lives))], keys[rnd.IntN(len(keys))])
			if rnd.IntN(4) == 0 {
				rec.Digest = fmt.Sprintf("digest-%d-%d", round, rnd.IntN(3))
			}
			rec.Units.SRU = float64(rnd.IntN(3))
			waits = append(waits, s.QueueSave(rec)) // several queued: some find the record changed
		}
		for _, wait := range waits {
			if err := wait(); err != nil && !errors.Is(err, provision.ErrConflict) && !errors.Is(err, provision.ErrReplay) {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if err := s.Check(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

func mustAddRecord(t testing.TB, s *Store, rec *provision.Record) {
	t.Helper()
	if err := s.Add(rec); err != nil {
		t.Fatal(err)
	}
}

// A record keeps the explorer's refusal of its result across a reopen,
// and a record written before the field existed reads with none: the
// optional field needs no schema version.
func TestRecordRefusedSurvivesReopen(t *testing.T) {
	path := tempPath(t)
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	old := provisiontest.NewRecord("old", provision.Deployed, time.Hour, "")
	mustAddRecord(t, s, old)
	rec := provisiontest.NewRecord("refused", provision.Deployed, time.Hour, "")
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	rec.Refused = &provision.ResultRefusal{State: provision.StateOk, Created: at.Add(-time.Minute), Reason: "digest-conflict", Message: "explorer answered 409", At: at}
	mustAddRecord(t, s, rec)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path, Options{NoSync: true})
	got, err := s.Get("refused")
	if err != nil {
		t.Fatal(err)
	}
	if got.Refused == nil || *got.Refused != *rec.Refused {
		t.Fatalf("refusal read back as %+v, want %+v", got.Refused, rec.Refused)
	}
	if got, err := s.Get("old"); err != nil || got.Refused != nil {
		t.Fatalf("a record without a refusal: %+v, %v", got, err)
	}
	if v, err := decodeRecord([]byte(`{"reservation":{"id":"x"},"state":"deployed","digest":"d"}`)); err != nil || v.Refused != nil {
		t.Fatalf("a record of the previous build: %+v, %v", v, err)
	}
}
