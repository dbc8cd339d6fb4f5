package stats

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/disk"
	"github.com/shirou/gopsutil/v3/mem"

	"github.com/edgeprov/provisiond/provision"
)

// gib is the number of bytes in a GiB.
const gib = 1 << 30

// Defaults of the memory reserve: at least MinMemoryReserve GiB and at
// least MemoryReserveFraction of the total memory.
const (
	// MinMemoryReserve is the smallest memory reserve, in GiB.
	MinMemoryReserve = 1.0
	// MemoryReserveFraction is the share of total memory reserved by default.
	MemoryReserveFraction = 0.10
)

// Errors of the stats package.
var (
	ErrProbe = errors.New("stats: measuring the node failed")
)

// Probe measures the hardware. The default probe uses gopsutil; tests
// inject a fake.
type Probe interface {
	// CPUs returns the number of logical CPUs.
	CPUs(ctx context.Context) (int, error)
	// Memory returns the total memory in bytes.
	Memory(ctx context.Context) (uint64, error)
	// Disk returns the total size in bytes of the filesystem holding path
	// and an identifier of that filesystem (its device number), equal for
	// two paths on the same filesystem.
	Disk(ctx context.Context, path string) (total, device uint64, err error)
}

// NodeOptions configures a Node.
type NodeOptions struct {
	// SSDPath is a directory on the SSD storage; the size of its filesystem
	// counts as SRU. Empty (the default) counts no SSD.
	SSDPath string
	// HDDPath is a directory on the HDD storage; the size of its filesystem
	// counts as HRU. Empty (the default) counts no HDD. When it lies on the
	// same filesystem as SSDPath, that filesystem is counted once, as SSD.
	HDDPath string
	// Reserve is kept back for the system and never given to workloads.
	// Its MRU, when zero (the default), is max(1 GiB, 10% of the total
	// memory): that is what keeps the OOM killer away from the daemon,
	// sshd and the rest of the system. CRU, SRU and HRU default to zero.
	Reserve provision.Units
	// Probe measures the hardware; nil (the default) uses gopsutil.
	Probe Probe
}

// Node is the provision.Statser of this machine: Units is the table of this
// package, Capacity measures the hardware.
type Node struct {
	opts NodeOptions
}

var _ provision.Statser = (*Node)(nil)

// NewNode returns a Node measuring the hardware with opts.
func NewNode(opts NodeOptions) *Node {
	if opts.Probe == nil {
		opts.Probe = SystemProbe{}
	}
	return &Node{opts: opts}
}

// Units returns the units reservation r takes; see the package function Units.
func (n *Node) Units(r *provision.Reservation) (provision.Units, error) {
	return Units(r)
}

// Capacity measures the node: logical CPUs as CRU, total memory as MRU and
// the sizes of the SSD and HDD storage paths as SRU and HRU (a filesystem
// that holds both paths counts once, as SSD); Reserved is the system
// reserve of NodeOptions with its defaults applied.
func (n *Node) Capacity(ctx context.Context) (provision.Capacity, error) {
	var c provision.Capacity
	cpus, err := n.opts.Probe.CPUs(ctx)
	if err != nil {
		return c, fmt.Errorf("%w: counting cpus: %w", ErrProbe, err)
	}
	if cpus <= 0 {
		return c, fmt.Errorf("%w: counting cpus: got %d", ErrProbe, cpus)
	}
	memory, err := n.opts.Probe.Memory(ctx)
	if err != nil {
		return c, fmt.Errorf("%w: measuring memory: %w", ErrProbe, err)
	}
	c.Total.CRU = uint64(cpus)
	c.Total.MRU = float64(memory) / gib

	var ssdDev uint64
	if p := n.opts.SSDPath; p != "" {
		total, dev, err := n.opts.Probe.Disk(ctx, p)
		if err != nil {
			return c, fmt.Errorf("%w: measuring ssd storage %s: %w", ErrProbe, p, err)
		}
		c.Total.SRU = float64(total) / gib
		ssdDev = dev
	}
	if p := n.opts.HDDPath; p != "" {
		total, dev, err := n.opts.Probe.Disk(ctx, p)
		if err != nil {
			return c, fmt.Errorf("%w: measuring hdd storage %s: %w", ErrProbe, p, err)
		}
		if n.opts.SSDPath == "" || dev != ssdDev {
			c.Total.HRU = float64(total) / gib
		}
	}

	c.Reserved = n.opts.Reserve
	if c.Reserved.MRU <= 0 {
		c.Reserved.MRU = max(MinMemoryReserve, MemoryReserveFraction*c.Total.MRU)
	}
	return c, nil
}

// SystemProbe measures this machine with gopsutil.
type SystemProbe struct{}

var _ Probe = SystemProbe{}

// CPUs returns the number of logical CPUs.
func (SystemProbe) CPUs(ctx context.Context) (int, error) {
	return cpu.CountsWithContext(ctx, true)
}

// Memory returns the total memory in bytes.
func (SystemProbe) Memory(ctx context.Context) (uint64, error) {
	v, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return 0, err
	}
	return v.Total, nil
}

// Disk returns the size of the filesystem holding path and its device number.
func (SystemProbe) Disk(ctx context.Context, path string) (total, device uint64, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		device = uint64(st.Dev)
	}
	u, err := disk.UsageWithContext(ctx, path)
	if err != nil {
		return 0, 0, err
	}
	return u.Total, device, nil
}
