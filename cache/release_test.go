package cache_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// releaseDB is the database today's release (772db0b) wrote on a node
// running a network, a volume and two containers, one mounting the
// volume: `make systemd-test SYSTEMD_TEST_FLAGS=-update-golden` writes it
// from its upgrade step. Like Nomad's old state files, it stays: every
// later build must open it.
const releaseDB = "testdata/release-772db0b.db"

// healthy are primitives whose workloads all run: Inspect says so and
// counts; Provision, Decommission and Remove are recorded.
type healthy struct {
	*provisiontest.RecordingPrimitives
	inspected atomic.Int64
}

func (h *healthy) Inspect(ctx context.Context, _ *provision.Reservation) error {
	h.inspected.Add(1)
	return ctx.Err()
}

// TestReleaseDatabase opens the release's database with this build: its
// schema is current (or migrates), Check finds nothing wrong, every
// record reads back deployed with its node-signed result, and an engine
// started on it adopts every workload: it inspects each one, provisions,
// decommissions and removes nothing, and writes no record.
func TestReleaseDatabase(t *testing.T) {
	src, err := os.Open(releaseDB)
	if err != nil {
		t.Fatalf("the release's database: %v", err)
	}
	defer src.Close()
	path := filepath.Join(t.TempDir(), "provisiond.db")
	dst, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := cache.Open(path, cache.Options{})
	if err != nil {
		t.Fatalf("opening the release's database: %v", err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	before := map[string]string{}
	types := map[provision.ReservationType]int{}
	usage := map[string]provision.Usage{}
	var inventory []provision.Resource
	err = s.Scan(func(rec *provision.Record) error {
		r := rec.Reservation
		if rec.State != provision.Deployed {
			t.Errorf("%s %s is %s, want deployed", r.Type, r.ID, rec.State)
		}
		if err := r.Verify(); err != nil {
			t.Errorf("user signature of %s: %v", r.ID, err)
		}
		pub, err := identity.PublicKey(rec.Result.NodeID)
		if err != nil || rec.Result.Verify(pub) != nil || rec.Result.State != provision.StateOk {
			t.Errorf("result of %s: %+v does not verify as ok (%v)", r.ID, rec.Result, err)
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		before[r.ID] = string(b)
		types[r.Type]++
		if rec.State.Active() {
			u := usage[r.UserID]
			u.Units = u.Units.Add(rec.Units)
			u.Workloads++
			usage[r.UserID] = u
		}
		id := r.ID
		if r.Type == provision.NetworkReservation {
			w, err := r.Workload()
			if err != nil {
				return err
			}
			id = provision.NetworkID(r.UserID, w.(*provision.Network).Name)
		}
		inventory = append(inventory, provision.Resource{Type: r.Type, ID: id, Name: provision.Prefix + id})
		return nil
	}, provision.States...)
	if err != nil {
		t.Fatal(err)
	}
	want := map[provision.ReservationType]int{provision.NetworkReservation: 1, provision.VolumeReservation: 1, provision.ContainerReservation: 2}
	if !maps.Equal(types, want) {
		t.Fatalf("records by type: %v, want %v", types, want)
	}

	prims := &healthy{RecordingPrimitives: provisiontest.NewRecordingPrimitives()}
	prims.SetInventory(inventory...)
	src2 := provisiontest.NewScriptedSource()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Options{
		NodeID:     identity.NodeID(key.Public().(ed25519.PublicKey)),
		Source:     src2,
		Store:      s,
		Primitives: prims,
		Signer:     provision.KeySigner(key),
		Statser:    provisiontest.NewStatser(provision.Capacity{Total: provision.Units{CRU: 64, MRU: 256, SRU: 4096, HRU: 4096}}),
		Feedbacker: provisiontest.NewFeedbacker(),
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	if err := src2.CaughtUp(ctx); err != nil { // the orphan cleanup runs then
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for prims.inspected.Load() < int64(len(before)) || eng.Status().Busy > 0 || eng.Status().Queued > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workloads inspected", prims.inspected.Load(), len(before))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Each user's usage, rebuilt from the migrated state index (schema 2
	// added the owners), is that of the records.
	if got := eng.Usage(); len(usage) == 0 || !maps.Equal(got, usage) {
		t.Errorf("usage after the migration %v, the records hold %v", got, usage)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("engine: %v", err)
	}
	if n := prims.TotalProvisions(); n != 0 {
		t.Errorf("%d workloads provisioned again, want none", n)
	}
	for id := range before {
		if n := prims.Decommissions(id); n != 0 {
			t.Errorf("%s decommissioned %d times", id, n)
		}
	}
	if rm := prims.Removed(); len(rm) != 0 {
		t.Errorf("orphan cleanup removed %v", rm)
	}
	err = s.Scan(func(rec *provision.Record) error {
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if string(b) != before[rec.ID()] {
			t.Errorf("record %s changed:\nbefore %s\nafter  %s", rec.ID(), before[rec.ID()], b)
		}
		return nil
	}, provision.States...)
	if err != nil {
		t.Fatal(err)
	}
}
