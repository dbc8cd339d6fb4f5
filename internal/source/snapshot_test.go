package source_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/source"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// snapPoller is a scripted Poller that is also a Snapshotter: its snapshot
// and reservations are set by the test.
type snapPoller struct {
	*provisiontest.Poller
	mu    sync.Mutex
	snap  provision.Snapshot
	byID  map[string]*provision.Reservation
	snaps int
}

func (p *snapPoller) Snapshot(context.Context) (*provision.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.snaps++
	s := p.snap
	return &s, nil
}

func (p *snapPoller) Fetch(_ context.Context, id string) (*provision.Reservation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.byID[id]
	if !ok {
		return nil, provision.Permanent(fmt.Errorf("%w: %s", provision.ErrNotFound, id))
	}
	c := *r
	c.Result = &provision.Result{ID: id} // the source sends it with its result
	return &c, nil
}

func entry(r *provision.Reservation) provision.SnapshotEntry {
	return provision.SnapshotEntry{ID: r.ID, Digest: r.Digest(), Version: r.Version}
}

// jobIDs receives n jobs, answers each, and returns their IDs sorted and
// whether each was a delete.
func jobIDs(t *testing.T, jobs <-chan provision.ReservationJob, n int) ([]string, map[string]bool) {
	t.Helper()
	var ids []string
	deletes := map[string]bool{}
	for range n {
		select {
		case j := <-jobs:
			if j.Last {
				j2 := <-jobs
				j = j2
			}
			if j.Reservation.Result != nil {
				t.Fatalf("job %s carries the source's result", j.Reservation.ID)
			}
			ids = append(ids, j.Reservation.ID)
			deletes[j.Reservation.ID] = j.Reservation.ToDelete
			j.Ack(nil)
		case <-time.After(time.Hour):
			t.Fatalf("got %d jobs, want %d", len(ids), n)
		}
	}
	sort.Strings(ids)
	return ids, deletes
}

// A poll whose cursor the source pruned (ErrCursorGone) makes the source
// compare the source's snapshot with the node's records: what the node
// lacks or holds at another digest is fetched and handed to the Engine, an
// extra one deleted by its owner is handed over with its delete, and the
// source then polls from the snapshot's seq.
func TestPollSourceReconcilesGoneCursor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := provisiontest.NewUser(1)
		now := time.Now()
		same := u.Volume("same", testNode, 1, now, time.Hour)
		missing := u.Volume("missing", testNode, 2, now, time.Hour)
		changed := u.Volume("changed", testNode, 3, now, time.Hour)
		oldChanged := u.Volume("changed", testNode, 4, now, time.Hour)
		deleted := u.Delete(u.Volume("deleted", testNode, 5, now, time.Hour))
		expired := u.Volume("expired", testNode, 6, now, time.Hour)
		p := &snapPoller{Poller: provisiontest.NewPoller(), byID: map[string]*provision.Reservation{}}
		for _, r := range []*provision.Reservation{same, missing, changed, deleted, expired} {
			p.byID[r.ID] = r
		}
		p.snap = provision.Snapshot{Seq: 40, Reservations: []provision.SnapshotEntry{entry(same), entry(missing), entry(changed)}}
		p.FailNext(provision.Permanent(fmt.Errorf("%w: 410", provision.ErrCursorGone)))
		held := []provision.SnapshotEntry{entry(same), entry(oldChanged), entry(deleted), entry(expired), {ID: "unknown", Digest: "x"}}
		store := provisiontest.NewStore()
		if err := store.SetCursor("explorer", 7); err != nil {
			t.Fatal(err)
		}
		jobs := source.NewPoll(p, store, "explorer", source.PollOptions{
			Held: func() ([]provision.SnapshotEntry, error) { return held, nil },
		}).Reservations(t.Context())

		ids, deletes := jobIDs(t, jobs, 3)
		if want := []string{"changed", "deleted", "missing"}; fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Fatalf("jobs %v, want %v", ids, want)
		}
		if !deletes["deleted"] || deletes["missing"] {
			t.Fatalf("deletes %v: only the owner-deleted one is a delete", deletes)
		}
		synctest.Wait()
		if c, _ := store.Cursor("explorer"); c != 40 {
			t.Fatalf("cursor %d after reconciling, want the snapshot's 40", c)
		}
		froms := p.Froms()
		if len(froms) < 2 || froms[0] != 7 || froms[len(froms)-1] != 40 {
			t.Fatalf("polled from %v; want 7, then 40", froms)
		}
	})
}

