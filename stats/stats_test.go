package stats

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// reservation builds a signed reservation of type typ carrying data.
func reservation(tb testing.TB, id string, typ provision.ReservationType, data string) *provision.Reservation {
	tb.Helper()
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	r := &provision.Reservation{
		ID:       id,
		NodeID:   "node",
		Type:     typ,
		Data:     json.RawMessage(data),
		Created:  testNow,
		Duration: time.Hour,
	}
	r.Sign(key)
	return r
}

const digest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func container(cpu, memory, disk int64) string {
	b, err := json.Marshal(provision.Container{
		Image:       "/images/alpine.tar",
		ImageDigest: digest,
		Entrypoint:  []string{"/bin/sh"},
		Capacity:    provision.ContainerCapacity{CPU: cpu, Memory: memory, DiskSize: disk},
	})
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestUnits(t *testing.T) {
	tests := []struct {
		name string
		typ  provision.ReservationType
		data string
		want provision.Units
		err  error
	}{
		{"network", provision.NetworkReservation, `{"name":"n","ip_range":"10.1.0.0/16","subnet":"10.1.2.0/24"}`, provision.Units{}, nil},
		{"volume-ssd", provision.VolumeReservation, `{"size":10,"type":"ssd"}`, provision.Units{SRU: 10}, nil},
		{"volume-hdd", provision.VolumeReservation, `{"size":500,"type":"hdd"}`, provision.Units{HRU: 500}, nil},
		{"container-whole-gib", provision.ContainerReservation, container(2, 2048, 10240), provision.Units{CRU: 2, MRU: 2, SRU: 10}, nil},
		{"container-fractional-mib", provision.ContainerReservation, container(1, 512, 1536), provision.Units{CRU: 1, MRU: 0.5, SRU: 1.5}, nil},
		{"container-odd-mib", provision.ContainerReservation, container(3, 100, 1), provision.Units{CRU: 3, MRU: 100.0 / 1024, SRU: 1.0 / 1024}, nil},
		{"container-no-root-disk", provision.ContainerReservation, container(1, 16, 0), provision.Units{CRU: 1, MRU: 16.0 / 1024}, nil},
		{"unknown-type", "vm", `{}`, provision.Units{}, provision.ErrUnknownType},
		{"malformed-data", provision.VolumeReservation, `{"size":"big"}`, provision.Units{}, provision.ErrBadData},
		{"invalid-volume", provision.VolumeReservation, `{"size":-1,"type":"ssd"}`, provision.Units{}, provision.ErrBadSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Units(reservation(t, "r1", tt.typ, tt.data))
			if !errors.Is(err, tt.err) {
				t.Fatalf("Units() error = %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("Units() = %+v, want %+v", got, tt.want)
			}
			n := NewNode(NodeOptions{Probe: &fakeProbe{}})
			viaNode, err := n.Units(reservation(t, "r1", tt.typ, tt.data))
			if !errors.Is(err, tt.err) || viaNode != got {
				t.Errorf("Node.Units() = %+v, %v; want the table's %+v, %v", viaNode, err, got, tt.err)
			}
		})
	}
}

func TestUnitsNil(t *testing.T) {
	if _, err := Units(nil); !errors.Is(err, provision.ErrBadData) {
		t.Fatalf("Units(nil) error = %v, want ErrBadData", err)
	}
}

func TestCompute(t *testing.T) {
	type rec struct {
		typ   provision.ReservationType
		state provision.State
		units provision.Units
	}
	recs := []rec{
		{provision.NetworkReservation, provision.Deployed, provision.Units{}},
		{provision.NetworkReservation, provision.Failed, provision.Units{}},
		{provision.VolumeReservation, provision.Deployed, provision.Units{SRU: 10}},
		{provision.VolumeReservation, provision.Provisioning, provision.Units{HRU: 100}},
		{provision.VolumeReservation, provision.Deleted, provision.Units{SRU: 1000}},
		{provision.VolumeReservation, provision.Accepted, provision.Units{SRU: 2000}},
		{provision.ContainerReservation, provision.Deployed, provision.Units{CRU: 2, MRU: 0.5, SRU: 1.5}},
		{provision.ContainerReservation, provision.Deleting, provision.Units{CRU: 1, MRU: 0.25}},
		{provision.ContainerReservation, provision.Failed, provision.Units{CRU: 64, MRU: 64}},
	}
	var in []*provision.Record
	for i, r := range recs {
		in = append(in, &provision.Record{
			Reservation: &provision.Reservation{ID: string(rune('a' + i)), Type: r.typ},
			State:       r.state,
			Units:       r.units,
		})
	}
	in = append(in, nil) // tolerated

	// Hand sum of the active records above: deployed, provisioning, deleting.
	wantUsed := provision.Units{CRU: 3, MRU: 0.75, SRU: 11.5, HRU: 100}
	wantWorkloads := map[provision.ReservationType]uint64{
		provision.NetworkReservation:   1,
		provision.VolumeReservation:    2,
		provision.ContainerReservation: 2,
	}
	capacity := provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32}, Reserved: provision.Units{MRU: 3.2}}

	got := Compute(in, capacity, testNow)
	if got.Used != wantUsed {
		t.Errorf("Used = %+v, want %+v", got.Used, wantUsed)
	}
	if len(got.Workloads) != len(wantWorkloads) {
		t.Errorf("Workloads = %v, want %v", got.Workloads, wantWorkloads)
	}
	for typ, n := range wantWorkloads {
		if got.Workloads[typ] != n {
			t.Errorf("Workloads[%s] = %d, want %d", typ, got.Workloads[typ], n)
		}
	}
	if got.Capacity != capacity || !got.Updated.Equal(testNow) {
		t.Errorf("Capacity, Updated = %+v, %v; want %+v, %v", got.Capacity, got.Updated, capacity, testNow)
	}

	// Order does not matter: the figures are a function of the set.
	rev := make([]*provision.Record, len(in))
	for i, r := range in {
		rev[len(in)-1-i] = r
	}
	if again := Compute(rev, capacity, testNow); again.Used != got.Used {
		t.Errorf("Compute(reversed).Used = %+v, want %+v", again.Used, got.Used)
	}
}

