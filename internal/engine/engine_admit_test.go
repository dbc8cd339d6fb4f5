package engine_test

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
)

// writeLog is a store that records, per reservation, the state of every
// record write ("add:provisioning", "save:deployed").
type writeLog struct {
	provision.Store
	mu     sync.Mutex
	writes map[string][]string
}

func (s *writeLog) log(op string, rec *provision.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes[rec.ID()] = append(s.writes[rec.ID()], op+":"+string(rec.State))
}

func (s *writeLog) of(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.writes[id])
}

func (s *writeLog) QueueAdd(rec *provision.Record, out ...*provision.OutboxEntry) func() error {
	s.log("add", rec)
	return s.Store.(provision.WriteQueuer).QueueAdd(rec, out...)
}

func (s *writeLog) QueueSave(rec *provision.Record, out ...*provision.OutboxEntry) func() error {
	s.log("save", rec)
	return s.Store.(provision.WriteQueuer).QueueSave(rec, out...)
}

// transitions counts the Transition hooks per state.
type transitions struct {
	engine.NopHooks
	mu sync.Mutex
	n  map[provision.State]int
}

func (h *transitions) Transition(_ provision.ReservationType, to provision.State) {
	h.mu.Lock()
	h.n[to]++
	h.mu.Unlock()
}

func (h *transitions) count(s provision.State) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[s]
}

// A reservation that can start at once is admitted in the write that
// accepts it: a volume takes two record writes (provisioning, deployed),
// a refused one a single one (failed, with its result). A container whose
// network is not deployed yet is written accepted and admitted by a
// worker once it is. Every new record still reports its acceptance.
func TestEngineAdmitsAtIngest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hooks := &transitions{n: map[provision.State]int{}}
		h := newHarness(t, func(o *engine.Options) { o.Hooks = hooks })
		h.statser.SetCapacity(provision.Capacity{Total: provision.Units{CRU: 4, MRU: 8, SRU: 12}})
		store := &writeLog{Store: h.store, writes: map[string][]string{}}
		h.start(store)

		h.deliver(h.user.Volume("v", testNode, 1, time.Now(), time.Hour))
		h.deliver(h.user.Volume("big", testNode, 100, time.Now(), time.Hour))
		c := h.user.Container("c", testNode, 1, 256, provision.NetworkID(h.user.ID, "net"), nil, time.Now(), time.Hour)
		h.deliver(c)
		settle(time.Minute)
		h.wantState("v", provision.Deployed)
		h.wantState("big", provision.Failed)
		h.wantState("c", provision.Accepted)
		h.deliver(h.user.Network("n", testNode, "net", time.Now(), time.Hour))
		settle(time.Minute)
		h.wantState("c", provision.Deployed)

		for id, want := range map[string][]string{
			"v":   {"add:provisioning", "save:deployed"},
			"big": {"add:error"},
			"n":   {"add:provisioning", "save:deployed"},
			"c":   {"add:accepted", "save:provisioning", "save:deployed"},
		} {
			if got := store.of(id); !slices.Equal(got, want) {
				t.Errorf("writes of %s: %v, want %v", id, got, want)
			}
		}
		if rec := h.record("v"); len(rec.History) != 3 || rec.History[0].State != provision.Accepted {
			t.Errorf("history of v: %+v, want accepted, provisioning, deployed", rec.History)
		}
		if got := hooks.count(provision.Accepted); got != 4 {
			t.Errorf("%d acceptances reported, want 4", got)
		}
		if got := hooks.count(provision.Provisioning); got != 3 {
			t.Errorf("%d provisionings reported, want 3", got)
		}
		h.checkStats(h.store)
	})
}
