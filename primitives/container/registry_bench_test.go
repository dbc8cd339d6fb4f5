package container_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgeprov/provisiond/internal/registrytest"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
)

// median returns the median of ds in milliseconds.
func median(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

// bigImage pushes a busybox image with a 50 MB layer of random bytes
// (incompressible: what a registry serves is what the node writes).
func bigImage(b *testing.B, reg *registrytest.Registry) (provision.ImageRef, v1.Image) {
	b.Helper()
	data := make([]byte, 50<<20)
	rand.Read(data)
	img := registrytest.Image(b, runtime.GOARCH, registrytest.BusyboxLayer(b),
		registrytest.Layer(b, []registrytest.File{{Name: "data/", Type: '5'}, {Name: "data/blob", Body: data}}))
	return reg.Push(b, "big", img), img
}

// BenchmarkRegistryColdStart measures a cold start of a 50 MB image from a
// registry on 127.0.0.1 (manifest, config and layers fetched, checked,
// stored with fsync, unpacked, the container run, then decommissioned),
// alternating with `curl` fetching the same blobs and `tar -xzf`
// extracting the layers: p50-ms, curl-tar-p50-ms and their ratio.
func BenchmarkRegistryColdStart(b *testing.B) {
	testutil.RequiresCommand(b, "curl")
	reg := registrytest.Start(b, registrytest.Options{})
	ref, img := bigImage(b, reg)
	e := newEnv(b, container.Options{InsecureRegistries: []string{reg.Host}})
	cfgName, _ := img.ConfigName()
	layers, _ := img.Layers()
	var ours, curl []time.Duration
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("cold-%d", i)
		start := time.Now()
		if _, err := e.m.Provision(b.Context(), id, refSpec(ref, "/bin/sleep", "60")); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		if err := e.m.Decommission(b.Context(), id); err != nil {
			b.Fatal(err)
		}
		for _, d := range []string{"blobs", "layers"} {
			if err := os.RemoveAll(filepath.Join(e.dir, d)); err != nil {
				b.Fatal(err)
			}
		}

		dir := b.TempDir()
		rootfs := filepath.Join(dir, "rootfs")
		os.Mkdir(rootfs, 0o755)
		start = time.Now()
		blob := func(d v1.Hash) string {
			p := filepath.Join(dir, d.Hex)
			url := fmt.Sprintf("http://%s/v2/%s/blobs/%s", reg.Host, ref.Repository, d)
			if out, err := exec.Command("curl", "-sSfL", "-o", p, url).CombinedOutput(); err != nil {
				b.Fatalf("curl: %v %s", err, out)
			}
			return p
		}
		blob(cfgName)
		for _, l := range layers {
			d, _ := l.Digest()
			if out, err := exec.Command("tar", "-xzf", blob(d), "-C", rootfs).CombinedOutput(); err != nil {
				b.Fatalf("tar: %v %s", err, out)
			}
		}
		curl = append(curl, time.Since(start))
		os.RemoveAll(dir)
	}
	b.ReportMetric(median(ours), "p50-ms")
	b.ReportMetric(median(curl), "curl-tar-p50-ms")
	b.ReportMetric(median(ours)/median(curl), "ratio")
}

// BenchmarkRegistryWarmStart measures a warm start (layers present) of a
// registry image, provision and decommission, alternating with the same
// for a local rootfs tar already unpacked: p50-ms, local-tar-p50-ms and
// their ratio.
func BenchmarkRegistryWarmStart(b *testing.B) {
	reg := registrytest.Start(b, registrytest.Options{})
	e := newEnv(b, container.Options{InsecureRegistries: []string{reg.Host}})
	// The same busybox rootfs as the local tar, as one registry layer.
	ref := reg.Push(b, "busybox", registrytest.Image(b, runtime.GOARCH, registrytest.BusyboxLayer(b)))
	warm := func(id string, s container.Spec) time.Duration {
		start := time.Now()
		if _, err := e.m.Provision(b.Context(), id, s); err != nil {
			b.Fatal(err)
		}
		if err := e.m.Decommission(b.Context(), id); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	warm("warm-reg", refSpec(ref, "/bin/sleep", "60"))
	warm("warm-tar", e.spec("/bin/sleep", "60"))
	var ours, tar []time.Duration
	for i := 0; b.Loop(); i++ {
		// Which goes first alternates: the second of a pair may meet
		// what the first left to the kernel (loop device release).
		if i%2 == 0 {
			ours = append(ours, warm(fmt.Sprintf("reg-%d", i), refSpec(ref, "/bin/sleep", "60")))
			tar = append(tar, warm(fmt.Sprintf("tar-%d", i), e.spec("/bin/sleep", "60")))
		} else {
			tar = append(tar, warm(fmt.Sprintf("tar-%d", i), e.spec("/bin/sleep", "60")))
			ours = append(ours, warm(fmt.Sprintf("reg-%d", i), refSpec(ref, "/bin/sleep", "60")))
		}
	}
	b.ReportMetric(median(ours), "p50-ms")
	b.ReportMetric(median(tar), "local-tar-p50-ms")
	b.ReportMetric(median(ours)/median(tar), "ratio")
}

// BenchmarkSharedBaseTransfer pulls two images sharing a busybox base
// through a counting proxy and reports the blob bytes the second one
// transferred against the size of its own layer and config (ratio 1: only
// what it does not share).
func BenchmarkSharedBaseTransfer(b *testing.B) {
	reg := registrytest.Start(b, registrytest.Options{})
	proxy := registrytest.StartProxy(b, reg.Host)
	e := newEnv(b, container.Options{InsecureRegistries: []string{proxy.Host}})
	base := registrytest.BusyboxLayer(b)
	own := registrytest.Layer(b, []registrytest.File{{Name: "srv/", Type: '5'}, {Name: "srv/b", Body: make([]byte, 1<<20)}})
	imgA := registrytest.Image(b, runtime.GOARCH, base, registrytest.Layer(b, []registrytest.File{{Name: "srv/", Type: '5'}, {Name: "srv/a", Body: []byte("a")}}))
	imgB := registrytest.Image(b, runtime.GOARCH, base, own)
	var second, ownBytes int64
	for i := 0; b.Loop(); i++ {
		// Fresh repositories each time, so that nothing is cached.
		a := reg.Push(b, fmt.Sprintf("a%d", i), imgA)
		bb := reg.Push(b, fmt.Sprintf("b%d", i), imgB)
		a.Registry, bb.Registry = proxy.Host, proxy.Host
		for _, d := range []string{"blobs", "layers"} {
			os.RemoveAll(filepath.Join(e.dir, d))
		}
		run := func(id string, ref provision.ImageRef) {
			if _, err := e.m.Provision(b.Context(), id, refSpec(ref, "/bin/sleep", "60")); err != nil {
				b.Fatal(err)
			}
		}
		run("share-a", a)
		before := proxy.BlobBytes()
		run("share-b", bb)
		second = proxy.BlobBytes() - before
		for _, id := range []string{"share-a", "share-b"} {
			if err := e.m.Decommission(b.Context(), id); err != nil {
				b.Fatal(err)
			}
		}
		ownSize, _ := own.Size()
		cfg, _ := imgB.RawConfigFile()
		ownBytes = ownSize + int64(len(cfg))
	}
	b.ReportMetric(float64(second), "second-image-bytes")
	b.ReportMetric(float64(ownBytes), "own-bytes")
	b.ReportMetric(float64(second)/float64(ownBytes), "ratio")
}