func TestComputeEmpty(t *testing.T) {
	got := Compute(nil, provision.Capacity{}, testNow)
	if got.Used != (provision.Units{}) {
		t.Errorf("Used = %+v, want zero", got.Used)
	}
	for _, typ := range provision.Types {
		if n, ok := got.Workloads[typ]; !ok || n != 0 {
			t.Errorf("Workloads[%s] = %d, %v; want 0, present", typ, n, ok)
		}
	}
}

type fakeDisk struct {
	total, dev uint64
}

type fakeProbe struct {
	cpus   int
	memory uint64
	disks  map[string]fakeDisk
	err    error
}

func (p *fakeProbe) CPUs(context.Context) (int, error)      { return p.cpus, p.err }
func (p *fakeProbe) Memory(context.Context) (uint64, error) { return p.memory, nil }
func (p *fakeProbe) Disk(_ context.Context, path string) (uint64, uint64, error) {
	d, ok := p.disks[path]
	if !ok {
		return 0, 0, os.ErrNotExist
	}
	return d.total, d.dev, nil
}

func TestCapacity(t *testing.T) {
	probe := &fakeProbe{
		cpus:   8,
		memory: 32 * gib,
		disks: map[string]fakeDisk{
			"/ssd":       {total: 500 * gib, dev: 1},
			"/ssd/other": {total: 500 * gib, dev: 1},
			"/hdd":       {total: 4000 * gib, dev: 2},
		},
	}
	tests := []struct {
		name string
		opts NodeOptions
		want provision.Capacity
	}{
		{"memory-only-default-reserve", NodeOptions{},
			provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32}, Reserved: provision.Units{MRU: 3.2}}},
		{"ssd-and-hdd", NodeOptions{SSDPath: "/ssd", HDDPath: "/hdd"},
			provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32, SRU: 500, HRU: 4000}, Reserved: provision.Units{MRU: 3.2}}},
		{"hdd-only", NodeOptions{HDDPath: "/hdd"},
			provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32, HRU: 4000}, Reserved: provision.Units{MRU: 3.2}}},
		{"same-filesystem-counts-once-as-ssd", NodeOptions{SSDPath: "/ssd", HDDPath: "/ssd/other"},
			provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32, SRU: 500}, Reserved: provision.Units{MRU: 3.2}}},
		{"explicit-reserve", NodeOptions{SSDPath: "/ssd", Reserve: provision.Units{CRU: 1, MRU: 4, SRU: 20}},
			provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32, SRU: 500}, Reserved: provision.Units{CRU: 1, MRU: 4, SRU: 20}}},
		{"cpu-reserve-keeps-default-memory-reserve", NodeOptions{Reserve: provision.Units{CRU: 1}},
			provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32}, Reserved: provision.Units{CRU: 1, MRU: 3.2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Probe = probe
			got, err := NewNode(tt.opts).Capacity(t.Context())
			if err != nil {
				t.Fatalf("Capacity() error = %v", err)
			}
			if !unitsNear(got.Total, tt.want.Total) || !unitsNear(got.Reserved, tt.want.Reserved) {
				t.Errorf("Capacity() = %+v, want %+v", got, tt.want)
			}
			wantUsable := tt.want.Total.Sub(tt.want.Reserved)
			if !unitsNear(got.Usable(), wantUsable) {
				t.Errorf("Usable() = %+v, want %+v", got.Usable(), wantUsable)
			}
		})
	}
}