// Without Held the source cannot reconcile: a gone cursor is retried like
// any failed poll, and the cursor stays where it was.
func TestPollSourceGoneCursorWithoutHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &snapPoller{Poller: provisiontest.NewPoller()}
		gone := provision.Permanent(fmt.Errorf("%w: 410", provision.ErrCursorGone))
		p.FailNext(gone, gone)
		store := provisiontest.NewStore()
		store.SetCursor("explorer", 7)
		var mu sync.Mutex
		var seen []error
		source.NewPoll(p, store, "explorer", source.PollOptions{
			OnError: func(err error) { mu.Lock(); seen = append(seen, err); mu.Unlock() },
		}).Reservations(t.Context())
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if c, _ := store.Cursor("explorer"); c != 7 || p.snaps != 0 {
			t.Fatalf("cursor %d, %d snapshots; want 7 and none", c, p.snaps)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != 2 || !errors.Is(seen[0], provision.ErrCursorGone) {
			t.Fatalf("errors reported: %v", seen)
		}
	})
}

// A caught-up source compares the snapshot with the node's records every
// CheckEvery: drift is reported (a *Drift) and what the node lacks is
// handed to the Engine; a snapshot at another seq is not compared.
func TestPollSourceAntiEntropy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := provisiontest.NewUser(1)
		held := u.Volume("held", testNode, 1, time.Now(), time.Hour)
		lost := u.Volume("lost", testNode, 2, time.Now(), time.Hour)
		p := &snapPoller{Poller: provisiontest.NewPoller(), byID: map[string]*provision.Reservation{"held": held, "lost": lost}}
		p.Hold = time.Minute
		p.snap = provision.Snapshot{Seq: 0, Reservations: []provision.SnapshotEntry{entry(held)}}
		var mu sync.Mutex
		var drifts []*source.Drift
		jobs := source.NewPoll(p, provisiontest.NewStore(), "explorer", source.PollOptions{
			Held:       func() ([]provision.SnapshotEntry, error) { return []provision.SnapshotEntry{entry(held)}, nil },
			CheckEvery: 5 * time.Minute,
			OnError: func(err error) {
				var d *source.Drift
				if errors.As(err, &d) {
					mu.Lock()
					drifts = append(drifts, d)
					mu.Unlock()
				}
			},
		}).Reservations(t.Context())
		if j := <-jobs; !j.Last {
			t.Fatal("first job is not the Last marker")
		}
		time.Sleep(6 * time.Minute) // one check: no drift
		synctest.Wait()
		mu.Lock()
		checks := p.snaps
		if len(drifts) != 0 || checks == 0 {
			mu.Unlock()
			t.Fatalf("%d drifts over %d checks; want checks and no drift", len(drifts), checks)
		}
		mu.Unlock()
		p.mu.Lock()
		p.snap.Reservations = append(p.snap.Reservations, entry(lost))
		p.mu.Unlock()
		ids, _ := jobIDs(t, jobs, 1)
		if ids[0] != "lost" {
			t.Fatalf("repaired %v, want lost", ids)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(drifts) != 1 || len(drifts[0].Missing) != 1 || drifts[0].Missing[0] != "lost" {
			t.Fatalf("drifts %+v; want lost missing once", drifts)
		}
	})
}
