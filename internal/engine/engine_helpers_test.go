package engine_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/internal/tally"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

const testNode = "node-1"

// harness runs Engines over one store, with fakes, inside a synctest
// bubble: one Engine at a time, restartable.
type harness struct {
	t       testing.TB
	store   provision.Store
	src     *provisiontest.ScriptedSource
	prims   *provisiontest.RecordingPrimitives
	fb      *provisiontest.Feedbacker
	statser *provisiontest.Statser
	signer  provision.KeySigner
	user    *provisiontest.User
	opts    engine.Options

	eng    *engine.Engine
	ctx    context.Context
	cancel context.CancelFunc
	done   chan error
}

func bigCapacity() provision.Capacity {
	return provision.Capacity{
		Total:    provision.Units{CRU: 64, MRU: 256, SRU: 4096, HRU: 4096},
		Reserved: provision.Units{CRU: 2, MRU: 4},
	}
}

// newHarness returns a harness over a memory store; opts adjusts the
// Engine's options. Call it inside synctest.Test.
func newHarness(t testing.TB, opts func(*engine.Options)) *harness {
	t.Helper()
	signer, _ := provisiontest.NewNodeSigner(1)
	h := &harness{
		t:       t,
		store:   provisiontest.NewStore(),
		src:     provisiontest.NewScriptedSource(),
		prims:   provisiontest.NewRecordingPrimitives(),
		fb:      provisiontest.NewFeedbacker(),
		statser: provisiontest.NewStatser(bigCapacity()),
		signer:  signer,
		user:    provisiontest.NewUser(1),
	}
	h.opts = engine.Options{
		NodeID:     testNode,
		Source:     h.src,
		Primitives: h.prims,
		Signer:     h.signer,
		Statser:    h.statser,
		Feedbacker: h.fb,
		OutboxRate: rate.Inf,
	}
	if opts != nil {
		opts(&h.opts)
	}
	t.Cleanup(h.stop)
	return h
}

// start runs a new Engine over store (h.store when nil).
func (h *harness) start(store provision.Store) {
	h.t.Helper()
	if h.eng != nil {
		h.t.Fatal("engine already running")
	}
	if store == nil {
		store = h.store
	}
	o := h.opts
	o.Store = store
	h.eng = engine.New(o)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.done = make(chan error, 1)
	eng, ctx := h.eng, h.ctx
	go func() { h.done <- eng.Run(ctx) }()
}

// stop cancels the Engine and waits for Run to return.
func (h *harness) stop() {
	if h.eng == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Logf("engine run: %v", err)
	}
	h.eng = nil
}

// restart stops the Engine (after it went idle) and starts a new one over
// the same store.
func (h *harness) restart() {
	synctest.Wait()
	h.stop()
	h.start(nil)
}

// deliver hands r to the Engine and fails the test unless it was
// acknowledged without error.
func (h *harness) deliver(r *provision.Reservation) {
	h.t.Helper()
	if err := h.src.Deliver(h.ctx, r); err != nil {
		h.t.Fatalf("delivering %s: %v", r.ID, err)
	}
}

// settle lets fake time pass by d, then waits until the bubble is idle.
func settle(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
	synctest.Wait()
}

func (h *harness) record(id string) *provision.Record {
	h.t.Helper()
	rec, err := h.store.Get(id)
	if err != nil {
		h.t.Fatalf("reading record %s: %v", id, err)
	}
	return rec
}

func (h *harness) wantState(id string, want provision.State) *provision.Record {
	h.t.Helper()
	rec := h.record(id)
	if rec.State != want {
		h.t.Fatalf("record %s is %s, want %s (history %+v)", id, rec.State, want, rec.History)
	}
	return rec
}

// lastResult returns the last result delivered for id.
func (h *harness) lastResult(id string) *provision.Result {
	h.t.Helper()
	rs := h.fb.ResultsFor(id)
	if len(rs) == 0 {
		h.t.Fatalf("no result delivered for %s", id)
	}
	return rs[len(rs)-1]
}

// activeSet computes, from the store alone, the sum of the units and the
// count per type of the active records: the pure function stats are.
func activeSet(t testing.TB, s provision.Store) (provision.Units, map[provision.ReservationType]uint64, *tally.Tally) {
	t.Helper()
	var sum provision.Units
	count := map[provision.ReservationType]uint64{}
	fresh := tally.New()
	err := s.Scan(func(rec *provision.Record) error {
		sum = sum.Add(rec.Units)
		count[rec.Reservation.Type]++
		fresh.Set(rec.ID(), rec.Reservation.UserID, rec.Reservation.Type, rec.Units)
		return nil
	}, provision.Provisioning, provision.Deployed, provision.Deleting)
	if err != nil {
		t.Fatalf("scanning active records: %v", err)
	}
	return sum, count, fresh
}

func unitsClose(a, b provision.Units) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*max(1, math.Abs(x), math.Abs(y)) }
	return a.CRU == b.CRU && near(a.MRU, b.MRU) && near(a.SRU, b.SRU) && near(a.HRU, b.HRU)
}

// checkStats fails unless the Engine's stats equal the pure computation
// over the store's active set.
func (h *harness) checkStats(store provision.Store) {
	h.t.Helper()
	sum, count, fresh := activeSet(h.t, store)
	st := h.eng.Status().Stats
	if !unitsClose(st.Used, sum) || st.Used != fresh.Total() {
		h.t.Errorf("engine used %+v, active set sums to %+v (fresh tally %+v)", st.Used, sum, fresh.Total())
	}
	for typ, n := range count {
		if st.Workloads[typ] != n {
			h.t.Errorf("engine counts %d %s workloads, active set %d", st.Workloads[typ], typ, n)
		}
	}
	for typ, n := range st.Workloads {
		if count[typ] != n {
			h.t.Errorf("engine counts %d %s workloads, active set %d", n, typ, count[typ])
		}
	}
}

// failGet is a store whose Get fails for one ID (a transient error).
type failGet struct {
	provision.Store
	id string
}

var errTransient = errors.New("transient store failure")

func (s failGet) Get(id string) (*provision.Record, error) {
	if id == s.id {
		return nil, errTransient
	}
	return s.Store.Get(id)
}