func TestCapacityMemoryReserveFloor(t *testing.T) {
	// On a small node 10% is less than 1 GiB: the floor wins.
	n := NewNode(NodeOptions{Probe: &fakeProbe{cpus: 1, memory: 4 * gib}})
	got, err := n.Capacity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got.Reserved.MRU != MinMemoryReserve {
		t.Errorf("Reserved.MRU = %v, want %v", got.Reserved.MRU, MinMemoryReserve)
	}
	if u := got.Usable(); u.MRU != 3 || u.CRU != 1 {
		t.Errorf("Usable() = %+v, want 1 CRU and 3 MRU", u)
	}
}

func TestCapacityErrors(t *testing.T) {
	tests := []struct {
		name  string
		probe *fakeProbe
		opts  NodeOptions
	}{
		{"cpu-probe-fails", &fakeProbe{err: errors.New("no /proc")}, NodeOptions{}},
		{"no-cpus", &fakeProbe{cpus: 0, memory: gib}, NodeOptions{}},
		{"missing-ssd-path", &fakeProbe{cpus: 1, memory: gib}, NodeOptions{SSDPath: "/nowhere"}},
		{"missing-hdd-path", &fakeProbe{cpus: 1, memory: gib}, NodeOptions{HDDPath: "/nowhere"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Probe = tt.probe
			if _, err := NewNode(tt.opts).Capacity(t.Context()); !errors.Is(err, ErrProbe) {
				t.Fatalf("Capacity() error = %v, want ErrProbe", err)
			}
		})
	}
}

func TestCapacitySystemProbe(t *testing.T) {
	dir := t.TempDir()
	n := NewNode(NodeOptions{SSDPath: dir, HDDPath: dir})
	got, err := n.Capacity(t.Context())
	if err != nil {
		t.Fatalf("Capacity() error = %v", err)
	}
	if got.Total.CRU != uint64(runtime.NumCPU()) {
		t.Errorf("Total.CRU = %d, want runtime.NumCPU() = %d", got.Total.CRU, runtime.NumCPU())
	}
	if got.Total.MRU <= 0 || got.Total.MRU > 1<<20 {
		t.Errorf("Total.MRU = %v GiB, want a plausible memory size", got.Total.MRU)
	}
	if got.Total.SRU <= 0 {
		t.Errorf("Total.SRU = %v GiB, want the size of %s's filesystem", got.Total.SRU, dir)
	}
	if got.Total.HRU != 0 {
		t.Errorf("Total.HRU = %v, want 0: the hdd path is on the ssd filesystem", got.Total.HRU)
	}
	if want := max(MinMemoryReserve, MemoryReserveFraction*got.Total.MRU); got.Reserved.MRU != want {
		t.Errorf("Reserved.MRU = %v, want %v", got.Reserved.MRU, want)
	}
}

func unitsNear(a, b provision.Units) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	return a.CRU == b.CRU && near(a.MRU, b.MRU) && near(a.SRU, b.SRU) && near(a.HRU, b.HRU)
}

