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
