package provisiontest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/edgeprov/provisiond/provision"
)

// fault is a scripted misbehaviour of the next calls for one ID.
type fault struct {
	n         int // calls left; < 0 for ever
	temporary bool
	hang      bool
}

// take consumes one call of the fault list; the error to return, or nil.
func take(fs map[string]*fault, id string) (*fault, bool) {
	f := fs[id]
	if f == nil || f.n == 0 {
		return nil, false
	}
	if f.n > 0 {
		f.n--
	}
	return f, true
}

// RecordingPrimitives is provision.Primitives (with Inspector and Lister)
// that records its side effects: how often Provision and Decommission ran
// per reservation ID and which workloads exist. Calls can be scripted to
// fail temporarily or permanently, or to hang until their context ends;
// Inspect reports a workload vanished after Vanish until it is provisioned
// again. A call whose context has already ended does nothing (a dead
// process does not act). Provision returns {"id": ID} as result data.
type RecordingPrimitives struct {
	mu            sync.Mutex
	provisions    map[string]int
	versions      map[string]uint32
	decommissions map[string]int
	live          map[string]bool
	vanished      map[string]bool
	unhealthy     map[string]error
	provFaults    map[string]*fault
	decoFaults    map[string]*fault
	inventory     []provision.Resource
	removed       []provision.Resource
	listErr       error
	onProvision   func(r *provision.Reservation)
}

var (
	_ provision.Primitives = (*RecordingPrimitives)(nil)
	_ provision.Inspector  = (*RecordingPrimitives)(nil)
	_ provision.Lister     = (*RecordingPrimitives)(nil)
)

// NewRecordingPrimitives returns primitives that succeed at everything.
func NewRecordingPrimitives() *RecordingPrimitives {
	return &RecordingPrimitives{
		provisions:    make(map[string]int),
		versions:      make(map[string]uint32),
		decommissions: make(map[string]int),
		live:          make(map[string]bool),
		vanished:      make(map[string]bool),
		unhealthy:     make(map[string]error),
		provFaults:    make(map[string]*fault),
		decoFaults:    make(map[string]*fault),
	}
}

// Provision records a provision of r.ID, unless a fault is scripted.
func (p *RecordingPrimitives) Provision(ctx context.Context, r *provision.Reservation) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	f, faulty := take(p.provFaults, r.ID)
	hook := p.onProvision
	if !faulty {
		p.provisions[r.ID]++
		p.versions[r.ID] = r.Version
		p.live[r.ID] = true
		delete(p.vanished, r.ID)
	}
	p.mu.Unlock()
	if faulty {
		return nil, faultErr(ctx, "provision", r.ID, f)
	}
	if hook != nil {
		hook(r)
	}
	return map[string]string{"id": r.ID}, nil
}

// Decommission records a decommission of r.ID, unless a fault is scripted.
func (p *RecordingPrimitives) Decommission(ctx context.Context, r *provision.Reservation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	f, faulty := take(p.decoFaults, r.ID)
	if !faulty {
		p.decommissions[r.ID]++
		delete(p.live, r.ID)
	}
	p.mu.Unlock()
	if faulty {
		return faultErr(ctx, "decommission", r.ID, f)
	}
	return nil
}

func faultErr(ctx context.Context, op, id string, f *fault) error {
	if f.hang {
		<-ctx.Done()
		return fmt.Errorf("%s %s hung: %w", op, id, ctx.Err())
	}
	err := fmt.Errorf("%s %s: %w", op, id, ErrInjected)
	if f.temporary {
		return provision.Temporary(err)
	}
	return provision.Permanent(err)
}

// Inspect reports ErrVanished for a workload that vanished (or was never
// provisioned), the error set with SetUnhealthy, or nil.
func (p *RecordingPrimitives) Inspect(ctx context.Context, r *provision.Reservation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.unhealthy[r.ID]; err != nil {
		return err
	}
	if p.vanished[r.ID] || !p.live[r.ID] {
		return fmt.Errorf("inspecting %s: %w", r.ID, provision.ErrVanished)
	}
	return nil
}

// List returns the inventory set with SetInventory, or the error of
// FailList.
func (p *RecordingPrimitives) List(ctx context.Context) ([]provision.Resource, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listErr != nil {
		return nil, p.listErr
	}
	return slices.Clone(p.inventory), nil
}

// Remove records the removal of res and drops it from the inventory.
func (p *RecordingPrimitives) Remove(ctx context.Context, res provision.Resource) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removed = append(p.removed, res)
	p.inventory = slices.DeleteFunc(p.inventory, func(x provision.Resource) bool { return x == res })
	return nil
}

// FailProvision makes the next n Provision calls of id fail (n < 0: all).
func (p *RecordingPrimitives) FailProvision(id string, n int, temporary bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.provFaults[id] = &fault{n: n, temporary: temporary}
}

// HangProvision makes the next n Provision calls of id block until their
// context ends (n < 0: all).
func (p *RecordingPrimitives) HangProvision(id string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.provFaults[id] = &fault{n: n, hang: true}
}

// FailDecommission makes the next n Decommission calls of id fail (n < 0:
// all).
func (p *RecordingPrimitives) FailDecommission(id string, n int, temporary bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.decoFaults[id] = &fault{n: n, temporary: temporary}
}

// Vanish makes the workload of id disappear (a node reboot) until it is
// provisioned again.
func (p *RecordingPrimitives) Vanish(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vanished[id] = true
	delete(p.live, id)
}

// SetUnhealthy makes Inspect of id return err (nil: healthy again).
func (p *RecordingPrimitives) SetUnhealthy(id string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		delete(p.unhealthy, id)
		return
	}
	p.unhealthy[id] = err
}

// OnProvision sets a function called after each successful Provision.
func (p *RecordingPrimitives) OnProvision(fn func(r *provision.Reservation)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onProvision = fn
}

// SetInventory sets what List returns.
func (p *RecordingPrimitives) SetInventory(res ...provision.Resource) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inventory = slices.Clone(res)
}

// FailList makes List return err (nil: succeed again).
func (p *RecordingPrimitives) FailList(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.listErr = err
}

// Removed returns what Remove was called with, in order.
func (p *RecordingPrimitives) Removed() []provision.Resource {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.removed)
}

// Provisions returns how often Provision of id succeeded.
func (p *RecordingPrimitives) Provisions(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.provisions[id]
}

// Version returns the version of id's reservation that the last
// successful Provision of id applied (0: none).
func (p *RecordingPrimitives) Version(id string) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.versions[id]
}

// Decommissions returns how often Decommission of id succeeded.
func (p *RecordingPrimitives) Decommissions(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.decommissions[id]
}

// TotalProvisions returns the number of successful Provision calls.
func (p *RecordingPrimitives) TotalProvisions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.provisions {
		n += c
	}
	return n
}

// Live returns the sorted IDs whose workload exists: provisioned and
// neither decommissioned nor vanished since.
func (p *RecordingPrimitives) Live() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.live))
	for id := range p.live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
