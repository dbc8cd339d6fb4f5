package container

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Defaults of the runtime configuration.
const (
	// CPUPeriod is the CFS period, in µs; a container gets CPU×CPUPeriod of
	// quota in each.
	CPUPeriod = 100000
	// PidsLimit caps the processes of a container (a fork bomb stays inside).
	PidsLimit = 4096
	// OOMScoreAdj is every container process's oom_score_adj: when the
	// node runs out of memory the kernel kills tenants before the daemon
	// (0) and the system's services. It is set here, in the spec, not
	// inherited from the daemon's unit.
	OOMScoreAdj = 500
	// ociVersion is the runtime-spec version runc 1.1 implements.
	ociVersion  = "1.0.2"
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// defaultCaps are runc's default capabilities: what a process needs to run,
// nothing to administer the node.
var defaultCaps = []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}

// runtimeSpec builds the OCI configuration of container name: rootfs is the
// mounted overlay, netns the path of its network namespace ("" for a new,
// empty one), memsw whether the kernel accounts swap (so swap can be
// forbidden).
func runtimeSpec(name string, s *Spec, rootfs, netns string, memsw bool) *specs.Spec {
	env := []string{}
	hasPath := false
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+s.Env[k])
		hasPath = hasPath || k == "PATH"
	}
	if !hasPath {
		env = append([]string{defaultPath}, env...)
	}
	caps := slices.Clone(defaultCaps)
	memory := s.Memory << 20
	quota := s.CPU * CPUPeriod
	period := uint64(CPUPeriod)
	pids := int64(PidsLimit)
	oomScoreAdj := OOMScoreAdj
	mem := &specs.LinuxMemory{Limit: &memory}
	if memsw {
		mem.Swap = &memory // memory+swap = memory: no swap
	}
	hostname := name
	if len(hostname) > 63 {
		hostname = hostname[:63]
	}
	spec := &specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			Args: s.Args,
			Env:  env,
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
			OOMScoreAdj:     &oomScoreAdj,
		},
		Root:     &specs.Root{Path: rootfs},
		Hostname: hostname,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: CgroupsPath(name),
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  mem,
				CPU:     &specs.LinuxCPU{Quota: &quota, Period: &period},
				Pids:    &specs.LinuxPids{Limit: &pids},
			},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: netns},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	for _, m := range s.Mounts {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: m.Destination,
			Type:        "bind",
			Source:      m.Source,
			Options:     []string{"rbind", "rw", "nosuid", "nodev"},
		})
	}
	return spec
}

// CgroupsPath returns the cgroup of container name, below the "provisiond"
// cgroup so the node can cap all workloads together.
func CgroupsPath(name string) string { return "/provisiond/" + name }

// writeConfig writes config.json into bundle atomically and reports
// whether it changed.
func writeConfig(bundle string, spec *specs.Spec) (bool, error) {
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return false, err
	}
	p := filepath.Join(bundle, "config.json")
	if old, err := os.ReadFile(p); err == nil && string(old) == string(b) {
		return false, nil
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, p)
}

// memswAccounted reports whether the cgroup v1 memory controller accounts
// swap (memory.memsw.*), so that a swap limit can be set. On cgroup v2 no
// swap limit is set.
func memswAccounted() bool {
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	return err == nil
}
