package reliability

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// TestRebootRecreates simulates a node reboot behind a killed daemon's
// back: the container processes die by SIGKILL (their runc state stays
// on disk, stale, as after a power cut), every mount and loop device
// below the node's directory goes and the network namespaces go. The next
// start re-creates the runtime objects from the deployed records: the
// network namespace, the container (a new process, in its namespace with
// its IP, the volume mounted where it was), and the volume with its data
// (same image file, the files written before the reboot, from the host
// and from inside the container). Nothing is duplicated, the results at
// the explorer stay ok and the stats stay the same.
func TestRebootRecreates(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)

	s := harness.Start(t, harness.SetupOptions{})
	node, user, nodeID := s.Node, s.User, s.NodeID
	purgeOnCleanup(t, node)

	vol := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--duration", "1h")
	net := user.Reserve(t, "network", "--node", nodeID, "--name", "reboot", "--ip-range", "10.248.0.0/16", "--subnet", "10.248.1.0/24", "--duration", "1h")
	user.WaitResult(t, vol, provision.StateOk, converge)
	user.WaitResult(t, net, provision.StateOk, converge)
	ctr := user.Reserve(t, "container", "--node", nodeID, "--image", image, "--image-digest", digest,
		"--entrypoint", "/bin/sleep", "--entrypoint", "3600", "--network", "reboot", "--ip", "10.248.1.10",
		"--mount", vol+":/data", "--cpu", "1", "--memory", "32", "--disk", "64", "--duration", "1h")
	user.WaitResult(t, ctr, provision.StateOk, converge)
	settled(t, node, converge)

	recs := records(t, node)
	volRes, _ := user.Get(t, vol)
	var volData struct{ Path string }
	if err := json.Unmarshal(volRes.Result.Data, &volData); err != nil || volData.Path == "" {
		t.Fatalf("volume result data %s: %v", volRes.Result.Data, err)
	}
	if err := os.WriteFile(filepath.Join(volData.Path, "from-host"), []byte(vol), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrName := provision.Prefix + ctr
	if out, err := runcExec(node, ctrName, "sh", "-c", "echo before-reboot > /data/from-container && sync"); err != nil {
		t.Fatalf("writing into the volume from the container: %v: %s", err, out)
	}
	netNS := provision.Prefix + provision.NetworkID(recs[net].Reservation.UserID, "reboot")
	ctrNS := provision.Prefix + "c-" + ctr
	imgIno, err := inode(volumeImage(node, vol))
	if err != nil {
		t.Fatal(err)
	}
	before := runcList(t, runcRoot(node))[ctrName]
	baseStats := nodeStats(t, node)

	// The reboot.
	node.Kill()
	reboot(t, node, before.Pid, []string{netNS, ctrNS})
	if st := runcList(t, runcRoot(node))[ctrName].Status; st != "stopped" {
		t.Fatalf("after the simulated reboot the container is %q, want its stale state: stopped", st)
	}
	if mps := mountsUnder(t, node.Dir); len(mps) > 0 {
		t.Fatalf("mounts left after the simulated reboot: %v", mps)
	}

	start := time.Now()
	node.Start(t)
	harness.Eventually(t, converge, "runtime objects re-created", func() error {
		c := runcList(t, runcRoot(node))[ctrName]
		switch {
		case c.Status != "running":
			return fmt.Errorf("container is %q", c.Status)
		case !exists(filepath.Join("/run/netns", netNS)):
			return errors.New("no network namespace")
		case !exists(filepath.Join("/run/netns", ctrNS)):
			return errors.New("no container namespace")
		case !mounted(t, volData.Path):
			return errors.New("volume not mounted")
		}
		return nil
	})
	settled(t, node, converge)
	t.Logf("re-created %s after the start", time.Since(start).Round(time.Millisecond))

	after := runcList(t, runcRoot(node))[ctrName]
	if after.Pid == before.Pid {
		t.Errorf("container pid %d before and after the reboot", after.Pid)
	}
	if ino, err := inode(volumeImage(node, vol)); err != nil || ino != imgIno {
		t.Errorf("volume image inode %d (%v), %d before: the volume was made anew", ino, err, imgIno)
	}
	if b, err := os.ReadFile(filepath.Join(volData.Path, "from-host")); err != nil || string(b) != vol {
		t.Errorf("volume data written from the host: %q %v", b, err)
	}
	if out, err := runcExec(node, ctrName, "cat", "/data/from-container", "/data/from-host"); err != nil || out != "before-reboot\n"+vol {
		t.Errorf("the container reads %q (%v) from its volume, want what it and the host wrote before the reboot", out, err)
	}
	if out, err := exec.Command("ip", "netns", "exec", ctrNS, "ip", "-4", "-o", "addr").CombinedOutput(); err != nil || !strings.Contains(string(out), "10.248.1.10/") {
		t.Errorf("container namespace addresses: %s %v; want 10.248.1.10", out, err)
	}

	recs = records(t, node)
	for _, id := range []string{vol, net, ctr} {
		if recs[id].State != provision.Deployed {
			t.Errorf("%s is %s after the reboot", id, recs[id].State)
		}
		r, verified := user.Get(t, id)
		if !verified || r.Result == nil || r.Result.State != provision.StateOk {
			t.Errorf("%s at the explorer after the reboot: verified %t, result %+v", id, verified, r.Result)
		}
	}
	got := nodeStats(t, node)
	if !unitsEqual(got.Used, baseStats.Used) {
		t.Errorf("used units %+v after the reboot, %+v before", got.Used, baseStats.Used)
	}
	if err := statsMatch(recs, got); err != nil {
		t.Error(err)
	}
	if bad := orphans(t, node, recs); len(bad) > 0 {
		t.Errorf("runtime objects without a live record: %v", bad)
	}
	if n := len(runcList(t, runcRoot(node))); n != 1 {
		t.Errorf("%d runc containers, want 1", n)
	}
	node.Stop(t)
	checkDatabase(t, node)
}

// reboot does to a killed node what a reboot does: the container process
// dies (runc's state of it stays on disk), the mounts and loop devices
// below the node's directory and the named network namespaces vanish.
func reboot(t testing.TB, n *harness.Node, pid int, namespaces []string) {
	t.Helper()
	// The container's shim (the `runc run` that is its parent, and the
	// shell above it, which would record its exit) dies with it, first.
	runc := parentPid(t, pid)
	shim := parentPid(t, runc)
	for _, p := range []int{shim, runc} {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
			t.Fatalf("killing the shim process %d of the container: %v", p, err)
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) { // it may die with its runc
		t.Fatalf("killing the container process %d: %v", pid, err)
	}
	harness.Eventually(t, 30*time.Second, "container process gone", func() error {
		if err := syscall.Kill(pid, 0); err == nil {
			return fmt.Errorf("process %d still runs", pid)
		}
		return nil
	})
	if err := errors.Join(dropMounts(t, n.Dir)...); err != nil {
		t.Fatal(err)
	}
	for _, ns := range namespaces {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns delete %s: %v: %s", ns, err, out)
		}
	}
}

// runcExec runs a command in a node's container and returns its output.
func runcExec(n *harness.Node, name string, args ...string) (string, error) {
	return testutil.ContainerExec(runcRoot(n), name, args...)
}

// parentPid returns the parent of process pid.
func parentPid(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n <= 1 {
				t.Fatalf("parent of %d: %q (%v)", pid, v, err)
			}
			return n
		}
	}
	t.Fatalf("no parent in /proc/%d/status", pid)
	return 0
}