func BenchmarkUnits(b *testing.B) {
	r := reservation(b, "r1", provision.ContainerReservation, container(2, 2048, 10240))
	for b.Loop() {
		if _, err := Units(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompute(b *testing.B) {
	recs := make([]*provision.Record, 10000)
	for i := range recs {
		recs[i] = &provision.Record{
			Reservation: &provision.Reservation{Type: provision.Types[i%len(provision.Types)]},
			State:       provision.States[i%len(provision.States)],
			Units:       provision.Units{CRU: 1, MRU: 0.5, SRU: 1},
		}
	}
	for b.Loop() {
		Compute(recs, provision.Capacity{}, testNow)
	}
}

// usedProbe is a fakeProbe that also tells what its disks use.
type usedProbe struct {
	fakeProbe
	used, workloads map[string]uint64
	calls           int
}

func (p *usedProbe) DiskUsed(_ context.Context, path string) (uint64, uint64, error) {
	p.calls++
	u, ok := p.used[path]
	if !ok {
		return 0, 0, os.ErrNotExist
	}
	return u, p.workloads[path], nil
}

func TestCapacityStorageReserve(t *testing.T) {
	newProbe := func() *usedProbe {
		return &usedProbe{
			fakeProbe: fakeProbe{cpus: 8, memory: 32 * gib, disks: map[string]fakeDisk{
				"/ssd": {total: 500 * gib, dev: 1}, "/ssd/hdd": {total: 500 * gib, dev: 1}, "/hdd": {total: 4000 * gib, dev: 2},
			}},
			used:      map[string]uint64{"/ssd": 40 * gib, "/ssd/hdd": 40 * gib, "/hdd": 100 * gib},
			workloads: map[string]uint64{"/ssd": 15 * gib, "/hdd": 0},
		}
	}
	tests := []struct {
		name     string
		opts     NodeOptions
		sru, hru float64
	}{
		// 500 GiB: 2% is 10 GiB, more than the 1 GiB floor.
		{"default-margin", NodeOptions{SSDPath: "/ssd", HDDPath: "/hdd"}, 40 - 15 + 10, 100 + 80},
		{"explicit-margin", NodeOptions{SSDPath: "/ssd", HDDPath: "/hdd", DiskMargin: 2 * gib}, 40 - 15 + 2, 100 + 2},
		{"no-margin", NodeOptions{SSDPath: "/ssd", DiskMargin: -1}, 25, 0},
		{"plus-explicit-reserve", NodeOptions{SSDPath: "/ssd", DiskMargin: -1, Reserve: provision.Units{SRU: 5}}, 30, 0},
		{"same-filesystem-reserved-once", NodeOptions{SSDPath: "/ssd", HDDPath: "/ssd/hdd", DiskMargin: -1}, 25, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probe := newProbe()
			tt.opts.Probe = probe
			n := NewNode(tt.opts)
			got, err := n.Capacity(t.Context())
			if err != nil {
				t.Fatalf("Capacity() error = %v", err)
			}
			want := provision.Units{MRU: 3.2, SRU: tt.sru, HRU: tt.hru}
			if !unitsNear(got.Reserved, want) {
				t.Errorf("Reserved = %+v, want %+v", got.Reserved, want)
			}
			// Measured once: later growth is the workloads', counted by
			// their reservations.
			probe.used["/ssd"] += 100 * gib
			probe.used["/hdd"] += 100 * gib
			again, err := n.Capacity(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !unitsNear(again.Reserved, want) {
				t.Errorf("second Reserved = %+v, want %+v (the reserve of the start)", again.Reserved, want)
			}
		})
	}
}

func TestCapacityStorageReserveProbeError(t *testing.T) {
	probe := &usedProbe{fakeProbe: fakeProbe{cpus: 1, memory: 4 * gib, disks: map[string]fakeDisk{"/ssd": {total: gib, dev: 1}}}}
	_, err := NewNode(NodeOptions{SSDPath: "/ssd", Probe: probe}).Capacity(t.Context())
	if !errors.Is(err, ErrProbe) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Capacity() error = %v, want ErrProbe wrapping ErrNotExist", err)
	}
}

// TestCapacityStorageReserveReal measures a real filesystem of a known
// size (a tmpfs the test mounts): what is there at start is reserved, the
// sparse or allocated volume images are not.
func TestCapacityStorageReserveReal(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=256m"); err != nil {
		t.Fatalf("mounting tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	write := func(name string, size int) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("provisiond.db", 64<<20)           // not a workload's: reserved
	write(provision.Prefix+"v1.img", 32<<20) // a volume image: its reservation counts it
	sparse, err := os.Create(filepath.Join(dir, provision.Prefix+"v2.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sparse.Truncate(100 << 20); err != nil { // sparse: allocates nothing
		t.Fatal(err)
	}
	sparse.Close()
	n := NewNode(NodeOptions{SSDPath: dir, DiskMargin: 16 << 20})
	c, err := n.Capacity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Total.SRU * gib; got != 256<<20 {
		t.Errorf("Total.SRU = %.0f bytes, want %d", got, 256<<20)
	}
	want := float64(64<<20+16<<20) / gib
	if math.Abs(c.Reserved.SRU-want) > float64(1<<20)/gib {
		t.Errorf("Reserved.SRU = %.1f MiB, want %.1f MiB (64 MiB used at start + 16 MiB margin)", c.Reserved.SRU*1024, want*1024)
	}
	// Usable never promises what is not there: at most what was free
	// plus what the volumes (counted by their reservations) hold.
	free := float64(256<<20-64<<20) / gib
	if u := c.Usable().SRU; u > free {
		t.Errorf("Usable().SRU = %.1f MiB, more than the %.1f MiB free to workloads", u*1024, free*1024)
	}
}
