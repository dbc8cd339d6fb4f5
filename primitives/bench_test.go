package primitives_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
)

// latencies records the duration of each operation and reports the median
// and the 90th percentile in milliseconds.
type latencies []time.Duration

func (l *latencies) time(fn func()) {
	start := time.Now()
	fn()
	*l = append(*l, time.Since(start))
}

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	s := slices.Clone(l)
	slices.Sort(s)
	pct := func(p float64) float64 {
		return float64(s[int(p*float64(len(s)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.9), "p90-ms")
}

// benchNetwork provisions a network for the benchmark's containers.
func benchNetwork(b *testing.B, e *env, user string) string {
	b.Helper()
	r := e.reservation(b, user, provision.NetworkReservation, &provision.Network{Name: "bench", IPRange: "10.250.0.0/16", Subnet: "10.250.1.0/24"})
	e.provision(b, r)
	return provision.NetworkID(user, "bench")
}

// BenchmarkContainerProvision provisions and decommissions a container in
// a network from a cached image: namespace and veth, overlay, config,
// runc run, then runc delete, detach, unmount.
func BenchmarkContainerProvision(b *testing.B) {
	e := newEnv(b)
	ctx := b.Context()
	user := testutil.RandHex(b, 32)
	netID := benchNetwork(b, e, user)
	warm := e.reservation(b, user, provision.ContainerReservation, e.container(netID, "10.250.1.9"))
	e.provision(b, warm) // unpacks the image once
	var lat latencies
	for i := 0; b.Loop(); i++ {
		r := e.reservation(b, user, provision.ContainerReservation, e.container(netID, "10.250.1.10"))
		r.ID = fmt.Sprintf("bench-%d", i)
		lat.time(func() {
			if _, err := e.p.Provision(ctx, r); err != nil {
				b.Fatal(err)
			}
			if err := e.p.Decommission(ctx, r); err != nil {
				b.Fatal(err)
			}
		})
	}
	lat.report(b)
}

// BenchmarkRawRuncRun runs the same kind of bundle (our config.json, an
// overlay rootfs, a new network namespace made by runc) with a bare
// `runc run -d` and `runc delete --force`, for comparison with
// BenchmarkContainerProvision.
func BenchmarkRawRuncRun(b *testing.B) {
	e := newEnv(b)
	user := testutil.RandHex(b, 32)
	netID := benchNetwork(b, e, user)
	tmpl := e.reservation(b, user, provision.ContainerReservation, e.container(netID, "10.250.1.9"))
	e.provision(b, tmpl)
	cfg, err := os.ReadFile(filepath.Join(e.dir, "containers", container.Name(tmpl.ID), "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(cfg, &s); err != nil {
		b.Fatal(err)
	}
	bundle := b.TempDir()
	// The container's root (a uid of its user namespace) must search down
	// to its rootfs, as in --container-run-dir.
	for _, d := range []string{filepath.Dir(bundle), bundle} {
		if err := os.Chmod(d, 0o711); err != nil {
			b.Fatal(err)
		}
	}
	rootfs, upper, work := filepath.Join(bundle, "rootfs"), filepath.Join(bundle, "upper"), filepath.Join(bundle, "work")
	for _, d := range []string{rootfs, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", filepath.Join(e.dir, "images", e.digest), upper, work)
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Unmount(rootfs, 0) })
	s.Root.Path = rootfs
	s.Linux.CgroupsPath = container.CgroupsPath("raw-bench")
	for i, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			s.Linux.Namespaces[i].Path = ""
		}
	}
	if cfg, err = json.Marshal(&s); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), cfg, 0o644); err != nil {
		b.Fatal(err)
	}
	root := b.TempDir()
	log, err := os.Create(filepath.Join(bundle, "log"))
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	runc := func(args ...string) {
		cmd := exec.Command("runc", append([]string{"--root", root}, args...)...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			out, _ := os.ReadFile(log.Name())
			b.Fatalf("runc %v: %v\n%s", args, err, out)
		}
	}
	var lat latencies
	for b.Loop() {
		lat.time(func() {
			runc("run", "--detach", "--bundle", bundle, "raw-bench")
			runc("delete", "--force", "raw-bench")
		})
	}
	lat.report(b)
}

// BenchmarkNetworkProvision provisions and decommissions a network.
func BenchmarkNetworkProvision(b *testing.B) {
	e := newEnv(b)
	ctx := b.Context()
	user := testutil.RandHex(b, 32)
	var lat latencies
	for i := 0; b.Loop(); i++ {
		r := e.reservation(b, user, provision.NetworkReservation, &provision.Network{Name: fmt.Sprintf("n%d", i), IPRange: "10.251.0.0/24", Subnet: "10.251.0.0/24"})
		lat.time(func() {
			if _, err := e.p.Provision(ctx, r); err != nil {
				b.Fatal(err)
			}
			if err := e.p.Decommission(ctx, r); err != nil {
				b.Fatal(err)
			}
		})
	}
	lat.report(b)
}

// BenchmarkVolumeProvision provisions (sparse image, mkfs.ext4, loop,
// mount) and decommissions a 1 GiB volume.
func BenchmarkVolumeProvision(b *testing.B) {
	e := newEnv(b)
	ctx := b.Context()
	user := testutil.RandHex(b, 32)
	var lat latencies
	for b.Loop() {
		r := e.reservation(b, user, provision.VolumeReservation, &provision.Volume{Size: 1, Type: provision.SSD})
		lat.time(func() {
			if _, err := e.p.Provision(ctx, r); err != nil {
				b.Fatal(err)
			}
			if err := e.p.Decommission(ctx, r); err != nil {
				b.Fatal(err)
			}
		})
	}
	lat.report(b)
}
