package cache

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// TestPurge removes final records expired before the cutoff, with their
// indexes, and nothing else; a purged digest may be added again.
func TestPurge(t *testing.T) {
	s := openStore(t, tempPath(t), Options{NoSync: true})
	add := func(id string, st provision.State, life time.Duration) {
		rec := provisiontest.NewRecord(id, st, life, "")
		rec.Digest = "digest-" + id
		mustAddRecord(t, s, rec)
	}
	add("old-deleted", provision.Deleted, time.Hour)
	add("old-failed", provision.Failed, time.Hour)
	add("old-live", provision.Deployed, time.Hour)
	add("young-deleted", provision.Deleted, 3*time.Hour)
	cutoff := provisiontest.SuiteEpoch.Add(2 * time.Hour)
	if _, err := s.Get("old-deleted"); err != nil { // in the read cache now
		t.Fatal(err)
	}
	got, err := s.Purge(cutoff, "old-deleted", "old-failed", "old-live", "young-deleted", "absent")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"old-deleted", "old-failed"}; !slices.Equal(got, want) {
		t.Fatalf("Purge = %v, want %v", got, want)
	}
	for _, id := range []string{"old-deleted", "old-failed"} {
		if _, err := s.Get(id); !errors.Is(err, provision.ErrNotFound) {
			t.Errorf("Get(%s) after purge = %v, want ErrNotFound", id, err)
		}
	}
	for _, id := range []string{"old-live", "young-deleted"} {
		if _, err := s.Get(id); err != nil {
			t.Errorf("Get(%s) = %v, want kept", id, err)
		}
	}
	counts, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if counts[provision.Deleted] != 1 || counts[provision.Failed] != 0 || counts[provision.Deployed] != 1 {
		t.Errorf("Counts = %v", counts)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check after purge: %v", err)
	}
	// The digest is free again; a kept record's is not.
	rec := provisiontest.NewRecord("again", provision.Accepted, time.Hour, "")
	rec.Digest = "digest-old-deleted"
	mustAddRecord(t, s, rec)
	rec = provisiontest.NewRecord("replay", provision.Accepted, time.Hour, "")
	rec.Digest = "digest-young-deleted"
	if err := s.Add(rec); !errors.Is(err, provision.ErrReplay) {
		t.Errorf("Add of a kept digest = %v, want ErrReplay", err)
	}
}
