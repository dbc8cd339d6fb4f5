package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
)

// userWaitSamples is how many times each side runs: the issue asks for the
// median of 20.
const userWaitSamples = 20

// BenchmarkUserWait measures what a user waits for, side by side in one
// run on the same machine: `provctl reserve container … --wait ok` of a
// cached local image against a real explorerd and provisiond (built as
// `make build` builds them), from the command's start to its exit after
// the node's verified ok; and `podman run -d` of the same rootfs
// (extracted from the same tarball), from its start to its exit. The
// samples alternate, so both sides meet the same load. It reports the
// medians, their ratio, and the medians of provctl's own steps (the
// elapsed times it prints: submitted, delivered to the node, ok) to show
// where the time goes. Each container is removed (untimed) before the
// next sample. Root, runc, busybox and podman (make bench installs it).
func BenchmarkUserWait(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresCommand(b, "runc")
	podman := testutil.RequiresCommand(b, "podman")
	image, digest := fixture.Busybox(b)
	rootfs := b.TempDir()
	if out, err := exec.Command("tar", "-xf", image, "-C", rootfs).CombinedOutput(); err != nil {
		b.Fatalf("extracting the rootfs for podman: %v: %s", err, out)
	}

	ex := harness.StartPlainExplorer(b)
	node := harness.StartNodeWith(b, ex.URL(), harness.NodeOptions{Plain: true})
	user := harness.NewUser(b, ex.URL())
	nodeID := node.ID(b)
	provctl := harness.PlainBin(b, "provctl")
	env := append(os.Environ(), "PROVCTL_EXPLORER="+ex.URL(), "PROVCTL_KEY="+user.Key)
	run := func(bin string, args ...string) (stdout, stderr string, err error) {
		ctx, cancel := context.WithTimeout(b.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err = cmd.Run()
		if err != nil {
			err = fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, errb.String())
		}
		return out.String(), errb.String(), err
	}
	must := func(bin string, args ...string) string {
		out, _, err := run(bin, args...)
		if err != nil {
			b.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	must(provctl, "reserve", "network", "--node", nodeID, "--name", "wait", "--ip-range", "10.243.0.0/16", "--subnet", "10.243.1.0/24", "--wait", "ok", "--progress", "none")
	reserve := func() (id, steps string, err error) {
		out, steps, err := run(provctl, "reserve", "container", "--node", nodeID, "--image", image, "--image-digest", digest,
			"--entrypoint", "/bin/sleep", "--entrypoint", "3600", "--network", "wait", "--ip", "10.243.1.10",
			"--cpu", "1", "--memory", "64", "--disk", "128", "--duration", "1h", "--wait", "ok", "--progress", "plain")
		return strings.TrimSpace(out), steps, err
	}
	remove := func(id string) {
		must(provctl, "delete", id)
		must(provctl, "watch", id, "--until", "deleted", "--timeout", "2m", "--progress", "none")
	}
	// podman's default ulimits (nofile 1048576) exceed what this host
	// lets even root raise to; ask for ones any host grants.
	podmanArgs := []string{"run", "-d", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--rootfs", rootfs, "/bin/sleep", "3600"}
	b.Cleanup(func() { exec.Command(podman, "rm", "-f", "-a", "-t", "0").Run() })

	// Warm both: the node unpacks the image once (then it is cached),
	// podman sets up its network and storage once.
	id, _, err := reserve()
	if err != nil {
		b.Fatal(err)
	}
	remove(id)
	must(podman, "rm", "-f", "-t", "0", must(podman, podmanArgs...))

	var ours, theirs []float64
	steps := map[string][]float64{}
	for b.Loop() {
		for range userWaitSamples {
			start := time.Now()
			id, out, err := reserve()
			took := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			ours = append(ours, ms(took))
			for step, v := range parseSteps(b, out) {
				steps[step] = append(steps[step], v)
			}
			remove(id)

			start = time.Now()
			ctr := must(podman, podmanArgs...)
			theirs = append(theirs, ms(time.Since(start)))
			must(podman, "rm", "-f", "-t", "0", ctr)
		}
	}
	p50 := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		n := len(s)
		if n%2 == 1 {
			return s[n/2]
		}
		return (s[n/2-1] + s[n/2]) / 2
	}
	b.ReportMetric(p50(ours), "provctl-p50-ms")
	b.ReportMetric(p50(theirs), "podman-p50-ms")
	b.ReportMetric(p50(ours)/p50(theirs), "ratio")
	for _, step := range []string{"submitted", "delivered", "ok"} {
		if len(steps[step]) > 0 {
			b.ReportMetric(p50(steps[step]), step+"-p50-ms")
		}
	}
	b.ReportMetric(float64(len(steps["delivered"])), "delivered-seen")
	b.ReportMetric(float64(len(ours)), "samples")
	b.Logf("provctl reserve --wait ok, ms: %v", ours)
	b.Logf("podman run -d, ms: %v", theirs)
}

// stepLine is one plain progress line of provctl: elapsed seconds, step.
var stepLine = regexp.MustCompile(`^\s*(\d+\.\d+)s (submitted|delivered|ok)\b`)

// parseSteps returns the elapsed milliseconds of each step provctl printed.
func parseSteps(b *testing.B, out string) map[string]float64 {
	b.Helper()
	got := map[string]float64{}
	for _, l := range strings.Split(out, "\n") {
		if m := stepLine.FindStringSubmatch(l); m != nil {
			v, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				b.Fatalf("step line %q: %v", l, err)
			}
			got[m[2]] = v * 1000
		}
	}
	// delivered is missing when the result came before the node's next
	// poll told the explorer it had the reservation.
	if _, ok := got["submitted"]; !ok || got["ok"] == 0 {
		b.Fatalf("provctl printed steps %v, want submitted, (delivered) and ok:\n%s", got, out)
	}
	return got
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
