// Package selfcheck is provisiond's startup self-check, in the manner of
// containerd's plugin errors: before it takes work, the daemon checks what
// the primitives need from the machine and keeps the answers, so that
// `provisiond status` can show each check and name the fix of a failed one.
//
//	loop               /dev/loop-control opens, and a loop device attaches (volumes)
//	runc               `runc --version` runs (containers)
//	mkfs.ext4          `mkfs.ext4 -V` runs (volumes)
//	cgroups            the controllers the containers' limits use are mounted
//	                   read-write: cpu, memory, pids (and devices on cgroup v1)
//	tun                /dev/net/tun is a usable character device (WireGuard, a warning)
//	mount-propagation  a tmpfs the daemon mounts in each directory it mounts
//	                   into (the data directory, /run/netns) shows in PID 1's
//	                   mount table: no private mount namespace
//
// A failed check stops nothing: the daemon starts, logs each failure with
// its fix at error level, shows it in `provisiond status` and in the
// provisiond_selfcheck_ok metric, and the primitives answer the work they
// cannot do with their own errors. Refusing a reservation type up front
// was weighed and rejected: the engine repairs a vanished deployed
// workload through the same Provision call, so a gate there would turn a
// misconfigured node into tenants' workloads failed and removed after a
// few inspections — a worse outcome than the error it reports.
package selfcheck

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Status is the outcome of one check.
type Status string

// The outcomes of a check.
const (
	// OK means the machine gives what the check looks for.
	OK Status = "ok"
	// Warn means something optional is missing: only a feature that is
	// not used yet, or not by every workload, suffers.
	Warn Status = "warn"
	// Failed means a primitive cannot work: its Fix says what to do.
	Failed Status = "failed"
)

// Names of the checks, in the order they run.
const (
	Loop             = "loop"
	Runc             = "runc"
	Mkfs             = "mkfs.ext4"
	Cgroups          = "cgroups"
	Tun              = "tun"
	MountPropagation = "mount-propagation"
)

// Result is the outcome of one check.
type Result struct {
	// Name is the check's name (Loop, Runc, …).
	Name string `json:"name"`
	// Status is ok, warn or failed.
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do about a failure or a warning; empty when ok.
	Fix string `json:"fix,omitempty"`
	// Affects names the workloads that suffer when the check fails
	// (volume, container, network, wireguard).
	Affects []string `json:"affects,omitempty"`
}

// Report is the outcome of every check.
type Report struct {
	// At is when the checks ran.
	At time.Time `json:"at"`
	// By says who ran them: "daemon" (at its start) or "cli" (the
	// status command, when no daemon runs).
	By string `json:"by"`
	// Results are the checks' outcomes, in the order they ran.
	Results []Result `json:"results"`
}

// Failed returns the results of the failed checks.
func (r *Report) Failed() []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Status == Failed {
			out = append(out, res)
		}
	}
	return out
}

// Options configures the checks. The defaults are the real machine; tests
// point them at fakes.
type Options struct {
	// By says who runs the checks ("daemon" or "cli"). Default "daemon".
	By string
	// ProbeDirs are the directories the daemon mounts into; the
	// mount-propagation check mounts a small tmpfs in a fresh directory
	// below each (below its nearest existing parent when it does not
	// exist yet) and looks for it in HostMountinfo. Required for that check: without any it
	// fails with a message saying so.
	ProbeDirs []string
	// Scratch is where the loop check writes its 1 MiB sparse image (its
	// nearest existing parent when it does not exist yet). Default
	// os.TempDir().
	Scratch string
	// Runc is the runc binary. Default "runc".
	Runc string
	// Mkfs is the mkfs.ext4 binary. Default "mkfs.ext4".
	Mkfs string
	// LoopControl is the loop control device. Default /dev/loop-control.
	LoopControl string
	// DevDir holds the loop devices (loopN). Default /dev.
	DevDir string
	// TunDevice is the TUN clone device. Default /dev/net/tun.
	TunDevice string
	// Mountinfo is the caller's mount table. Default /proc/self/mountinfo.
	Mountinfo string
	// CgroupRoot is where the cgroup hierarchy is mounted. Default /sys/fs/cgroup.
	CgroupRoot string
	// HostMountinfo is the mount table of the host's init.
	// Default /proc/1/mountinfo.
	HostMountinfo string
	// SelfMountNS and HostMountNS are the mount namespace links compared
	// in the mount-propagation detail. Default /proc/self/ns/mnt and
	// /proc/1/ns/mnt.
	SelfMountNS, HostMountNS string
	// Timeout bounds each check. Default 10s.
	Timeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o *Options) defaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.By, "daemon")
	def(&o.Runc, "runc")
	def(&o.Mkfs, "mkfs.ext4")
	def(&o.LoopControl, "/dev/loop-control")
	def(&o.DevDir, "/dev")
	def(&o.TunDevice, "/dev/net/tun")
	def(&o.Mountinfo, "/proc/self/mountinfo")
	def(&o.CgroupRoot, "/sys/fs/cgroup")
	def(&o.HostMountinfo, "/proc/1/mountinfo")
	def(&o.SelfMountNS, "/proc/self/ns/mnt")
	def(&o.HostMountNS, "/proc/1/ns/mnt")
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// check is one named check.
type check struct {
	name    string
	affects []string
	run     func(ctx context.Context, o *Options) Result
}

// checks is the one table of checks, in the order they run.
func checks() []check {
	return []check{
		{Loop, []string{"volume"}, checkLoop},
		{Runc, []string{"container"}, checkRunc},
		{Mkfs, []string{"volume"}, checkMkfs},
		{Cgroups, []string{"container"}, checkCgroups},
		{Tun, []string{"wireguard"}, checkTun},
		{MountPropagation, []string{"volume", "container", "network"}, checkPropagation},
	}
}

// Run runs every check and returns their results. It never fails: a check
// that cannot look says so in its result.
func Run(ctx context.Context, opts Options) *Report {
	opts.defaults()
	rep := &Report{At: opts.Now().UTC(), By: opts.By}
	for _, c := range checks() {
		cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		res := c.run(cctx, &opts)
		cancel()
		res.Name = c.name
		if res.Status != OK {
			res.Affects = c.affects
		}
		rep.Results = append(rep.Results, res)
	}
	return rep
}

// ok, warn and failed build results.
func ok(format string, args ...any) Result {
	return Result{Status: OK, Detail: fmt.Sprintf(format, args...)}
}

func failed(fix, format string, args ...any) Result {
	return Result{Status: Failed, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func warn(fix, format string, args ...any) Result {
	return Result{Status: Warn, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

// firstLine returns the first non-empty line of b, trimmed, at most 200 bytes.
func firstLine(b []byte) string {
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 200 {
				l = l[:200]
			}
			return l
		}
	}
	return ""
}
