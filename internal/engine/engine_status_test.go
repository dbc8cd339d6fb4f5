package engine_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// statusPrimitives are RecordingPrimitives that report a status for each
// workload (StatusInspector) and notice changes by themselves (Watched).
type statusPrimitives struct {
	*provisiontest.RecordingPrimitives
	mu     sync.Mutex
	status map[string]any
	engine provision.InspectRequester
}

var (
	_ provision.StatusInspector = (*statusPrimitives)(nil)
	_ provision.Watched         = (*statusPrimitives)(nil)
)

func (p *statusPrimitives) InspectStatus(ctx context.Context, r *provision.Reservation) (any, error) {
	if err := p.Inspect(ctx, r); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status[r.ID], nil
}

func (p *statusPrimitives) WatchedBy(r provision.InspectRequester) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.engine = r
}

// set changes the status of id and tells the Engine, as a container's
// supervisor does.
func (p *statusPrimitives) set(id string, status any) {
	p.mu.Lock()
	p.status[id] = status
	e := p.engine
	p.mu.Unlock()
	e.InspectSoon(id)
}

// A status that changes produces one new signed "ok" result carrying it,
// at most one per StatusInterval; an unchanged one produces none.
func TestEngineStatusResults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prims := &statusPrimitives{RecordingPrimitives: provisiontest.NewRecordingPrimitives(), status: map[string]any{}}
		h := newHarness(t, func(o *engine.Options) {
			o.Primitives = prims
			o.StatusInterval = 10 * time.Second
			o.ResyncInterval = time.Hour
		})
		h.start(nil)
		h.deliver(h.user.Volume("c1", testNode, 1, time.Now(), 24*time.Hour))
		settle(0)
		h.wantState("c1", provision.Deployed)
		results := func() []*provision.Result {
			t.Helper()
			rs := h.fb.ResultsFor("c1")
			for _, r := range rs {
				if r.State != provision.StateOk {
					t.Fatalf("result %+v is not ok", r)
				}
				if err := r.Verify(ed25519.PrivateKey(h.signer).Public().(ed25519.PublicKey)); err != nil {
					t.Fatalf("result does not verify: %v", err)
				}
			}
			return rs
		}
		if n := len(results()); n != 1 {
			t.Fatalf("%d results after deployment, want 1", n)
		}

		// The status the primitives report is that of the first result:
		// nothing new to sign.
		prims.set("c1", map[string]string{"id": "c1"})
		settle(time.Minute)
		if n := len(results()); n != 1 {
			t.Fatalf("%d results after an unchanged status, want 1", n)
		}

		// A change is signed at once (the last result is older than the
		// interval).
		prims.set("c1", map[string]any{"id": "c1", "state": "restarting", "restarts": 1})
		settle(0)
		rs := results()
		if len(rs) != 2 || string(rs[1].Data) != `{"id":"c1","restarts":1,"state":"restarting"}` {
			t.Fatalf("results after a change: %d, last data %s", len(rs), rs[len(rs)-1].Data)
		}
		if h.record("c1").Result.Data == nil || string(h.record("c1").Result.Data) != string(rs[1].Data) {
			t.Fatalf("stored result %s, want the new status", h.record("c1").Result.Data)
		}

		// Two more changes within the interval: the last is signed once
		// the interval passed, the middle one never.
		prims.set("c1", map[string]any{"id": "c1", "state": "running", "restarts": 2})
		settle(time.Second)
		prims.set("c1", map[string]any{"id": "c1", "state": "running", "restarts": 3})
		settle(time.Second)
		if n := len(results()); n != 2 {
			t.Fatalf("%d results within the interval, want 2", n)
		}
		settle(10 * time.Second)
		rs = results()
		if len(rs) != 3 || string(rs[2].Data) != `{"id":"c1","restarts":3,"state":"running"}` {
			t.Fatalf("results after the interval: %d, last data %s", len(rs), rs[len(rs)-1].Data)
		}
		var got map[string]any
		if err := json.Unmarshal(rs[2].Data, &got); err != nil || got["restarts"] != float64(3) {
			t.Fatalf("last result data %s: %v", rs[2].Data, err)
		}
		h.wantState("c1", provision.Deployed)
		if n := prims.Provisions("c1"); n != 1 {
			t.Fatalf("provisioned %d times, want 1", n)
		}
	})
}
