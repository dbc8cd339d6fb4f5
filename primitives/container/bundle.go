package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Defaults of the runtime configuration.
const (
	// CPUPeriod is the CFS period, in µs; a container gets CPU×CPUPeriod of
	// quota in each.
	CPUPeriod = 100000
	// DefaultPidsLimit caps the processes (threads included) of a
	// container: a fork bomb stays inside.
	DefaultPidsLimit = 1024
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

// runtimeOptions are the node's side of a container's configuration.
type runtimeOptions struct {
	rootfs  string   // the mounted overlay
	netns   string   // its network namespace's path, "" for a new, empty one
	memsw   bool     // the kernel accounts swap, so swap can be forbidden
	pids    int64    // the pids limit
	uidBase uint32   // first host uid and gid of its user namespace
	binds   []string // the volumes' idmapped mounts, in the order of Spec.Mounts
}

// runtimeSpec builds the OCI configuration of container name: its own
// user namespace mapping 0..IDRange-1 to o.uidBase.., Docker's default
// seccomp profile (github.com/moby/profiles/seccomp, the profile Docker
// and containerd ship, narrowed to the capabilities it gets), cgroup
// limits and namespaces.
func runtimeSpec(name string, s *Spec, o runtimeOptions) (*specs.Spec, error) {
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
	pids := o.pids
	oomScoreAdj := OOMScoreAdj
	mem := &specs.LinuxMemory{Limit: &memory}
	if o.memsw {
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
		Root:     &specs.Root{Path: o.rootfs},
		Hostname: hostname,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			sysMount(o.netns),
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
				{Type: specs.NetworkNamespace, Path: o.netns},
				{Type: specs.UserNamespace},
			},
			UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: o.uidBase, Size: IDRange}},
			GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: o.uidBase, Size: IDRange}},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	for i, m := range s.Mounts {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: m.Destination,
			Type:        "bind",
			Source:      o.binds[i],
			Options:     []string{"rbind", "rw", "nosuid", "nodev"},
		})
		if spec.Annotations == nil {
			spec.Annotations = map[string]string{}
		}
		// The bind's source is the volume's idmapped mount in the bundle;
		// the volume itself is named here, for Using.
		spec.Annotations[volumeAnnotation+strconv.Itoa(i)] = filepath.Clean(m.Source)
	}
	sc, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("building the seccomp profile: %w", err)
	}
	spec.Linux.Seccomp = sc
	return spec, nil
}

// sysMount is the container's /sys: a sysfs of its own network namespace
// when runc creates one. A network namespace the Network made belongs to
// the node's user namespace, where the container's cannot mount sysfs;
// /sys is then the node's, bound read-only (what rootless runtimes do).
func sysMount(netns string) specs.Mount {
	if netns == "" {
		return specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}}
	}
	return specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
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
