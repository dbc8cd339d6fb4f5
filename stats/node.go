package stats

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// Defaults of the storage reserve: what a storage filesystem already used
// at start, plus a margin of at least DefaultDiskMargin bytes and at least
// DiskMarginFraction of the filesystem.
const (
	// DefaultDiskMargin is the smallest storage margin, in bytes (1 GiB).
	DefaultDiskMargin = 1 << 30
	// DiskMarginFraction is the share of a storage filesystem kept free
	// by default.
	DiskMarginFraction = 0.02
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
	// sshd and the rest of the system. CRU, SRU and HRU default to zero;
	// the storage reserve below comes on top of SRU and HRU.
	Reserve provision.Units
	// DiskMargin is kept free on each storage filesystem on top of what
	// it already used at start, in bytes. Zero (the default) is
	// max(DefaultDiskMargin, DiskMarginFraction of the filesystem);
	// negative keeps no margin.
	DiskMargin int64
	// Probe measures the hardware; nil (the default) uses gopsutil.
	Probe Probe
}

// DiskUser is the optional part of a Probe that measures how much of a
// filesystem is used and how much of it the node's own workload files
// (volume images) take; SystemProbe implements it. Without it no storage
// reserve beyond NodeOptions.Reserve is kept.
type DiskUser interface {
	// DiskUsed returns the bytes used on the filesystem holding path
	// (its size minus what is available to unprivileged users: blocks
	// kept for root count as used) and the bytes allocated to the
	// workload files directly in path: the volume images
	// "<provision.Prefix><id>.img" and their temporary files.
	DiskUsed(ctx context.Context, path string) (used, workloads uint64, err error)
}

// Node is the provision.Statser of this machine: Units is the table of this
// package, Capacity measures the hardware.
type Node struct {
	opts NodeOptions

	mu    sync.Mutex
	start map[uint64]float64 // device → GiB used at start by others than workloads
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
//
// The storage reserve (SRU, HRU) also holds what the filesystem already
// used the first time the Node measured it (the daemon's start: the
// system, the database, images, logs — everything but the volume images,
// which their reservations count), plus the margin (NodeOptions.DiskMargin).
// It is measured once: what workloads write later is theirs, counted by
// their reservations, so admission never promises space that was not there
// at start.
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
		if c.Reserved.SRU, err = n.startReserve(ctx, p, total, dev); err != nil {
			return c, fmt.Errorf("%w: measuring ssd storage %s: %w", ErrProbe, p, err)
		}
	}
	if p := n.opts.HDDPath; p != "" {
		total, dev, err := n.opts.Probe.Disk(ctx, p)
		if err != nil {
			return c, fmt.Errorf("%w: measuring hdd storage %s: %w", ErrProbe, p, err)
		}
		if n.opts.SSDPath == "" || dev != ssdDev {
			c.Total.HRU = float64(total) / gib
			if c.Reserved.HRU, err = n.startReserve(ctx, p, total, dev); err != nil {
				return c, fmt.Errorf("%w: measuring hdd storage %s: %w", ErrProbe, p, err)
			}
		}
	}

	storage := c.Reserved
	c.Reserved = n.opts.Reserve
	c.Reserved.SRU += storage.SRU
	c.Reserved.HRU += storage.HRU
	if c.Reserved.MRU <= 0 {
		c.Reserved.MRU = max(MinMemoryReserve, MemoryReserveFraction*c.Total.MRU)
	}
	return c, nil
}

// startReserve returns, in GiB, the storage reserve of the filesystem of
// path (total bytes, device dev): what it used at the first measurement,
// minus the workload files then, plus the margin. 0 when the probe cannot
// tell what is used.
func (n *Node) startReserve(ctx context.Context, path string, total, dev uint64) (float64, error) {
	du, ok := n.opts.Probe.(DiskUser)
	if !ok {
		return 0, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	used, measured := n.start[dev]
	if !measured {
		all, workloads, err := du.DiskUsed(ctx, path)
		if err != nil {
			return 0, err
		}
		if workloads > all {
			workloads = all
		}
		used = float64(all-workloads) / gib
		if n.start == nil {
			n.start = map[uint64]float64{}
		}
		n.start[dev] = used
	}
	margin := float64(n.opts.DiskMargin)
	if n.opts.DiskMargin == 0 {
		margin = max(DefaultDiskMargin, DiskMarginFraction*float64(total))
	}
	return used + max(margin, 0)/gib, nil
}

// SystemProbe measures this machine with gopsutil.
type SystemProbe struct{}

var (
	_ Probe    = SystemProbe{}
	_ DiskUser = SystemProbe{}
)

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

// DiskUsed returns the bytes of the filesystem holding path that are not
// available (used, or kept for root: the system needs them when full) and
// the bytes allocated (not the apparent size: volume images are sparse) to the
// volume images and their temporary files directly in path.
func (SystemProbe) DiskUsed(ctx context.Context, path string) (used, workloads uint64, err error) {
	u, err := disk.UsageWithContext(ctx, path)
	if err != nil {
		return 0, 0, err
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, provision.Prefix) || !(strings.HasSuffix(name, ".img") || strings.HasSuffix(name, ".img.tmp")) {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(path, name), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue // gone meanwhile, or not a file
		}
		workloads += uint64(st.Blocks) * 512
	}
	used = u.Total - min(u.Free, u.Total) // gopsutil's Free is what is available (f_bavail)
	return used, workloads, nil
}
